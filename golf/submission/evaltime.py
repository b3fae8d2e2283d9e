"""What a submission's scored evaluation costs, part by part as measured, and the one rule that
turns a measurement into an estimate on 8xH100 (where the 600 s eval limit applies).

Why parts: the frontier's final number is made after training: the artifact is deserialized,
the n-gram hints are built (#2135 counts them inside its eval timer), and TTT scores while it
adapts. These parts scale differently with the hardware: deserialization and the hint
precompute run whole on every rank's CPU (more GPUs do not shorten them), scoring and TTT are
split over the GPUs. A diagnostic pass that does not make the reported number (the plain
post-quant pass when TTT makes it) is listed but not counted, as the records do (their eval
timer starts after it; whether it should count is unofficial, #1967; docs/packing.md).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from golf.run import settings
from golf.submission.run import score_key, tilt_in_score

HOST, DEVICE = "host", "device"
# The estimate rule, stated once (the check's detail, pack's table and docs/packing.md quote it).
ESTIMATE_RULE = ("8xH100 estimate = host parts as measured (deserialize, n-gram hints: whole on "
                 "every rank's CPU) + device parts (scoring, TTT) / R; R = 1 when measured on "
                 "8xH100, 8/k on k H100 or H200 (ideal scaling over GPUs, optimistic: an estimate "
                 "over the limit FAILs, one under only WARNs), GOLF_EVAL_SPEED_RATIO when set; "
                 "no R is known for a CPU or another GPU, so no estimate is made (N/A)")
# Speed of one device of a kind relative to one H100 at evaluation (H200: same compute).
PER_DEVICE_VS_H100 = {"h100": 1.0, "h200": 1.0}
# (eval record key, part name): the passes a record can hold, in the order they run.
PASSES = (("post", "post-quant scoring"), ("post_tilt", "post-quant scoring + tilt"),
          ("post_ttt", "TTT (score-first: scores as it adapts)"))


@dataclass(frozen=True)
class EvalPart:
    name: str
    seconds: float | None   # None: the record does not hold it
    where: str              # HOST (as measured on any GPU count) or DEVICE (split over GPUs)
    counted: bool           # False: a diagnostic pass, listed for reference


@dataclass(frozen=True)
class EvalCost:
    """One eval record's parts and the hardware that measured them."""
    parts: tuple[EvalPart, ...]
    hardware: str

    @property
    def counted(self) -> tuple[EvalPart, ...]:
        return tuple(p for p in self.parts if p.counted)

    @property
    def missing(self) -> list[str]:
        return [p.name for p in self.counted if p.seconds is None]

    def seconds(self, where: str | None = None) -> float:
        """Measured seconds of the counted parts (of one kind when `where` is given)."""
        return sum(p.seconds or 0.0 for p in self.counted if where in (None, p.where))

    @property
    def measured(self) -> float | None:
        """The whole scored evaluation as measured; None when a counted part is not recorded."""
        return None if self.missing else self.seconds()


def eval_cost(ev: Mapping[str, Any], hardware: str | None = None) -> EvalCost:
    """The parts of an eval record (eval.json or eval.<label>.json): deserialization, the
    n-gram hint precompute when the score is tilted, and each post-quant pass, counted when it
    is the pass that made the score (golf.submission.run.score_key)."""
    key = score_key(ev)
    parts = [EvalPart("deserialize artifact", ev.get("deserialize_seconds"), HOST, True)]
    if tilt_in_score(ev):
        parts.append(EvalPart("n-gram hint precompute", (ev.get("post_tilt") or {}).get("hint_seconds"),
                              HOST, True))
    for k, name in PASSES:
        block = ev.get(k) or {}
        if block and (k == "post" or block.get("weights") == "post"):
            parts.append(EvalPart(name, block.get("seconds"), DEVICE, k == key))
    return EvalCost(tuple(parts), str(hardware or ev.get("hardware") or "unknown"))


def eval_seconds(ev: Mapping[str, Any]) -> float | None:
    """Measured seconds of the whole scored evaluation of a record (None if not recorded)."""
    return eval_cost(ev).measured


def _compact(hardware: str) -> str:
    return hardware.lower().replace(" ", "").replace("×", "x")


def on_8xh100(hardware: str) -> bool:
    hw = _compact(hardware)
    return hw.startswith("8x") and "h100" in hw


def speed_ratio(hardware: str, override: float | None = None) -> tuple[float | None, str]:
    """(R, why) of ESTIMATE_RULE for the device parts; (None, why not) when none is known."""
    if override is None and on_8xh100(hardware):   # a measurement there needs no assumption
        return 1.0, "measured on 8xH100"
    if override is None:
        override = settings.read("GOLF_EVAL_SPEED_RATIO", os.environ)
    if override is not None:
        return float(override), f"R {float(override):g} set by GOLF_EVAL_SPEED_RATIO/--eval-speed-ratio"
    hw = _compact(hardware)
    m = re.match(r"(\d+)x(.*)", hw)
    k = int(m.group(1)) if m else 1
    for kind, rel in PER_DEVICE_VS_H100.items():
        if kind in hw:
            r = 8.0 / (k * rel)
            return r, f"R {r:g} = 8 H100 / {k} {kind.upper()} (ideal scaling: optimistic)"
    return None, (f"no speed ratio from {hardware!r} to 8xH100 is known (a CPU or unlisted GPU "
                  "cannot be scaled honestly): set GOLF_EVAL_SPEED_RATIO=R (pack.py "
                  "--eval-speed-ratio) or re-time on 8xH100")


def estimate_8xh100(cost: EvalCost, override: float | None = None) -> tuple[float | None, str]:
    """(estimated seconds on 8xH100 by ESTIMATE_RULE, how); None when it cannot be made."""
    if cost.missing:
        return None, f"not recorded: {', '.join(cost.missing)}"
    ratio, why = speed_ratio(cost.hardware, override)
    if ratio is None:
        return None, why
    host, device = cost.seconds(HOST), cost.seconds(DEVICE)
    return host + device / ratio, f"{host:.1f} s host + {device:.1f} s device / {why}"


def format_eval_cost(cost: EvalCost, override: float | None = None, title: str = "eval time") -> str:
    """The parts table pack prints beside the byte budget (and the README carries)."""
    def s(v: float | None) -> str:
        return f"{v:>10.1f} s" if v is not None else f"{'-':>10}  "
    lines = [f"{title} (measured on {cost.hardware}):"]
    for p in cost.parts:
        lines.append(f"  {p.name:<40}{p.where:<7}{s(p.seconds)}"
                     + ("" if p.counted else "  diagnostic, not counted"))
    lines.append(f"  {'scored evaluation, measured':<47}{s(cost.measured)}")
    est, how = estimate_8xh100(cost, override)
    lines.append(f"  {'8xH100 estimate':<47}{s(est)}  {how}" if est is not None
                 else f"  {'8xH100 estimate':<47}{'N/A':>10}    {how}")
    return "\n".join(lines)
