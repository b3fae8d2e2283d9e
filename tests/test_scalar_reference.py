"""Scalar quantizer helpers against loops written here: the MSE clip search (40 shrinks of
abs-max from 1 down to 1 - 39/50, steps stored in fp16, the first lowest weighted error
wins) and the (rows, cols) float32 view of any tensor."""
from __future__ import annotations

import pytest
import torch

from quant.scalar import (as_rows, clip_step, dequantize, hessian_error, mse_step, qmax_for,
                          round_scale)


def _reference_mse_step(w: torch.Tensor, qmax: int, cw: torch.Tensor) -> torch.Tensor:
    out = []
    for row in w.double():
        amax = float(row.abs().max())
        best, best_err = None, float("inf")
        for i in range(40):
            step = float(torch.tensor(amax * (1 - i / 50) / qmax, dtype=torch.float32).half())
            q = torch.clamp(torch.round(row.float() / step), -qmax, qmax).double()
            err = float((((row - q * step) ** 2) * cw.double()).sum())
            if err < best_err:
                best, best_err = step, err
        out.append(best)
    return torch.tensor(out, dtype=torch.float32)


def test_mse_step_is_the_best_of_forty_fp16_shrinks_under_the_column_weights():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 48, generator=g) * torch.linspace(0.2, 3.0, 48)
    w[2, 5] = 9.0  # an outlier row: clipping it pays
    cw = torch.rand(48, generator=g) * 4
    for qmax in (7, 31, 127):
        assert torch.allclose(mse_step(w, qmax, cw), _reference_mse_step(w, qmax, cw), rtol=0, atol=0)
        flat = mse_step(w, qmax)
        assert torch.equal(flat, _reference_mse_step(w, qmax, torch.ones(48)))
    assert not torch.equal(mse_step(w, 7, cw), mse_step(w, 7))  # the weights matter here


def test_as_rows_gives_a_float32_rows_by_cols_view():
    v = torch.arange(6, dtype=torch.float16)
    assert as_rows(v).shape == (1, 6) and as_rows(v).dtype == torch.float32
    t = torch.randn(2, 3, 4).bfloat16()
    r = as_rows(t)
    assert r.shape == (2, 12) and r.dtype == torch.float32 and torch.equal(r, t.float().reshape(2, 12))
    assert as_rows(torch.tensor(3.0)).shape == (1, 1)


def test_order0_entropy_and_hessian_error_by_hand():
    import math
    from quant.scalar import hessian_error, order0_entropy
    codes = torch.tensor([[-128, 0, 0, 127], [5, 5, 5, 5]], dtype=torch.int8)
    p = [1 / 8, 2 / 8, 1 / 8, 4 / 8]
    assert math.isclose(order0_entropy(codes), -sum(x * math.log2(x) for x in p), rel_tol=1e-12)
    assert order0_entropy(torch.full((3, 3), -7, dtype=torch.int8)) == 0.0
    assert order0_entropy(torch.zeros(0, dtype=torch.int8)) == 0.0
    w = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    w_hat = torch.tensor([[1.5, 2.0], [3.0, -2.0]])
    assert math.isclose(hessian_error(w, w_hat, None), (0.25 + 1.0) / (1 + 4 + 9 + 1), rel_tol=1e-12)
    h = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
    e = (w - w_hat).double()
    num = sum(float(e[r] @ h.double() @ e[r]) for r in range(2))
    den = sum(float(w.double()[r] @ h.double() @ w.double()[r]) for r in range(2))
    assert math.isclose(hessian_error(w, w_hat, h), num / den, rel_tol=1e-12)


def test_qmax_is_the_symmetric_grid_of_each_bit_width():
    import pytest
    from quant.scalar import qmax_for
    assert [qmax_for(b) for b in range(2, 9)] == [1, 3, 7, 15, 31, 63, 127]  # int6 -> +-31
    for bad in (1, 9, 0):
        with pytest.raises(ValueError, match="bits must be in 2..8"):
            qmax_for(bad)


def test_dequantize_takes_a_scale_per_row_or_one_for_the_whole_tensor():
    codes = torch.tensor([[1, -2, 3], [4, 0, -6]], dtype=torch.int8)
    per_row = torch.tensor([0.5, 2.0], dtype=torch.float16)
    want = [[0.5, -1.0, 1.5], [8.0, 0.0, -12.0]]
    assert dequantize(codes, per_row).tolist() == want and dequantize(codes, per_row).dtype == torch.float32
    assert dequantize(codes, torch.tensor([0.25])).tolist() == [[0.25, -0.5, 0.75], [1.0, 0.0, -1.5]]
    try:
        dequantize(codes, torch.ones(3))
    except RuntimeError:
        pass
    else:
        raise AssertionError("3 scales for 2 rows must not broadcast")


def test_percentile_and_mse_clip_rules():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(5, 64, generator=g)
    q = 0.9
    want = torch.tensor([sorted(abs(x) for x in row.tolist()) for row in w])
    # linear interpolation between order statistics, as torch.quantile / numpy define it
    pos = q * (w.shape[1] - 1)
    lo, frac = int(pos), pos - int(pos)
    ref = (want[:, lo] * (1 - frac) + want[:, lo + 1] * frac) / qmax_for(6)
    assert torch.allclose(clip_step(w, 6, "percentile", q), ref, rtol=1e-6)
    # the MSE rule honours the column weights: all weight on the outlier's column keeps it
    w[:, 7] = 8.0
    cw = torch.full((64,), 1e-4)
    cw[7] = 1.0
    weighted, plain = clip_step(w, 4, "mse", 0.0, cw), clip_step(w, 4, "mse", 0.0)
    assert torch.equal(weighted, _reference_mse_step(w, qmax_for(4), cw))
    assert not torch.equal(weighted, plain)


def test_relative_errors_do_not_depend_on_the_weights_scale():
    """tr(E H E^T) / tr(W H W^T) and |E|^2 / |W|^2 are ratios: scaling W and W_hat together by
    1e-3 (sums of squares far below 1) leaves them unchanged."""
    g = torch.Generator().manual_seed(4)
    w = torch.randn(4, 8, generator=g, dtype=torch.float64)
    w_hat = w + 0.1 * torch.randn(4, 8, generator=g, dtype=torch.float64)
    x = torch.randn(32, 8, generator=g, dtype=torch.float64)
    h = x.T @ x
    for hh in (None, h):
        big, small = hessian_error(w, w_hat, hh), hessian_error(w * 1e-3, w_hat * 1e-3, hh)
        assert small == pytest.approx(big, rel=1e-9) and big > 0


def test_round_scale_returns_the_fp16_value_in_float32():
    s = round_scale(torch.tensor([0.1, 3.3e-9, 1.0]))
    assert s.dtype == torch.float32
    assert s.tolist() == [float(torch.tensor(0.1).half()), float(torch.tensor(2.0 ** -24).half()), 1.0]
