"""A larger offline training corpus for GPU checks when the FineWeb shards are out of reach.

    python -m golf.data.prepare proxy [--shared ../shared/data] [--stdlib-mb 30] [--root ./data]
                                      [--seed 0]

Validation = the first 100 C4 documents (web text, the challenge's domain); training = the
other 900 C4 documents, the 200 FineWeb documents and the Python standard library's source
files (one document each, collected sorted by path), tokenized with the official sp1024
tokenizer into data/datasets/proxy_sp1024. The training documents are interleaved by a
fixed-seed shuffle (`--seed`), so every stretch of the stream mixes web text and code in
about the corpus's proportions: the loader reads contiguous tokens from a seed-chosen start,
and with the sources written one after another a short run could train on code only. A
rebuild replaces only the shards the folder's manifest lists (`prepare_text`). It exists to
give an 11-layer model enough distinct tokens for a few minutes of H100 training, so its
*weights* look trained (quantizer and budget checks), and the CPU ablation
(`python -m bench.ablation`) web-like text; its val_bpb is not comparable with FineWeb figures.
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import sysconfig
import tempfile
from pathlib import Path

from golf.run.atomic import atomic_write_bytes
from golf.data.sources.text import prepare_text
from golf.run.errors import PrepareError

OFFICIAL = "tokenizers/fineweb_1024_bpe.model"
VAL_DOCS = 100


def interleave(docs: list[str], seed: int) -> list[str]:
    """The training documents in a fixed-seed shuffled order (same input and seed: same order)."""
    out = list(docs)
    random.Random(seed).shuffle(out)
    return out


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


def proxy_documents(shared: Path, stdlib_mb: float, seed: int) -> tuple[list[str], list[str], dict]:
    """(val documents, shuffled training documents, source counts): the corpus's text, also
    what `bench.vocab` trains its tokenizers on (the training documents only)."""
    c4 = shared / "corpora/c4_en_olmo_sample1000/c4-sample.00000-of-00001.json.gz"
    fw = shared / "corpora/fineweb_pgolf_docs200/verify_docs.jsonl"
    for p in (c4, fw, shared / OFFICIAL):
        if not p.is_file():
            raise PrepareError(f"{p}: not found; pass --shared DIR, the shared data folder "
                               "holding corpora/ and tokenizers/ (default ../shared/data)")
    with gzip.open(c4, "rt", encoding="utf-8") as f:
        c4_docs = [json.loads(line)["text"] for line in f if line.strip()]
    val, train = c4_docs[:VAL_DOCS], c4_docs[VAL_DOCS:]
    fw_docs = [json.loads(line)["text"] for line in fw.read_text(encoding="utf-8").splitlines() if line.strip()]
    train += fw_docs
    std = stdlib_sources(int(stdlib_mb * 1e6))
    train += std
    sources = {"c4_val": len(val), "c4_train": len(c4_docs) - len(val), "fineweb": len(fw_docs),
               "stdlib": len(std), "shuffle_seed": seed}
    return val, interleave(train, seed), sources


def prepare_proxy(shared: str | Path = "../shared/data", root: str | Path = "./data", *,
                  stdlib_mb: float = 30.0, seed: int = 0) -> dict:
    """Write ROOT/datasets/proxy_sp1024 (val = the first VAL_DOCS documents) and a copy of the
    official tokenizer under ROOT; returns what was written and from which sources."""
    shared, root = Path(shared), Path(root)
    val, train, sources = proxy_documents(shared, stdlib_mb, seed)
    tok = root / OFFICIAL
    atomic_write_bytes(tok, (shared / OFFICIAL).read_bytes())
    out = root / "datasets/proxy_sp1024"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "docs.jsonl"
        src.write_text("".join(json.dumps({"text": d}) + "\n" for d in val + train), encoding="utf-8")
        stats = prepare_text([src], tok, out, val_docs=VAL_DOCS, vocab_size=1024)
    return {"dataset": str(out), "tokenizer": str(tok), "sources": sources, **stats}


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("proxy", help="C4 + FineWeb docs + stdlib sources, official sp1024 "
                       "(offline GPU checks; needs ../shared/data)")
    p.add_argument("--shared", default="../shared/data")
    p.add_argument("--stdlib-mb", type=float, default=30.0)
    p.add_argument("--root", default="./data")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed of the training documents")
    return p


def run(args: argparse.Namespace) -> None:
    stats = prepare_proxy(args.shared, args.root, stdlib_mb=args.stdlib_mb, seed=args.seed)
    print(json.dumps(stats, indent=1))
