"""A larger offline training corpus for GPU checks when the FineWeb shards are out of reach.

    python -m bench.proxy_corpus [--shared ../shared/data] [--stdlib-mb 30] [--root ./data]

Validation = the first 100 C4 documents (web text, the challenge's domain); training = the
other 900 C4 documents, the 200 FineWeb documents and the Python standard library's source
files (one document each, sorted by path), tokenized with the official sp1024 tokenizer into
data/datasets/proxy_sp1024. It exists to give an 11-layer model enough distinct tokens for a
few minutes of H100 training, so its *weights* look trained (quantizer and budget checks); its
val_bpb is not comparable with FineWeb figures.
"""
from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sysconfig
import tempfile
from pathlib import Path

from golf.data.prepare import prepare_text

OFFICIAL = "tokenizers/fineweb_1024_bpe.model"


def stdlib_sources(limit_bytes: int) -> list[str]:
    """Standard-library .py files, sorted by path, until `limit_bytes` of text."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs, total = [], 0
    for p in sorted(root.rglob("*.py")):
        if "site-packages" in p.parts:
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            docs.append(text)
            total += len(text.encode("utf-8"))
            if total >= limit_bytes:
                break
    return docs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default="../shared/data")
    ap.add_argument("--stdlib-mb", type=float, default=30.0)
    ap.add_argument("--root", default="./data")
    args = ap.parse_args(argv)
    shared, root = Path(args.shared), Path(args.root)
    c4 = shared / "corpora/c4_en_olmo_sample1000/c4-sample.00000-of-00001.json.gz"
    fw = shared / "corpora/fineweb_pgolf_docs200/verify_docs.jsonl"
    with gzip.open(c4, "rt", encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f if line.strip()]
    docs += [json.loads(line)["text"] for line in fw.read_text(encoding="utf-8").splitlines() if line.strip()]
    docs += stdlib_sources(int(args.stdlib_mb * 1e6))
    tok = root / OFFICIAL
    tok.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shared / OFFICIAL, tok)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "docs.jsonl"
        src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
        stats = prepare_text([src], tok, root / "datasets/proxy_sp1024", val_docs=100, vocab_size=1024)
    print(json.dumps({"dataset": str(root / "datasets/proxy_sp1024"), "tokenizer": str(tok), **stats}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
