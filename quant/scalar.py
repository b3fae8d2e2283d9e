"""Scalar quantizer math (pure functions on tensors): steps, codes, dequantization, errors."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

TINY = 2.0 ** -24  # smallest fp16 subnormal: an epsilon, never an absolute scale floor
SCALE_FORMATS = ("log", "fp16")  # QUANT_SCALES: per-row steps on the log grid, or any fp16
# Log-grid codes per octave: step = fp16(2^(c/R)). R = 64: worst relative rounding
# 2^(1/(2R)) - 1 = 0.54 % (+ fp16's 2^-11), an eighth of the fitter's ladder spacing 2^(1/16).
# Measured on the 4L x 128 and 6L x 256 checkpoints (docs/log-scales.md): the codes
# take ~0.65-0.7 bytes/row at R = 64, ~0.55 at R = 32, 1.1-1.25 for fp16 + best codec, and
# at equal budget R = 64 was no worse than fp16 at all four points measured, R = 32 worse at
# two (by <= 0.00005 bpb, noise level). A multiple of 16, so the ladder's steps 2^(j/16)
# shift every row's code by exactly j*R/16.
LOG_SCALE_R = 64
_FP16_TOP = 15  # codes stay below 2^16 (fp16 max 65504): c <= 16R - 1


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


def _iroot(y: int, r: int) -> int:
    """Largest integer m with m**r <= y (exact integer bisection)."""
    lo, hi = 1, 1 << (y.bit_length() // r + 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if mid ** r <= y:
            lo = mid
        else:
            hi = mid - 1
    return lo


@lru_cache(maxsize=8)
def log_grid_table(r: int) -> np.ndarray:
    """2^(k/r) for k = 0..r-1, each correctly rounded to float32, in exact integer arithmetic:
    no libm call, so every platform derives the same table (the artifact stores only c and r)."""
    if not 1 <= r <= 4096:
        raise ValueError(f"log-scale resolution must be in 1..4096 codes per octave, got {r}")
    out = np.empty(r, dtype=np.float32)
    for k in range(r):
        y = 1 << (23 * r + k)              # (M / 2^23)^r = 2^k  <=>  M^r = 2^(23r + k)
        m = _iroot(y, r)
        if (2 * m + 1) ** r <= (y << r):   # nearer to m + 1 (no ties: 2^(k/r) is irrational)
            m += 1
        out[k] = np.float32(m / 2.0 ** 23)
    return out


def log_scale_value(codes: np.ndarray, r: int) -> np.ndarray:
    """The step of each log-grid code: fp16(2^(c/r)) (float16 array). The one function the
    quantizer and the artifact decoder both use, so codes are computed against exactly the
    value that loads; fp16 values also let the builder store them as plain fp16 when smaller."""
    c = np.asarray(codes, dtype=np.int64)
    octave, frac = np.divmod(c, r)
    return np.ldexp(log_grid_table(r)[frac], octave.astype(np.int32)).astype(np.float16)


def round_log_scale(step: torch.Tensor, r: int = LOG_SCALE_R
                    ) -> tuple[torch.Tensor, np.ndarray]:
    """(steps on the log grid in float32, their int32 codes c = round(r * log2(step)))."""
    lg = torch.log2(step.detach().to(torch.float64).clamp_min(TINY).cpu())
    c = torch.round(lg * r).clamp(-24 * r, (_FP16_TOP + 1) * r - 1).to(torch.int64).numpy()
    c = c.astype(np.int32)
    return torch.from_numpy(log_scale_value(c, r).astype(np.float32)), c


def rtn_codes(w: torch.Tensor, scale: torch.Tensor, qmax: int) -> torch.Tensor:
    """Round-to-nearest codes (int8) of a (rows, cols) matrix for per-row scales."""
    return torch.clamp(torch.round(w / scale[:, None]), -qmax, qmax).to(torch.int8)


def dequantize(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """codes * scale in float32 (scale per row, or a single per-tensor scale: as a column it
    broadcasts over the rows either way)."""
    return codes.to(torch.float32) * scale.to(torch.float32).reshape(-1, 1)


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


def flat_steps(step: torch.Tensor) -> torch.Tensor:
    """Every row's step set to the geometric mean of `step` over the rows.

    Why: the fitter's codes are entropy-coded, so a row quantized with step d costs about
    h(row) - log2(d) bits per weight and adds about d^2/12 squared error. At a fixed total
    rate (a fixed sum of log d) the error sum of d^2/12 is least when every d is equal
    (arithmetic mean >= geometric mean); steps proportional to each row's std (SDClip) are what
    a fixed-length code needs to fit its range, and spend bits on the rows with the widest
    spread. Same geometric mean, so the fitter's ladder spans the same steps."""
    g = torch.exp(torch.log(step.clamp_min(TINY)).mean())
    return torch.full_like(step, float(g))


# QUANT_ROW_STEPS=fisher: a row's weight is floored at this fraction of its tensor's mean
# before its step is shaped. 0.1 was the best of 0.02 / 0.1 / 0.5 at 2.7 and 3.7 bits/param on
# the 5,000-step mix model (val gap 0.0409 / 0.0394 / 0.0434 at 2.7; docs/rate-distortion.md)
ROW_WEIGHT_FLOOR = 0.1


def fisher_steps(step: torch.Tensor, row_weight: torch.Tensor,
                 floor: float = ROW_WEIGHT_FLOOR) -> torch.Tensor:
    """Steps d_r proportional to (w_r + floor * mean w)^(-1/2), with the geometric mean of `step`.

    Why: at a fixed total rate (a fixed sum of log d, see flat_steps) the weighted error
    sum_r w_r d_r^2 / 12 is least when w_r d_r^2 is the same in every row; flat_steps is the
    case of equal weights. The embedding's rows are tokens, whose loss weights span two orders
    of magnitude (frequent tokens against rare ones). The floor keeps the rows the calibration
    batches barely priced (tokens they rarely hold) from steps so coarse that the second-order
    price stops holding. Same geometric mean, so the fitter's ladder spans the same steps."""
    w = row_weight.detach().to(torch.float64).reshape(-1).clamp_min(0.0)
    shape = (w + floor * w.mean()).clamp_min(TINY) ** -0.5
    shape = shape / torch.exp(torch.log(shape).mean())
    g = torch.exp(torch.log(step.detach().to(torch.float64).clamp_min(TINY)).mean())
    return (g * shape).to(torch.float32)


def clip_free_step(w: torch.Tensor, qmax: int) -> torch.Tensor:
    """Each row's least step at which none of its codes clips: max|row| / (qmax - 1), a code of
    headroom so the step as stored (the log grid is within 0.54 % of the value asked) still
    holds the row. Why: a fine ladder rung on a shared step clips the rows of widest range, an
    error that grows without bound as the rung gets finer; a row held at its own coarser step
    costs a row scale instead (fitter.rung_step takes it as the floor under
    QUANT_ROW_STEPS=fisher)."""
    return as_rows(w).abs().amax(dim=1) / (qmax - 1)


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
