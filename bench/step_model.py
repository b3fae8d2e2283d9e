"""The 8xH100 step time on paper, from the model's real tensor shapes and one GPU's measurements.

    python -m bench.step_model [--preset r29] [--world 8] [--busbw-gbs 360]
                               [--micro-ms 94.85] [--opt-ms 2.2]

Inputs: --micro-ms is one 48 x 2048 micro-batch's forward+backward on one GPU and --opt-ms the
whole optimizer step there. Defaults from the lent H100 of 2026-11-27 (docs/results.md, "GPU"):
with SDPA's native GQA flag one step took 823 ms with 8 micro-batches and 104.8 ms with one,
so the optimizer is (8 x 104.8 - 823) / 7 = 2.2 ms; the shipped repeated-KV attention took
761 ms per 8-micro-batch step, so one micro-batch is (761 - 2.2) / 8 = 94.85 ms.
--busbw-gbs is NCCL's bus bandwidth for large messages on NVLink 4 (nccl-tests report
~360-480 GB/s on 8xH100 SXM; 360 is the conservative end). Collective time = bytes on the wire
per rank / bandwidth + a per-call latency; ring reduce-scatter and all-gather move (W-1)/W of
the buffer per rank, all-reduce twice that. Newton–Schulz time is split by flops: each rank
orthogonalises ceil(n/W) matrices of each bank. Prints JSON and a table; nothing is measured.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from golf.run.config import Config  # noqa: E402
from golf.model.gpt import GPT  # noqa: E402
from golf.train.muon import by_shape  # noqa: E402
from golf.train.optim import split_params  # noqa: E402


def ns_flops(shape: tuple[int, int], steps: int = 5) -> float:
    """Flops of quintic Newton–Schulz on one matrix (A = X Xᵀ, A², (bA + cA²) X per step)."""
    m, n = sorted(shape)
    return steps * 2.0 * (2 * m * m * n + m ** 3)


def model_step(cfg: Config, world: int, busbw: float, micro_ms: float, opt_ms: float,
               latency_us: float = 20.0) -> dict:
    with torch.device("meta"):
        model = GPT(cfg)
    muon, emb, scal = split_params(model)
    banks = {shape: len(ps) for shape, ps in by_shape(muon).items()}  # as golf.train.muon banks them
    bank_params = sum(n * s[0] * s[1] for s, n in banks.items())
    small_params = sum(p.numel() for p in emb + scal)
    ring = (world - 1) / world
    rs_ms = ring * 2 * bank_params / busbw + len(banks) * latency_us / 1e3      # bf16
    ag_ms = rs_ms                                                                      # bf16 updates
    ar_ms = 2 * ring * 4 * small_params / busbw + 2 * latency_us / 1e3          # fp32 + norms
    plain_ar_ms = 2 * ring * 4 * (bank_params + small_params) / busbw + latency_us / 1e3
    total_ns = sum(n * ns_flops(s) for s, n in banks.items())
    mine_ns = sum(-(-n // world) * ns_flops(s) for s, n in banks.items())
    ns_share = mine_ns / total_ns
    sharded_opt = opt_ms * ns_share          # upper bound: the non-NS part is small and shrinks too
    # overlapped: the all-gathers run under the next bank's NS and the AdamW step
    sharded = micro_ms + sharded_opt + rs_ms + ar_ms + ag_ms / len(banks)
    plain = micro_ms + opt_ms + plain_ar_ms
    tokens = cfg.train_batch_tokens
    return {
        "world": world, "params": sum(p.numel() for p in model.parameters()),
        "muon_banks": {f"{s[0]}x{s[1]}": n for s, n in banks.items()},
        "bank_params": bank_params, "small_params": small_params,
        "bytes_reduce_scatter_bf16": 2 * bank_params, "bytes_all_gather_bf16": 2 * bank_params,
        "bytes_all_reduce_fp32": 4 * small_params, "bytes_plain_all_reduce_fp32": 4 * (bank_params + small_params),
        "ms_reduce_scatter": round(rs_ms, 3), "ms_all_gather": round(ag_ms, 3),
        "ms_small_all_reduce": round(ar_ms, 3), "ms_plain_all_reduce": round(plain_ar_ms, 3),
        "ns_share_per_rank": round(ns_share, 3), "ms_optimizer_sharded": round(sharded_opt, 2),
        "ms_step_sharded": round(sharded, 1), "ms_step_plain": round(plain, 1),
        "tokens_per_s_per_gpu_sharded": round(tokens / world / sharded * 1000),
        "records_ms_step": 87.4, "records_tokens_per_s_per_gpu": round(tokens / world / 0.0874),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="r29")
    ap.add_argument("--world", type=int, default=8)
    ap.add_argument("--busbw-gbs", type=float, default=360.0)
    ap.add_argument("--micro-ms", type=float, default=94.85)
    ap.add_argument("--opt-ms", type=float, default=2.2)
    a = ap.parse_args()
    cfg = Config.from_env({"PRESET": a.preset})
    r = model_step(cfg, a.world, a.busbw_gbs * 1e9 / 1e3, a.micro_ms, a.opt_ms)
    print(json.dumps(r, indent=2))
    for k in ("ms_reduce_scatter", "ms_all_gather", "ms_small_all_reduce", "ms_optimizer_sharded",
              "ms_step_sharded", "ms_plain_all_reduce", "ms_step_plain", "tokens_per_s_per_gpu_sharded",
              "records_tokens_per_s_per_gpu"):
        print(f"{k:32s} {r[k]}")


if __name__ == "__main__":
    main()
