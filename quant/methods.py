"""The quantizer methods: one table that every other mention reads (QUANT_METHOD's choices and
--help, which methods get Hessians / Fisher weights and a byte budget, the records' coders).

Why a module of its own that imports nothing: golf's settings table reads it at import time, and
the quantizer's code (quant/core.py, quant/records.py) dispatches on its flags, so adding a method
is one entry here plus its code, never a second list to keep in step.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """What golf needs to know about a quantizer method before running it."""
    meaning: str                       # one line, for --help and the docs
    fits_budget: bool                  # the fitter sizes it to BUDGET_BYTES
    needs_hessians: bool               # its GPTQ solves need calibration Hessians (hessians.pt)
    needs_fisher: bool                 # the fitter prices its errors by Fisher weights
    record_coders: tuple[str, ...] = ()  # a record's quantizer: the coders its artifact uses
    default: bool = False

    @property
    def is_record(self) -> bool:
        return bool(self.record_coders)


METHODS: dict[str, Method] = {
    "gptq": Method("GPTQ per tensor, bits and clip chosen by the budget fitter", True, True, True,
                   default=True),
    # rtn reads Hessians only to weigh errors (diag H), so it does not need them
    "rtn": Method("round-to-nearest, bits and clip chosen by the budget fitter", True, False, True),
    "int8": Method("the challenge baseline's per-row int8 (not fitted)", False, False, False),
    "record_1060": Method("the 1.1122 record's quantizer (int6 GPTQ, lzma)", False, True, False,
                          record_coders=("lzma",)),
    "record_1855": Method("the 1.0611 record's quantizer (SDClip GPTQ + LQER, per-group v1)",
                          False, True, False, record_coders=("brotli", "pergroup_v1")),
    "record_2135": Method("the 1.0565 record's quantizer (record_1855, LQER B/32, per-group v2)",
                          False, True, False, record_coders=("brotli", "pergroup_v2")),
}


def default_method() -> str:
    """The one entry marked default (QUANT_METHOD's default)."""
    marked = [name for name, m in METHODS.items() if m.default]
    if len(marked) != 1:
        raise ValueError(f"quant.methods.METHODS must mark exactly one default, got {marked}")
    return marked[0]


def budget_methods() -> tuple[str, ...]:
    """The methods the fitter sizes to a byte budget."""
    return tuple(name for name, m in METHODS.items() if m.fits_budget)


def record_methods() -> tuple[str, ...]:
    """The records' quantizers (their size is set by their own rule)."""
    return tuple(name for name, m in METHODS.items() if m.is_record)


def describe() -> list[str]:
    """One line per method for --help and docs/settings.md: name, what it does, what it needs."""
    out = []
    for name, m in METHODS.items():
        needs = [w for w, on in (("fits BUDGET_BYTES", m.fits_budget), ("Hessians", m.needs_hessians),
                                 ("Fisher weights", m.needs_fisher)) if on]
        tag = " (default)" if m.default else ""
        out.append(f"{name}{tag}: {m.meaning}" + (f"; {', '.join(needs)}" if needs else ""))
    return out
