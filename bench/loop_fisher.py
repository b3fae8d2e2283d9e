"""The Fisher error weights of a looped layer with and without the cross term of its calls, each
fitted at the same budgets and scored on the whole val split (commit 5a09ea4).

    python -m bench.loop_fisher --checkpoint runs/ID/ema.pt --data DIR --tokenizer MODEL \
        --budgets 195037,264567,335327,358366,431212 [--out bench/results/loop_fisher]

Both weight sets come from the same 8 training batches (the loader's first, as the run's own
calibration would read them); "per_call" is the rule before 5a09ea4 (each call's g x^T squared
alone), "summed" today's (the calls' per-token gradients summed, then squared). The fitter,
policy, Hessians and coder are otherwise today's defaults; every artifact goes through a file
round trip. Prints one line per point and a table; writes JSON.
"""
from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import quant
import quant.calibrate as calibrate
from bench.rate_distortion import calibration_pairs, file_round_trip, load_run, model_from
from bench.rd_frontier import Scorer
from golf.main import quant_policy


@contextmanager
def per_call_rule() -> Iterator[None]:
    """collect_error_weights as it was before 5a09ea4: each call's own square, no cross term."""
    summed = calibrate._fisher_sum
    calibrate._fisher_sum = lambda mod, calls: sum(
        calibrate._pair_sum(mod, x, g, x, g) for x, g in calls)
    try:
        yield
    finally:
        calibrate._fisher_sum = summed


def run(args: argparse.Namespace) -> dict:
    from golf.eval.score import load_eval_data
    cfg, model, _state, hs, _om = load_run(args.checkpoint, args.data)
    pairs = calibration_pairs(cfg, args.data, 8)
    weights = {"summed": quant.collect_error_weights(model, pairs)}
    with per_call_rule():
        weights["per_call"] = quant.collect_error_weights(model, pairs)
    ratios = {k: float(weights["summed"][k].sum() / weights["per_call"][k].sum())
              for k in weights["summed"]}
    scorer = Scorer(cfg, load_eval_data(args.data, args.tokenizer, cfg.vocab_size, log=None), None)
    policy = quant_policy(cfg, model, "gptq")
    pre = scorer.plain(model)
    res = {"checkpoint": args.checkpoint, "pre": pre, "omega_ratio_summed_over_per_call":
           {k: round(v, 4) for k, v in ratios.items() if abs(v - 1) > 1e-6}, "points": []}
    for budget in args.budgets:
        for rule, om in weights.items():
            q = quant.quantize_model(model, hessians=hs, method="gptq", policy=policy,
                                     fit=quant.BudgetFit(budget, error_weights=om))
            post = scorer.plain(model_from(cfg, file_round_trip(q)))
            p = {"rule": rule, "budget": budget, "bytes": q.total_bytes,
                 "gap": {k: post[k] - pre[k] for k in post}}
            res["points"].append(p)
            print(f"loop_fisher:{rule} budget:{budget} bytes:{q.total_bytes} "
                  f"gap:{p['gap']['bpb']:+.6f}", flush=True)
    return res


def table(res: dict) -> str:
    rows = ["| budget | per_call gap | summed gap | summed − per_call | halves (per_call / summed) |",
            "|---:|---:|---:|---:|---|"]
    by = {(p["budget"], p["rule"]): p["gap"] for p in res["points"]}
    for b in sorted({p["budget"] for p in res["points"]}):
        a, s = by[(b, "per_call")], by[(b, "summed")]
        rows.append(f"| {b:,} | {a['bpb']:+.5f} | {s['bpb']:+.5f} | {s['bpb'] - a['bpb']:+.5f} | "
                    f"{a['half1']:+.5f}, {a['half2']:+.5f} / {s['half1']:+.5f}, {s['half2']:+.5f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--budgets", required=True, type=lambda s: [int(b) for b in s.split(",")])
    ap.add_argument("--out", default="bench/results/loop_fisher")
    args = ap.parse_args(argv)
    res = run(args)
    out = Path(args.out).with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res["omega_ratio_summed_over_per_call"]))
    print(table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
