"""Seed checks: at least three seeds, all from one configuration.

Why: a record needs a 3-seed mean from one submitted config (#2124's third seed came from
another one); the log headers show it, and every key but the per-run ones must agree.
"""
from __future__ import annotations

from golf.audit.context import Context
from golf.audit.report import FAIL, PASS, WARN, Verdict, na

MIN_SEEDS = 3
# Header keys that legitimately differ between the runs of one configuration.
PER_RUN_KEYS = frozenset({"seed", "run_id", "logfile", "rank", "local_rank", "is_main_process",
                          "artifact_dir", "model_path", "quantized_model_path", "log_path",
                          "runs_dir", "resume", "overwrite"})  # the last three: golfkit's


def check_seed_count(ctx: Context) -> Verdict:
    logs = ctx.folder.logs
    if not logs:
        return Verdict(FAIL, ["no train log in the folder: a record must ship its logs"])
    seeds = {log.seed: log.name for log in logs if log.seed is not None}
    v = Verdict(PASS, [f"seeds {sorted(seeds, key=lambda s: (len(s), s))} from "
                       f"{len(logs)} logs: " + ", ".join(log.name for log in logs)])
    track = str((ctx.folder.submission or {}).get("track", ""))
    if len(seeds) < MIN_SEEDS:  # the non-record track claims no significance
        v.add(WARN if "non" in track else FAIL, f"{len(seeds)} distinct seed(s); a record "
              f"needs at least {MIN_SEEDS}" + (f" (track {track!r})" if track else ""))
    claimed = (ctx.folder.submission or {}).get("seeds")
    if isinstance(claimed, list):
        missing = [s for s in claimed if str(s) not in seeds]
        if missing:
            v.add(FAIL, f"submission.json seeds {missing} have no log in the folder")
        extra = sorted(set(seeds) - {str(s) for s in claimed})
        if extra:
            v.add(WARN, f"logs for seeds {extra} are not in submission.json seeds "
                  "(all runs must be disclosed, #1769)")
    return v


def check_same_config(ctx: Context) -> Verdict:
    logs = [log for log in ctx.folder.logs if log.header]
    if len(logs) < 2:
        return na(f"{len(logs)} log(s) with a `Hyperparameters:` header; nothing to compare")
    ref = logs[0]
    v = Verdict(PASS, [f"reference header {ref.name} ({len(ref.header)} keys)"])
    for log in logs[1:]:
        keys = (set(ref.header) | set(log.header)) - PER_RUN_KEYS
        diff = sorted(k for k in keys if ref.header.get(k, ("<absent>",))[0]
                      != log.header.get(k, ("<absent>",))[0])
        if not diff:
            v.evidence.append(f"{log.name}: identical except per-run keys")
            continue
        shown = "; ".join(f"{k}: {ref.header.get(k, ('<absent>',))[0]!r} -> "
                          f"{log.header.get(k, ('<absent>',))[0]!r}"
                          f" ({log.at(log.header[k][1]) if k in log.header else log.name})"
                          for k in diff[:8])
        v.add(FAIL, f"{log.name} differs from {ref.name} in {len(diff)} key(s): {shown}")
    return v
