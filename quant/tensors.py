"""The in-memory form of a quantized tensor, shared by the quantizers, the artifact and the report."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .lqer import Lqer
from .scalar import dequantize

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                "float64": torch.float64, "int64": torch.int64, "int32": torch.int32,
                "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}


def dtype_name(dt: torch.dtype) -> str:
    return str(dt).removeprefix("torch.")


@dataclass
class QTensor:
    """One state_dict entry as stored: int codes + per-row scales, a passthrough array, or an alias."""
    name: str
    shape: tuple[int, ...]
    dtype: str                       # original torch dtype name
    cls: str                         # attention | mlp | embedding | other | small
    kind: str                        # quant | pass | alias
    codes: np.ndarray | None = None  # int8 (rows, cols)
    scales: np.ndarray | None = None  # float16 per row, or float32 (1,) per tensor
    bits: int = 0
    method: str = ""
    k: float | None = None           # effective clip multiple: step * qmax / std(row), mean over rows
    data: np.ndarray | None = None   # passthrough values in their stored dtype
    alias_of: str | None = None
    error: float | None = None
    error_kind: str = ""
    extra: dict = field(default_factory=dict)
    lqer: Lqer | None = None         # low-rank correction of the codes' error (quant only)
    scale_codes: np.ndarray | None = None  # int32 log-grid codes of `scales` (scalar.log_scale_value)
    scale_r: int = 0                 # their codes per octave (0: scales are plain fp16/fp32)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


def dequant_tensor(qt: QTensor) -> torch.Tensor:
    """Float tensor as the model will load it (quantized -> float32; passthrough -> original dtype)."""
    if qt.kind == "quant":
        w = dequantize(torch.from_numpy(np.array(qt.codes, copy=True)),
                       torch.from_numpy(np.array(qt.scales, copy=True)))
        if qt.lqer is not None:
            w = w + qt.lqer.correction()
        return w.reshape(qt.shape)
    if qt.kind == "pass":
        t = torch.from_numpy(np.array(qt.data, copy=True)).reshape(qt.shape)
        target = TORCH_DTYPES.get(qt.dtype, t.dtype)
        return t.to(target)
    raise ValueError(f"alias {qt.name} has no data of its own")


def alias_entry(name: str, t: torch.Tensor, alias_of: str) -> "QTensor":
    """A tied weight stored once: the entry names the tensor it shares storage with."""
    return QTensor(name=name, shape=tuple(t.shape), dtype=dtype_name(t.dtype), cls="alias",
                   kind="alias", alias_of=alias_of)
