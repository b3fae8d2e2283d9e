"""The submission machinery: turn a finished run into a challenge record folder.

One job per module, and this file is the front door (import from `golf.submission`):

    script      the shipped train_gpt.py: its forms, exact code bytes, requirements.txt
    amalgamate  how that single file is built (embedded sources + an import hook)
    run         a run directory as the packer reads it (RunInfo, load_run, what was scored)
    budget      code + model bytes against the cap (the table every size print uses)
    evaltime    what the scored evaluation costs, part by part, and the 8xH100 estimate rule
    roundtrip   proof that the shipped file reproduces the run's score (post, +TTT, +tilt)
    checks      the pre-submit checks: a registry (CHECKS) the packer runs in order
    stats       Welch's t-test for a record claim (pure math)
    record      submission.json and the generated README.md
    assemble    pack_run: the phases, and the out-folder rules (never replace what pack did not write)

Never embedded in the packed script (golf/ship.py's "packer" part): a submission has no packer.
"""
from golf.run.errors import OverCapError, PackError, RoundTripError
from golf.submission.assemble import (PackRequest, PackResult, check_out_dir, default_out_dir,
                                      pack_run)
from golf.submission.budget import (CAP_BYTES, BudgetTable, budget_cap, budget_table,
                                    enforce_budget, format_budget_table)
from golf.submission.checks import CHECKS, Check, CheckContext, format_checks, run_checks
from golf.submission.record import Claim, build_submission_json, render_readme
from golf.submission.roundtrip import RoundTripResult, RoundTripTarget, run_roundtrip
from golf.submission.evaltime import EvalCost, eval_cost, eval_seconds, format_eval_cost
from golf.submission.run import RunInfo, headline, load_run, roundtrip_settings, verify_artifact
from golf.submission.script import (ENTRY, build_forms, build_train_script, code_bytes,
                                    requirements_for)

__all__ = ["pack_run", "PackRequest", "PackResult", "Claim", "check_out_dir", "default_out_dir",
           "code_bytes", "build_train_script", "build_forms", "requirements_for", "ENTRY",
           "budget_table", "format_budget_table", "enforce_budget", "budget_cap", "BudgetTable",
           "CAP_BYTES", "load_run", "RunInfo", "roundtrip_settings", "headline", "eval_seconds",
           "EvalCost", "eval_cost", "format_eval_cost",
           "verify_artifact", "build_submission_json", "render_readme", "run_roundtrip",
           "RoundTripResult", "RoundTripTarget", "CHECKS", "Check", "CheckContext", "run_checks",
           "format_checks",
           "PackError", "OverCapError", "RoundTripError"]
