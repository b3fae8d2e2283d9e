"""Training throughput: CPU tokens/s (CPU preset model), full 11L step time at a tiny batch on
CPU, and on CUDA the 11L tokens/s per GPU with torch.compile at seq 2048 (anchor: ~1.13M
tokens/s per H100 at 786,432 tokens/step).

    python -m bench.train [--quick] [--gpu-only]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from golf.config import CPU_PRESET, Config  # noqa: E402
from golf.model import GPT, count_parameters  # noqa: E402
from golf.optim import build_optimizers  # noqa: E402


def time_steps(cfg: Config, batch: int, seq: int, steps: int, device: str, compile_: bool = False) -> dict:
    """Median ms of full optimizer steps (fwd+bwd+Muon/Adam) on random tokens."""
    torch.manual_seed(0)
    base = GPT(cfg).to(device)
    opts = build_optimizers(base, cfg)
    model = torch.compile(base) if compile_ else base
    cuda = device.startswith("cuda")
    ac = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    x = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)
    times = []
    for i in range(steps + (3 if compile_ else 1)):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        with ac:
            loss = model(x, x)
        loss.backward()
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - t))
    warm = 3 if compile_ else 1
    ms = sorted(times[warm:])[len(times[warm:]) // 2]
    return {"params": count_parameters(base), "batch": batch, "seq_len": seq, "step_ms": round(ms, 2),
            "tokens_per_s": round(batch * seq / ms * 1000, 1)}


def run(quick: bool = False, gpu_only: bool = False) -> dict:
    prev = torch.get_num_threads()
    torch.set_num_threads(1)  # shared CPUs: 1 thread avoids OpenMP spin-wait collapse
    try:
        return _run(quick, gpu_only)
    finally:
        torch.set_num_threads(prev)


def _run(quick: bool, gpu_only: bool = False) -> dict:
    out: dict = {"threads": 1}
    if not gpu_only:
        cpu_cfg = Config().replace(**{k: v for k, v in CPU_PRESET.items() if k in
                                      ("num_layers", "model_dim", "num_heads", "num_kv_heads")})
        out["cpu_preset"] = time_steps(cpu_cfg, 4 if quick else 8, 256, 3 if quick else 8, "cpu")
        out["cpu_11l_2x256"] = time_steps(Config(), 2, 256, 1 if quick else 4, "cpu")
    if torch.cuda.is_available():
        cfg = Config()
        out["gpu_name"] = torch.cuda.get_device_name(0)
        # one micro-batch of the 8-GPU config (48 x 2048 = 786,432 / 8 tokens) per step
        out["gpu_11l_seq2048_compile"] = time_steps(cfg, 48, 2048, 5 if quick else 20, "cuda", compile_=True)
        out["gpu_11l_seq2048_eager"] = time_steps(cfg, 48, 2048, 5 if quick else 10, "cuda")
        out["anchor_tokens_per_s_per_gpu"] = 786_432 / 0.085 / 8
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--gpu-only", action="store_true", help="skip the CPU figures")
    args = ap.parse_args()
    res = run(args.quick, args.gpu_only)
    print(json.dumps(res, indent=2))
    for k, v in res.items():
        if isinstance(v, dict):
            print(f"{k:28s} step_ms={v['step_ms']:>10} tok/s={v['tokens_per_s']:>12} params={v['params']}")


if __name__ == "__main__":
    main()
