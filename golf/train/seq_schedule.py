"""PR #2014's progressive context: TRAIN_SEQ_SCHEDULE with its LR re-warm-up.

Why: short contexts early make steps cheaper and long ones late teach long-range use; #2014
trains 1,024 to 10 % of the run, 2,048 to 70 %, then 3,072. The stage in force is the first whose
threshold is >= the training fraction (golf.train.optim.training_fraction, the loop switch's and the
warmdown's clock). Under DOC_PACKING the stage is the segment cut of the packed rows (the row keeps
its tokens); with TRAIN_SEQ_LEN rows it is the row length (tokens per step unchanged). After each
change the LR is multiplied by (step - s0 + 1) / SEQ_CHANGE_WARMUP_STEPS for that many steps, s0
being the first step at the new length; the first stage gets no warm-up.
"""
from __future__ import annotations

from typing import NamedTuple


class Stage(NamedTuple):
    seq_len: int
    until: float    # training fraction up to which (inclusive) this length is used


def parse_seq_schedule(raw: str) -> tuple[Stage, ...]:
    """"1024@0.1,2048@0.7,3072@1.0" -> stages in order; empty -> (); ValueError naming the
    variable on anything else (lengths >= 1, fractions rising strictly and ending at 1)."""
    if not raw.strip():
        return ()
    fix = "write it like 1024@0.100,2048@0.700,3072@1.000 (length@fraction, fractions rising to 1)"
    stages = []
    for part in raw.split(","):
        length, sep, until = part.strip().partition("@")
        try:
            stage = Stage(int(length), float(until))
        except ValueError:
            raise ValueError(f"TRAIN_SEQ_SCHEDULE={raw!r}: {part.strip()!r} is not length@fraction; "
                             f"{fix}") from None
        if not sep or stage.seq_len < 1 or not 0 < stage.until <= 1:
            raise ValueError(f"TRAIN_SEQ_SCHEDULE={raw!r}: {part.strip()!r} is out of range; {fix}")
        stages.append(stage)
    if any(b.until <= a.until for a, b in zip(stages, stages[1:])) or stages[-1].until != 1:
        raise ValueError(f"TRAIN_SEQ_SCHEDULE={raw!r}: the fractions must rise and the last be 1; {fix}")
    return tuple(stages)


def stage_at(stages: tuple[Stage, ...], frac: float) -> int:
    """The sequence length in force at training fraction `frac` (non-empty stages)."""
    return next((s.seq_len for s in stages if frac <= s.until), stages[-1].seq_len)


class SeqSchedule:
    """The stage per step and the re-warm-up after each change (one per run; checkpointed)."""

    def __init__(self, stages: tuple[Stage, ...], default_len: int, warmup_steps: int):
        self.stages, self.default_len, self.warmup_steps = stages, default_len, warmup_steps
        self.seq_len: int | None = None
        self.changed_at: int | None = None   # s0: the first step of the current stage (None: first)

    def update(self, step: int, frac: float) -> bool:
        """Set the length for `step` (0-based) at fraction `frac`; True when it changed."""
        new = stage_at(self.stages, frac) if self.stages else self.default_len
        changed = self.seq_len is not None and new != self.seq_len
        if changed:
            self.changed_at = step
        self.seq_len = new
        return changed

    def lr_factor(self, step: int) -> float:
        """(step - s0 + 1) / SEQ_CHANGE_WARMUP_STEPS during the warm-up after a change, else 1."""
        if self.changed_at is None or self.warmup_steps <= 0:
            return 1.0
        return min(1.0, (step - self.changed_at + 1) / self.warmup_steps)

    def state_dict(self) -> dict:
        return {"seq_len": self.seq_len, "changed_at": self.changed_at}

    def load_state_dict(self, d: dict) -> None:
        self.seq_len, self.changed_at = d.get("seq_len"), d.get("changed_at")
