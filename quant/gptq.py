"""GPTQ solve as a pure function: weights + Hessian + fixed per-row scale -> int8 codes.

Kept apart from calibration (calibrate.py) and packing (artifact.py). Deterministic: no RNG,
fp64 Cholesky, fixed column order (stable sort for act-order).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class GptqSolve:
    """How one tensor's GPTQ solve runs: lazy-update block size, act-order (descending
    diag(H)), relative damping, the tensor's name and log for the line that says damping
    was raised (and for the error when it cannot be), and the rounding rule."""
    block_size: int = 128
    act_order: bool = True
    damp: float = 0.01
    name: str = ""
    log: Callable[[str], None] | None = None
    # w/step -> integer codes before the clamp; None rounds to nearest (what ships).
    # bench.quant_headroom passes a rate-aware rule to measure what it would gain
    rounding: Callable[[torch.Tensor], torch.Tensor] | None = None


def _inverse_upper_cholesky(h: torch.Tensor, damp: float,
                            log: Callable[[str], None] | None, name: str) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp*mean(diag) I)^-1; damping rises (logged) on failure."""
    mean_diag = float(torch.diagonal(h).mean())
    mean_diag = mean_diag if mean_diag > 0 else 1.0
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    d = damp
    for _ in range(12):
        chol, info = torch.linalg.cholesky_ex(h + d * mean_diag * eye)
        if int(info) == 0:
            hinv = torch.cholesky_inverse(chol)
            upper, info2 = torch.linalg.cholesky_ex(hinv, upper=True)
            if int(info2) == 0:
                if d != damp and log:
                    log(f"quant:gptq {name} damping raised to {d:g} (Cholesky failed at lower damping)")
                return upper
        d = d * 10 if d > 0 else 1e-4
    raise ArithmeticError(f"GPTQ: Cholesky failed for {name} even with damping {d:g}; "
                          "the Hessian is not positive semi-definite (check calibration)")


def gptq_factor(H: torch.Tensor, damp: float = 0.01, act_order: bool = True,
                log: Callable[[str], None] | None = None, name: str = "",
                device: torch.device | str = "cpu"
                ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(column order or None, upper Cholesky factor of the damped H^-1 in that order, dead
    columns) of one Hessian: all the solve needs from H, and independent of the step, so a
    fitter trying many steps of one tensor computes it once."""
    H = H.detach().to(device, torch.float64).clone()
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    perm = None
    if act_order:
        perm = torch.argsort(torch.diagonal(H), descending=True, stable=True)
        H = H[perm][:, perm]
    return perm, _inverse_upper_cholesky(H, damp, log, name).to(torch.float32), dead


def gptq_quantize(W: torch.Tensor, H: torch.Tensor, scale: torch.Tensor, qmax: int,
                  solve: GptqSolve = GptqSolve(),
                  factor: tuple[torch.Tensor | None, torch.Tensor, torch.Tensor] | None = None
                  ) -> torch.Tensor:
    """GPTQ codes (int8, same shape as W) for W (rows, cols), H (cols, cols), per-row scale.

    Columns are swept (in descending diag(H) order with act_order) in blocks; each column's
    rounding error is fed back into the not-yet-quantized columns through the upper Cholesky
    factor of H^-1, with lazy updates between blocks. Runs on W's device (CPU or CUDA);
    codes are returned on CPU. `factor` is gptq_factor(H, solve.damp, solve.act_order) when the
    caller has it already (the same codes, without refactoring H).
    """
    W = W.detach().to(torch.float32).clone()
    rows, cols = W.shape
    block_size = solve.block_size
    if H.shape != (cols, cols):
        raise ValueError(f"GPTQ {solve.name}: Hessian shape {tuple(H.shape)} does not match "
                         f"{cols} columns")
    perm, U, dead = factor or gptq_factor(H, solve.damp, solve.act_order, solve.log, solve.name,
                                          W.device)
    U, dead = U.to(W.device), dead.to(W.device)
    W[:, dead] = 0.0
    if perm is not None:
        perm = perm.to(W.device)
        W = W[:, perm]
    s = scale.to(W.device, torch.float32).reshape(-1)
    s = s.expand(rows) if s.numel() == 1 else s
    Q = torch.zeros(rows, cols, dtype=torch.float32, device=W.device)
    rnd = solve.rounding or torch.round
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1 = W[:, i1:i2].clone()
        U1 = U[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            w = W1[:, i]
            q = torch.clamp(rnd(w / s), -qmax, qmax)
            Q[:, i1 + i] = q
            err = (w - q * s) / U1[i, i]
            W1[:, i:] -= err[:, None] * U1[i, i:][None, :]
            Err1[:, i] = err
        if i2 < cols:
            W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
    return Q.to(torch.int8).cpu()
