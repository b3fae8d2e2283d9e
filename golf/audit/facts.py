"""The numbers a train log prints, found by pattern: sizes, times, data counts and the score.

Why one table of patterns: the size, time, data, coverage and statistics checks read the same
lines; each line format is written once here, with the record family it comes from.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from golf.audit.folder import LogFile

NUM = r"(\d+(?:\.\d+)?)"
# Quantized model blob and the total the log claims (the unquantized "Serialized model: N"
# of the baseline is not the artifact and is deliberately not matched).
MODEL_BYTES = re.compile(r"Serialized model (?:quantized|int\d)\S*: (\d+) bytes")
TOTAL_BYTES = re.compile(r"Total submission size (?:quantized|int\d)\S*: (\d+) bytes")
CODE_RAW = re.compile(r"Code size(?: \(uncompressed\))?: (\d+) bytes")
CODE_COUNTED = re.compile(r"Code size \(compressed\): (\d+) bytes")
CODE_HASH = re.compile(r"(?i)(?:code|script)[ _]?(?:sha256|hash)\s*[:=]\s*([0-9a-f]{16,64})")
STOP = re.compile(r"stopping_early:.*?train_time:\s*" + NUM + "ms")
STEP_TIME = re.compile(r"train_time:\s*" + NUM + "ms")
RESERVE = re.compile(r"gptq:reserving\s*" + NUM + r"s,?\s*effective[=:]\s*" + NUM)
TRAIN_DATA_PHASE = re.compile(r"(?i)hessian|calibrat")
DURATION = re.compile(r"(?:\bin |elapsed[=:]\s*|done \(|t:)" + NUM + r"\s*s\b|" + NUM + r"ms\b")
TRAIN_SHARDS = re.compile(r"train_shards:\s*(\d+)")
VAL_TOKENS = re.compile(r"(?:^val_tokens:\s*|val_loader:.*\btokens:)(\d+)")
TOTAL_EVAL = re.compile(r"total_eval_time:\s*" + NUM + "s")
EVAL_TIMER = re.compile(r"beginning .*eval timer")
SCORE = re.compile(r"^(?P<label>[a-z][\w]*) val_loss:\s*(?P<loss>[\d.]+)\s+val_bpb:\s*"
                   r"(?P<bpb>[\d.]+)(?:.*?eval_time:\s*(?P<ms>[\d.]+)ms)?")
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


def number(log: LogFile, pattern: re.Pattern[str], last: bool = True) -> tuple[float, str] | None:
    """The first group that matched (as a number) and its file:line; the last hit by default."""
    hit = log.last(pattern) if last else log.first(pattern)
    if hit is None:
        return None
    lineno, m = hit
    value = next(g for g in m.groups() if g is not None)
    return float(value), log.at(lineno)


def duration_s(text: str) -> float | None:
    """Seconds a phase line reports (`in 3.6s`, `elapsed=165.67s`, `(104.7s)`, `10977ms`)."""
    m = DURATION.search(text)
    if not m:
        return None
    return float(m.group(1)) if m.group(1) else float(m.group(2)) / 1000.0


def headline_score(log: LogFile) -> Score | None:
    """The score line by label priority (its last occurrence), else the last labelled score."""
    found: dict[str, Score] = {}
    for lineno, m in log.grep(SCORE):
        ms = float(m.group("ms")) if m.group("ms") else None
        found[m.group("label")] = Score(m.group("label"), float(m.group("loss")),
                                        float(m.group("bpb")), ms, log.at(lineno))
    for label in SCORE_LABELS:
        if label in found:
            return found[label]
    finals = [s for s in found.values() if "diagnostic" not in s.label and s.label != "step"]
    return finals[-1] if finals else None
