"""Error types: every failure a user can cause gets one clear message naming the file and the fix."""
from __future__ import annotations


class QuantError(ValueError):
    """Base class for bad input to quant/ (CLIs print the message and exit non-zero)."""


class BudgetError(QuantError):
    """The byte budget cannot be met; the message says the smallest reachable size."""


class ArtifactError(QuantError):
    """An artifact file is unreadable: bad magic, truncated, corrupt or unsupported version."""


class ConfigMismatchError(QuantError):
    """An artifact was produced for a different model configuration."""
