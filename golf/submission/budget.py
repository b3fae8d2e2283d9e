"""The byte budget: code + model bytes against a decimal-byte cap, read from files on disk.

Why only files on disk: records have gone over the cap by printing a size that was not what
shipped. One function computes the table, one prints it, and the same table enforces the cap.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from golf.run.config import Config
from golf.run.errors import OverCapError, PackError
from golf.run.rules import CAP_BYTES

__all__ = ["CAP_BYTES", "BudgetTable", "budget_table", "format_budget_table", "enforce_budget",
           "enforce_each_seed", "budget_cap"]
LOW_HEADROOM_BYTES = 10_000  # warn below this


@dataclass(frozen=True)
class BudgetTable:
    code_bytes: int
    model_bytes: int
    total: int
    cap: int
    headroom: int

    @property
    def over(self) -> bool:
        return self.total > self.cap

    @property
    def low_headroom(self) -> bool:
        return 0 <= self.headroom < LOW_HEADROOM_BYTES

    def to_dict(self) -> dict[str, int]:
        return {"code_bytes": self.code_bytes, "model_bytes": self.model_bytes,
                "total": self.total, "cap": self.cap, "headroom": self.headroom}


def _size(path: str | os.PathLike, what: str) -> int:
    p = Path(path)
    if not p.is_file():
        raise PackError(f"{p}: {what} not found; build it first (train + quantize, or pack)")
    return p.stat().st_size


def budget_table(code_path: str | os.PathLike, model_path: str | os.PathLike,
                 cap: int = CAP_BYTES) -> BudgetTable:
    """Sizes of the shipped train_gpt.py and model artifact, as stored on disk."""
    code = _size(code_path, "code file")
    model = _size(model_path, "model artifact")
    total = code + model
    return BudgetTable(code, model, total, int(cap), int(cap) - total)


def format_budget_table(t: BudgetTable) -> str:
    """The table printed on every pack (the numbers submission.json records)."""
    rows = [("code bytes (train_gpt.py)", t.code_bytes), ("model bytes (artifact)", t.model_bytes),
            ("total bytes", t.total), ("cap (decimal bytes)", t.cap), ("headroom", t.headroom)]
    lines = ["budget:"] + [f"  {k:<27}{v:>14,}" for k, v in rows]
    if t.over:
        lines.append(f"  OVER THE CAP by {-t.headroom:,} bytes")
    elif t.low_headroom:
        lines.append(f"  warning: headroom {t.headroom:,} bytes is under {LOW_HEADROOM_BYTES:,}")
    return "\n".join(lines)


def enforce_budget(t: BudgetTable, where: str = "submission") -> BudgetTable:
    """Raise OverCapError (with the overshoot) when the total exceeds the cap."""
    if t.over:
        raise OverCapError(f"{where}: total {t.total:,} bytes exceeds the cap of {t.cap:,} by "
                          f"{-t.headroom:,} bytes; shrink the model (lower BUDGET_BYTES for the "
                          f"quant fitter or use fewer bits) or the code")
    return t


def enforce_each_seed(totals: Mapping[int, tuple[Path, int]], cap: int) -> None:
    """Every seed's artifact plus the shipped code must fit, not only the shipped seed's:
    `totals` maps seed -> (artifact path, code + model bytes)."""
    for seed, (artifact, total) in totals.items():
        if total > cap:
            raise OverCapError(f"{artifact}: seed {seed} totals {total:,} bytes, over the cap of "
                               f"{cap:,} by {total - cap:,}; refit its model")


def budget_cap(given: int | None, env: Mapping[str, str] = os.environ) -> int:
    """The cap pack enforces: --budget-bytes, else BUDGET_BYTES, else the challenge's cap.

    Parsed and checked by Config (one parser and one rule for BUDGET_BYTES: a value the main
    job accepts, e.g. 1.6e7, pack accepts too); a bad one is a ConfigError naming it."""
    raw = str(given) if given is not None else (env.get("BUDGET_BYTES") or "").strip()
    if not raw:
        return CAP_BYTES
    return Config.from_env({"BUDGET_BYTES": raw}, cpu_preset=False).validate().budget_bytes
