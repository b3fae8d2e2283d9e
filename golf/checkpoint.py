"""Reading torch files the run directory holds (model.pt, ema.pt, checkpoint.pt, hessians.pt).

A truncated or foreign file must end in one line that names it and says what to do, not in a
miniz traceback; every reader goes through `load_torch_file`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from golf.errors import CheckpointError


def load_torch_file(path: str | os.PathLike, fix: str, keys: tuple[str, ...] = ()) -> Any:
    """torch.load on CPU; missing, unreadable or lacking `keys` -> CheckpointError naming `path`."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: file not found; {fix}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{p}: not a readable torch file, probably truncated or corrupt "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); {fix}") from None
    missing = [k for k in keys if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise CheckpointError(f"{p}: missing {', '.join(missing)}; {fix}")
    return obj
