"""The audit's checks, declared once each: name, what it reads, the function.

Adding a check is one entry here (and its function in the module of its group); the CLI, the
table, the JSON and docs/audit.md's table all come from CHECKS.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from golf.audit import (claims, compliance, data, environment, layout, legality, seeds,
                        significance, size, timing)
from golf.audit.context import Context
from golf.audit.report import WARN, Row, Verdict


@dataclass(frozen=True)
class AuditCheck:
    name: str
    reads: str
    flags: str       # what FAIL / WARN mean, with the dispute it comes from
    run: Callable[[Context], Verdict]


CHECKS: tuple[AuditCheck, ...] = (
    AuditCheck("folder.layout", "file names, submission.json",
               "FAIL: README.md, submission.json, train_gpt.py or a log missing",
               layout.check_layout),
    AuditCheck("size.model", "logs (Serialized model / Total submission size, golfkit's budget table), "
               "submission.json bytes",
               "FAIL: model + counted code > 16,000,000; WARN: margin < 10 KB, printed total "
               "!= model + code", size.check_model),
    AuditCheck("size.code", "train_gpt.py (its wrapper recipe), logs (Code size lines)",
               "shipped vs logged vs recomputed code bytes; FAIL: recomputed wrapper differs "
               "by > 1 % (#1835, #1855); N/A: pyminify recipes", size.check_code),
    AuditCheck("size.helpers", "every local file the code imports or names (.py, .c, .so, data)",
               "WARN: a helper outside the counted code; FAIL: with it the total is over the "
               "cap (#1412, #2135)", size.check_helpers),
    AuditCheck("identity.script", "train_gpt.py, logs (code size / hash / embedded source, golfkit's plain= form)",
               "FAIL: the logged raw size or hash is not the committed file's (#1855)",
               size.check_identity),
    AuditCheck("time.train", "logs (stopping_early, gptq:reserving, header)",
               "FAIL: training stopped after 600 s; WARN: FORCE_STOP_STEP (#1956)",
               timing.check_train_stop),
    AuditCheck("time.train_data_after_stop", "logs (Hessian / calibration lines after the stop, golfkit's calibration end)",
               "FAIL: stop + the phase > 600 s; WARN: only with the phases logged between "
               "(#1868 rerun, #2135)", timing.check_train_data_after_stop),
    AuditCheck("time.eval", "logs (total_eval_time, eval timer, warm-up, precompute, golfkit's eval table), "
               "submission.json eval-time parts",
               "FAIL: scored eval > 600 s; WARN: > 600 s with the excluded phases (#1967)",
               timing.check_eval_time),
    AuditCheck("seeds.count", "logs (header seed, seed: line or file name), submission.json seeds",
               "FAIL: < 3 seeds, a claimed seed without a log; WARN: undisclosed runs (#1769)",
               seeds.check_seed_count),
    AuditCheck("seeds.same_config", "logs (Hyperparameters: header)",
               "FAIL: headers differ in a key other than per-run ones, named (#2124)",
               seeds.check_same_config),
    AuditCheck("data.train_shards", "logs (train_shards)",
               "FAIL: 1499 (the val-docs leak, #2127); WARN: not 80", data.check_train_shards),
    AuditCheck("data.val_tokens", "logs (val_tokens / val_loader tokens)",
               "FAIL: not the count of the export the header names (#1923, #2109); WARN: no "
               "canonical export (custom tokenizer)", data.check_val_tokens),
    AuditCheck("data.doubled_path", "logs, README.md",
               "WARN: a datasets/datasets path (#2127 fingerprint, not proof alone)",
               data.check_doubled_path),
    AuditCheck("data.disjoint", "--data DIR shards (document hashes)",
               "FAIL: > 1 % of the validation documents also in training shards (#2127); "
               "WARN: a few exact duplicates", data.check_disjoint),
    AuditCheck("coverage.targets", "logs (val_tokens, diagnostic lines, golfkit's eval table tokens)",
               "targets scored vs the full split; WARN > 0.01 % dropped, FAIL > 1 % (#1854)",
               data.check_coverage),
    AuditCheck("claims.phrases", "README.md, submission.json, log headers, launch, code defaults",
               "FAIL: BOS-fixed / no TTT / no n-gram / token-only / YaRN / defaults reproduce "
               "contradicted by what ran (#2135)", claims.check_phrases),
    AuditCheck("claims.launch_vs_header", "launch commands, log headers",
               "FAIL: a launch value that is not what the log header ran with (#86)",
               claims.check_launch_vs_header),
    AuditCheck("claims.unread_knobs", "launch commands, code (environment reads, settings fields, strings)",
               "WARN: a launch variable no code file reads (EVAL_STRIDE in #1855)",
               claims.check_unread_knobs),
    AuditCheck("claims.reported_numbers", "submission.json val_bpb, logs (score lines)",
               "FAIL: val_bpb is not the mean of the logged seed scores",
               claims.check_reported_numbers),
    AuditCheck("claims.environment", "requirements.txt, submission.json, README.md, code",
               "WARN: torch pin != the claimed pytorch_version (#2135); a program the code "
               "runs (gcc, lrzip) not declared (#1855)", environment.check_environment),
    AuditCheck("stats.significance", "logs / submission.json of this and the --against folder",
               "FAIL: one-sided Welch p >= 0.25 on val_bpb (#1902); WARN: README 0.005 nats "
               "at p < 0.01 not met", significance.check_significance),
    AuditCheck("legality.ttt_order", "code that runs (TTT functions)",
               "WARN: an update before the first no_grad scoring block (C3, #1017)",
               legality.check_ttt_order),
    AuditCheck("legality.val_in_calibration", "code that runs (calibration / warm-up), logs",
               "WARN: a validation name inside calibration or warm-up (#1530)",
               legality.check_val_in_calibration),
    AuditCheck("legality.eval_access", "code that runs (imports, process calls, train files)",
               "WARN: network import, a process call, training files read at eval",
               legality.check_eval_access),
    # last: it reads the verdicts of the checks above
    AuditCheck("claims.compliance_flags", "submission.json compliance, the verdicts above",
               "FAIL: a flag set true (training_under_600s, artifact_under_16mb, ...) while "
               "the check deciding it FAILs", compliance.check_compliance_flags),
)


def run_checks(ctx: Context) -> list[Row]:
    """Every check on one folder; a file the parsers cannot read makes that check a WARN."""
    rows = []
    for check in CHECKS:
        try:
            verdict = check.run(ctx)
        except (ValueError, OSError, ArithmeticError, KeyError) as exc:
            verdict = Verdict(WARN, [f"not evaluated: {type(exc).__name__}: {exc}"])
        ctx.verdicts[check.name] = verdict
        rows.append(Row(check.name, check.reads, verdict))
    return rows


def markdown_table() -> str:
    """The checks table of docs/audit.md (a test keeps the page equal to CHECKS)."""
    lines = ["| check | reads | what it flags |", "|---|---|---|"]
    lines += [f"| `{c.name}` | {c.reads} | {c.flags} |" for c in CHECKS]
    return "\n".join(lines)
