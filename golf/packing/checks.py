"""Pre-submit checks as a PASS/WARN/FAIL report (the rules in anchor_eval.md, made mechanical)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from golf.packing.budget import BudgetTable
from golf.packing.stats import RECORD_MARGIN_NATS, RECORD_P_VALUE

REQUIRED_FIELDS = ("author", "name", "github_id", "val_bpb", "val_loss", "pre_quant_val_bpb",
                   "bytes_total", "bytes_code", "bytes_model", "blurb", "date", "seeds",
                   "seed_results", "hardware", "track", "eval_method", "compliance")
TRAIN_LIMIT_S = 600.0


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # PASS | WARN | FAIL
    detail: str


def check_budget(tables: Sequence[BudgetTable]) -> Check:
    worst = max(tables, key=lambda t: t.total)
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
    name = f"training <= 600 s (seed {seed})"
    if train_ms is None:
        return Check(name, "WARN", "training time not recorded")
    secs = train_ms / 1000.0
    hw = hardware.lower().replace(" ", "").replace("×", "x")
    on_8h100 = hw.startswith("8x") and "h100" in hw
    if on_8h100:
        return Check(name, "PASS" if secs <= TRAIN_LIMIT_S else "FAIL", f"{secs:.1f} s on {hardware}")
    return Check(name, "WARN", f"{secs:.1f} s on {hardware!r}; the limit applies on 8xH100, "
                 "re-time there before a record claim")


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


def format_checks(checks: Sequence[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = ["pre-submit checks:"] + [f"  [{c.status:<4}] {c.name:<{width}}  {c.detail}" for c in checks]
    fails = sum(c.status == "FAIL" for c in checks)
    warns = sum(c.status == "WARN" for c in checks)
    lines.append(f"  => {'FAIL' if fails else 'PASS'} ({fails} fail, {warns} warn)")
    return "\n".join(lines)
