"""Cost of the token-only n-gram tilt: seconds and peak host memory per million targets.

    OMP_NUM_THREADS=1 python -m bench.tilt [--sizes 1000000 2000000 4000000 8000000]
                                           [--out bench/results/tilt.json]

Why: #2135 runs its hint precompute inside the eval timer (196.8-200.9 s single-threaded, about
8.5 GB of host memory per rank for 47,851,520 targets, by its log and code), so golfkit's
cost must be measured, not assumed. Each size builds the hint table of a synthetic text-like
stream (Zipf-chosen phrases from a phrase bank, 20 % of tokens replaced, vocab 8192, so
contexts recur as in text),
TOKEN_ORDER 16 / TOKEN_THRESHOLD 0.8, on one thread (CPU seconds beside wall seconds: on a
shared machine the wall clock counts other jobs); numpy's allocations are traced, so the
peak is the table's own working memory (the stream itself excluded). The per-batch tilt is timed
on 65,536 rows of 8192 float32 logits with the records' 1.31 % of rows hinted. The 47.85 M
figures are extrapolated from the largest size as n·log n (the two stable sorts) for time and
linearly for memory.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golf.run.atomic import atomic_write_json  # noqa: E402  (after the path guard)
from golf.eval.tilt import tilted_nll, token_hints  # noqa: E402

RECORD_TARGETS = 47_851_520
RECORD = {"seconds": 198.85, "host_gb": 8.5}   # #2135: 196.8-200.9 s, ~8.5 GB per rank
VOCAB = 8192


def synthetic_stream(n: int, seed: int = 0) -> np.ndarray:
    """n uint16 tokens: phrases of 2-40 Zipf tokens drawn Zipf-wise from a 200k-phrase bank,
    20 % of the tokens then replaced by fresh Zipf tokens."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(2, 41, size=200_000)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    bank = (rng.zipf(1.2, size=int(lens.sum())) - 1) % VOCAB
    pick = (rng.zipf(1.15, size=n // 10 + 16) - 1) % len(lens)
    pick = pick[: np.searchsorted(np.cumsum(lens[pick]), n) + 1]
    plen = lens[pick]
    offs = np.repeat(starts[pick] - np.concatenate([[0], np.cumsum(plen)[:-1]]), plen)
    out = bank[offs + np.arange(len(offs))][:n]
    fresh = rng.random(n) < 0.2                       # breaks most 15-token contexts, as text does
    out[fresh] = (rng.zipf(1.2, size=int(fresh.sum())) - 1) % VOCAB
    return out.astype(np.uint16)


def measure_hints(n: int) -> dict:
    """Seconds, traced peak bytes and the gated share of one hint table of n targets."""
    y = synthetic_stream(n)
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    hints = token_hints(y, 16, 0.8)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"targets": n, "seconds": secs, "cpu_seconds": cpu, "peak_bytes": peak,
            "gated": int((hints >= 0).sum()), "gated_frac": float((hints >= 0).mean())}


def measure_apply(rows: int = 65_536, repeats: int = 3) -> tuple[float, float]:
    """CPU seconds per million targets of tilted_nll on a scored batch (1.31 % of rows hinted),
    and of the scorer's own cross-entropy over the same logits (for scale)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(rows, VOCAB, generator=g)
    targets = torch.randint(0, VOCAB, (rows,), generator=g)
    hints = torch.where(torch.rand(rows, generator=g) < 0.0131, targets, torch.full_like(targets, -1))
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    best = [math.inf, math.inf]
    for _ in range(repeats):
        t0 = time.process_time()
        tilted_nll(nll, logits, targets, hints, 2.625)
        t1 = time.process_time()
        torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        best = [min(best[0], t1 - t0), min(best[1], time.process_time() - t1)]
    return best[0] * 1e6 / rows, best[1] * 1e6 / rows


def extrapolate(row: dict, n: int) -> dict:
    """Time as n·log2 n and memory linearly from one measured row."""
    m = row["targets"]
    grow = (n * math.log2(n)) / (m * math.log2(m))
    return {"targets": n, "seconds": row["seconds"] * grow, "cpu_seconds": row["cpu_seconds"] * grow,
            "peak_gb": row["peak_bytes"] * n / m / 1e9}


def table(rows: list[dict], at_record: dict, apply_s: float, ce_s: float) -> str:
    lines = [f"{'targets':>12} {'wall s':>8} {'CPU s':>8} {'CPU s/M':>8} {'peak MB':>9} "
             f"{'B/target':>9} {'gated %':>8}"]
    for r in rows:
        lines.append(f"{r['targets']:>12,} {r['seconds']:>8.2f} {r['cpu_seconds']:>8.2f} "
                     f"{r['cpu_seconds'] * 1e6 / r['targets']:>8.3f} "
                     f"{r['peak_bytes'] / 1e6:>9.1f} {r['peak_bytes'] / r['targets']:>9.1f} "
                     f"{100 * r['gated_frac']:>8.2f}")
    lines.append(f"at {RECORD_TARGETS:,} (from the last row): {at_record['cpu_seconds']:.1f} CPU s "
                 f"({at_record['seconds']:.1f} s wall), "
                 f"{at_record['peak_gb']:.2f} GB peak; the record: ~{RECORD['seconds']:.0f} s, "
                 f"~{RECORD['host_gb']} GB")
    lines.append(f"tilt of a scored batch: {apply_s:.4f} CPU s per million targets "
                 f"({apply_s * RECORD_TARGETS / 1e6:.2f} s at {RECORD_TARGETS:,}); the scorer's "
                 f"cross-entropy alone: {ce_s:.4f} s per million")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 2_000_000, 4_000_000, 8_000_000])
    ap.add_argument("--out", default="bench/results/tilt.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = [measure_hints(n) for n in args.sizes]
    at_record = extrapolate(rows[-1], RECORD_TARGETS)
    apply_s, ce_s = measure_apply()
    report = {"rows": rows, "at_record_targets": at_record, "apply_seconds_per_million": apply_s,
              "cross_entropy_seconds_per_million": ce_s,
              "record": RECORD, "threads": 1, "numpy": np.__version__, "torch": torch.__version__}
    print(json.dumps(report, indent=1))
    print(table(rows, at_record, apply_s, ce_s))
    atomic_write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
