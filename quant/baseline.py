"""The challenge baseline (int8 per-row, quantile clip, zlib-9), reproduced exactly.

This is the reference users compare against: `baseline_int8_zlib_blob` serializes the same dict
the baseline's torch.save writes, so its length is the int8+zlib size they know.
"""
from __future__ import annotations

import io
import zlib
from typing import Mapping

import torch

from .policy import CONTROL_PATTERNS, SMALL_NUMEL

CLIP_Q = 0.9999984
QMAX = 127


def baseline_keep_float(name: str, t: torch.Tensor, control: tuple[str, ...] = CONTROL_PATTERNS
                        ) -> tuple[torch.Tensor, str | None]:
    """Passthrough rule for small float tensors: fp32 for control names, fp16 for fp32/bf16.

    Returns (stored tensor, original dtype name if it was downcast, else None)."""
    if any(p in name for p in control):
        return t.float().contiguous(), None
    if t.dtype in (torch.float32, torch.bfloat16):
        return t.to(torch.float16).contiguous(), str(t.dtype).removeprefix("torch.")
    return t, None


def baseline_quantize_tensor(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 codes, scale): per row for 2-D (fp16 scales, floor 1/127), per tensor otherwise."""
    t32 = t.float()
    if t32.ndim == 2:
        clip = (torch.quantile(t32.abs(), CLIP_Q, dim=1) if t32.numel()
                else torch.empty(t32.shape[0], dtype=torch.float32))
        clipped = torch.maximum(torch.minimum(t32, clip[:, None]), -clip[:, None])
        scale = (clip / QMAX).clamp_min(1.0 / QMAX)
        q = torch.clamp(torch.round(clipped / scale[:, None]), -QMAX, QMAX).to(torch.int8)
        return q.contiguous(), scale.to(torch.float16).contiguous()
    clip = float(torch.quantile(t32.abs().flatten(), CLIP_Q).item()) if t32.numel() else 0.0
    scale = torch.tensor(clip / QMAX if clip > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(t32, -clip, clip) / scale), -QMAX, QMAX).to(torch.int8)
    return q.contiguous(), scale


def baseline_int8_state(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """The dict the baseline torch.saves (format int8_clean_per_row_v1)."""
    quantized, scales, dtypes, passthrough, qmeta, orig = {}, {}, {}, {}, {}, {}
    for name, tensor in state_dict.items():
        t = tensor.detach().to("cpu").contiguous()
        if not t.is_floating_point():
            passthrough[name] = t
            continue
        if t.numel() <= SMALL_NUMEL:
            kept, od = baseline_keep_float(name, t)
            passthrough[name] = kept
            if od is not None:
                orig[name] = od
            continue
        q, s = baseline_quantize_tensor(t)
        if s.ndim > 0:
            qmeta[name] = {"scheme": "per_row", "axis": 0}
        quantized[name] = q
        scales[name] = s
        dtypes[name] = str(t.dtype).removeprefix("torch.")
    obj: dict = {"__quant_format__": "int8_clean_per_row_v1", "quantized": quantized,
                 "scales": scales, "dtypes": dtypes, "passthrough": passthrough}
    if qmeta:
        obj["qmeta"] = qmeta
    if orig:
        obj["passthrough_orig_dtypes"] = orig
    return obj


def baseline_int8_zlib_blob(state_dict: Mapping[str, torch.Tensor]) -> bytes:
    """torch.save(baseline dict) compressed with zlib level 9: the baseline's artifact bytes."""
    buf = io.BytesIO()
    torch.save(baseline_int8_state(state_dict), buf)
    return zlib.compress(buf.getvalue(), level=9)
