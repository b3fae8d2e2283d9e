"""LQER math on tiny matrices, checked against numpy's SVD and hand-built byte counts."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import quant
from conftest import needs_lrzip
from quant.lqer import (LqerFormat, Lqer, lowrank_factors, lqer_from_bytes, make_lqer,
                        quantize_groups)


def _error_matrix(rows=40, cols=56, rank=6, seed=0) -> torch.Tensor:
    """A strongly low-rank error plus small noise (like a quantizer's structured error)."""
    g = np.random.default_rng(seed)
    u, v = g.normal(size=(rows, rank)), g.normal(size=(rank, cols))
    scales = np.array([8.0, 5.0, 3.0, 2.0, 1.5, 1.0])[:rank]
    return torch.tensor((u * scales) @ v + 0.05 * g.normal(size=(rows, cols)), dtype=torch.float32)


@pytest.mark.parametrize("weighted", [False, True])
def test_lowrank_error_is_the_svd_tail_and_falls_with_rank(weighted):
    e = _error_matrix()
    cw = torch.linspace(0.2, 3.0, e.shape[1]) if weighted else None
    d = np.sqrt(cw.numpy() / cw.numpy().mean()) if weighted else np.ones(e.shape[1])
    s = np.linalg.svd(e.numpy().astype(np.float64) * d[None, :], compute_uv=False)
    errs = []
    for r in range(0, 9):
        if r == 0:
            resid = e.numpy()
        else:
            a, b = lowrank_factors(e, r, cw)
            assert a.shape == (40, r) and b.shape == (r, 56)
            resid = e.numpy() - (a @ b).numpy()
        err = float(np.sqrt(((resid * d[None, :]) ** 2).sum()))
        # Eckart-Young: the best rank-r error is the norm of the discarded singular values
        assert err == pytest.approx(float(np.sqrt((s[r:] ** 2).sum())), rel=1e-4, abs=1e-5)
        errs.append(err)
    assert all(x > y for x, y in zip(errs, errs[1:]))


def test_quantized_correction_error_falls_with_rank():
    e = _error_matrix(seed=3)
    fmt = LqerFormat(8, 16, 8, 16)
    errs = [float(e.norm())] + [float((e - make_lqer(e, r, fmt).correction()).norm())
                                for r in range(1, 7)]
    assert all(x > y for x, y in zip(errs, errs[1:])), errs


def test_group_grid_is_asymmetric_with_half_step_scale():
    x = torch.tensor([[0.9, -1.2, 0.3], [1.5, -0.1, 0.0]])
    for bits, group in ((2, 0), (4, 4), (3, 2)):
        q, s = quantize_groups(x, bits, group)
        flat = x.numpy().reshape(-1)
        g = flat.size if group == 0 else group
        half = 2 ** (bits - 1)
        for k in range(math.ceil(flat.size / g)):
            blk = flat[k * g:(k + 1) * g]
            scale = np.float16(np.abs(blk).max() / (half - 0.5))
            assert s[k] == scale
            want = np.clip(np.rint(blk / np.float32(scale)), -half, half - 1)
            assert np.array_equal(q.reshape(-1)[k * g:(k + 1) * g], want.astype(np.int8))
        assert q.min() >= -half and q.max() <= half - 1


def test_stored_bytes_are_exact_and_round_trip():
    e = _error_matrix(rows=33, cols=70)
    for fmt, r in ((LqerFormat(2, 0, 4, 64), 4), (LqerFormat(4, 64, 4, 64), 3)):
        lq = make_lqer(e, r, fmt)
        na, nb = 33 * r, r * 70
        ga = 1 if fmt.a_group == 0 else math.ceil(na / fmt.a_group)
        gb = math.ceil(nb / fmt.b_group)
        assert len(lq.to_bytes()) == na + nb + 2 * (ga + gb)
        back = lqer_from_bytes(lq.to_bytes(), 33, 70, r, fmt)
        assert torch.equal(back.correction(), lq.correction())


@needs_lrzip
def test_artifact_carries_lqer_and_loads_codes_plus_correction(tmp_path):
    """A tensor with LQER loads as codes*scale + (qA*sA)@(qB*sB), computed here in numpy."""
    g = torch.Generator().manual_seed(0)
    sd = {"blocks.0.mlp.fc.weight": torch.randn(96, 80, generator=g) * 0.02,
          "blocks.0.attn.c_q.weight": torch.randn(80, 80, generator=g) * 0.02}
    pol = quant.QuantPolicy(small_numel=100, compressors=("zlib",))
    q = quant.quantize_model(sd, method="record_1855", policy=pol)
    with_lqer = [qt for qt in q.tensors if qt.lqer is not None]
    assert len(with_lqer) == 2  # top-3 of two tensors
    p = tmp_path / "a.gkq"
    quant.save_artifact(p, q)
    loaded, _ = quant.load_artifact(p)
    for qt in with_lqer:
        lq: Lqer = qt.lqer
        a = lq.qa.astype(np.float32) * lq.sa.astype(np.float32)[0]
        bq = lq.qb.reshape(-1).astype(np.float32)
        bs = np.repeat(lq.sb.astype(np.float32), 64)[:bq.size]
        b = (bq * bs).reshape(lq.qb.shape)
        want = qt.codes.astype(np.float32) * qt.scales.astype(np.float32)[:, None] + a @ b
        assert np.allclose(loaded[qt.name].numpy(), want, atol=1e-6)
        stream = [s for s in q.streams if s["name"] == f"lqer/{qt.name}"][0]
        assert stream["raw_length"] == len(lq.to_bytes())
        row = [r for r in q.report if r["name"] == qt.name][0]
        assert row["lqer_rank"] == 4 and row["lqer_bytes"] == stream["length"]
