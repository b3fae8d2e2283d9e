"""LQER: a low-rank correction of a quantized matrix's error, stored as quantized factors.

Why: rounding error E = W - Ŵ has a few strong directions on some tensors; a rank-r product
A·B of its top singular vectors removes them for (rows + cols)·r small codes, often cheaper
than a finer step for the whole matrix (the 1.0611 record's LQER; that record cut its own
gap by a third with rank 4 on three tensors).

A = U_r·S_r (rows x r), B = V_rᵀ (r x cols) from the SVD of E, optionally of E·diag(d) with
d = sqrt(diag H) (normalized) so the rank buys Hessian-weighted error (§9.6), B unscaled after.
Each factor is quantized on an asymmetric grid [-2^(b-1), 2^(b-1)-1] per group of consecutive
entries of the flattened factor, scale = max|group| / (2^(b-1) - 0.5) in fp16 (the record's
A: int2 one scale per matrix, B: int4 groups of 64).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .scalar import TINY


@dataclass(frozen=True)
class LqerFormat:
    """Bits and group size (0 = the whole factor is one group) of the A and B factors."""
    a_bits: int = 2
    a_group: int = 0
    b_bits: int = 4
    b_group: int = 64

    def __post_init__(self) -> None:
        for b in (self.a_bits, self.b_bits):
            if not 2 <= b <= 8:
                raise ValueError(f"LQER factor bits must be in 2..8, got {b}")
        if self.a_group < 0 or self.b_group < 0:
            raise ValueError("LQER group sizes must be >= 0 (0 = one group)")


RECORD_FORMAT = LqerFormat(2, 0, 4, 64)   # the 1.0611 record's asymmetric packing
FITTER_FORMAT = LqerFormat(4, 64, 4, 64)  # golfkit's fitter rung: finer A, same B


@dataclass
class Lqer:
    """Quantized factors of one tensor's correction (codes int8, scales fp16)."""
    rank: int
    fmt: LqerFormat
    qa: np.ndarray   # int8 (rows, rank)
    sa: np.ndarray   # float16, one per group of flattened A
    qb: np.ndarray   # int8 (rank, cols)
    sb: np.ndarray   # float16, one per group of flattened B

    def to_bytes(self) -> bytes:
        return b"".join(np.ascontiguousarray(x).tobytes() for x in (self.qa, self.qb, self.sa, self.sb))

    def correction(self) -> torch.Tensor:
        """A·B in float32, (rows, cols)."""
        a = dequantize_groups(self.qa, self.sa, self.fmt.a_group)
        b = dequantize_groups(self.qb, self.sb, self.fmt.b_group)
        return a @ b


def _groups(n: int, group: int) -> int:
    g = n if group <= 0 else group
    return max(1, -(-n // max(g, 1)))


def quantize_groups(x: torch.Tensor, bits: int, group: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes shaped like x, fp16 scales per group of the flattened x)."""
    flat = x.detach().to(torch.float32).reshape(-1)
    n = flat.numel()
    g = n if group <= 0 else group
    ng = _groups(n, group)
    pad = torch.zeros(ng * g)
    pad[:n] = flat
    blocks = pad.reshape(ng, g)
    half = 2 ** (bits - 1)
    scale = (blocks.abs().amax(dim=1) / (half - 0.5)).clamp_min(TINY).to(torch.float16)
    s = scale.to(torch.float32)[:, None]
    q = torch.clamp(torch.round(blocks / s), -half, half - 1).reshape(-1)[:n]
    return q.to(torch.int8).reshape(x.shape).numpy(), scale.numpy()


def dequantize_groups(codes: np.ndarray, scales: np.ndarray, group: int) -> torch.Tensor:
    n = codes.size
    g = n if group <= 0 else group
    s = torch.from_numpy(np.asarray(scales, dtype=np.float32)).repeat_interleave(g)[:n]
    c = torch.from_numpy(np.asarray(codes, dtype=np.int8).reshape(-1).astype(np.float32))
    return (c * s).reshape(codes.shape)


def column_scale(col_weight: torch.Tensor | None, cols: int) -> torch.Tensor:
    """d = sqrt(diag H / mean), floored at 5 % so dead columns do not blow up B = Vᵀ/d."""
    if col_weight is None:
        return torch.ones(cols)
    cw = col_weight.to(torch.float32).clamp_min(0)
    m = float(cw.mean())
    if m <= 0:
        return torch.ones(cols)
    return (cw / m).sqrt().clamp_min(0.05)


def lowrank_factors(e: torch.Tensor, rank: int, col_weight: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-r approximation A·B of E (in the d-weighted norm when col_weight is given)."""
    e = e.detach().to(torch.float64)
    d = column_scale(col_weight, e.shape[1]).to(torch.float64)
    u, s, vh = torch.linalg.svd(e * d[None, :], full_matrices=False)
    r = min(rank, s.numel())
    a = u[:, :r] * s[:r][None, :]
    b = vh[:r] / d[None, :]
    return a.to(torch.float32), b.to(torch.float32)


def make_lqer(e: torch.Tensor, rank: int, fmt: LqerFormat,
              col_weight: torch.Tensor | None = None) -> Lqer:
    """Quantized rank-r correction of the error matrix E (rows, cols)."""
    a, b = lowrank_factors(e, rank, col_weight)
    qa, sa = quantize_groups(a, fmt.a_bits, fmt.a_group)
    qb, sb = quantize_groups(b, fmt.b_bits, fmt.b_group)
    return Lqer(rank=int(a.shape[1]), fmt=fmt, qa=qa, sa=sa, qb=qb, sb=sb)


def lqer_ladder(e: torch.Tensor, ranks: tuple[int, ...], fmt: LqerFormat,
                col_weight: torch.Tensor | None = None) -> list[Lqer]:
    """make_lqer for several ranks from one SVD (the factors of rank r are the first r)."""
    a, b = lowrank_factors(e, max(ranks), col_weight)
    out = []
    for r in ranks:
        qa, sa = quantize_groups(a[:, :r], fmt.a_bits, fmt.a_group)
        qb, sb = quantize_groups(b[:r], fmt.b_bits, fmt.b_group)
        out.append(Lqer(rank=int(min(r, a.shape[1])), fmt=fmt, qa=qa, sa=sa, qb=qb, sb=sb))
    return out


def block_bytes(rows: int, cols: int, rank: int, fmt: LqerFormat) -> int:
    """Bytes of Lqer.to_bytes for these shapes and format (the artifact header checks it)."""
    na, nb = rows * rank, rank * cols
    return na + nb + 2 * (_groups(na, fmt.a_group) + _groups(nb, fmt.b_group))


def lqer_from_bytes(raw: bytes, rows: int, cols: int, rank: int, fmt: LqerFormat) -> Lqer:
    """Inverse of Lqer.to_bytes for known shapes and format."""
    na, nb = rows * rank, rank * cols
    ga = _groups(na, fmt.a_group)
    buf = np.frombuffer(raw, dtype=np.uint8)
    if buf.size != block_bytes(rows, cols, rank, fmt):
        raise ValueError(f"LQER block is {buf.size} bytes, expected {block_bytes(rows, cols, rank, fmt)}")
    qa = buf[:na].view(np.int8).reshape(rows, rank)
    qb = buf[na:na + nb].view(np.int8).reshape(rank, cols)
    sa = buf[na + nb:na + nb + 2 * ga].view(np.float16)
    sb = buf[na + nb + 2 * ga:].view(np.float16)
    return Lqer(rank=rank, fmt=fmt, qa=qa, sa=sa, qb=qb, sb=sb)


def factor_entropy_bytes(lq: Lqer) -> float:
    """Predicted compressed size: order-0 entropy of each factor's codes + fp16 scales."""
    total = 2.0 * (lq.sa.size + lq.sb.size) + 16.0
    for q in (lq.qa, lq.qb):
        counts = np.bincount(q.reshape(-1).astype(np.int64) + 128, minlength=256)
        p = counts[counts > 0] / counts.sum()
        total += q.size * float(-(p * np.log2(p)).sum()) / 8.0
    return total
