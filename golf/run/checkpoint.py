"""Reading torch files the run directory holds (model.pt, ema.pt, checkpoint.pt, hessians.pt).

A file may come from anyone (a copied run, a download), so it is data, never code: torch's
weights-only unpickler admits tensors and plain containers and refuses every other global,
so a pickle that would call a function is refused before it runs. Everything golfkit saves
(configs as dicts, RNG states as tensors, loader positions as ints) passes it. A truncated,
foreign or refused file ends in one line that names it and says what to do, not in a miniz
or unpickler traceback; every reader goes through `load_torch_file`.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from golf.run.errors import CheckpointError


def _refusal(exc: pickle.UnpicklingError) -> str:
    """What the weights-only unpickler refused, in a few words (its own text is a page long
    and suggests weights_only=False, the one thing never to do with a file from elsewhere)."""
    m = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return f"it names {m.group(1)}" if m else "it holds an object that is not a tensor or plain value"


def _tensor_map(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and isinstance(t, torch.Tensor)
                                       for k, t in v.items())


def load_torch_file(path: str | os.PathLike, fix: str, keys: tuple[str, ...] = (),
                    tensors: tuple[str, ...] = ()) -> Any:
    """torch.load(weights_only=True) on CPU; missing, unreadable, refused, lacking `keys`, or
    with a `tensors` key that is not a {name: tensor} dict -> CheckpointError naming `path`."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: file not found; {fix}")
    try:
        with warnings.catch_warnings():  # a foreign pickle protocol is refused below, not warned about
            warnings.simplefilter("ignore")
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{p}: refused: not a file of tensors and plain values ({_refusal(exc)}); "
                              f"golfkit loads torch files as data only and never runs code in them; "
                              f"{fix}") from None
    except Exception as exc:
        raise CheckpointError(f"{p}: not a readable torch file, probably truncated or corrupt "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); {fix}") from None
    missing = [k for k in keys if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise CheckpointError(f"{p}: missing {', '.join(missing)}; {fix}")
    wrong = [k for k in tensors if isinstance(obj, dict) and k in obj and not _tensor_map(obj[k])]
    if "config" in keys and not isinstance(obj["config"], dict):
        wrong.append("config")
    if wrong:
        raise CheckpointError(f"{p}: {', '.join(wrong)} is not what golfkit writes there "
                              f"(a dict of tensors / of settings); {fix}")
    return obj
