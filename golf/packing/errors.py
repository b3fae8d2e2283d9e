"""The one error type packaging raises: a ValueError whose message names the file and the fix."""
from __future__ import annotations


class PackError(ValueError):
    """Bad input or a failed check while packing; the message says which file and what to do."""


class BudgetError(PackError):
    """The submission would exceed the decimal-byte cap."""


class RoundTripError(PackError):
    """The packed train_gpt.py did not reproduce the run's post-quant val_bpb."""
