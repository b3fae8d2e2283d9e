"""GPTQ with its defaults (act-order, damping 0.01) against the formula written out here:
columns in descending diag(H) order (ties keep their order), one column at a time, each error
fed to the later columns through the upper Cholesky factor of (H + 0.01 mean(diag H) I)^-1."""
from __future__ import annotations

import torch

from quant.gptq import gptq_quantize


def _reference(W: torch.Tensor, H: torch.Tensor, scale: torch.Tensor, qmax: int) -> torch.Tensor:
    cols = W.shape[1]
    diag = torch.diagonal(H)
    order = sorted(range(cols), key=lambda c: (-float(diag[c]), c))  # descending, stable
    p = torch.tensor(order)
    w = W.double()[:, p].clone()
    Hp = H.double()[p][:, p]
    Hd = Hp + 0.01 * float(torch.diagonal(Hp).mean()) * torch.eye(cols, dtype=torch.float64)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(Hd)), upper=True)
    s = scale.double()
    q = torch.zeros_like(w)
    for i in range(cols):
        q[:, i] = torch.clamp(torch.round(w[:, i] / s), -qmax, qmax)
        err = (w[:, i] - q[:, i] * s) / U[i, i]
        w[:, i:] -= err[:, None] * U[i, i:][None, :]
    out = torch.zeros_like(q)
    out[:, p] = q
    return out.to(torch.int8)


def _problem(seed: int):
    """Integer-valued inputs whose columns 0/3 and 2/5 are permutations of each other, so
    diag(H) has exact ties; all other diagonal entries differ."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(-3, 4, (40, 8), generator=g).double()
    X[:, 3] = X[torch.randperm(40, generator=g), 0]
    X[:, 5] = X[torch.randperm(40, generator=g), 2]
    X[:, 7] *= 2
    H = X.T @ X / 40
    W = torch.randn(5, 8, generator=g)
    return W, H, torch.full((5,), 0.2)


def test_default_gptq_is_act_order_with_stable_ties_and_one_percent_damping():
    for seed in range(6):
        W, H, scale = _problem(seed)
        d = torch.diagonal(H)
        assert d[0] == d[3] and d[2] == d[5]  # the ties are exact
        want = _reference(W, H, scale, 7)
        assert torch.equal(gptq_quantize(W, H.float(), scale, 7), want), seed
        plain = gptq_quantize(W, H.float(), scale, 7, act_order=False)
        if not torch.equal(plain, want):
            break
    else:
        raise AssertionError("act order never changed the codes: the test cannot tell")


def test_half_precision_weights_are_solved_in_float32():
    W, H, scale = _problem(1)
    Wh = W.half()
    assert torch.equal(gptq_quantize(Wh, H.half(), scale.half(), 7), _reference(Wh.float(), H.half().float(), scale.half().float(), 7))


def test_dead_columns_get_unit_diagonal_and_zero_weights():
    """The records' GPTQ: dead columns (diag H = 0) get diag = 1 and their weights are zeroed;
    that 1 enters the mean diagonal the damping scales with, so with small live columns it
    moves the damping (and the codes) a lot."""
    g = torch.Generator().manual_seed(4)
    X = torch.randn(30, 8, generator=g).double() * 0.05
    X[:, [1, 4, 6]] = 0.0
    H = X.T @ X / 30
    W = torch.randn(5, 8, generator=g)
    Hf = H.clone()
    for c in (1, 4, 6):
        Hf[c, c] = 1.0
    Wz = W.clone()
    Wz[:, [1, 4, 6]] = 0.0
    scale = torch.full((5,), 0.05)
    got = gptq_quantize(W, H.float(), scale, 31)
    assert torch.equal(got, _reference(Wz, Hf, scale, 31))
    assert (got[:, [1, 4, 6]] == 0).all()
