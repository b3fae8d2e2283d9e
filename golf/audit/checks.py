"""The audit's checks, declared once each: name, what it reads, the function.

Adding a check is one entry here (and its function in the module of its group); the CLI, the
table, the JSON and docs/audit.md's table all come from CHECKS.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from golf.audit import claims, data, legality, seeds, significance, size, timing
from golf.audit.context import Context
from golf.audit.report import WARN, Row, Verdict


@dataclass(frozen=True)
class AuditCheck:
    name: str
    reads: str
    run: Callable[[Context], Verdict]


CHECKS: tuple[AuditCheck, ...] = (
    AuditCheck("size.model", "logs (Serialized model / Total submission size), submission.json",
               size.check_model),
    AuditCheck("size.code", "train_gpt.py (its wrapper recipe), logs (Code size lines)",
               size.check_code),
    AuditCheck("size.helpers", "every .py/.c/.so the entry script imports or names, logs",
               size.check_helpers),
    AuditCheck("identity.script", "train_gpt.py, logs (logged code size / hash / source)",
               size.check_identity),
    AuditCheck("time.train", "logs (stopping_early train_time, gptq:reserving, header)",
               timing.check_train_stop),
    AuditCheck("time.train_data_after_stop", "logs (Hessian / calibration lines after the stop)",
               timing.check_train_data_after_stop),
    AuditCheck("time.eval", "logs (total_eval_time, eval timer, warm-up and precompute lines)",
               timing.check_eval_time),
    AuditCheck("seeds.count", "logs (header seed or file name), submission.json seeds",
               seeds.check_seed_count),
    AuditCheck("seeds.same_config", "logs (Hyperparameters: header)", seeds.check_same_config),
    AuditCheck("data.train_shards", "logs (train_shards)", data.check_train_shards),
    AuditCheck("data.val_tokens", "logs (val_tokens / val_loader tokens)", data.check_val_tokens),
    AuditCheck("data.doubled_path", "logs, README.md (datasets/datasets)", data.check_doubled_path),
    AuditCheck("data.disjoint", "--data DIR shards (document hashes)", data.check_disjoint),
    AuditCheck("coverage.targets", "logs (val_tokens, diagnostic lines)", data.check_coverage),
    AuditCheck("claims.phrases", "README.md, submission.json, log headers, launch, code defaults",
               claims.check_phrases),
    AuditCheck("claims.launch_vs_header", "launch commands, log headers",
               claims.check_launch_vs_header),
    AuditCheck("claims.unread_knobs", "launch commands, code (environment reads, strings)",
               claims.check_unread_knobs),
    AuditCheck("claims.reported_numbers", "submission.json val_bpb, logs (score lines)",
               claims.check_reported_numbers),
    AuditCheck("stats.significance", "logs / submission.json of this and the --against folder",
               significance.check_significance),
    AuditCheck("legality.ttt_order", "code that runs (TTT functions)", legality.check_ttt_order),
    AuditCheck("legality.val_in_calibration", "code that runs (calibration / warm-up), logs",
               legality.check_val_in_calibration),
    AuditCheck("legality.eval_access", "code that runs (imports, process calls, train files)",
               legality.check_eval_access),
)


def run_checks(ctx: Context) -> list[Row]:
    """Every check on one folder; a file the parsers cannot read makes that check a WARN."""
    rows = []
    for check in CHECKS:
        try:
            verdict = check.run(ctx)
        except (ValueError, OSError, ArithmeticError, KeyError) as exc:
            verdict = Verdict(WARN, [f"not evaluated: {type(exc).__name__}: {exc}"])
        rows.append(Row(check.name, check.reads, verdict))
    return rows
