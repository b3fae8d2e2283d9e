"""Scalar quantizer math (pure functions on tensors): steps, codes, dequantization, errors."""
from __future__ import annotations

import torch

TINY = 2.0 ** -24  # smallest fp16 subnormal: an epsilon, never an absolute scale floor


def qmax_for(bits: int) -> int:
    """Largest code magnitude of a symmetric int-`bits` grid (codes in [-qmax, qmax])."""
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in 2..8, got {bits}")
    return 2 ** (bits - 1) - 1


def as_rows(w: torch.Tensor) -> torch.Tensor:
    """View any tensor as (rows, cols) float32: rows = first dim (a whole vector is one row)."""
    w = w.detach().to(torch.float32)
    return w.reshape(1, -1) if w.ndim <= 1 else w.reshape(w.shape[0], -1)


def round_scale(step: torch.Tensor) -> torch.Tensor:
    """Steps as they are stored (fp16), returned in float32 so quantization uses the stored value."""
    return step.clamp_min(TINY).to(torch.float16).to(torch.float32)


def rtn_codes(w: torch.Tensor, scale: torch.Tensor, qmax: int) -> torch.Tensor:
    """Round-to-nearest codes (int8) of a (rows, cols) matrix for per-row scales."""
    return torch.clamp(torch.round(w / scale[:, None]), -qmax, qmax).to(torch.int8)


def dequantize(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """codes * scale in float32 (scale per row, or a single per-tensor scale)."""
    s = scale.to(torch.float32)
    return codes.to(torch.float32) * (s[:, None] if s.numel() == codes.shape[0] else s.reshape(1, 1))


def clip_step(w: torch.Tensor, bits: int, kind: str, value: float,
              col_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row step (float32, not yet fp16-rounded) for a clip rule."""
    qmax = qmax_for(bits)
    if kind == "std":
        return value * w.std(dim=1, unbiased=False) / qmax
    if kind == "absmax":
        return w.abs().amax(dim=1) / qmax
    if kind == "percentile":
        return torch.quantile(w.abs(), value, dim=1) / qmax
    if kind == "mse":
        return mse_step(w, qmax, col_weight)
    raise ValueError(f"unknown clip rule {kind!r}")


def mse_step(w: torch.Tensor, qmax: int, col_weight: torch.Tensor | None = None,
             grid: int = 40) -> torch.Tensor:
    """Per row, the clip (a shrink of abs-max) with the lowest weighted squared error."""
    amax = w.abs().amax(dim=1).clamp_min(TINY)
    cw = torch.ones(w.shape[1]) if col_weight is None else col_weight.to(torch.float32)
    best_err = torch.full((w.shape[0],), float("inf"))
    best = amax / qmax
    for i in range(grid):
        step = round_scale(amax * (1.0 - i / (grid * 1.25)) / qmax)
        err = (((w - rtn_codes(w, step, qmax).float() * step[:, None]) ** 2) * cw).sum(1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, step, best)
    return best


def hessian_error(w: torch.Tensor, w_hat: torch.Tensor, h: torch.Tensor | None) -> float:
    """Relative Hessian-weighted error tr(E H E^T)/tr(W H W^T) (plain relative MSE without H)."""
    e = (w - w_hat).to(torch.float64)
    w64 = w.to(torch.float64)
    if h is None:
        return float((e * e).sum() / (w64 * w64).sum().clamp_min(1e-300))
    h64 = h.to(torch.float64)
    return float(((e @ h64) * e).sum() / ((w64 @ h64) * w64).sum().clamp_min(1e-300))


def order0_entropy(codes: torch.Tensor) -> float:
    """Empirical order-0 entropy of int8 codes in bits per code."""
    c = torch.bincount((codes.reshape(-1).to(torch.int64) + 128), minlength=256).to(torch.float64)
    p = c[c > 0] / c.sum()
    return float(-(p * torch.log2(p)).sum()) if p.numel() else 0.0
