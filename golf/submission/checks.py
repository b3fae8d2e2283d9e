"""Pre-submit checks as a PASS/WARN/FAIL report (the challenge's submission rules, made mechanical).

Why a registry: the packer runs every entry of CHECKS on one CheckContext, so adding a check is
one function `(ctx) -> list[Check]` here plus one entry in CHECKS; pack_run never changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from golf.run import rundir as rd
from golf.run.atomic import file_sha256
from golf.run.rules import EVAL_LIMIT_S, TRAIN_LIMIT_S
from golf.submission.budget import CAP_BYTES, BudgetTable
from golf.submission.evaltime import EvalCost, estimate_8xh100, eval_cost, on_8xh100
from golf.submission.roundtrip import RoundTripResult
from golf.submission.run import RunInfo, score_key
from golf.submission.stats import RECORD_MARGIN_NATS, RECORD_P_VALUE

REQUIRED_FIELDS = ("author", "name", "github_id", "val_bpb", "val_loss", "pre_quant_val_bpb",
                   "bytes_total", "bytes_code", "bytes_model", "blurb", "date", "seeds",
                   "seed_results", "hardware", "track", "eval_method", "compliance")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # PASS | WARN | FAIL | N/A (cannot be decided here: the detail says why)
    detail: str


def check_budget(tables: Sequence[BudgetTable]) -> Check:
    worst = max(tables, key=lambda t: t.total)
    if worst.total > CAP_BYTES:  # a BUDGET_BYTES above the challenge cap packs, but cannot submit
        return Check("size cap", "FAIL", f"total {worst.total:,} > the challenge cap {CAP_BYTES:,}")
    if worst.over:
        return Check("size cap", "FAIL", f"total {worst.total:,} > {worst.cap:,} by {-worst.headroom:,} bytes")
    status = "WARN" if worst.low_headroom else "PASS"
    return Check("size cap", status, f"max total {worst.total:,} <= {worst.cap:,} "
                 f"(headroom {worst.headroom:,})")


def check_calibration(hess: Mapping[str, Any] | None, seed: int) -> Check:
    name = f"calibration in training budget (seed {seed})"
    if hess is None:
        return Check(name, "WARN", "no hessians.pt in the run (no GPTQ calibration recorded)")
    elapsed, budget = hess.get("elapsed_ms"), hess.get("train_budget_ms")
    src = hess.get("source", "train")
    if src != "train":
        return Check(name, "FAIL", f"calibration read {src!r} data; it may only read training data")
    if elapsed is None or budget is None:
        return Check(name, "WARN", "hessians.pt lacks elapsed_ms/train_budget_ms")
    if not budget:
        return Check(name, "WARN", f"calibration ended at {elapsed:.0f} ms; no training time cap set")
    ok = float(elapsed) <= float(budget)
    return Check(name, "PASS" if ok else "FAIL",
                 f"calibration ended at {elapsed:.0f} ms of a {budget:.0f} ms training budget")


def check_wallclock(train_ms: float | None, hardware: str, seed: int) -> Check:
    name = f"training <= {TRAIN_LIMIT_S:.0f} s (seed {seed})"
    if train_ms is None:
        return Check(name, "WARN", "training time not recorded")
    secs = train_ms / 1000.0
    if on_8xh100(hardware):
        return Check(name, "PASS" if secs <= TRAIN_LIMIT_S else "FAIL", f"{secs:.1f} s on {hardware}")
    return Check(name, "WARN", f"{secs:.1f} s on {hardware!r}; the limit applies on 8xH100, "
                 "re-time there before a record claim")


def check_eval_time(cost: EvalCost, seed: int,
                    ratio_override: float | None = None) -> tuple[Check, float | None]:
    """The whole scored evaluation (golf.submission.evaltime: deserialize, n-gram hints,
    scoring or TTT) against the 600 s limit: measured on 8xH100 -> PASS/FAIL; elsewhere an
    estimate by ESTIMATE_RULE, labelled as one (over the limit FAIL, under it WARN); no known
    ratio -> N/A with the reason; a part not recorded -> WARN. Returns (check, estimate s)."""
    name = f"eval <= {EVAL_LIMIT_S:.0f} s (seed {seed})"
    parts = ", ".join(f"{p.name} {p.seconds:.1f} s" for p in cost.counted if p.seconds is not None)
    if cost.missing:
        return Check(name, "WARN", f"not recorded: {', '.join(cost.missing)} (the eval record "
                     "predates it); re-run eval_bpb.py on this artifact"), None
    est, how = estimate_8xh100(cost, ratio_override)
    measured = f"{cost.measured:.1f} s measured on {cost.hardware} ({parts})"
    if est is None:
        return Check(name, "N/A", f"{measured}; {how}"), None
    over = est > EVAL_LIMIT_S
    if on_8xh100(cost.hardware) and ratio_override is None:
        return Check(name, "FAIL" if over else "PASS", measured), est
    return Check(name, "FAIL" if over else "WARN",
                 f"ESTIMATE {est:.1f} s on 8xH100 = {how}; {'over' if over else 'under'} "
                 f"{EVAL_LIMIT_S:.0f} s; {measured}; re-time on 8xH100"), est


IDENTITY_FIELDS = ("author", "github_id")


def check_fields(sub: Mapping[str, Any], record: bool = False) -> Check:
    """Result fields must be there; who submits (author, github_id) is only required for a
    record claim, so a development pack warns instead of failing."""
    missing = [k for k in REQUIRED_FIELDS if sub.get(k) in (None, "")]
    if missing and not record and set(missing) <= set(IDENTITY_FIELDS):
        return Check("submission.json complete", "WARN",
                     "missing: " + ", ".join(missing) + " (pass --github-id/--name or set "
                     "GOLF_GITHUB_ID/GOLF_NAME before submitting)")
    if missing:
        return Check("submission.json complete", "FAIL", "missing: " + ", ".join(missing))
    return Check("submission.json complete", "PASS", f"{len(REQUIRED_FIELDS)} required fields present")


def check_record(sub: Mapping[str, Any]) -> list[Check]:
    """At least 3 seeds with mean/std, and p < 0.01 for an improvement of >= 0.005 nats."""
    n = len(sub.get("seeds", []))
    out = [Check("record: >= 3 seeds", "PASS" if n >= 3 else "FAIL", f"{n} seed(s)")]
    test = sub.get("significance")
    if not test:
        out.append(Check("record: Welch test", "FAIL", "no baseline given (--baseline-mean/-std/-n "
                         "or --baseline-bpbs... use val_loss nats)"))
        return out
    ok = test["p_value"] < RECORD_P_VALUE and test["delta_nats"] >= RECORD_MARGIN_NATS
    out.append(Check("record: Welch test", "PASS" if ok else "FAIL",
                     f"delta {test['delta_nats']:.5f} nats, t={test['t']:.3f}, df={test['df']:.1f}, "
                     f"one-sided p={test['p_value']:.4g} (need >= {RECORD_MARGIN_NATS} nats, "
                     f"p < {RECORD_P_VALUE})"))
    return out


def check_post_ttt(run: RunInfo, rt: RoundTripResult | None = None) -> Check:
    """A TTT or tilted score must come from this very artifact, and the packed script, which
    carries TTT and the tilt for such a score (golf.ship), re-runs it in the round trip."""
    key = score_key(run.eval)
    name = "post-TTT score" if key == "post_ttt" else "tilted score"
    want = run.eval.get("artifact_sha256")
    if want and want != file_sha256(run.run_dir / rd.ARTIFACT):
        return Check(name, "FAIL", f"{run.eval_file} was measured on another artifact (sha256 "
                     "differs); re-run eval_bpb.py (--ttt / NGRAM_TILT_ENABLED=1) on this one")
    t = run.eval[key]
    what = f"{t['ttt']}, score-first" if key == "post_ttt" else "token-only n-gram tilt"
    if key == "post_ttt" and t.get("tilt"):
        what += ", tilted"
    if rt is None:
        return Check(name, "WARN", f"{t['val_bpb']:.6f} ({what}) from {run.eval_file} on this "
                     "artifact; not re-run by the packed script (--no-roundtrip)")
    return Check(name, "PASS", f"{t['val_bpb']:.6f} ({what}) from {run.eval_file}, re-run by the "
                 f"packed script in the round trip ({'bit-exact' if rt.exact else 'within tolerance'})")


def check_roundtrip(rt: RoundTripResult | None) -> Check:
    return Check("round trip", "PASS" if rt else "WARN",
                 "bit-exact" if rt and rt.exact else
                 ("within tolerance" if rt else "skipped (--no-roundtrip)"))


def run_eval_cost(run: RunInfo) -> EvalCost:
    """The parts of the run's score record, with the hardware that measured them."""
    return eval_cost(run.eval, run.eval.get("hardware") or run.hardware)


def seed_eval_time(run: RunInfo, ratio_override: float | None = None) -> tuple[Check, float | None]:
    """check_eval_time on one run's score record (eval.json or pack.py --score's)."""
    return check_eval_time(run_eval_cost(run), run.seed, ratio_override)


# ----------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class CheckContext:
    """Everything a check may read: the runs, the shipped budget, the submission.json being
    written, the round trip (None when skipped) and the pack's options."""
    runs: Sequence[RunInfo]
    table: BudgetTable
    submission: Mapping[str, Any]
    roundtrip: RoundTripResult | None = None
    record: bool = False
    eval_speed_ratio: float | None = None


def _size_cap(ctx: CheckContext) -> list[Check]:
    return [check_budget([ctx.table])]


def _fields(ctx: CheckContext) -> list[Check]:
    return [check_fields(ctx.submission, record=ctx.record)]


def _per_seed(ctx: CheckContext) -> list[Check]:
    """Calibration, training time and eval time, seed by seed (one block per seed)."""
    out: list[Check] = []
    for r in ctx.runs:
        out += [check_calibration(r.hessians, r.seed), check_wallclock(r.train_time_ms, r.hardware, r.seed),
                seed_eval_time(r, ctx.eval_speed_ratio)[0]]
    return out


def _roundtrip(ctx: CheckContext) -> list[Check]:
    return [check_roundtrip(ctx.roundtrip)]


def _post_ttt(ctx: CheckContext) -> list[Check]:
    return [check_post_ttt(ctx.runs[0], ctx.roundtrip)] if score_key(ctx.runs[0].eval) != "post" else []


def _record(ctx: CheckContext) -> list[Check]:
    return check_record(ctx.submission) if ctx.record else []


CheckFn = Callable[[CheckContext], list[Check]]
# The pre-submit checks, in report order: add a rule as a function above and one entry here.
CHECKS: tuple[CheckFn, ...] = (_size_cap, _fields, _per_seed, _roundtrip, _post_ttt, _record)


def run_checks(ctx: CheckContext, checks: Sequence[CheckFn] | None = None) -> list[Check]:
    """Every check of `checks` (default: CHECKS, read at call time) on `ctx`, in order."""
    return [c for fn in (CHECKS if checks is None else checks) for c in fn(ctx)]


def format_checks(checks: Sequence[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = ["pre-submit checks:"] + [f"  [{c.status:<4}] {c.name:<{width}}  {c.detail}" for c in checks]
    fails = sum(c.status == "FAIL" for c in checks)
    warns = sum(c.status == "WARN" for c in checks)
    na = sum(c.status == "N/A" for c in checks)
    lines.append(f"  => {'FAIL' if fails else 'PASS'} ({fails} fail, {warns} warn"
                 + (f", {na} n/a)" if na else ")"))
    return "\n".join(lines)
