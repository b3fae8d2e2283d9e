"""Byte layout of one tensor's log-grid scale codes (quant.scalar.round_log_scale) in a stream.

Why: per-row steps on the log grid are small integers that vary slowly, so relative to the
tensor's smallest code (mode "min") or as first differences along the rows (mode "delta",
zigzag-mapped) they take one byte per row, often less after entropy coding; fp16 spends two.
Each tensor takes the mode whose order-0 rANS bits (plus one table byte per symbol in range)
are fewer. Values >= 256 need a second byte: width 2 stores all low bytes, then all high
bytes (two planes, each its own rANS table). The entry records r, mode, base and width.
"""
from __future__ import annotations

import numpy as np

from . import rans

MODES = ("min", "delta")


def _zigzag(d: np.ndarray) -> np.ndarray:
    return np.where(d >= 0, 2 * d, -2 * d - 1)


def _unzigzag(z: np.ndarray) -> np.ndarray:
    return np.where(z % 2 == 0, z // 2, -(z + 1) // 2)


def _planes(u: np.ndarray) -> list[np.ndarray]:
    width = 1 if int(u.max(initial=0)) < 256 else 2
    return [(u & 255).astype(np.uint8)] + ([(u >> 8).astype(np.uint8)] if width == 2 else [])


def _cost(planes: list[np.ndarray]) -> float:
    """Order-0 rANS bytes of the planes plus one table byte per symbol in each plane's range."""
    return sum(float(rans.segment_bits(p.tobytes(), [p.size])[0]) / 8
               + int(p.max(initial=0)) - int(p.min(initial=0)) + 1 for p in planes)


def _choose(codes: np.ndarray, r: int) -> tuple[list[np.ndarray], dict, float]:
    """The cheaper layout of one tensor's codes: (its byte planes, header info, their cost)."""
    c = np.asarray(codes, dtype=np.int64).reshape(-1)
    if c.size == 0:
        raise ValueError("a quantized tensor has at least one row scale")
    cands = {"min": (int(c.min()), c - c.min()),
             "delta": (int(c[0]), _zigzag(np.diff(c, prepend=c[0])))}
    packed = {m: (base, _planes(u)) for m, (base, u) in cands.items() if int(u.max()) < 1 << 16}
    if not packed:  # a spread of 2^16 codes or more: no layout holds it in two bytes
        raise ValueError(f"log scales: codes span {int(c.max()) - int(c.min()):,} grid steps at "
                         f"r={r}; two bytes per row hold under 65,536")
    costs = {m: _cost(planes) for m, (_base, planes) in packed.items()}
    mode = min(packed, key=lambda m: (costs[m], MODES.index(m)))
    base, planes = packed[mode]
    return planes, {"r": int(r), "mode": mode, "base": base, "width": len(planes)}, costs[mode]


def pack_scale_codes(codes: np.ndarray, r: int) -> tuple[bytes, dict]:
    """(stream bytes, header info) of one tensor's codes, in the cheaper of the two modes."""
    planes, info, _cost_bytes = _choose(codes, r)
    return b"".join(p.tobytes() for p in planes), info


def packed_cost(codes: np.ndarray, r: int) -> float:
    """Predicted rANS bytes of one tensor's packed scale codes (the fitter's first guess)."""
    return _choose(codes, r)[2]


def plane_lengths(info: dict, rows: int) -> list[int]:
    """rANS segments of a packed tensor: one per byte plane."""
    return [rows] * int(info["width"])


def unpack_scale_codes(raw: bytes, info: dict, rows: int) -> np.ndarray:
    """Inverse of pack_scale_codes: the int32 codes of `rows` scales."""
    width = int(info["width"])
    buf = np.frombuffer(raw, dtype=np.uint8)
    if buf.size != width * rows or width not in (1, 2) or info["mode"] not in MODES:
        raise ValueError(f"log scales: {buf.size} bytes for {rows} rows at width {width}, "
                         f"mode {info['mode']!r}")
    u = buf[:rows].astype(np.int64)
    if width == 2:
        u = u + (buf[rows:].astype(np.int64) << 8)
    c = int(info["base"]) + (u if info["mode"] == "min" else np.cumsum(_unzigzag(u)))
    return c.astype(np.int32)
