"""Data preparation: `python -m golf.data.prepare {embedded,tokenizer,text,fineweb,proxy} [options]`.

embedded:  an offline corpus from documentation text that ships with CPython, its own
           challenge-settings BPE tokenizer, and shards in the challenge layout.
tokenizer: train a SentencePiece BPE of any vocabulary size with the challenge's settings.
text:      tokenize local .txt / .jsonl / .jsonl.gz documents into shards.
fineweb:   download a published export (sp1024, sp4096, sp8192, CaseOps, ...): shards,
           tokenizer and, when the variant ships one, the val byte sidecar.
proxy:     a larger offline corpus (C4 + FineWeb documents + stdlib sources, official sp1024
           tokenizer) for GPU checks; needs ../shared/data.
"""
from __future__ import annotations

import argparse
import sys

from golf.data import embedded, fineweb, proxy, text, tokenizer_train
from golf.errors import user_errors

# One module per data source, each with add_parser(sub) and run(args); a new source is a
# new module under golf/data/ and one entry here (subcommands in this order).
SOURCES = (embedded, tokenizer_train, text, fineweb, proxy)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m golf.data.prepare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for source in SOURCES:
        source.add_parser(sub).set_defaults(run=source.run)
    args = ap.parse_args(argv)
    with user_errors():
        args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
