"""The numbers a train log prints, found by pattern: sizes, times, data counts and the score.

Why one table of patterns: the size, time, data, coverage and statistics checks read the same
lines; each line format is written once here, with the record family it comes from.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from golf.audit.folder import LogFile

NUM = r"(\d+(?:\.\d+)?)"
COUNT = r"(\d[\d,]*)"   # golfkit prints byte and token counts with thousands separators
# Quantized model blob and the total the log claims (the unquantized "Serialized model: N" of
# the baseline is not the artifact and is deliberately not matched); golfkit's pack prints a
# budget table ("  model bytes (artifact)   338,158") after the shipped form's name.
MODEL_BYTES = re.compile(r"Serialized model (?:quantized|int\d)\S*: (\d+) bytes|"
                         r"^\s+model bytes \(artifact\)\s+" + COUNT + r"$")
TOTAL_BYTES = re.compile(r"Total submission size (?:quantized|int\d)\S*: (\d+) bytes|"
                         r"^\s+total bytes\s+" + COUNT + r"$")
# golfkit logs every form of the packed script: plain= is the readable source the wrapper holds
CODE_RAW = re.compile(r"Code size(?: \(uncompressed\))?: (\d+) bytes|"
                      r"train_gpt\.py (?:optional parts: [^;]*; )?forms: plain=" + COUNT + "B")
CODE_COUNTED = re.compile(r"Code size \(compressed\): (\d+) bytes|"
                          r"^\s+code bytes \(train_gpt\.py\)\s+" + COUNT + r"$")
CODE_HASH = re.compile(r"(?i)(?:code|script)[ _]?(?:sha256|hash)\s*[:=]\s*([0-9a-f]{16,64})")
STOP = re.compile(r"stopping_early:.*?train_time:\s*" + NUM + "ms")
STEP_TIME = re.compile(r"train_time:\s*" + NUM + "ms")
RESERVE = re.compile(r"gptq:reserving\s*" + NUM + r"s,?\s*effective[=:]\s*" + NUM)
TRAIN_DATA_PHASE = re.compile(r"(?i)hessian|calibrat")
# golfkit's calibration line states its end on the training clock, not a duration
CALIBRATION_END = re.compile(r"^calibration:done\b.*\belapsed_ms:" + NUM)
DURATION = re.compile(r"(?:\bin |elapsed[=:]\s*|done \(|t:)" + NUM + r"\s*s\b|" + NUM + r"ms\b")
TRAIN_SHARDS = re.compile(r"train_shards:\s*(\d+)")
VAL_TOKENS = re.compile(r"(?:^val_tokens:\s*|val_loader:.*\btokens:)(\d+)")
TOTAL_EVAL = re.compile(r"total_eval_time:\s*" + NUM + "s")
EVAL_TIMER = re.compile(r"beginning .*eval timer")
SCORE = re.compile(r"^(?P<label>[a-z][\w]*) val_loss:\s*(?P<loss>[\d.]+)\s+val_bpb:\s*"
                   r"(?P<bpb>[\d.]+)(?:.*?eval_time:\s*(?P<ms>[\d.]+)ms)?")
# golfkit's eval table (golf.eval.score.format_table): label, mode, val_loss, val_bpb, tokens,
# bytes, tok/s, seconds, and "(partial)" when MAX_EVAL_TOKENS cut the split
EVAL_ROW = re.compile(r"^(?P<label>pre|post|\S+\+tilt|ttt:\S+)\s+(?P<mode>[a-z]+)\s+"
                      r"(?P<loss>\d+\.\d+)\s+(?P<bpb>\d+\.\d+)\s+(?P<tokens>[\d,]+)\s+[\d,]+\s+"
                      r"[\d,]+\s+(?P<s>\d+(?:\.\d+)?)(?P<partial> \(partial\))?$")
EVAL_MODE = re.compile(r"^eval:(?P<mode>[a-z]+)\b.*\bpost_val_bpb:")
# Which labelled line is the headline score, best first (later records print several).
SCORE_LABELS = ("quantized_ttt_phased", "quantized_ttt", "quantized_sliding_window",
                "final_int8_zlib_roundtrip_exact", "quantized")


@dataclass(frozen=True)
class Score:
    label: str
    val_loss: float
    val_bpb: float
    eval_ms: float | None
    where: str
    tokens: int | None = None    # scored tokens, when the line prints them (golfkit's table)
    partial: bool = False        # the line says the split was cut (golfkit's "(partial)")
    digits: int = 16             # decimals of val_bpb as printed


def number(log: LogFile, pattern: re.Pattern[str], last: bool = True) -> tuple[float, str] | None:
    """The first group that matched (as a number) and its file:line; the last hit by default."""
    hit = log.last(pattern) if last else log.first(pattern)
    if hit is None:
        return None
    lineno, m = hit
    value = next(g for g in m.groups() if g is not None)
    return float(value.replace(",", "")), log.at(lineno)


def duration_s(text: str) -> float | None:
    """Seconds a phase line reports (`in 3.6s`, `elapsed=165.67s`, `(104.7s)`, `10977ms`)."""
    m = DURATION.search(text)
    if not m:
        return None
    return float(m.group(1)) if m.group(1) else float(m.group(2)) / 1000.0


def headline_score(log: LogFile) -> Score | None:
    """The score line by label priority (its last occurrence), else the last labelled score,
    else golfkit's eval table (golfkit_score)."""
    found: dict[str, Score] = {}
    for lineno, m in log.grep(SCORE):
        ms = float(m.group("ms")) if m.group("ms") else None
        found[m.group("label")] = Score(m.group("label"), float(m.group("loss")),
                                        float(m.group("bpb")), ms, log.at(lineno),
                                        digits=decimals(m.group("bpb")))
    for label in SCORE_LABELS:
        if label in found:
            return found[label]
    finals = [s for s in found.values() if "diagnostic" not in s.label and s.label != "step"]
    return finals[-1] if finals else golfkit_score(log)


def golfkit_score(log: LogFile) -> Score | None:
    """The row of golfkit's last eval table that is the score: TTT, else the tilt, else the
    artifact (`post`), in the mode the `eval:MODE` line names (golf.submission.run.headline)."""
    rows = list(log.grep(EVAL_ROW))
    mode = log.last(EVAL_MODE)
    if not rows:
        return None
    def rank(m: re.Match[str]) -> int:
        label = m.group("label")
        return 3 if label.startswith("ttt:") else 2 if label.endswith("+tilt") else \
            1 if label == "post" and (mode is None or m.group("mode") == mode[1].group("mode")) else 0
    lineno, m = max(rows, key=lambda hit: (rank(hit[1]), hit[0]))
    if rank(m) == 0:
        return None
    return Score(f"{m.group('label')} {m.group('mode')}", float(m.group("loss")),
                 float(m.group("bpb")), 1000.0 * float(m.group("s")), log.at(lineno),
                 int(m.group("tokens").replace(",", "")), bool(m.group("partial")),
                 decimals(m.group("bpb")))


def decimals(text: str) -> int:
    """Digits after the point in a printed number ("1.0570" -> 4)."""
    return len(text.partition(".")[2])
