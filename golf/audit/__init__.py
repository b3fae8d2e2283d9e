"""Audit any records/ submission folder from its own files, without running its code.

`python -m golf.audit FOLDER [FOLDER ...] [--against FOLDER ...] [--json OUT] [--data DIR]`

    folder        the folder read strictly as data (text, JSON; binaries only measured)
    source        syntax trees: environment reads, local files pulled in, wrapper decoding
    facts         the log line patterns (sizes, times, counts, scores)
    wrapper       recomputing a computed code-size recipe (compress + b85 + stub)
    size, timing, seeds, data, claims, significance, legality   the checks, by group
    checks        CHECKS: each check declared once (name, what it reads, function)
    report        verdicts, the table and the JSON

Never shipped in the packed script: a submission has no auditor.
"""
from golf.audit.checks import CHECKS, AuditCheck, run_checks
from golf.audit.context import Context
from golf.audit.folder import load_folder

__all__ = ["CHECKS", "AuditCheck", "run_checks", "Context", "load_folder"]
