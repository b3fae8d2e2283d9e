"""Pack a finished run into a challenge submission folder (the library: golf/submission/).

    python pack.py runs/<RUN_ID> [runs/<RUN_ID2> ...] [--out submission/<RUN_ID>] [--name N]
                   [--github-id G] [--blurb B] [--no-roundtrip] [--record --baseline-mean M ...]
    python pack.py runs/<RUN_ID> --score eval.ttt-lora-post-tilt.json   # score = that record
    python pack.py --budget-only runs/<RUN_ID>     # budget and eval-time tables, writes nothing
    python pack.py --code-bytes                    # exact bytes of the shipped train_gpt.py
    TTT=lora NGRAM_TILT_ENABLED=1 python pack.py --code-bytes   # ... carrying TTT and the tilt
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from golf.run import rundir as rd
from golf import ship
from golf.run.errors import PackError, user_errors
from golf.submission import (Claim, PackRequest, budget_cap, budget_table, build_forms, code_bytes,
                             format_budget_table, format_eval_cost, load_run, pack_run)
from golf.submission.checks import run_eval_cost
from golf.submission.run import score_env


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="pack.py", description="Pack run(s) into a submission folder.")
    ap.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="first = shipped artifact")
    ap.add_argument("--out", default=None,
                    help="the record folder itself (default: submission/<RUN_ID>); an existing "
                         "one must be an earlier pack, which is then replaced")
    ap.add_argument("--name", default=os.environ.get("GOLF_NAME", ""))
    ap.add_argument("--github-id", default=os.environ.get("GOLF_GITHUB_ID", ""))
    ap.add_argument("--blurb", default="")
    ap.add_argument("--no-roundtrip", action="store_true")
    ap.add_argument("--compress", choices=("auto", "yes", "no"), default="auto")
    ap.add_argument("--tolerance", type=float, default=0.0, help="round-trip tolerance (GPU)")
    ap.add_argument("--data-path", default=None)
    ap.add_argument("--tokenizer-path", default=None)
    ap.add_argument("--eval-speed-ratio", type=float, default=None,
                    help="R, 8xH100 speed over the eval's hardware: estimate = host parts + "
                         "device parts / R (default GOLF_EVAL_SPEED_RATIO, else 8/k for k "
                         "H100/H200, else N/A; see docs/packing.md)")
    ap.add_argument("--score", default=None, metavar="EVAL_RECORD",
                    help="the eval record in each run directory that holds the score (default "
                         "eval.json; e.g. eval.ttt-lora-post-tilt.json from eval_bpb.py --ttt lora "
                         "with NGRAM_TILT_ENABLED=1); refused if partial or not this artifact's")
    ap.add_argument("--record", action="store_true", help="check a record claim")
    ap.add_argument("--baseline-mean", type=float)
    ap.add_argument("--baseline-std", type=float, default=0.0)
    ap.add_argument("--baseline-n", type=int, default=1)
    ap.add_argument("--baseline-losses", type=float, nargs="+", help="baseline val_loss per seed")
    ap.add_argument("--budget-bytes", type=int, default=None,
                    help="the cap on code + model bytes (default: BUDGET_BYTES, else 16,000,000)")
    ap.add_argument("--budget-only", action="store_true", help="print the budget table, write nothing")
    ap.add_argument("--code-bytes", action="store_true",
                    help="print exact code bytes, write nothing (with TTT / NGRAM_TILT_ENABLED "
                         "set: of the script carrying those parts)")
    return ap.parse_args(argv)


def budget_only(run_dir: str, cap: int, score: str | None = None,
                ratio: float | None = None) -> int:
    """The budget table of the smallest form with this run's artifact and what its scored
    evaluation costs, part by part; writes nothing."""
    run = load_run(run_dir, score)
    with tempfile.TemporaryDirectory() as td:
        p = Path(td) / "train_gpt.py"
        p.write_bytes(min(build_forms(parts=ship.parts_for(score_env(run.eval))).values(), key=len))
        t = budget_table(p, run.run_dir / rd.ARTIFACT, cap)
    print(format_budget_table(t))
    print(format_eval_cost(run_eval_cost(run), ratio, f"eval time, {run.eval_file}"))
    return 1 if t.over else 0


def _baseline(a: argparse.Namespace) -> Any:
    if a.baseline_losses:
        return list(a.baseline_losses)
    if a.baseline_mean is not None:
        return {"mean": a.baseline_mean, "std": a.baseline_std, "n": a.baseline_n}
    return None


def _cli(argv: Sequence[str] | None) -> int:
    a = parse_args(argv)
    cap = budget_cap(a.budget_bytes)
    if a.code_bytes:
        print(code_bytes(parts=ship.parts_for(os.environ)))   # the parts TTT / the tilt need
        return 0
    if not a.run_dirs:
        raise PackError("pack.py: no RUN_DIR given; pass e.g. runs/<RUN_ID>")
    if a.budget_only:
        return budget_only(a.run_dirs[0], cap, a.score, a.eval_speed_ratio)
    compress = {"auto": "auto", "yes": True, "no": False}[a.compress]
    claim = Claim(name=a.name, github_id=a.github_id, blurb=a.blurb, baseline=_baseline(a))
    res = pack_run(a.run_dirs[0], a.out, PackRequest(
        claim=claim, extra_runs=a.run_dirs[1:], score=a.score, compress=compress,
        roundtrip=not a.no_roundtrip, tolerance=a.tolerance, data_path=a.data_path,
        tokenizer_path=a.tokenizer_path, record=a.record, cap=cap,
        eval_speed_ratio=a.eval_speed_ratio))
    return 0 if res.ok else 1


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the temp folders are removed and the round-trip child
    is killed on the way out (a SIGKILL is cleaned by the next pack: golf.submission.tempdirs)."""
    try:
        old = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: one clear line on bad input (GOLF_DEBUG=1 for a traceback)."""
    with user_errors(), sigterm_interrupts():
        return _cli(argv)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
