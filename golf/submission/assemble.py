"""pack_run: build a submission folder in a temp dir beside the destination, prove it, check it,
and swap it in only when every phase passed.

Why a temp dir and a swap: a failed pack never leaves a partial folder nor destroys a previous
good one; and the destination is refused before any work unless it is an earlier pack's own
folder (nothing the pack did not write is ever replaced).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from golf.run import rundir as rd
from golf import ship
from golf.run.errors import PackError, RoundTripError
from golf.submission.budget import (CAP_BYTES, BudgetTable, budget_table, enforce_budget,
                                    enforce_each_seed, format_budget_table)
from golf.submission.checks import (Check, CheckContext, format_checks, run_checks, run_eval_cost,
                                    seed_eval_time)
from golf.submission.evaltime import format_eval_cost
from golf.submission.record import Claim, build_submission_json, render_readme
from golf.submission.roundtrip import RoundTripResult, RoundTripTarget, run_roundtrip
from golf.submission.run import (RunInfo, headline, load_run, roundtrip_settings, score_env,
                                 score_key, verify_artifact)
from golf.submission.script import ENTRY, build_forms, requirements_for
from golf.submission.tempdirs import owned_name, remove_stale

ARTIFACT = rd.ARTIFACT
SCRIPT = "train_gpt.py"
PACK_FILES = frozenset({SCRIPT, ARTIFACT, "submission.json", "README.md", rd.TRAIN_LOG,
                        "requirements.txt"})
Log = Callable[[str], None]


@dataclass
class PackResult:
    out_dir: Path
    budget: BudgetTable
    forms: dict[str, int]
    shipped: str
    submission: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    roundtrip: RoundTripResult | None = None

    @property
    def ok(self) -> bool:
        return not any(c.status == "FAIL" for c in self.checks)


# ----------------------------------------------------------------------------- the out folder
def _is_earlier_pack(folder: Path) -> bool:
    """True when `folder` holds nothing but a previous pack's files (submission.json among
    them): only such a folder, or an empty one, may be replaced by a new pack."""
    names = {p.name for p in folder.iterdir()}
    extra = {n for n in names - PACK_FILES if not re.fullmatch(r"train_seed\d+\.log", n)}
    return not names or ("submission.json" in names and not extra)


def check_out_dir(out: Path) -> None:
    """Refuse, before any work, to replace a folder the pack did not write: a parent such as
    submission/ (its README.md and other records), a file, or a record folder someone added to;
    or to write where nothing can be created."""
    why = rd.unwritable_reason(out.parent)
    if why:
        raise PackError(f"{out}: {why}; pack into a writable folder (--out DIR or SUBMISSION_DIR)"
                        "; nothing was written")
    if not out.exists():
        return
    if not out.is_dir() or not _is_earlier_pack(out):
        raise PackError(f"{out}: exists and is not an earlier pack's record folder (it holds "
                        "other files); pack into a new folder (--out DIR, or SUBMISSION_DIR as "
                        "the parent of submission/<RUN_ID>) or move it away first")


def default_out_dir(run_dir: str | os.PathLike) -> Path:
    """submission/<RUN_ID>: one record folder per run, beside the tracked submission/README.md."""
    return Path("submission") / Path(run_dir).resolve().name


def _write(path: Path, data: bytes | str) -> None:
    """Write a pack file; a failed write (a full disk) names it."""
    try:
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, exc.filename or str(path)) from exc


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace `out` with `tmp` (the old folder is removed only after the new one is in place)."""
    if out.exists():
        old = out.with_name(owned_name(f".{out.name}.old-"))
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


# ----------------------------------------------------------------------------- the phases
def _load_runs(run_dir: str | os.PathLike, extra_runs: Sequence[str | os.PathLike],
               score: str | None = None) -> list[RunInfo]:
    """Phase 1: every run read (its score from `score`, the same record name in each run) and
    its artifact verified, one run per seed."""
    runs = [load_run(r, score) for r in (run_dir, *extra_runs)]
    seeds = [r.seed for r in runs]
    if len(set(seeds)) != len(seeds):
        raise PackError(f"runs {', '.join(str(r.run_dir) for r in runs)} repeat a seed ({seeds}); "
                        "pass one run per seed")
    for r in runs:
        verify_artifact(r)
    return runs


def _form_order(forms: dict[str, bytes], compress: str | bool) -> list[str]:
    """The forms to try, best first: "auto" = all by size, True = the smallest compressed one."""
    if compress == "auto":
        return sorted(forms, key=lambda k: (len(forms[k]), k))
    if compress:
        return sorted((k for k in forms if k != "plain"), key=lambda k: (len(forms[k]), k))[:1]
    return ["plain"]


def _ship_form(tmp: Path, out: Path, forms: dict[str, bytes], primary: RunInfo,
               request: PackRequest, log: Log) -> tuple[str, RoundTripResult | None]:
    """Phase 2: write each form in turn (best first), enforce the cap, and keep the first that
    passes the round trip of the score (post, or post+TTT / post+tilt re-run by the packed
    script; request.roundtrip False = none: the first form ships)."""
    errors: list[str] = []
    tolerance = request.tolerance
    settings = (roundtrip_settings(primary, request.data_path, request.tokenizer_path)
                if request.roundtrip else None)
    expected, key = headline(primary.eval)[0]["val_bpb"], score_key(primary.eval)
    target = RoundTripTarget(expected, tolerance, label=str(primary.run_dir / ARTIFACT))
    for form in _form_order(forms, request.compress):
        _write(tmp / SCRIPT, forms[form])
        table = budget_table(tmp / SCRIPT, tmp / ARTIFACT, request.cap)
        log(f"[{form}]\n" + format_budget_table(table))
        enforce_budget(table, str(out))
        if settings is None:
            return form, None
        try:
            rt = run_roundtrip(tmp / SCRIPT, tmp / ARTIFACT, settings, target)
        except RoundTripError as exc:
            errors.append(f"[{form}] {exc}")
            log(f"round trip FAILED for form {form}")
            continue
        log(f"round trip ok [{form}]: {key} val_bpb {rt.val_bpb!r} == {primary.eval_file} "
            f"{rt.expected_bpb!r} ({'bit-exact' if rt.exact else f'within {tolerance}'})")
        return form, rt
    raise RoundTripError(errors[0].split("] ", 1)[1] if len(errors) == 1 else "\n".join(errors))


def _copy_logs_and_requirements(tmp: Path, runs: Sequence[RunInfo], requirements: str) -> None:
    """Phase 3: the training logs (one per extra seed) and requirements.txt."""
    _write(tmp / rd.TRAIN_LOG, (runs[0].run_dir / rd.TRAIN_LOG).read_bytes())
    for r in runs[1:]:
        _write(tmp / f"train_seed{r.seed}.log", (r.run_dir / rd.TRAIN_LOG).read_bytes())
    _write(tmp / "requirements.txt", requirements)


def _describe(runs: Sequence[RunInfo], table: BudgetTable, shipped: str,
              rt: RoundTripResult | None, request: PackRequest) -> dict[str, Any]:
    """Phase 4: submission.json with what the pack measured (round trip, code form, eval-time
    estimates); every seed's artifact plus the shipped code must fit the cap."""
    eval_speed_ratio = request.eval_speed_ratio
    sub = build_submission_json(runs, table, request.claim)
    sub["compliance"]["roundtrip_exact"] = bool(rt.exact) if rt else None
    sub["code_form"] = shipped
    enforce_each_seed({r.seed: (r.run_dir / ARTIFACT, sub["seed_results"][str(r.seed)]["bytes_total"])
                       for r in runs}, table.cap)
    if eval_speed_ratio is not None:  # the estimates below assume it: say so
        sub["eval_speed_ratio"] = eval_speed_ratio
    under: list[bool | None] = []
    for r in runs:
        ev_check, est = seed_eval_time(r, eval_speed_ratio)
        sub["seed_results"][str(r.seed)]["eval_time_8xh100_s"] = est
        under.append({"PASS": True, "FAIL": False}.get(ev_check.status))
    sub["compliance"]["eval_under_600s"] = None if None in under else all(under)
    return sub


def _write_records(tmp: Path, sub: dict[str, Any], runs: Sequence[RunInfo], table: BudgetTable,
                   sizes: dict[str, int], shipped: str, checks: Sequence[Check]) -> None:
    """Phase 6: submission.json (with the checks' verdicts) and the generated README."""
    sub["checks"] = {c.name: c.status for c in checks}
    _write(tmp / "submission.json", json.dumps(sub, indent=2, sort_keys=True) + "\n")
    _write(tmp / "README.md", render_readme(sub, runs, table, sizes, shipped, checks))


# ----------------------------------------------------------------------------- pack_run
@dataclass(frozen=True)
class PackRequest:
    """What pack.py asks of a pack, besides the run and the folder.

    claim: name, GitHub id, blurb and the baseline for the Welch test (record.Claim).
    extra_runs: the other seeds' run directories. score: the eval record holding the score in
    each run directory (default eval.json; e.g. eval.ttt-lora-post-tilt.json from
    `eval_bpb.py RUN --ttt lora` with NGRAM_TILT_ENABLED=1).
    compress: "auto" ships the smallest form that passes the round trip; True/False force it.
    roundtrip: prove the shipped file reproduces the score (to `tolerance`), on data_path and
    tokenizer_path (None = the run's). record: run the record-claim checks too. cap: the byte
    cap. eval_speed_ratio: 8xH100 speed over the eval's hardware, for the eval-time estimate
    (default GOLF_EVAL_SPEED_RATIO, else 8/k for k H100/H200, else none: see evaltime.py).
    entry, src_roots: the script to ship and the source folders it is built from.
    """
    claim: Claim = Claim()
    extra_runs: Sequence[str | os.PathLike] = ()
    score: str | None = None
    compress: str | bool = "auto"
    roundtrip: bool = True
    tolerance: float = 0.0
    data_path: str | None = None
    tokenizer_path: str | None = None
    record: bool = False
    cap: int = CAP_BYTES
    eval_speed_ratio: float | None = None
    entry: str = ENTRY
    src_roots: Sequence[Path] | None = None


def pack_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
             request: PackRequest = PackRequest(), log: Log = print) -> PackResult:
    """Write the submission folder atomically; raise PackError (and leave nothing) on failure.

    `out_dir` is the record folder itself (default submission/<RUN_ID>). If it already exists it
    must be an earlier pack (only pack's own files; see check_out_dir): that folder alone is
    then replaced atomically, as a re-pack of the same RUN_ID (QUANT_ONLY) expects. Anything
    else there (a parent folder, extra files) is refused before any work, never deleted.
    """
    runs = _load_runs(run_dir, request.extra_runs, request.score)
    primary = runs[0]
    entry, src_roots, eval_speed_ratio = request.entry, request.src_roots, request.eval_speed_ratio
    out = Path(out_dir if out_dir is not None else default_out_dir(run_dir)).resolve()
    check_out_dir(out)
    parts = ship.parts_for(score_env(primary.eval))    # what the score needs the script to re-run
    forms = build_forms(entry, src_roots, parts)
    sizes = {k: len(v) for k, v in forms.items()}
    log(f"train_gpt.py optional parts: {', '.join(parts) or 'none'}; forms: "
        + ", ".join(f"{k}={v:,}B" for k, v in sizes.items()))
    with rd.io_guard(f"packing into {out.parent}", "the run directory and any earlier pack"):
        out.parent.mkdir(parents=True, exist_ok=True)
        for prefix in (f".{out.name}.tmp-", f".{out.name}.old-"):  # a killed pack's folders
            for p in remove_stale(out.parent, prefix):
                log(f"pack: removed {p} (left by a killed pack)")
        tmp = Path(tempfile.mkdtemp(prefix=owned_name(f".{out.name}.tmp-"), dir=out.parent))
    try:
        with rd.io_guard(f"writing the pack in {out.parent}", "the run directory and any earlier "
                         "pack (the partial folder was removed)"):
            _write(tmp / ARTIFACT, (primary.run_dir / ARTIFACT).read_bytes())
            shipped, rt = _ship_form(tmp, out, forms, primary, request, log)
            table = budget_table(tmp / SCRIPT, tmp / ARTIFACT, request.cap)
            _copy_logs_and_requirements(tmp, runs, requirements_for(
                entry, src_roots, shipped if shipped != "plain" else "", parts))
            sub = _describe(runs, table, shipped, rt, request)
            checks = run_checks(CheckContext(runs, table, sub, rt, request.record,
                                             eval_speed_ratio))
            _write_records(tmp, sub, runs, table, sizes, shipped, checks)
            log(format_checks(checks))
            check_out_dir(out)  # again: the round trip took a while
            _swap_in(tmp, out)
            log(format_budget_table(table))
            for r in runs:
                log(format_eval_cost(run_eval_cost(r), eval_speed_ratio,
                                     f"eval time, seed {r.seed}, {r.eval_file}"))
            log(f"pack: wrote {out}")
            return PackResult(out, table, sizes, shipped, sub, checks, rt)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
