"""golfkit: train, quantize, evaluate and pack Parameter Golf submissions."""
from __future__ import annotations

# None in a checkout (every part is here); the packed train_gpt.py's header appends the tuple of
# the optional parts it carries (golf/ship.py), which core code reads through golf.ship.optional.
PACKED_PARTS: tuple[str, ...] | None = None
