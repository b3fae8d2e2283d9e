"""Comparing runs: which is better before and after quantization (and after TTT), and a loud
DIVERGENCE when those orderings disagree or a run's quantization gap is too large.

Why a module of its own: the alarm is the reason to compare runs at all, and bench scripts
and tests use it without the eval_bpb.py command line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from golf.run import rundir
from golf.eval.destination import evaluate_run_dir
from golf.eval.score import EvalError, EvalRequest

RANK_KEYS = ("pre", "post", "post_ttt")


def find_divergences(rows: Sequence[dict], gap_threshold: float = 0.005) -> list[str]:
    """Warnings for run pairs whose pre- and post-quant orderings disagree, for pairs whose
    post-quant and post-TTT orderings disagree (both have a "post_ttt"), and for runs whose gap
    (post - pre) exceeds `gap_threshold`. rows: [{"run", "pre", "post", "post_ttt"?}] (val_bpb)."""
    out: list[str] = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if a.get("post_ttt") is None or b.get("post_ttt") is None:
                continue
            dpost, dttt = a["post"] - b["post"], a["post_ttt"] - b["post_ttt"]
            if dpost * dttt < 0:
                win, lose = (a, b) if dpost < 0 else (b, a)
                out.append(f"ordering flips after TTT: {win['run']} beats {lose['run']} post-quant "
                           f"({win['post']:.4f} < {lose['post']:.4f}) but loses post-TTT "
                           f"({win['post_ttt']:.4f} > {lose['post_ttt']:.4f})")
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            dpre = a["pre"] - b["pre"]
            dpost = a["post"] - b["post"]
            if dpre * dpost < 0:
                better_pre, worse_pre = (a, b) if dpre < 0 else (b, a)
                out.append(f"ordering flips: {better_pre['run']} beats {worse_pre['run']} pre-quant "
                           f"({better_pre['pre']:.4f} < {worse_pre['pre']:.4f}) but loses post-quant "
                           f"({better_pre['post']:.4f} > {worse_pre['post']:.4f})")
    for r in rows:
        gap = r["post"] - r["pre"]
        if gap > gap_threshold:
            out.append(f"{r['run']}: quantization gap {gap:+.4f} exceeds {gap_threshold:.4f}")
    return out


def divergence_box(warnings: Sequence[str]) -> str:
    """A boxed banner that cannot be missed in a log."""
    lines = [f"!!! DIVERGENCE: {w}" for w in warnings]
    width = max(len(s) for s in lines) + 4
    bar = "!" * width
    return "\n".join([bar] + [f"! {s:<{width - 4}} !" for s in lines] + [bar])


def compare_runs(run_dirs: Sequence[str], *, evaluate: bool = False, gap_threshold: float = 0.005,
                 log: Callable[[str], None] = print, rank_by: str = "post",
                 request: EvalRequest = EvalRequest()) -> tuple[list[dict], list[str]]:
    """Rows {run, pre, post, gap, post_ttt, ttt_gain, mode, partial} from each RUN/eval.json,
    plus divergence warnings. `rank_by` must be a number every run has (checked here)."""
    if rank_by not in RANK_KEYS:
        raise EvalError(f"--rank-by {rank_by!r}: use one of {', '.join(RANK_KEYS)}")
    rows: list[dict] = []
    for rd in run_dirs:
        path = Path(rd) / rundir.EVAL
        if not path.is_file():
            if not evaluate:
                raise EvalError(f"{path}: missing; run `python eval_bpb.py {rd}` first or pass --evaluate")
            _, path = evaluate_run_dir(rd, log, request=request)  # a diagnostic goes beside
        try:
            rep = json.loads(path.read_text())
            ttt = rep.get("post_ttt") or {}
            rows.append({"run": str(rd), "pre": rep["pre"]["val_bpb"], "post": rep["post"]["val_bpb"],
                         "gap": rep["gap"], "mode": rep.get("mode", "?"),
                         "partial": bool(rep.get("partial")), "post_ttt": ttt.get("val_bpb"),
                         "ttt_gain": ttt.get("ttt_gain"), "ttt": ttt.get("ttt")})
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise EvalError(f"{path}: not a complete eval.json ({exc!r}); re-run eval_bpb.py on it "
                            "with both a checkpoint and an artifact") from None
    lacking = [r["run"] for r in rows if r.get(rank_by) is None]
    if lacking:
        raise EvalError(f"--rank-by {rank_by}: {', '.join(lacking)} has no {rank_by} number; "
                        f"evaluate it with `python eval_bpb.py RUN --ttt chunk` (or lora) first")
    if len({r["ttt"] for r in rows}) > 1:
        log("warning: runs were adapted with different TTT modes (or some without TTT); "
            "post_ttt numbers are comparable only under the same settings")
    if len({(r["mode"], r["partial"]) for r in rows}) > 1:
        log("warning: runs were evaluated in different modes/partial settings; re-evaluate them "
            "the same way before trusting the ordering")
    return rows, find_divergences(rows, gap_threshold)


def format_compare(rows: Sequence[dict], rank_by: str = "post") -> str:
    """Runs best first by `rank_by`; quant gap and TTT gain side by side."""
    w = max([len("run")] + [len(r["run"]) for r in rows])
    lines = [f"ranked by {rank_by}",
             f"{'run':<{w}}  {'pre_bpb':>10} {'post_bpb':>10} {'gap':>10} {'ttt_bpb':>10} "
             f"{'ttt_gain':>10}  mode"]

    def num(v: Any, sign: bool = False) -> str:
        return "-".rjust(10) if v is None else (f"{v:>+10.6f}" if sign else f"{v:>10.6f}")
    for r in sorted(rows, key=lambda r: r[rank_by]):
        ttt = f" ttt:{r['ttt']}" if r.get("ttt") else ""
        lines.append(f"{r['run']:<{w}}  {num(r['pre'])} {num(r['post'])} {num(r['gap'], True)} "
                     f"{num(r.get('post_ttt'))} {num(r.get('ttt_gain'), True)}  "
                     f"{r['mode']}{ttt}{' (partial)' if r['partial'] else ''}")
    return "\n".join(lines)
