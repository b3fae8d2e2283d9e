"""Documentation text the embedded-corpus model never trained on, as a dataset folder:
`python -m bench.fresh_text --out data/datasets/fresh_sp1024`.

The docstrings of the standard-library modules that golf.data.sources.embedded does not read
(its STDLIB_MODULES; GUI, test and packaging folders left out), minus any document the embedded
corpus holds, tokenized with the embedded tokenizer. Why: a 10-minute run calibrates on
training batches it has not seen yet, while a CPU checkpoint trained for 20 epochs has
memorised its own; `bench.rd_frontier --calib-data` calibrates on this instead (never val).
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sysconfig
import tempfile
import warnings
from pathlib import Path

from golf.data.sources.embedded import STDLIB_MODULES, _module_docs, embedded_documents
from golf.data.sources.text import prepare_text

SKIP_TOP = ("tkinter", "turtledemo", "idlelib", "lib2to3", "ensurepip", "venv", "__phello__")
SKIP_PART = ("site-packages", "test", "tests", "idle_test", "__pycache__")
SKIP_MODULES = ("antigravity", "this", "turtle")   # import side effects


def unused_modules() -> list[str]:
    """Standard-library module names (sorted by path) the embedded corpus does not read."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if rel.parts[0] in SKIP_TOP or any(part in SKIP_PART for part in rel.parts):
            continue
        name = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        if not name.endswith("__main__") and name not in STDLIB_MODULES + SKIP_MODULES:
            out.append(name)
    return out


def fresh_documents() -> list[str]:
    """Their docstrings, cleaned like the embedded corpus's, none of them in it."""
    seen, docs = set(embedded_documents()), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in unused_modules():
            try:
                mod = importlib.import_module(name)
            except BaseException:   # platform-specific or broken on import: not text we need
                continue
            for d in _module_docs(mod):
                d = inspect.cleandoc(d).strip() if d else ""
                if len(d) >= 40 and d not in seen:
                    seen.add(d)
                    docs.append(d)
    return docs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="dataset folder to write (a new one)")
    ap.add_argument("--tokenizer", default="data/tokenizers/embedded_1024_bpe.model")
    args = ap.parse_args(argv)
    docs = fresh_documents()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "docs.jsonl"
        src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
        stats = prepare_text([src], args.tokenizer, args.out, val_docs=20, vocab_size=1024)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
