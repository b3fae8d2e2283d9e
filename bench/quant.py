"""Quantization benchmarks on random Gaussian matrices with the 11-layer shapes.

    python -m bench.quant            # full: 11 layers (several minutes on 2 CPU cores)
    python -m bench.quant --quick    # 1 layer (about 60 s), GPTQ time extrapolated to 11 layers

Prints a short table and JSON. Figures:
  codes     int6 SDClip (k=12.85) codes: bits/param per compressor vs order-0 entropy
            (target: best within 3 % of entropy)
  gptq      GPTQ solve time for every 11L matrix, H from correlated activations (target < 120 s)
  fit       the default 11L model (26.5M params, row std ~ U(0.02, 0.05)) fitted to
            16,000,000 - 60,000 bytes (must fit) vs the baseline int8+zlib size (must not fit)
  fit.at_int8_bytes  the fitter at exactly the int8+zlib size: Hessian-weighted error vs int8's
Quality targets (GPTQ gap vs RTN gap, fitter vs int8+zlib at equal bytes, in val_bpb) need a
trained model:  python -m bench.quant --checkpoint runs/ID/ema.pt --data DIR --tokenizer MODEL
(`run_on_checkpoint`, written against the golf contracts).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import quant
from golf.main import quant_policy
from golf.run.checkpoint import load_torch_file
from golf.run.rules import CAP_BYTES
from quant.codec import compress
from quant.gptq import gptq_quantize
from quant.scalar import clip_step, order0_entropy, qmax_for, round_scale, rtn_codes

DIM, KV_DIM, HIDDEN, VOCAB = 512, 256, 1536, 1024
DEFAULT_BUDGET = CAP_BYTES - 60_000


def layer_shapes(i: int) -> dict[str, tuple[int, int]]:
    p = f"blocks.{i}."
    return {p + "attn.c_q.weight": (DIM, DIM), p + "attn.c_k.weight": (KV_DIM, DIM),
            p + "attn.c_v.weight": (KV_DIM, DIM), p + "attn.proj.weight": (DIM, DIM),
            p + "mlp.fc.weight": (HIDDEN, DIM), p + "mlp.proj.weight": (DIM, HIDDEN)}


def random_state_dict(layers: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """11L-shaped weights, row std lognormal around a per-tensor std in [0.02, 0.05]."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {"tok_emb.weight": torch.randn(VOCAB, DIM, generator=g) * 0.05}
    for i in range(layers):
        for name, shape in layer_shapes(i).items():
            std = 0.02 + 0.03 * float(torch.rand(1, generator=g))
            rows = torch.exp(0.3 * torch.randn(shape[0], 1, generator=g))
            sd[name] = torch.randn(*shape, generator=g) * std * rows
        p = f"blocks.{i}."
        sd[p + "attn_scale"] = torch.ones(DIM)
        sd[p + "mlp_scale"] = torch.ones(DIM)
        sd[p + "resid_mix"] = torch.stack([torch.ones(DIM), torch.zeros(DIM)])
        sd[p + "attn.q_gain"] = torch.full((8,), 4.0)
    sd["skip_weights"] = torch.ones(layers // 2, DIM)
    return sd


def random_hessian(cols: int, seed: int, n: int = 4096) -> torch.Tensor:
    """X^T X / n for correlated, anisotropic activations (a few strong directions)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / cols ** 0.5 + torch.eye(cols)
    x = (torch.randn(n, cols, generator=g) * torch.exp(torch.randn(cols, generator=g))) @ mix
    return x.T @ x / n


def bench_codes(sd: dict[str, torch.Tensor]) -> dict:
    """int6 SDClip codes of every matrix: summed compressed bytes per codec vs entropy, and the
    artifact's joint rANS stream (all tensors in one stream, one table each)."""
    sizes = {c: 0 for c in ("zstd", "brotli", "lzma", "zlib")}
    ent_bits, n = 0.0, 0
    groups: dict[str, list[bytes]] = {}
    t0 = time.perf_counter()
    for name, w in sd.items():
        if w.ndim != 2 or w.numel() <= 65_536:
            continue
        step = round_scale(clip_step(w.float(), 6, "std", 12.85))
        codes = rtn_codes(w.float(), step, qmax_for(6))
        raw = codes.numpy().tobytes()
        groups.setdefault(name.split(".", 2)[-1], []).append(raw)
        ent_bits += order0_entropy(codes) * codes.numel()
        n += codes.numel()
        for c in sizes:
            sizes[c] += len(compress(raw, c))
    from quant.rans import encode
    all_parts = [raw for parts in groups.values() for raw in parts]
    sizes["rans_joint"] = len(encode(b"".join(all_parts), [len(r) for r in all_parts]))
    out = {"params": n, "entropy_bits_per_param": round(ent_bits / n, 4), "codecs": {}}
    for c, b in sizes.items():
        out["codecs"][c] = {"bits_per_param": round(b * 8 / n, 4),
                            "overhead_vs_entropy_pct": round(100 * (b * 8 / ent_bits - 1), 2)}
    grouped = sum(len(compress(b"".join(parts), "brotli")) for parts in groups.values())
    out["brotli_grouped_by_role"] = {"bits_per_param": round(grouped * 8 / n, 4),
                                     "saving_vs_per_tensor_bytes": sizes["brotli"] - grouped}
    best = min(sizes, key=sizes.get)
    out["best"] = best
    out["best_overhead_pct"] = out["codecs"][best]["overhead_vs_entropy_pct"]
    out["target_pct"] = 3.0
    out["ok"] = out["best_overhead_pct"] <= 3.0
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def hessians_for(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    by_cols: dict[int, torch.Tensor] = {}
    hs = {}
    for name, w in sd.items():
        if w.ndim == 2 and w.numel() > 65_536:
            cols = w.shape[1]
            if cols not in by_cols:
                by_cols[cols] = random_hessian(cols, cols)
            hs[name] = by_cols[cols]
    return hs


def bench_gptq(sd: dict[str, torch.Tensor], hs: dict[str, torch.Tensor], layers: int,
               device: str = "cpu") -> dict:
    if device != "cpu":  # warm up kernels, then time
        gptq_quantize(torch.randn(64, 512, device=device), torch.eye(512), torch.ones(64), 31)
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    n = 0
    for name, h in hs.items():
        w = sd[name].float().to(device)
        bits = 7 if "tok_emb" in name else 6
        step = round_scale(clip_step(w.cpu(), bits, "std", 13.0))
        gptq_quantize(w, h, step, qmax_for(bits))
        n += 1
    dt = time.perf_counter() - t0
    per_layer = dt / max(layers, 1)
    est = dt if layers == 11 else dt + per_layer * (11 - layers)
    target = 120 if device == "cpu" else 15
    return {"device": device, "matrices": n, "layers": layers, "seconds": round(dt, 2),
            "seconds_11L_estimate": round(est, 2), "target_seconds": target,
            "ok": est < target, "threads": torch.get_num_threads()}


def mean_error(q) -> float:
    """Parameter-weighted mean of the per-tensor relative (Hessian-weighted) errors."""
    rows = [r for r in q.report if r["kind"] == "quant"]
    n = sum(r["params"] for r in rows)
    return sum(r["weighted_error"] * r["params"] for r in rows) / max(n, 1)


def _weighted(sd, deq, hs) -> float:
    from quant.scalar import hessian_error
    tot, n = 0.0, 0
    for name, h in hs.items():
        tot += hessian_error(sd[name].float(), deq[name].float().reshape(sd[name].shape), h) * sd[name].numel()
        n += sd[name].numel()
    return tot / max(n, 1)


def bench_fit(sd: dict[str, torch.Tensor], hs: dict[str, torch.Tensor], budget: int,
              method: str = "gptq") -> dict:
    t0 = time.perf_counter()
    base = len(quant.baseline_int8_zlib_blob(sd))
    t_base = time.perf_counter() - t0
    logs: list[str] = []
    t1 = time.perf_counter()
    q = quant.quantize_model(sd, hessians=hs, method=method, fit=quant.BudgetFit(budget),
                             run=quant.QuantRun(log=logs.append))
    dt = time.perf_counter() - t1
    werr = mean_error(q)
    # the baseline's 1/127 scale floor makes small weights cheap; a trained model's rows reach
    # |w| > 1 (the baseline log shows ~7.4 bits/param), so also size it with rows scaled x10
    base_x10 = len(quant.baseline_int8_zlib_blob({k: v * 10 if v.numel() > 65_536 else v
                                                  for k, v in sd.items()}))
    # equal bytes: fit to the baseline's size and compare Hessian-weighted errors
    q_eq = quant.quantize_model(sd, hessians=hs, method=method, fit=quant.BudgetFit(base))
    q8 = quant.quantize_model(sd, method="int8")
    s8 = q8.state_dict()
    err8 = _weighted(sd, s8, hs)
    return {"at_int8_bytes": {"bytes": q_eq.total_bytes, "int8_bytes": base,
                              "fit_weighted_rel_error": round(mean_error(q_eq), 7),
                              "int8_weighted_rel_error": round(err8, 7),
                              "fit_better": mean_error(q_eq) < err8},
            "baseline_int8_zlib_bytes_rows_x10": base_x10,
            "baseline_x10_fits": base_x10 <= budget,
            "params": sum(int(t.numel()) for t in sd.values()), "budget_bytes": budget,
            "artifact_bytes": q.total_bytes, "under_budget": budget - q.total_bytes,
            "fits": q.total_bytes <= budget, "within_10k": 0 <= budget - q.total_bytes <= 10_000,
            "baseline_int8_zlib_bytes": base, "baseline_fits": base <= budget,
            "mean_weighted_rel_error": round(werr, 6), "fit_seconds": round(dt, 1),
            "baseline_seconds": round(t_base, 1), "method": method,
            "fit_rounds": sum(1 for m in logs if m.startswith("quant:fit round"))}


def run(quick: bool = False) -> dict:
    """All figures; quick = 1 layer (budget scaled by parameter count)."""
    torch.manual_seed(0)
    layers = 1 if quick else 11
    sd = random_state_dict(layers)
    hs = hessians_for(sd)
    out = {"layers": layers, "codes": bench_codes(sd), "gptq": bench_gptq(sd, hs, layers)}
    if torch.cuda.is_available():
        out["gptq_cuda"] = bench_gptq(sd, hs, layers, "cuda")
    if quick:
        full = 26_476_544
        n = sum(int(t.numel()) for t in sd.values())
        out["fit"] = bench_fit(sd, hs, int(DEFAULT_BUDGET * n / full))
        out["fit"]["note"] = "1-layer model, budget scaled by params (full mode runs the 11L model)"
    else:
        out["fit"] = bench_fit(sd, hs, DEFAULT_BUDGET)
    return out


def run_on_checkpoint(ckpt_path: str, data_path: str, tokenizer_path: str, *,
                      max_tokens: int = 262_144, calib_batches: int = 8,
                      device: str | None = None, code_bytes: int | None = None) -> dict:
    """Quality targets on a trained checkpoint ({"config", "state_dict"} as training writes):
    val_bpb pre-quant, after RTN and GPTQ at the policy's bit widths (gap ratio target <= 0.6),
    after int8+zlib vs the fitter at the same byte count, and whether int8+zlib fits the cap
    beside the shipped code at all. Runs the model, calibration and GPTQ on `device` (CUDA
    when present). Written against the golf contracts (GPT, DistributedTokenLoader,
    load_val_tokens, build_byte_lut, evaluate_bpb)."""
    import tempfile
    from golf.eval.bpb import build_byte_lut
    from golf.run.config import Config
    from golf.data.loader import DistributedTokenLoader
    from golf.data.shards import load_val_tokens
    from golf.eval.score import Scoring, evaluate_bpb
    from golf.model.gpt import GPT

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    ck = load_torch_file(ckpt_path, "pass a model.pt / ema.pt train_gpt.py wrote", keys=("config", "state_dict"))
    state = {k: v.float() for k, v in ck["state_dict"].items()}
    cfg = Config.from_dict(ck["config"]).replace(data_path=data_path, tokenizer_path=tokenizer_path)
    model = GPT(cfg)
    model.load_state_dict(state)
    model.eval()
    loader = DistributedTokenLoader(data_path, rank=0, world_size=1, seed=cfg.seed,
                                    vocab_size=cfg.vocab_size)
    accum = max(1, cfg.train_batch_tokens // (32 * cfg.train_seq_len))  # <= 32 sequences a batch
    batches = [loader.next_batch(cfg.train_batch_tokens, cfg.train_seq_len, accum)[0]
               for _ in range(calib_batches)]
    t0 = time.perf_counter()
    hs = quant.collect_hessians(model.to(device), [b.to(device) for b in batches])
    t_calib = time.perf_counter() - t0
    model.cpu()
    tokens = load_val_tokens(data_path, cfg.vocab_size)
    lut = build_byte_lut(tokenizer_path, cfg.vocab_size)
    seq = cfg.effective_eval_seq_len

    def bpb(sd: dict | None) -> float:
        m = GPT(cfg)
        m.load_state_dict(sd if sd is not None else state)
        m.to(device).eval()
        return float(evaluate_bpb(m, tokens, lut, Scoring(seq, device=device),
                                  max_tokens=max_tokens).val_bpb)

    def via_file(q) -> dict:
        with tempfile.TemporaryDirectory() as d:
            path = f"{d}/m.gkq"
            quant.save_artifact(path, q)
            return quant.load_artifact(path)[0]

    # the run's own passthrough threshold (QUANT_SMALL_NUMEL), so small models quantize their blocks
    policy = quant_policy(cfg, model, "gptq")
    pre = bpb(None)
    res: dict = {"pre_bpb": pre, "max_tokens": max_tokens, "small_numel": cfg.quant_small_numel,
                 "device": device, "calib_tokens": sum(b.numel() for b in batches),
                 "calib_seconds": round(t_calib, 2), "params": sum(v.numel() for v in state.values())}
    for method in ("rtn", "gptq"):
        t0 = time.perf_counter()
        q = quant.quantize_model(model, hessians=hs, method=method, policy=policy,
                                 run=quant.QuantRun(device=device))
        res[method] = {"bytes": q.total_bytes, "seconds": round(time.perf_counter() - t0, 2),
                       "bpb": bpb(via_file(q))}
        res[method]["gap"] = res[method]["bpb"] - pre
    res["gptq_gap_over_rtn_gap"] = res["gptq"]["gap"] / max(res["rtn"]["gap"], 1e-12)
    base_bytes = len(quant.baseline_int8_zlib_blob(model.state_dict()))
    if code_bytes is None:
        from golf.submission import code_bytes as shipped
        code_bytes = shipped()
    res["int8_zlib"] = {"bytes": base_bytes, "code_bytes": code_bytes,
                        "fits_16MB": base_bytes + code_bytes <= CAP_BYTES,
                        "bits_per_param": round(8 * base_bytes / res["params"], 3)}
    q8 = quant.quantize_model(model, method="int8", policy=quant_policy(cfg, model, "int8"))
    t0 = time.perf_counter()
    qfit = quant.quantize_model(model, hessians=hs, method="gptq", policy=policy,
                                fit=quant.BudgetFit(base_bytes), run=quant.QuantRun(device=device))
    res["equal_bytes"] = {"int8_zlib_bytes": base_bytes, "int8_bpb": bpb(via_file(q8)),
                          "fit_bytes": qfit.total_bytes, "fit_bpb": bpb(via_file(qfit)),
                          "fit_seconds": round(time.perf_counter() - t0, 1)}
    res["equal_bytes"]["fit_better"] = res["equal_bytes"]["fit_bpb"] < res["equal_bytes"]["int8_bpb"]
    return res


def compare_coders(ckpt_path: str, data_path: str, *, calib_seqs: int = 32,
                   budget: int | None = None) -> dict:
    """The artifact with and without the joint rANS code stream on a trained checkpoint: RTN
    at the policy steps (same codes, so only the coder differs), then GPTQ fitted to the
    default budget (what the freed bytes buy: mean Hessian-weighted relative error)."""
    from dataclasses import replace
    from golf.run.config import Config
    from golf.data.loader import DistributedTokenLoader
    from golf.model.gpt import GPT
    ck = load_torch_file(ckpt_path, "pass a model.pt / ema.pt train_gpt.py wrote", keys=("config", "state_dict"))
    sd = {k: v.float() for k, v in ck["state_dict"].items()}
    cfg = Config.from_dict(ck["config"])
    model = GPT(cfg)
    model.load_state_dict(sd)
    model.eval()
    loader = DistributedTokenLoader(data_path, rank=0, world_size=1, seed=cfg.seed,
                                    vocab_size=cfg.vocab_size)
    per = 8 * cfg.train_seq_len
    hs = quant.collect_hessians(model, [loader.next_batch(per, cfg.train_seq_len, 1)[0]
                                        for _ in range(max(1, calib_seqs // 8))])
    if budget is None:
        from golf.submission import code_bytes
        budget = CAP_BYTES - code_bytes() - 2_000
    out: dict = {"budget_bytes": budget, "calib_tokens": max(1, calib_seqs // 8) * per}
    general = ("zstd", "brotli", "lzma", "zlib")
    for label, comps in (("best_of_4", general), ("with_rans", general + ("rans",))):
        pol = replace(quant_policy(cfg, model, "gptq"), compressors=comps)
        t0 = time.perf_counter()
        q = quant.quantize_model(sd, method="rtn", policy=pol)
        out[label] = {"rtn_bytes": q.total_bytes, "rtn_seconds": round(time.perf_counter() - t0, 1)}
        logs: list[str] = []
        t0 = time.perf_counter()
        qf = quant.quantize_model(sd, hessians=hs, method="gptq", policy=pol,
                                  fit=quant.BudgetFit(budget), run=quant.QuantRun(log=logs.append))
        out[label].update(fit_bytes=qf.total_bytes, fit_error=mean_error(qf),
                          fit_builds=sum(1 for m in logs if m.startswith("quant:fit round")),
                          fit_seconds=round(time.perf_counter() - t0, 1))
    out["rtn_saving_bytes"] = out["best_of_4"]["rtn_bytes"] - out["with_rans"]["rtn_bytes"]
    base_err = out["best_of_4"]["fit_error"]
    out["fit_error_change_pct"] = (round(100 * (out["with_rans"]["fit_error"] / base_err - 1), 2)
                                   if base_err > 0 else None)
    return out


def _table(res: dict) -> str:
    c, g, f = res["codes"], res["gptq"], res["fit"]
    lines = [f"codes int6 SDClip k=12.85: H={c['entropy_bits_per_param']} bits/param"]
    for name, v in c["codecs"].items():
        lines.append(f"  {name:<7} {v['bits_per_param']:.4f} bits/param  +{v['overhead_vs_entropy_pct']:.2f}%")
    lines.append(f"gptq {g['matrices']} matrices ({g['layers']}L): {g['seconds']} s; 11L estimate "
                 f"{g['seconds_11L_estimate']} s (target < 120)")
    lines.append(f"fit budget {f['budget_bytes']:,}: artifact {f['artifact_bytes']:,} "
                 f"(under by {f['under_budget']:,}); int8+zlib {f['baseline_int8_zlib_bytes']:,} "
                 f"fits={f['baseline_fits']} (rows x10: {f['baseline_int8_zlib_bytes_rows_x10']:,} "
                 f"fits={f['baseline_x10_fits']}); {f['fit_seconds']} s")
    e = f["at_int8_bytes"]
    lines.append(f"at int8+zlib bytes ({e['int8_bytes']:,}): fitted H-weighted rel. error "
                 f"{e['fit_weighted_rel_error']:.3g} vs int8 {e['int8_weighted_rel_error']:.3g}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--checkpoint", help="ema.pt of a trained run: measure the quality targets")
    ap.add_argument("--data", help="dataset folder (with --checkpoint)")
    ap.add_argument("--tokenizer", help="tokenizer .model (with --checkpoint)")
    ap.add_argument("--max-tokens", type=int, default=262_144)
    ap.add_argument("--calib-batches", type=int, default=8)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    ap.add_argument("--gptq-only", action="store_true", help="only time GPTQ of the 11L matrices")
    ap.add_argument("--budget-bytes", type=int, default=None,
                    help="with --coders: model byte budget (default 16,000,000 - code - 2,000)")
    ap.add_argument("--coders", action="store_true",
                    help="with --checkpoint/--data: artifact bytes and fitted error with and without rANS")
    args = ap.parse_args(argv)
    if args.coders:
        print(json.dumps(compare_coders(args.checkpoint, args.data, budget=args.budget_bytes), indent=2))
        return 0
    if args.gptq_only:
        sd = random_state_dict(11)
        hs = hessians_for(sd)
        dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        print(json.dumps(bench_gptq(sd, hs, 11, dev), indent=2))
        return 0
    if args.checkpoint:
        print(json.dumps(run_on_checkpoint(args.checkpoint, args.data, args.tokenizer,
                                           max_tokens=args.max_tokens, calib_batches=args.calib_batches,
                                           device=args.device), indent=2))
        return 0
    res = run(quick=args.quick)
    print(_table(res))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
