"""Does measuring each tensor's loss on training text price the fitter better than its Fisher
prediction? (issue 27 item 5: the default fitter's gap is 0.53-0.63x the records' on the
5,000-step mix model, the target 0.5x.)

At each budget (a record point's bytes from a bench.rd_frontier JSON, so the record's own gap
and per-document NLL are the reference):

* round 0 is the default fitter (quant.open_fit with the run's Fisher error weights);
* after each round, every quantized tensor is put alone into the float model at the option the
  round chose and its loss increase on the first --probe-tokens of the *training* split is
  measured (never val): one point (predicted distortion, measured delta) per tensor and round;
* round r > 0 refits on curves corrected through all points measured so far: each tensor's
  predicted distortion times measured/predicted, interpolated in log-log between its points and
  held constant beyond them (one point: a constant multiplier, the QUANT_SENSITIVITY idea);
* every round's artifact is scored on the full val split (pre / post, per-document NLL), its
  gap reported with the paired excess over half the record's gap and its standard error.

    python -m bench.measured_prices --checkpoint runs/mix5000/ema.pt --data DIR \\
        --tokenizer MODEL --records bench/results/rd_frontier_mix5000.json \\
        --points record_1855-1 record_1855+0 --rounds 3 --out bench/results/measured_prices_mix5000
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import quant
from bench.rate_distortion import file_round_trip, load_run, model_from
from bench.rd_frontier import Scorer, _save, paired_excess
from golf.main import quant_policy
from quant import fitter

FLOOR = 2e-6        # bpb: a measured delta below this is taken as this (probe noise)


def corrected(curve: fitter.Curve, points: list[tuple[float, float]]) -> fitter.Curve:
    """The curve with its distortion times measured/predicted, log-log interpolated through
    `points` (predicted, measured) and constant beyond the outermost ones."""
    if not points:
        return curve
    pts = sorted(points)
    lx = np.log([p for p, _ in pts])
    ly = np.log([max(d, FLOOR) / p for p, d in pts])
    x = np.log(np.maximum(curve.dist, 1e-30))
    return fitter.Curve(curve.rate, curve.dist * np.exp(np.interp(x, lx, ly)))


class Probe:
    """One-tensor-at-a-time loss increases on training tokens."""

    def __init__(self, cfg, model, state: dict, scorer: Scorer) -> None:
        from golf.eval.sensitivity import tied_names
        self.cfg, self.state, self.scorer = cfg, state, scorer
        self.base = scorer.plain(model)["bpb"]
        self.tied = tied_names(state)

    def gap(self, sd: dict) -> float:
        return self.scorer.plain(model_from(self.cfg, sd))["bpb"] - self.base

    def one(self, sd: dict, name: str) -> float:
        """The delta of `name` alone (with the names tied to it) taken from sd."""
        return self.gap(dict(self.state) | {n: sd[n] for n in self.tied.get(name, [name])})


def run_point(session: quant.FitSession, probe: Probe, val, rec: dict, pre: dict,
              rounds: int, log) -> list[dict]:
    """Rounds 0..rounds at one budget (see the module docstring)."""
    points: list[dict[int, tuple[float, float]]] = [{} for _ in session.names]  # option -> point
    out = []
    for r in range(rounds + 1):
        choice = session.fit([corrected(c, list(p.values()))
                              for c, p in zip(session.curves, points)])
        q = session.build(choice)
        sd = file_round_trip(q)
        post = val.plain(model_from(probe.cfg, sd))
        row = {"round": r, "bytes": q.total_bytes, "probe_gap": probe.gap(sd),
               "gap": post["bpb"] - pre["bpb"], "choice": dict(zip(session.names, choice))}
        if "doc_nats" in rec.get("post", {}):
            row["paired"] = paired_excess(pre["doc_nats"], post["doc_nats"],
                                          rec["post"]["doc_nats"], val.doc_bytes)
        if r < rounds:
            row["measured"] = {}
            for i, (name, j) in enumerate(zip(session.names, choice)):
                pred = float(session.curves[i].dist[j])
                if pred > 0 and j not in points[i]:
                    points[i][j] = (pred, probe.one(sd, name))
                    row["measured"][name] = {"option": j, "predicted": pred,
                                             "delta": points[i][j][1]}
        log(f"mp:{rec['method']} round:{r} bytes:{row['bytes']} probe_gap:{row['probe_gap']:+.6f} "
            f"val_gap:{row['gap']:+.6f} record_gap:{rec['gap']['bpb']:+.6f} "
            f"excess:{row.get('paired', {}).get('excess', float('nan')):+.5f}"
            f"+-{row.get('paired', {}).get('excess_se', float('nan')):.5f}")
        out.append(row)
    return out


def run(args: argparse.Namespace, out: Path) -> dict:
    from golf.eval.score import load_eval_data
    cfg, model, state, hs, om = load_run(args.checkpoint, args.data, args.calib_batches)
    policy = quant_policy(cfg, model, "gptq")

    def data(split: str, n: int | None):
        return load_eval_data(args.data, args.tokenizer, cfg.vocab_size, max_tokens=n, log=None,
                              split=split)

    val = Scorer(cfg, data("val", None), None)
    probe = Probe(cfg, model, state, Scorer(cfg, data("train", args.probe_tokens), None))
    pre = val.plain(model)
    records = {p["method"]: p for p in json.loads(Path(args.records).read_text())["points"]}
    res = {"checkpoint": args.checkpoint, "probe_tokens": args.probe_tokens,
           "rounds": args.rounds, "pre": {"bpb": pre["bpb"]}, "points": {}}
    for label in args.points:
        if label not in records:
            raise SystemExit(f"--points {label}: not a point of {args.records}")
        rec = records[label]
        t0 = time.perf_counter()
        session = quant.open_fit(model, hessians=hs, policy=policy,
                                 fit=quant.BudgetFit(int(rec["bytes"]), error_weights=om))
        res["points"][label] = {"record_gap": rec["gap"]["bpb"], "record_bytes": rec["bytes"],
                                "rounds": run_point(session, probe, val, rec, pre, args.rounds,
                                                    lambda s: print(s, flush=True)),
                                "seconds": round(time.perf_counter() - t0, 1)}
        _save(res, out)
    return res


def table(res: dict) -> str:
    rows = ["| point | record gap | round | bytes | probe gap | val gap | ratio | excess ± se |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, p in res["points"].items():
        for r in p["rounds"]:
            pe = r.get("paired")
            rows.append(f"| {label} | {p['record_gap']:+.5f} | {r['round']} | {r['bytes']:,} | "
                        f"{r['probe_gap']:+.5f} | {r['gap']:+.5f} | {r['gap'] / p['record_gap']:.2f} | "
                        + (f"{pe['excess']:+.4f} ± {pe['excess_se']:.4f} |" if pe else "- |"))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--checkpoint", required=True, help="runs/<ID>/ema.pt (hessians.pt beside)")
    ap.add_argument("--data", required=True, help="dataset folder (train and val shards)")
    ap.add_argument("--tokenizer", required=True, help="its SentencePiece model")
    ap.add_argument("--records", required=True,
                    help="a bench.rd_frontier JSON: the record points' bytes, gaps and NLL")
    ap.add_argument("--points", nargs="+", required=True, help="record points, e.g. record_1855+0")
    ap.add_argument("--rounds", type=int, default=3, help="measured rounds after the default")
    ap.add_argument("--probe-tokens", type=int, default=262_144,
                    help="training-split targets each one-tensor delta is measured on")
    ap.add_argument("--calib-batches", type=int, default=8)
    ap.add_argument("--out", default="bench/results/measured_prices")
    args = ap.parse_args(argv)
    out = Path(args.out)
    res = run(args, out)
    print(table(res))
    print(json.dumps({k: v["rounds"][-1]["gap"] for k, v in res["points"].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
