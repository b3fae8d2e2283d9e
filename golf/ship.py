"""The ship line: which parts of golfkit the packed train_gpt.py carries, declared once.

Why a table: the packed script is the core (train, quantize, evaluate) plus only the optional
parts its run was scored with, so a run without test-time training pays no bytes for it. Core
code never guesses its role from a failed import: it asks `optional(name)`, which reads the
packed script's own statement (`golf.PACKED_PARTS`, set by the packer's header) and returns the
part's module, or None when this packed script does not carry it. The packer
(golf.submission.amalgamate) leaves out the modules of every part not carried, and the closure
test (tests/test_ship.py) holds the core to it. This module imports nothing beyond golf's root
package and the settings table, so every layer may use it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Iterable, Mapping

import golf
from golf.run.settings import BOOL_FALSE

Env = Mapping[str, Any]


def _set_and_not(off: tuple[str, ...], name: str) -> Callable[[Env], bool]:
    """A rule `env -> bool`: variable `name` is set to something other than an off spelling."""
    def needs(env: Env) -> bool:
        raw = str(env.get(name, "")).strip().lower()
        return bool(raw) and raw not in off
    return needs


@dataclass(frozen=True)
class Part:
    """One optional part: its modules (a package includes its submodules), the module core code
    uses (`entry`, default the first), and when it ships: `needs(settings)` for a part the run's
    settings switch on (by the variable `switch`), None for one that never ships. What each part
    is for is the comment beside its entry: comments cost the packed script no bytes."""
    name: str
    modules: tuple[str, ...]
    needs: Callable[[Env], bool] | None = None
    switch: str = ""
    entry: str = ""

    @property
    def module(self) -> str:
        return self.entry or self.modules[0]


PARTS: dict[str, Part] = {p.name: p for p in (
    # score-first test-time training at evaluation (TTT=chunk|lora|lora_golf)
    Part("ttt", ("golf.eval.ttt", "golf.eval.lora"), _set_and_not(("0", "off", "none"), "TTT"), "TTT"),
    # the token-only n-gram tilt of the scored NLL (NGRAM_TILT_ENABLED=1)
    Part("tilt", ("golf.eval.tilt",), _set_and_not(BOOL_FALSE, "NGRAM_TILT_ENABLED"),
         "NGRAM_TILT_ENABLED"),
    # never shipped: pack.py's library (a submission does not pack itself)
    Part("packer", ("golf.submission",)),
    # never shipped: building corpora and tokenizers (a submission trains on the given shards)
    Part("data_prep", ("golf.data.prepare", "golf.data.sources"),
         entry="golf.data.sources.embedded"),
    # never shipped: importing the records' checkpoints
    Part("interop", ("golf.interop",)),
    # never shipped: auditing other submissions' folders
    Part("audit", ("golf.audit",)),
    # never shipped: the records' per-group lrzip container (QUANT_METHOD=record_*), a baseline
    # to measure, not a submission (the main job skips the pack for it)
    Part("record_container", ("quant.pergroup",)),
)}


def packed() -> bool:
    """True in the packed train_gpt.py (its header states the parts it carries)."""
    return golf.PACKED_PARTS is not None


def carried(name: str) -> bool:
    """Whether the running program has part `name`: a checkout has every part."""
    if name not in PARTS:
        raise KeyError(f"{name}: not an optional part of golf.ship.PARTS")
    return not packed() or name in golf.PACKED_PARTS


def optional(name: str) -> ModuleType | None:
    """The entry module of part `name`, or None where this packed script does not carry it."""
    return importlib.import_module(PARTS[name].module) if carried(name) else None


def load_switchable() -> list[ModuleType]:
    """Import the carried parts a run's settings switch on (TTT, the tilt): each registers its
    own variables (TTT_*, NGRAM_TILT_ENABLED, TOKEN_*) in golf.run.settings' table."""
    mods = [optional(p.name) for p in PARTS.values() if p.needs is not None]
    return [m for m in mods if m is not None]


def parts_for(settings: Env) -> tuple[str, ...]:
    """The parts a run with these settings (the environment, or the variables of a scored
    evaluation record) needs in its packed script, in table order."""
    return tuple(p.name for p in PARTS.values() if p.needs is not None and p.needs(settings))


def left_out(parts: Iterable[str]) -> tuple[str, ...]:
    """The modules a packed script carrying `parts` leaves out (every other part's)."""
    keep = set(parts)
    unknown = keep - set(PARTS)
    if unknown:
        raise KeyError(f"{', '.join(sorted(unknown))}: not optional parts of golf.ship.PARTS")
    return tuple(m for p in PARTS.values() if p.name not in keep for m in p.modules)


def missing_problems(env: Env) -> list[str]:
    """One line per part the settings switch on that this packed script does not carry."""
    return [f"{p.switch}={env.get(p.switch)}: this packed train_gpt.py does not carry "
            f"{', '.join(p.modules)} (its run was not scored with it); unset {p.switch}, or "
            "pack a run scored with it" for p in PARTS.values()
            if p.needs is not None and p.needs(env) and not carried(p.name)]


def markers(parts: Iterable[str]) -> dict[str, str]:
    """What the packed script's header states, as a line appended to a module's embedded source:
    the parts it carries (golf.PACKED_PARTS) and the framed coders it leaves out (quant.codec,
    which imports nothing from golf)."""
    parts = tuple(p for p in PARTS if p in set(parts))
    framed = tuple(m for m in left_out(parts) if m.startswith("quant."))
    return {"golf": f"PACKED_PARTS = {parts!r}\n", "quant.codec": f"LEFT_OUT = {framed!r}\n"}
