"""Schedule lengths on the same data: how far from converged a CPU checkpoint is.

    python -m bench.schedules RUN [RUN ...] [--out bench/results/schedules]

A record trains to the end of its schedule; "converged" asks what a longer schedule would still
buy. Each RUN is a run folder trained on the same data with only ITERATIONS changed. From its
config.json, metrics.jsonl (the periodic val lines, VAL_LOSS_EVERY) and the data's manifest.json
this puts every validation curve on one axis of epochs (tokens seen / the split's training
tokens), and between consecutive schedules gives the final val_bpb gained per doubling of steps:
a plateau is where that tends to zero. Every file is read as JSON (data, never code).
"""
from __future__ import annotations

import argparse
import json
import math
from fnmatch import fnmatch
from pathlib import Path

from golf.data import shards
from golf.run import rundir as rd
from golf.run.atomic import atomic_write_json
from golf.run.errors import ConfigError


def train_tokens(data_path: str) -> int:
    """Training tokens of a dataset folder, from the counts its manifest.json lists."""
    files = shards.read_manifest(data_path).get("files")
    if not files:
        raise SystemExit(f"{Path(data_path) / shards.MANIFEST} lists no shard token counts: "
                         "prepare the dataset with `python -m golf.data.prepare`")
    train = Path(shards.train_pattern(data_path)).name
    return sum(n for name, n in files.items() if fnmatch(name, train))


def curve(run: Path) -> dict:
    """One run's schedule and validation curve (step, epochs, val_bpb)."""
    try:    # the run's own reader: relative paths of older runs resolved, a non-run named
        cfg = rd.load_config(run, "RUN")
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    per_step = cfg.train_batch_tokens / train_tokens(cfg.data_path)
    vals = [json.loads(line) for line in (run / rd.METRICS).read_text().splitlines()]
    vals = [m for m in vals if "val_bpb" in m]
    if not vals:
        raise SystemExit(f"{run / rd.METRICS} has no val lines: train with VAL_LOSS_EVERY > 0")
    points = [[m["step"], round(m["step"] * per_step, 4), m["val_bpb"]] for m in vals]
    return {"run": str(run), "iterations": cfg.iterations,
            "epochs": round(cfg.iterations * per_step, 4),
            "eval_tokens": cfg.max_eval_tokens, "val": points,
            "final_val_bpb": points[-1][2], "finished": points[-1][0] == cfg.iterations}


def per_doubling(runs: list[dict]) -> list[dict]:
    """Final val_bpb change per doubling of steps between consecutive finished schedules (a run
    still training has not yet had its warmdown: its last val is not its schedule's end)."""
    done = [r for r in runs if r["finished"]]
    rows = []
    for a, b in zip(done, done[1:]):
        doublings = math.log2(b["iterations"] / a["iterations"])
        delta = b["final_val_bpb"] - a["final_val_bpb"]
        rows.append({"from": a["iterations"], "to": b["iterations"], "delta_bpb": delta,
                     "per_doubling": delta / doublings})
    return rows


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        ep = [p[1] for p in r["val"]]
        ax.plot(ep, [p[2] for p in r["val"]], marker="o", ms=3,
                label=f"{r['iterations']:,} steps ({r['epochs']:.2f} epochs)")
    ax.set_xlabel("epochs of the training split seen")
    ax.set_ylabel(f"val_bpb (first {runs[0]['eval_tokens']:,} val tokens)")
    ax.set_title("one preset, one corpus, schedules of different length")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(res: dict) -> str:
    lines = [f"{'steps':>8}{'epochs':>8}{'final val_bpb':>15}{'finished':>10}"]
    lines += [f"{r['iterations']:>8,}{r['epochs']:>8.2f}{r['final_val_bpb']:>15.4f}"
              f"{str(r['finished']):>10}" for r in res["runs"]]
    lines += [f"{d['from']:,} -> {d['to']:,} steps: {d['delta_bpb']:+.4f} bpb "
              f"({d['per_doubling']:+.4f} per doubling)" for d in res["per_doubling"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="run folders, same data, any order")
    ap.add_argument("--out", type=Path, default=Path("bench/results/schedules"))
    args = ap.parse_args(argv)
    runs = sorted((curve(r) for r in args.runs), key=lambda r: r["iterations"])
    res = {"runs": runs, "per_doubling": per_doubling(runs)}
    atomic_write_json(args.out.with_suffix(".json"), res)
    plot(runs, args.out.with_suffix(".png"))
    print(json.dumps(res["per_doubling"], indent=1))
    print(table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
