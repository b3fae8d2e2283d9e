"""Where `eval_bpb.py RUN` writes: a run's official eval.json, or a diagnostic file beside it.

Why: eval.json is half of the run's artifact/eval pair, and pack.py ships the number it holds.
A partial, other-mode, other-data, other-weights, TTT or tilted evaluation is a diagnostic: it goes to
eval.<label>.json beside eval.json (a new name each time, never replacing a file) or to --out.
Only a full official evaluation of the run's own artifact replaces eval.json, through the
staged pair (golf.run.rundir rule 4), so the previous pair moves to previous/<n>/ and nothing is
lost. Every write into the run holds its lock (golf.run.rundir rule 8).
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path
from typing import Callable

from golf.run import distributed
from golf.run import rundir as rd
from golf.eval.score import EvalError, EvalRequest, resolve_run_files, run_eval
from golf.run.rules import eval_mode

Log = Callable[[str], None]


def _same_path(given: str | os.PathLike | None, own: str | os.PathLike | None) -> bool:
    return given is None or (own is not None and Path(given).resolve() == Path(own).resolve())


def _own_checkpoint(run: Path) -> Path | None:
    return next((run / n for n in (rd.EMA, rd.MODEL) if (run / n).is_file()), None)


def diagnostic_label(run_dir: str | os.PathLike, request: EvalRequest) -> str:
    """'' when `request` asks for the run's own evaluation: its
    artifact and checkpoint, data, tokenizer, window and token count as config.json records
    them; else a short file-name-safe label of what differs (e.g. 'partial2048-sliding')."""
    run = Path(run_dir)
    cfg = rd.load_config(run)
    parts = []
    tokens = request.max_tokens
    if tokens and int(tokens) != (cfg.max_eval_tokens or 0):
        parts.append(f"partial{int(tokens)}")
    own_mode = eval_mode(cfg.eval_stride)
    if request.mode not in (None, own_mode):
        parts.append(str(request.mode))
    if request.stride not in (None, cfg.eval_stride):
        parts.append(f"stride{request.stride}")
    if request.seq_len not in (None, cfg.effective_eval_seq_len):
        parts.append(f"seq{request.seq_len}")
    for key, own in (("data", cfg.data_path), ("tokenizer", cfg.tokenizer_path),
                     ("checkpoint", _own_checkpoint(run)), ("artifact", run / rd.ARTIFACT)):
        given = getattr(request, key)
        if not _same_path(given, own):
            parts.append(f"{key}-{Path(given).stem}")
    ttt = request.ttt
    if ttt is not None and getattr(ttt, "active", False):
        parts.append(f"ttt-{ttt.mode}-{ttt.on}")
    if getattr(request.tilt, "enabled", False):
        parts.append("tilt")
    docs = request.doc_windows
    if docs is not None and bool(docs) != bool(getattr(cfg, "doc_attention", False)):
        parts.append("docwindows" if docs else "nodocwindows")
    if request.byte_check is False:
        parts.append("nobytecheck")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))[:80]


def beside_path(run_dir: Path, label: str) -> Path:
    """eval.<label>.json beside eval.json, or eval.<label>.<n>.json: a name no file has (the
    run's lock keeps it free until written)."""
    stem = Path(rd.EVAL).stem
    n = 1
    while True:
        path = run_dir / f"{stem}.{label}{'' if n == 1 else f'.{n}'}.json"
        if not path.exists():
            return path
        n += 1


def evaluate_run_dir(run_dir: str | os.PathLike, log: Log, out: str | os.PathLike | None = None,
                     request: EvalRequest = EvalRequest()) -> tuple[dict, Path]:
    """Evaluate a run directory and say where the report went: `out` when given; else the
    official pair or eval.<label>.json (see the module docstring). (report, path written)."""
    run = Path(run_dir)
    if distributed.rank_world()[0] != 0:  # rank 0 alone writes (and locks); the others score
        return run_eval(run, request, out=out, log=log), run / rd.EVAL
    if out is not None:
        target = Path(out)
        if target.resolve() == (run / rd.EVAL).resolve() and diagnostic_label(run, request):
            raise EvalError(f"--out {out}: that is the run's official {rd.EVAL}, and this "
                            f"evaluation is a diagnostic ({diagnostic_label(run, request)}); "
                            "omit --out "
                            f"to write it beside {rd.EVAL}, or pass another path")
        if target.resolve().parent != run.resolve():
            return run_eval(run, request, out=target, log=log), target
    with rd.run_lock(run, f"eval_bpb.py {run}"):
        label = diagnostic_label(run, request)
        if label or out is not None:
            target = Path(out) if out is not None else beside_path(run, label)
            log(f"eval:diagnostic ({label}): writing {target.name}; {rd.EVAL} is left as it is")
            return run_eval(run, request, out=target, log=log), target
        return official_eval(run, log, request), run / rd.EVAL


def official_eval(run: Path, log: Log, request: EvalRequest) -> dict:
    """Score the run's own artifact as a staged pair: the artifact's bytes are copied into
    staging, scored and hashed there (with its quant report), and moved in with eval.json."""
    resolve_run_files(run, request.checkpoint, None)  # its files are there, before staging
    st = rd.clear_staging(run)
    for name in (rd.ARTIFACT, rd.QUANT_REPORT_JSON, rd.QUANT_REPORT_PNG):
        if (run / name).is_file():
            shutil.copyfile(run / name, st / name)
    staged = dataclasses.replace(request, artifact=str(st / rd.ARTIFACT))
    try:
        report = run_eval(run, staged, out=st / rd.EVAL, log=log)
    except BaseException:
        shutil.rmtree(st, ignore_errors=True)  # only copies: the run's own pair is untouched
        raise
    rd.publish_pair(run, log)
    return report
