"""Training throughput: CPU tokens/s (CPU preset model, sharded vs plain Muon), full 11L step
time at a tiny batch on CPU, and on CUDA each stack's compiled step at the records' 786,432
tokens/step (8 micro-batches of 48 x 2048 on one GPU) with tokens/s per GPU against the
records' ~1.13M (R29: 87 ms/step on 8xH100), sharded vs plain Muon at world size 1, compile
time and peak memory.

    python -m bench.train [--quick] [--gpu-only] [--stacks r29,p1125]
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

from golf.run.config import CPU_PRESET, Config  # noqa: E402
from golf.model.gpt import GPT, count_parameters  # noqa: E402
from golf.train.optim import build_optimizers  # noqa: E402
from golf.train.step import StepPlan, Stepper  # noqa: E402


def time_steps(cfg: Config, batch: int, seq: int, steps: int, device: str, compile_: bool = False,
               *, accum: int = 1, sharded: bool = True) -> dict:
    """Median ms of full optimizer steps (accum x fwd+bwd, then golf.train.step.Stepper: reduce,
    clip, Muon in its sharded or plain form, AdamW) on random tokens; compile time is the
    first step's excess over the median, peak memory the allocator's high-water mark."""
    torch.manual_seed(0)
    base = GPT(cfg).to(device)
    opts = build_optimizers(base, cfg)
    model = torch.compile(base) if compile_ else base
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    ac = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    stepper = Stepper(base, opts, StepPlan(accum=accum, clip_norm=cfg.grad_clip_norm,
                                           sharded=sharded, reduce_bf16=True))
    x = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)

    def fwd(a, b):
        with ac:
            return model(a, b)
    times = []
    for _ in range(steps + (3 if compile_ else 1)):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        stepper.accumulate(fwd, [(x, x)] * accum)
        stepper.step()
        stepper.zero()
        if cuda:
            torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - t))
    warm = 3 if compile_ else 1
    ms = sorted(times[warm:])[len(times[warm:]) // 2]
    out = {"params": count_parameters(base), "batch": batch, "seq_len": seq, "accum": accum,
           "muon": "sharded" if sharded else "plain", "step_ms": round(ms, 2),
           "tokens_per_s": round(batch * seq * accum / ms * 1000, 1),
           "first_step_s": round(times[0] / 1000, 2)}
    if cuda:
        out["peak_mem_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return out


def run(quick: bool = False, gpu_only: bool = False, stacks: tuple[str, ...] = ("r29", "p1125")) -> dict:
    prev = torch.get_num_threads()
    torch.set_num_threads(1)  # shared CPUs: 1 thread avoids OpenMP spin-wait collapse
    try:
        return _run(quick, gpu_only, stacks)
    finally:
        torch.set_num_threads(prev)


def stack_config(preset: str) -> Config:
    """The named stack's model and optimizer (PRESET=...), as the main job would build it."""
    return Config.from_env({"PRESET": preset})


def _run(quick: bool, gpu_only: bool = False, stacks: tuple[str, ...] = ("r29", "p1125")) -> dict:
    out: dict = {"threads": 1}
    if not gpu_only:
        cpu_cfg = Config().replace(**{k: v for k, v in CPU_PRESET.items() if k in
                                      ("num_layers", "model_dim", "num_heads", "num_kv_heads")})
        n = 3 if quick else 8
        out["cpu_preset"] = time_steps(cpu_cfg, 4 if quick else 8, 256, n, "cpu")
        out["cpu_preset_plain_muon"] = time_steps(cpu_cfg, 4 if quick else 8, 256, n, "cpu", sharded=False)
        out["cpu_11l_2x256"] = time_steps(Config(), 2, 256, 1 if quick else 4, "cpu")
    if torch.cuda.is_available():
        out["gpu_name"] = torch.cuda.get_device_name(0)
        n = 3 if quick else 10
        for stack in stacks:
            cfg = stack_config(stack)
            # the 8-GPU global batch on one GPU: 8 micro-batches of 48 x 2048 = 786,432 tokens
            out[f"gpu_{stack}_786k_compile"] = time_steps(cfg, 48, 2048, n, "cuda", compile_=True, accum=8)
            torch.cuda.empty_cache()
        cfg = stack_config(stacks[0])
        out[f"gpu_{stacks[0]}_786k_compile_plain_muon"] = time_steps(cfg, 48, 2048, n, "cuda", compile_=True,
                                                                    accum=8, sharded=False)
        out["anchor_tokens_per_s_per_gpu"] = round(786_432 / 0.087 / 8)   # R29: 87 ms/step on 8xH100
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--gpu-only", action="store_true", help="skip the CPU figures")
    ap.add_argument("--stacks", default="r29,p1125", help="PRESET names timed on the GPU")
    args = ap.parse_args()
    res = run(args.quick, args.gpu_only, tuple(args.stacks.split(",")))
    print(json.dumps(res, indent=2))
    for k, v in res.items():
        if isinstance(v, dict):
            print(f"{k:36s} step_ms={v['step_ms']:>10} tok/s={v['tokens_per_s']:>12} params={v['params']}"
                  f" muon={v['muon']} first_step_s={v['first_step_s']} peak_mib={v.get('peak_mem_mib', '-')}")


if __name__ == "__main__":
    main()
