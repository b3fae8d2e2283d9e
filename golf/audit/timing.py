"""Time checks per seed: the training stop, training-data phases after it, and eval time.

Why: everything that reads training data must end by 600 s (the #1868 compliance rerun used
an 8 s GPTQ reserve so Hessian collection fits; a 0.5 s reserve prints as "0s"), and eval has
its own 600 s whose boundary is unofficial (#1967): deserialization and the compile warm-up are
excluded in practice, precompute inside the timer counts. The logs carry durations, not clock
stamps, so a phase's end is the stop time plus the durations logged up to it.
"""
from __future__ import annotations

from golf.audit import facts
from golf.audit.context import Context, needs_logs
from golf.audit.folder import LogFile
from golf.audit.report import FAIL, PASS, WARN, Verdict
from golf.run.rules import EVAL_LIMIT_S, TRAIN_LIMIT_S


def _stop_s(log: LogFile) -> tuple[float, int] | None:
    """Training stop in seconds and its line: `stopping_early ... train_time:Nms`, else the first
    line that shows the final train_time (golfkit's EMA eval line after calibration repeats it,
    and the stop is before calibration)."""
    hit = log.last(facts.STOP)
    if hit is None:
        steps = list(log.grep(facts.STEP_TIME))
        final = steps[-1][1].group(1) if steps else None
        hit = next((h for h in steps if h[1].group(1) == final), None)
    return (float(hit[1].group(1)) / 1000.0, hit[0]) if hit else None


def _log_stops(ctx: Context) -> list[tuple[LogFile, tuple[float, int] | None]]:
    return [(log, _stop_s(log)) for log in ctx.folder.logs]


@needs_logs
def check_train_stop(ctx: Context) -> Verdict:
    v = Verdict(PASS)
    for log, stop in _log_stops(ctx):
        if stop is None:
            v.add(WARN, f"{log.name}: no train_time line found")
            continue
        v.add(PASS if stop[0] <= TRAIN_LIMIT_S else FAIL,
              f"{log.at(stop[1])}: training stopped at {stop[0]:.3f} s (limit {TRAIN_LIMIT_S:.0f} s)")
        res = log.first(facts.RESERVE)
        if res:
            reserve = TRAIN_LIMIT_S - float(res[1].group(2)) / 1000.0
            v.evidence.append(f"{log.at(res[0])}: reserve {reserve:.3f} s "
                              f"(printed as {res[1].group(1)}s)")
        for key in ("force_stop_step", "FORCE_STOP_STEP"):
            if key in log.header and log.header[key][0] not in ("", "0", "None"):
                v.add(WARN, f"{log.at(log.header[key][1])}: {key}={log.header[key][0]} stops by "
                      "step count, not the clock (#1956: 601,153 ms)")
    return v


def phases_after_stop(log: LogFile, stop_line: int) -> list[tuple[int, str, float]]:
    """(line, text, seconds) of every line after the stop that reports a duration."""
    out = []
    for i, line in enumerate(log.lines[stop_line:], stop_line + 1):
        secs = facts.duration_s(line)
        if secs is not None:
            out.append((i, line.strip(), secs))
    return out


@needs_logs
def check_train_data_after_stop(ctx: Context) -> Verdict:
    """Hessian / calibration phases on training data, ended by 600 s (stop + their duration)."""
    v = Verdict(PASS)
    for log, stop in _log_stops(ctx):
        if stop is not None and not _train_data_phases(log, stop, v) + _calibration_ends(log, v):
            v.evidence.append(f"{log.name}: no Hessian/calibration phase logged after the stop")
    return v


def _calibration_ends(log: LogFile, v: Verdict) -> int:
    """golfkit's `calibration:done ... elapsed_ms:N`: where calibration ended on the training
    clock (training time + calibration), compared with the limit directly."""
    hits = list(log.grep(facts.CALIBRATION_END))
    for line_no, m in hits:
        end = float(m.group(1)) / 1000.0
        v.add(FAIL if end > TRAIN_LIMIT_S else PASS, f"{log.at(line_no)}: calibration on "
              f"training data ends at {end:.2f} s of training time (limit {TRAIN_LIMIT_S:.0f} s)")
    return len(hits)


def _train_data_phases(log: LogFile, stop: tuple[float, int], v: Verdict) -> int:
    """Add one finding per training-data phase after the stop; return how many there were."""
    elapsed, hits = stop[0], 0
    for line_no, text, secs in phases_after_stop(log, stop[1]):
        if facts.EVAL_TIMER.search(text) or "ttt" in text.lower():
            break
        elapsed += secs
        if not facts.TRAIN_DATA_PHASE.search(text):
            continue
        hits += 1
        own = stop[0] + secs
        status = FAIL if own > TRAIN_LIMIT_S else WARN if elapsed > TRAIN_LIMIT_S else PASS
        v.add(status, f"{log.at(line_no)}: training-data phase of {secs:.2f} s ends at "
              f">= {own:.2f} s (stop {stop[0]:.2f} + phase), {elapsed:.2f} s counting "
              f"every phase logged since the stop; limit {TRAIN_LIMIT_S:.0f} s")
        if status != PASS:
            v.evidence.append("  (#2135 was accepted with a 0.5 s reserve, not ruled "
                              "legal; the #1868 compliance rerun used 8 s)")
    return hits


def _artifact_line(log: LogFile) -> int:
    """Where evaluation can begin: after the artifact's size line, else after the stop."""
    hit = log.last(facts.TOTAL_BYTES) or log.last(facts.MODEL_BYTES)
    stop = _stop_s(log)
    return hit[0] if hit else stop[1] if stop else 0


@needs_logs
def check_eval_time(ctx: Context) -> Verdict:
    v = Verdict(PASS)
    for log in ctx.folder.logs:
        score = facts.headline_score(log)
        total = facts.number(log, facts.TOTAL_EVAL)
        secs = total[0] if total else (score.eval_ms / 1000.0 if score and score.eval_ms is not None
                                       else None)   # a tiny eval prints 0.0 s: a time all the same
        if secs is None:
            v.add(WARN, f"{log.name}: no eval time printed for the score")
            continue
        where = total[1] if total else score.where
        timer = log.first(facts.EVAL_TIMER)
        start = _artifact_line(log)
        excluded = [(n, t, s) for n, t, s in phases_after_stop(log, start)
                    if (timer is None or n < timer[0]) and not facts.TRAIN_DATA_PHASE.search(t)
                    and facts.SCORE.search(t) is None]
        inside = [(n, t, s) for n, t, s in phases_after_stop(log, timer[0])
                  if "precompute" in t or "elapsed" in t] if timer else []
        out_s = sum(s for _, _, s in excluded)
        status = FAIL if secs > EVAL_LIMIT_S else WARN if secs + out_s > EVAL_LIMIT_S else PASS
        v.add(status, f"{where}: eval {secs:.1f} s (limit {EVAL_LIMIT_S:.0f} s); "
              f"{out_s:.1f} s of phases logged outside it (with them {secs + out_s:.1f} s)")
        v.evidence += [f"  excluded {log.at(n)}: {t[:70]} ({s:.1f} s)" for n, t, s in excluded]
        v.evidence += [f"  inside the timer {log.at(n)}: {t[:70]} ({s:.1f} s)"
                       for n, t, s in inside[:3]]
        v.evidence += _measured_parts(ctx, log)
        outside = log.header.get("ngram_hint_precompute_outside")
        if outside and outside[0].lower() not in ("false", "0", ""):
            v.add(WARN, f"{log.at(outside[1])}: ngram_hint_precompute_outside {outside[0]}: the "
                  "n-gram precompute runs outside the eval timer (contested, #1967)")
    return v


def _measured_parts(ctx: Context, log: LogFile) -> list[str]:
    """golfkit's submission.json splits each seed's eval time into its parts and names the
    hardware it was measured on (the 600 s limit is for 8xH100)."""
    results = (ctx.folder.submission or {}).get("seed_results")
    one = results.get(str(log.seed)) if isinstance(results, dict) and log.seed else None
    if not isinstance(one, dict) or not isinstance(one.get("eval_time_s"), (int, float)):
        return []
    parts = one.get("eval_time_parts") or {}
    shown = ", ".join(f"{k} {v:.1f} s" for k, v in parts.items() if isinstance(v, (int, float)))
    return [f"  submission.json seed_results.{log.seed}: eval_time_s {one['eval_time_s']:.1f} "
            f"({shown or 'no parts'}) measured on {one.get('eval_time_hardware', '?')}"]
