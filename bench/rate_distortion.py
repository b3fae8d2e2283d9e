"""Rate–distortion of the quantizers on one trained checkpoint: val_bpb gap against artifact bytes.

    python -m bench.rate_distortion --checkpoint runs/ID/ema.pt --data DIR --tokenizer MODEL \
        [--budgets 7] [--max-eval-tokens 16384] [--lqer-ranks 2,4] [--lines fitter,lqer,diagh]
        [--out bench/results/rate_distortion]

Points: int8 (the challenge baseline's per-row int8 codes, on every tensor above the run's
QUANT_SMALL_NUMEL, in golfkit's container under the fitter's coders), record_1060 and
record_1855 (quant/records.py; their size is set by their k, so one point each), and golfkit's
fitter at `--budgets` byte budgets from the larger record's size down to 40 % of the smaller
one (plus exactly each record's size, for equal-bytes comparisons): the default fitter (Fisher
error weights, QUANT_FISHER=1), the same with LQER rungs, the fitter with diag(H)-weighted
error as before QUANT_FISHER, and the default fitter with fp16 row scales (QUANT_SCALES=fp16;
every point records its scale bytes and those of the same values as fp16) (`--lines` picks among them; `--error-norm` adds the latter with
QUANT_ERROR_NORM; `--merge` adds the lines of an earlier run on the same checkpoint).
Every artifact goes through a file round trip and is scored on the same first MAX_EVAL_TOKENS
validation tokens (chunked, the run's eval length) as the full-precision checkpoint; the gap is
post - pre, and predicted_gap is the Fisher prediction sum Omega*(W - W_hat)^2 in bpb.
Hessians and error weights: the run's hessians.pt (training batches) when it sits beside the
checkpoint and holds them, else collected here from training batches. Writes <out>.json and
<out>.png (bytes on x, gap on y, one line per method) and prints a table; also says whether
each fitter line is monotonic (a larger budget never gives a larger gap) and lists the
exceptions.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import quant
from golf.run import rundir
from quant.artifact import build_artifact, logical_streams


def load_run(ckpt_path: str, data_path: str, calib_batches: int = 8, fresh_weights: bool = False,
             calib_data: str | None = None):
    """(cfg, model, float state, hessians, Fisher error weights) for a training checkpoint;
    fresh_weights recollects the error weights with today's rule even when hessians.pt has
    some (a run's saved weights keep the rule of the commit that trained it). calib_data (a
    dataset folder) collects both from its training split instead of the run's data: text the
    model never trained on, as a 10-minute run's calibration batches are (never val)."""
    from golf.run.checkpoint import load_torch_file
    from golf.run.config import Config
    ck = load_torch_file(ckpt_path, "pass runs/<ID>/ema.pt", keys=("config", "state_dict"))
    state = {k: v.float() if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
    cfg = Config.from_dict(ck["config"])
    model = model_from(cfg, state)
    hpath = Path(ckpt_path).with_name(rundir.HESSIANS)
    saved = (load_torch_file(hpath, "delete it to recollect", keys=("hessians",))
             if hpath.is_file() else {})
    hs, om = saved.get("hessians"), None if fresh_weights else saved.get("error_weights")
    if calib_data:
        hs = om = None
    if hs is None or om is None:
        pairs = calibration_pairs(cfg, calib_data or data_path, calib_batches)
        hs = hs if hs is not None else quant.collect_hessians(model, [x for x, _ in pairs])
        om = om if om is not None else quant.collect_error_weights(model, pairs)
    return cfg, model, state, hs, om


def model_from(cfg: Any, state: dict) -> torch.nn.Module:
    """The GPT of `cfg` with `state` loaded, in eval mode (what every scored point runs)."""
    from golf.model.gpt import GPT
    m = GPT(cfg)
    m.load_state_dict(state)
    return m.eval()


def calibration_pairs(cfg: Any, data_path: str, n: int) -> list:
    """The first n (inputs, targets) training batches (never val), as the run would have read
    them for its calibration."""
    from golf.data.loader import DistributedTokenLoader
    loader = DistributedTokenLoader(data_path, rank=0, world_size=1, seed=cfg.seed,
                                    vocab_size=cfg.vocab_size)
    return [loader.next_batch(cfg.train_batch_tokens, cfg.train_seq_len, 1) for _ in range(n)]


def file_round_trip(q: quant.QuantizedModel) -> dict:
    """q's state dict as a reader gets it: written to an artifact file and loaded back (what
    every benchmark point scores, so a coder's round trip is part of the measurement)."""
    with tempfile.TemporaryDirectory() as d:
        quant.save_artifact(f"{d}/m.gkq", q)
        sd, _ = quant.load_artifact(f"{d}/m.gkq")
    return sd


def predicted_nats(state: dict, deq: dict, om: dict) -> float:
    """The Fisher prediction of the loss increase (nats per token) of replacing `state` by the
    dequantized `deq`: sum over weights of Omega * (W - W_hat)^2 (quant.collect_error_weights)."""
    return float(sum((om[n].double() * (state[n].double() - deq[n].double()) ** 2).sum()
                     for n in om if n in deq and n in state))


def budget_grid(record_sizes: list[int], n: int) -> list[int]:
    """n budgets geometric from max(record sizes) down to 0.4 x min, plus each record's size."""
    top, bottom = max(record_sizes), 0.4 * min(record_sizes)
    grid = np.geomspace(bottom, top, n).round().astype(int).tolist()
    return sorted(set(grid) | set(record_sizes))


def monotonic_exceptions(points: list[dict]) -> list[dict]:
    """Adjacent pairs (by bytes) where more bytes gave a larger gap."""
    pts = sorted(points, key=lambda p: p["bytes"])
    return [{"smaller": a["bytes"], "gap_smaller": a["gap"], "larger": b["bytes"],
             "gap_larger": b["gap"]} for a, b in zip(pts, pts[1:]) if b["gap"] > a["gap"]]


def scale_bytes(q) -> dict:
    """Bytes the row scales take in q's artifact, and what the same scale values would take
    as fp16 under the best codec (the artifact rebuilt with the log layout left out)."""
    now = sum(r.get("scale_bytes", 0.0) for r in q.report)
    held = sorted({s["name"] for s in q.streams for p in s.get("parts", [])
                   if p["name"].startswith("rowscales/")})
    if not any(qt.scale_codes is not None for qt in q.tensors):
        return {"scale_bytes": round(now), "scale_bytes_fp16": round(now), "scale_streams": held}
    plain = [replace(qt, scale_codes=None) if qt.kind == "quant" else qt for qt in q.tensors]
    _blob, streams = build_artifact(plain, q.meta, q.policy.compressors, None,
                                    q.policy.shuffle_fp16)
    fp16 = sum(st["length"] for n, st in logical_streams(streams).items()
               if n.startswith("rowscales/"))
    return {"scale_bytes": round(now), "scale_bytes_fp16": round(fp16), "scale_streams": held,
            "bytes_if_fp16_layout": len(_blob)}


def run(args: argparse.Namespace) -> dict:
    from golf.run.config import lqer_ranks
    from golf.eval.score import Scoring, evaluate_bpb, load_eval_data
    from golf.main import quant_policy
    from golf.model.gpt import GPT
    cfg, model, state, hs, om = load_run(args.checkpoint, args.data, args.calib_batches)
    data = load_eval_data(args.data, args.tokenizer, cfg.vocab_size,
                          max_tokens=args.max_eval_tokens, log=None)
    params = sum(p.numel() for p in model.parameters())
    policy = quant_policy(cfg, model, "gptq")
    if args.codecs:  # the records keep their own coder (record_policy)
        policy = replace(policy, compressors=tuple(args.codecs.split(",")))

    def score(sd: dict):
        m = GPT(cfg)
        m.load_state_dict(sd)
        m.eval()
        return evaluate_bpb(m, data.tokens, data.lut, Scoring(cfg.effective_eval_seq_len),
                            max_tokens=data.n_targets)

    def bpb(sd: dict) -> float:
        return float(score(sd).val_bpb)

    def point(label: str, **kw) -> dict:
        t0 = time.perf_counter()
        q = quant.quantize_model(model, hessians=hs, policy=policy, **kw)
        secs = time.perf_counter() - t0
        sd = file_round_trip(q)
        val = bpb(sd)
        fit = kw.get("fit")
        p = {"method": label, "budget": fit.budget_bytes if fit else None, "bytes": q.total_bytes,
             "bits_per_param": round(8 * q.total_bytes / params, 4), "val_bpb": val,
             "gap": val - pre, "quant_seconds": round(secs, 1),
             "predicted_gap": predicted_nats(state, sd, om) * bpb_per_nat,
             "lqer_tensors": sum(1 for qt in q.tensors if qt.lqer is not None), **scale_bytes(q),
             "fp16_tensors": sum(1 for r in q.report if r["kind"] == "pass"
                                 and r["class"] in ("attention", "mlp", "embedding", "other"))}
        print(f"rd:{label} bytes:{p['bytes']} gap:{p['gap']:+.6f} secs:{p['quant_seconds']} "
              f"scale_bytes:{p['scale_bytes']} as_fp16:{p['scale_bytes_fp16']}", flush=True)
        return p

    full = score(state)
    pre = float(full.val_bpb)
    bpb_per_nat = pre / float(full.val_loss)  # (1 / ln 2) * tokens per byte of this eval
    points = [point("int8", method="int8"), point("record_1060", method="record_1060"),
              point("record_1855", method="record_1855")]
    budgets = budget_grid([points[1]["bytes"], points[2]["bytes"]], args.budgets)
    ranks, a = lqer_ranks(args.lqer_ranks), args.error_norm
    wanted = set(args.lines.split(","))
    plain, fp16 = quant.QuantRun(), quant.QuantRun(scales="fp16")  # QUANT_SCALES=fp16
    lines = [(label, kw, run) for key, label, kw, run in (
        ("fitter", "fitter", dict(error_weights=om), plain),
        ("lqer", f"fitter+lqer({args.lqer_ranks})", dict(error_weights=om, lqer_ranks=ranks),
         plain),
        ("diagh", "fitter diagH", {}, plain),  # the fitter before QUANT_FISHER: diag(H) error
        ("fp16scales", "fitter fp16 scales", dict(error_weights=om), fp16),
    ) if key in wanted]
    if a:
        lines.append((f"fitter diagH norm={a:g}", dict(error_norm=a), plain))
    for label, kw, run in lines:
        for b in budgets:
            try:
                points.append(point(label, method="gptq", fit=quant.BudgetFit(b, **kw), run=run))
            except quant.BudgetError as exc:
                print(f"rd:{label} budget:{b} impossible ({exc})")
    fitters = sorted({p["method"] for p in points if p["method"].startswith("fitter")})
    return {"checkpoint": args.checkpoint, "params": params, "pre_val_bpb": pre,
            "eval_tokens": data.n_targets, "small_numel": cfg.quant_small_numel,
            "budgets": budgets, "points": points,
            "monotonic": {f: monotonic_exceptions([p for p in points if p["method"] == f])
                          for f in fitters}}


def merge(res: dict, earlier: dict) -> None:
    """Add the earlier run's points of methods `res` lacks (same checkpoint and eval tokens, or
    an error), and recompute the monotonic lists."""
    if (earlier["checkpoint"], earlier["eval_tokens"]) != (res["checkpoint"], res["eval_tokens"]):
        raise SystemExit(f"--merge: {earlier['checkpoint']} ({earlier['eval_tokens']} tokens) is "
                         f"not this run's checkpoint/eval; merge only runs of the same one")
    have = {p["method"] for p in res["points"]}
    res["points"] += [p for p in earlier["points"] if p["method"] not in have]
    fitters = sorted({p["method"] for p in res["points"] if p["method"].startswith("fitter")})
    res["monotonic"] = {f: monotonic_exceptions([p for p in res["points"] if p["method"] == f])
                        for f in fitters}


def table(res: dict) -> str:
    lines = ["| method | budget | bytes | bits/param | val_bpb | gap | predicted gap | "
             "LQER tensors | quant s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in sorted(res["points"], key=lambda p: (p["method"], p["bytes"])):
        lines.append(f"| {p['method']} | {p['budget'] or '-'} | {p['bytes']:,} | "
                     f"{p['bits_per_param']:.3f} | {p['val_bpb']:.5f} | {p['gap']:+.5f} | "
                     f"{p.get('predicted_gap', float('nan')):+.5f} | "
                     f"{p['lqer_tensors']} | {p['quant_seconds']} |")
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    methods = sorted({p["method"] for p in res["points"]})
    for m in methods:
        pts = sorted((p for p in res["points"] if p["method"] == m), key=lambda p: p["bytes"])
        style = "-o" if len(pts) > 1 else "s"
        ax.plot([p["bytes"] for p in pts], [p["gap"] for p in pts], style, label=m, ms=6)
    ax.set_xlabel("artifact bytes")
    ax.set_ylabel("val_bpb gap (post - pre)")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.grid(alpha=0.3)
    ax.set_title(f"rate-distortion, {res['params']:,} params, pre {res['pre_val_bpb']:.4f}, "
                 f"{res['eval_tokens']:,} val tokens")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.rate_distortion", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--budgets", type=int, default=7)
    ap.add_argument("--max-eval-tokens", type=int, default=16_384)
    ap.add_argument("--lqer-ranks", default="2,4")
    ap.add_argument("--error-norm", type=float, default=0.0,
                    help="QUANT_ERROR_NORM of an extra diag(H) fitter line (0: none)")
    ap.add_argument("--lines", default="fitter,lqer,diagh",
                    help="fitter lines: fitter (default, Fisher), lqer (+ LQER rungs), diagh "
                         "(diag(H)-weighted error, QUANT_FISHER=0), fp16scales (the default "
                         "fitter with QUANT_SCALES=fp16)")
    ap.add_argument("--calib-batches", type=int, default=8,
                    help="training batches for Hessians / error weights missing from hessians.pt")
    ap.add_argument("--codecs", default="",
                    help="coders for int8 and the fitter, e.g. zlib,rans (default: all); "
                         "rANS codes the int codes either way, so this mostly speeds it up")
    ap.add_argument("--merge", default="",
                    help="an earlier JSON of this bench on the same checkpoint: its points of "
                         "methods this run does not measure are kept")
    ap.add_argument("--out", default="bench/results/rate_distortion")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    res = run(args)
    if args.merge:
        merge(res, json.loads(Path(args.merge).read_text()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from golf.run.atomic import atomic_write_json
    atomic_write_json(out.with_suffix(".json"), res)
    plot(res, out.with_suffix(".png"))
    print(table(res))
    print(json.dumps({"pre_val_bpb": res["pre_val_bpb"], "monotonic": res["monotonic"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
