"""Data benchmarks: corpus -> shards throughput, embedded build time, byte-LUT build time.

    python -m bench.data [--quick]

Uses the C4 sample with the official tokenizer when ../shared/data exists, else the
embedded corpus with its own tokenizer.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GOLF_SHARED_DATA", REPO.parent / "shared" / "data"))


def run(quick: bool = False) -> dict:
    from golf.eval.bpb import build_byte_lut
    from golf.data.sources.embedded import embedded_documents, prepare_embedded
    from golf.data.sources.text import prepare_text
    from golf.data.tokenizer import load_tokenizer
    out: dict = {"quick": quick}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        emb = prepare_embedded(tmp / "data")
        out["embedded_build_s"] = round(time.perf_counter() - t0, 3)
        c4 = SHARED / "corpora" / "c4_en_olmo_sample1000" / "c4-sample.00000-of-00001.json.gz"
        tok = SHARED / "tokenizers" / "fineweb_1024_bpe.model"
        if c4.is_file() and tok.is_file():
            src, inputs, tokenizer = "c4_sample+official_tokenizer", [c4], tok
        else:
            src, tokenizer = "embedded+embedded_tokenizer", emb.tokenizer_path
            inputs = [tmp / "emb.jsonl"]
            inputs[0].write_text("".join(json.dumps({"text": d}) + "\n" for d in embedded_documents()))
        reps = 1 if quick else 3
        best = float("inf")
        for r in range(reps):
            t0 = time.perf_counter()
            stats = prepare_text(inputs, tokenizer, tmp / f"ds{r}", val_docs=100)
            best = min(best, time.perf_counter() - t0)
        n_tok = sum(stats["files"].values())
        out.update(corpus=src, text_mb=round(stats["text_bytes"] / 1e6, 3), tokens=n_tok,
                   shards_s=round(best, 3), shards_mb_per_s=round(stats["text_bytes"] / 1e6 / best, 2),
                   tokens_per_s=round(n_tok / best))
        sp = load_tokenizer(tokenizer)
        t0 = time.perf_counter()
        for _ in range(reps):
            build_byte_lut(sp, 1024)
        out["lut_build_ms"] = round((time.perf_counter() - t0) / reps * 1e3, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    res = run(quick=ap.parse_args(argv).quick)
    print(json.dumps(res, indent=2))
    for k, v in res.items():
        print(f"{k:>18}  {v}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
