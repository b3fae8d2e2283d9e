"""Data preparation: `python -m golf.data.prepare SOURCE [options]` (`--help` lists the sources).

Each source is one file under golf/data/sources/ (embedded: the offline default corpus;
tokenizer: a challenge-settings BPE of any size; text: local documents to shards; fineweb: a
published export; proxy: the larger offline corpus for GPU checks). This dispatcher finds them:
a new source needs no edit here.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from types import ModuleType

from golf.data import sources as sources_pkg
from golf.run.errors import user_errors


def sources() -> list[ModuleType]:
    """Every module of golf/data/sources that defines add_parser(sub) and run(args), by name."""
    mods = (importlib.import_module(f"{sources_pkg.__name__}.{m.name}")
            for m in sorted(pkgutil.iter_modules(sources_pkg.__path__), key=lambda m: m.name))
    return [m for m in mods if callable(getattr(m, "add_parser", None)) and callable(getattr(m, "run", None))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m golf.data.prepare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for source in sources():
        source.add_parser(sub).set_defaults(run=source.run)
    args = ap.parse_args(argv)
    with user_errors():
        args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
