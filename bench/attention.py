"""Attention kernels at the 11L shapes on CUDA: which fused SDPA backends accept GQA, and
forward+backward time of each path the model can take.

    python -m bench.attention            # needs a GPU; prints JSON and a short table

Paths: sdpa_gqa (enable_gqa=True, heads not repeated), sdpa_repeat (KV heads repeated first:
what golf/model/gpt.py does on CUDA, faster under torch.compile), each pinned to one backend (flash, cudnn,
efficient) to see which accept it, and FA3 when flash_attn_interface imports.
"""
from __future__ import annotations

import json

import torch
import torch.nn.functional as F


def _time(fn, reps: int = 20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def run(batch: int = 48, seq: int = 2048, heads: int = 8, kv_heads: int = 4, dim: int = 64) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(batch, heads, seq, dim, device=dev, dtype=torch.bfloat16, generator=g, requires_grad=True)
    k = torch.randn(batch, kv_heads, seq, dim, device=dev, dtype=torch.bfloat16, generator=g, requires_grad=True)
    v = torch.randn(batch, kv_heads, seq, dim, device=dev, dtype=torch.bfloat16, generator=g, requires_grad=True)
    rep = heads // kv_heads
    ref = F.scaled_dot_product_attention(q.float(), k.float().repeat_interleave(rep, 1),
                                         v.float().repeat_interleave(rep, 1), is_causal=True)

    def gqa():
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    def repeat():
        return F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1),
                                              is_causal=True)

    out: dict = {"shape": {"batch": batch, "seq": seq, "heads": heads, "kv_heads": kv_heads, "dim": dim},
                 "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "paths": {}}
    backends = {"default": None, "flash": SDPBackend.FLASH_ATTENTION,
                "cudnn": SDPBackend.CUDNN_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION}
    for pname, fn in (("sdpa_gqa", gqa), ("sdpa_repeat", repeat)):
        for bname, be in backends.items():
            key = f"{pname}/{bname}"

            def fwd_bwd(fn=fn):
                y = fn()
                y.float().square().mean().backward()
            try:
                if be is None:
                    with torch.no_grad():
                        err = float((fn().float() - ref).norm() / ref.norm())
                    out["paths"][key] = {"ms_fwd_bwd": round(_time(fwd_bwd), 3), "rel_err": err}
                else:
                    with sdpa_kernel([be]):
                        with torch.no_grad():
                            err = float((fn().float() - ref).norm() / ref.norm())
                        out["paths"][key] = {"ms_fwd_bwd": round(_time(fwd_bwd), 3), "rel_err": err}
            except RuntimeError as exc:
                out["paths"][key] = {"error": str(exc).splitlines()[0][:160]}
    try:
        from flash_attn_interface import flash_attn_func  # type: ignore
        qt, kt, vt = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))

        def fa3():
            y = flash_attn_func(qt, kt, vt, causal=True)
            y = y[0] if isinstance(y, tuple) else y
            y.float().square().mean().backward()
        out["paths"]["fa3"] = {"ms_fwd_bwd": round(_time(fa3), 3)}
    except ImportError:
        out["paths"]["fa3"] = {"error": "flash_attn_interface not installed"}
    return out


def main() -> int:
    if not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device"}))
        return 0
    res = run()
    for k, v in res["paths"].items():
        print(f"{k:<24} " + (f"{v['ms_fwd_bwd']:.3f} ms" if "ms_fwd_bwd" in v else v["error"]))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
