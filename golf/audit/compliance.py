"""submission.json's `compliance` flags against the audit's own findings.

Why: records declare `training_under_600s`, `artifact_under_16mb`, `score_first_ttt` ... as
booleans; #2135 declared its training inside 600 s while Hessian collection on training data
ended after it. A flag set to true while the check that decides it fails is a false claim.
"""
from __future__ import annotations

from golf.audit.context import Context
from golf.audit.report import FAIL, NA, PASS, WARN, Verdict

# compliance key -> the checks that decide it. The check runs last in CHECKS and reads their
# verdicts from ctx.verdicts, so nothing is run twice.
DECIDED_BY: dict[str, tuple[str, ...]] = {
    "artifact_under_16mb": ("size.model", "size.helpers"),
    "training_under_600s": ("time.train", "time.train_data_after_stop"),
    "eval_under_600s": ("time.eval",),
    "three_seeds": ("seeds.count",),
    "score_first_ttt": ("legality.ttt_order",),
}


def check_compliance_flags(ctx: Context) -> Verdict:
    flags = (ctx.folder.submission or {}).get("compliance")
    if not isinstance(flags, dict):
        return Verdict(NA, ["no compliance object in submission.json"])
    v = Verdict(NA)
    for key, deciders in DECIDED_BY.items():
        if flags.get(key) is not True:
            continue
        for name in deciders:
            found = ctx.verdicts[name].status if name in ctx.verdicts else NA
            status = {FAIL: FAIL, WARN: WARN, NA: NA}.get(found, PASS)
            v.add(status, f"submission.json compliance.{key}: true; {name} is {found}")
    return v
