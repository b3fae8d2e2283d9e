"""GPTQ with its defaults (act-order, damping 0.01) against the formula written out here:
columns in descending diag(H) order (ties keep their order), one column at a time, each error
fed to the later columns through the upper Cholesky factor of (H + 0.01 mean(diag H) I)^-1."""
from __future__ import annotations

import pytest
import torch

from quant.gptq import GptqSolve, gptq_quantize


def _reference(W: torch.Tensor, H: torch.Tensor, scale: torch.Tensor, qmax: int,
               rnd=torch.round) -> torch.Tensor:
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
        q[:, i] = torch.clamp(rnd(w[:, i] / s), -qmax, qmax)
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
        plain = gptq_quantize(W, H.float(), scale, 7, GptqSolve(act_order=False))
        if not torch.equal(plain, want):
            break
    else:
        raise AssertionError("act order never changed the codes: the test cannot tell")


def test_a_rounding_rule_replaces_nearest_in_every_column_and_its_error_is_fed_forward():
    """GptqSolve.rounding (bench.quant_headroom's rate-aware rule) decides each code before the
    clamp, and the error that rule leaves is what the later columns absorb."""
    W, H, scale = _problem(2)
    floored = gptq_quantize(W, H.float(), scale, 7, GptqSolve(rounding=torch.floor))
    assert torch.equal(floored, _reference(W, H, scale, 7, torch.floor))
    assert not torch.equal(floored, _reference(W, H, scale, 7))


def test_half_precision_weights_are_solved_in_float32():
    W, H, scale = _problem(1)
    Wh = W.half()
    assert torch.equal(gptq_quantize(Wh, H.half(), scale.half(), 7), _reference(Wh.float(), H.half().float(), scale.half().float(), 7))
    # finer codes and 16 columns: error feedback accumulated in fp16 would change codes here
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 16, generator=g).double()
    H = X.T @ X / 64
    Wh = (torch.randn(8, 16, generator=g) * 0.3).half()
    scale = torch.full((8,), 0.05)
    assert torch.equal(gptq_quantize(Wh, H.float(), scale, 31), _reference(Wh.float(), H, scale, 31))


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


def test_damping_rises_tenfold_from_one_percent_and_gives_up_past_1e9():
    """The factor returned is of (H + d m I)^-1 with m the mean diagonal (1 when that is not
    positive, so a zero or negative-diagonal Hessian still gets a scale), d = 0.01 raised
    tenfold per failed Cholesky (logged); after 0.01 .. 1e9 all fail: one ArithmeticError."""
    from quant.gptq import _inverse_upper_cholesky

    def solve(h):
        logs = []
        u = _inverse_upper_cholesky(h, 0.01, logs.append, "t")
        d = float(logs[0].split("raised to ")[1].split()[0]) if logs else 0.01
        return u, d, logs
    for h, want_d in ((torch.zeros(3, 3, dtype=torch.float64), 0.01),
                      (-0.5 * torch.eye(3, dtype=torch.float64), 1.0),
                      (torch.diag(torch.tensor([9.0, 1.0, -0.2], dtype=torch.float64)), 0.1)):
        u, d, logs = solve(h)
        assert d == want_d and (logs == []) == (want_d == 0.01)
        m = float(torch.diagonal(h).mean()) if float(torch.diagonal(h).mean()) > 0 else 1.0
        want = torch.linalg.inv(h + d * m * torch.eye(3, dtype=torch.float64))
        assert torch.allclose(u.T @ u, want, rtol=1e-10, atol=0)
        assert torch.equal(u, torch.triu(u)) and u.shape == (3, 3) and u.dtype == torch.float64
    bad = torch.diag(torch.tensor([5e9 + 2.0, -5e9], dtype=torch.float64))  # mean diag 1
    with pytest.raises(ArithmeticError, match="failed for t even with damping 1e\\+10"):
        _inverse_upper_cholesky(bad, 0.01, None, "t")
    u, d, _ = solve(torch.diag(torch.tensor([5e8 + 2.0, -5e8], dtype=torch.float64)))
    assert d == 1e9
    logs: list[str] = []                          # no damping asked and a singular H: 1e-4
    u = _inverse_upper_cholesky(torch.zeros(2, 2, dtype=torch.float64), 0.0, logs.append, "z")
    assert logs == ["quant:gptq z damping raised to 0.0001 (Cholesky failed at lower damping)"]
    assert torch.allclose(u.T @ u, 1e4 * torch.eye(2, dtype=torch.float64), rtol=1e-10, atol=0)


def test_act_order_keeps_tied_columns_in_order_at_realistic_widths():
    """At 48 columns torch's default (unstable) sort reorders equal diag(H) entries; GPTQ must
    keep ties in column order (deterministic codes, the reference above) all the same."""
    g = torch.Generator().manual_seed(7)
    X = torch.randint(-3, 4, (60, 6), generator=g).double()
    X = torch.cat([X[torch.randperm(60, generator=g)] for _ in range(8)], dim=1)  # 6 diag values
    H = X.T @ X / 60
    d = torch.diagonal(H)
    assert not torch.equal(torch.argsort(d, descending=True),
                           torch.argsort(d, descending=True, stable=True))  # the test can tell
    W = torch.randn(6, 48, generator=g)
    scale = torch.full((6,), 0.2)
    codes = gptq_quantize(W, H.float(), scale, 7)
    assert codes.dtype == torch.int8 and torch.equal(codes, _reference(W, H, scale, 7))
