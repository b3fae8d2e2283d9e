"""Quantizer math on small matrices: code ranges, error bounds, GPTQ vs RTN, Hessian hooks,
and the challenge's int8 baseline semantics."""
from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
import torch
from torch import nn

import quant
from quant.baseline import baseline_int8_state
from quant.gptq import GptqSolve, gptq_quantize
from quant.scalar import clip_step, dequantize, hessian_error, qmax_for, round_scale, rtn_codes


def _w(rows=64, cols=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    row_std = 0.02 * torch.exp(0.3 * torch.randn(rows, 1, generator=g))
    return torch.randn(rows, cols, generator=g) * row_std


def _anisotropic_h(cols, seed, n=2048):
    g = torch.Generator().manual_seed(seed + 100)
    mix = torch.randn(cols, cols, generator=g) * 0.3 + torch.eye(cols)
    x = torch.randn(n, cols, generator=g) * torch.linspace(0.2, 3.0, cols) @ mix
    return (x.T @ x / n).to(torch.float64)


@pytest.mark.parametrize("bits", range(2, 9))
def test_codes_in_range_for_every_bit_width(bits):
    w = _w(seed=bits)
    qmax = qmax_for(bits)
    for kind, value in (("std", 3.0), ("absmax", 0), ("percentile", 0.99), ("mse", 0)):
        step = round_scale(clip_step(w, bits, kind, value))
        codes = rtn_codes(w, step, qmax)
        assert codes.dtype == torch.int8
        assert int(codes.abs().max()) <= qmax
    g = gptq_quantize(w, _anisotropic_h(w.shape[1], bits), round_scale(clip_step(w, bits, "std", 2.0)),
                      qmax)
    assert int(g.abs().max()) <= qmax and g.shape == w.shape


def test_rtn_error_is_at_most_half_a_step_for_unclipped_entries():
    w = _w(seed=3)
    step = round_scale(clip_step(w, 6, "std", 2.0))  # k=2: some entries clip
    codes = rtn_codes(w, step, 31)
    err = (w - dequantize(codes, step)).abs()
    unclipped = (w / step[:, None]).abs() <= 31
    assert (~unclipped).any() and unclipped.any()
    assert bool((err[unclipped] <= step[:, None].expand_as(w)[unclipped] / 2 * (1 + 1e-6)).all())
    # clipped entries saturate at the largest code
    assert bool((codes.abs()[~unclipped] == 31).all())


def test_absmax_rule_never_clips_and_no_absolute_scale_floor():
    w = _w(seed=4) * 1e-3  # tiny weights: an absolute floor (1/qmax) would zero them all
    step = round_scale(clip_step(w, 8, "absmax", 0))
    assert float(step.max()) < 1e-3
    codes = rtn_codes(w, step, 127)
    assert int(codes.abs().max()) >= 126  # the largest entry of each row lands on the top code


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_gptq_beats_rtn_in_hessian_norm(seed):
    w = _w(48, 160, seed)
    h = _anisotropic_h(160, seed)
    for bits, k in ((6, 12.0), (4, 3.0), (3, 2.5)):
        qmax = qmax_for(bits)
        step = round_scale(clip_step(w, bits, "std", k))
        e_rtn = hessian_error(w, dequantize(rtn_codes(w, step, qmax), step), h)
        codes = gptq_quantize(w, h, step, qmax, GptqSolve(block_size=32))
        e_gptq = hessian_error(w, dequantize(codes, step), h)
        assert e_gptq < e_rtn, (bits, e_gptq, e_rtn)


def test_gptq_is_deterministic_and_handles_dead_columns():
    w = _w(32, 64, 5)
    h = _anisotropic_h(64, 5)
    h[7, :] = 0
    h[:, 7] = 0
    step = round_scale(clip_step(w, 6, "std", 12.0))
    a = gptq_quantize(w, h, step, 31)
    b = gptq_quantize(w, h.clone(), step.clone(), 31)
    assert torch.equal(a, b)
    assert bool((a[:, 7] == 0).all())  # a dead column carries no signal: zeroed


def test_gptq_raises_damping_instead_of_failing_on_singular_hessian():
    w = _w(16, 32, 6)
    x = torch.randn(4, 32)  # rank 4 << 32 columns
    h = (x.T @ x).double()
    h = h - 2 * torch.eye(32, dtype=torch.float64) * float(torch.diagonal(h).mean())  # indefinite
    logs = []
    codes = gptq_quantize(w, h, round_scale(clip_step(w, 6, "std", 12.0)), 31,
                          GptqSolve(log=logs.append, name="t"))
    assert codes.shape == w.shape and any("damping raised" in m for m in logs)


def test_collect_hessians_matches_hand_computed_xtx():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    batches = [torch.randn(5, 3, 8), torch.randn(7, 3, 8)]
    hs = quant.collect_hessians(model, batches)
    assert set(hs) == {"0.weight", "2.weight"}
    x0 = torch.cat([b.reshape(-1, 8) for b in batches]).double()
    torch.testing.assert_close(hs["0.weight"].double(), x0.T @ x0 / x0.shape[0], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        x2 = torch.relu(model[0](x0.float())).double()
    torch.testing.assert_close(hs["2.weight"].double(), x2.T @ x2 / x2.shape[0], rtol=1e-4, atol=1e-5)


def test_collect_hessians_shared_input_reuses_product_but_not_after_inplace_change():
    """q/k/v-style modules fed one tensor get the same H; a module fed the same tensor object
    after an in-place change gets the H of the changed values (no stale reuse)."""
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.after = nn.Linear(6, 6), nn.Linear(6, 3), nn.Linear(6, 2)

        def forward(self, x):
            x = x.clone()
            a, b = self.q(x), self.k(x)
            x.mul_(3.0)  # same object, new values
            return a.sum() + b.sum() + self.after(x).sum()

    torch.manual_seed(1)
    m, xs = Shared(), [torch.randn(4, 6), torch.randn(9, 6)]
    hs = quant.collect_hessians(m, xs)
    x = torch.cat(xs).double()
    want = x.T @ x / x.shape[0]
    torch.testing.assert_close(hs["q.weight"].double(), want, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(hs["k.weight"].double(), want, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(hs["after.weight"].double(), 9 * want, rtol=1e-6, atol=1e-7)


def test_collect_hessians_uses_model_hessian_modules_for_tied_head():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok_emb = nn.Embedding(10, 6)
            self.norm = nn.LayerNorm(6)
            self.lm_head = nn.Identity()

        def forward(self, ids):
            h = self.norm(self.tok_emb(ids))
            return self.lm_head(h) @ self.tok_emb.weight.T

        def hessian_modules(self):
            return {"tok_emb.weight": self.lm_head}

    m = Tiny()
    ids = torch.randint(0, 10, (4, 5))
    hs = quant.collect_hessians(m, [ids])
    with torch.no_grad():
        x = m.norm(m.tok_emb(ids)).reshape(-1, 6).double()
    torch.testing.assert_close(hs["tok_emb.weight"].double(), x.T @ x / 20, rtol=1e-5, atol=1e-6)


def test_int8_baseline_semantics_hand_checked():
    g = torch.Generator().manual_seed(0)
    small_row = torch.rand(40_000, generator=g) * 0.5 - 0.25        # clip < 1 -> floor 1/127
    big_row = torch.randn(40_000, generator=g) * 2.0
    big_row[123] = 50.0                                             # outlier beyond the quantile
    w = torch.stack([small_row, big_row])                           # 80,000 > 65,536: per-row int8
    vec = torch.randn(70_000, generator=g)                          # 1-D large: per-tensor
    sd = {"w": w, "v": vec, "blocks.0.attn_scale": torch.rand(8, generator=g),
          "norm.weight": torch.rand(8, generator=g), "bf": torch.rand(8, generator=g).bfloat16(),
          "steps": torch.tensor([3, 4])}
    obj = baseline_int8_state(sd)
    assert obj["__quant_format__"] == "int8_clean_per_row_v1"
    s = obj["scales"]["w"]
    assert s.dtype == torch.float16
    assert float(s[0]) == float(torch.tensor(1 / 127).half())       # floored
    clip1 = float(np.quantile(np.abs(big_row.numpy()).astype(np.float64), 0.9999984))
    assert float(s[1]) == pytest.approx(clip1 / 127, rel=3e-3)  # fp32 vs fp64 interpolation
    assert clip1 < 50.0
    q = obj["quantized"]["w"]
    assert q.dtype == torch.int8
    assert torch.equal(q[0], torch.round(small_row * 127).to(torch.int8))
    assert int(q[1, 123]) == 127                                    # the outlier was clipped
    assert obj["qmeta"]["w"] == {"scheme": "per_row", "axis": 0}
    assert obj["scales"]["v"].dtype == torch.float32 and obj["scales"]["v"].ndim == 0
    pt = obj["passthrough"]
    assert pt["blocks.0.attn_scale"].dtype == torch.float32            # control: fp32
    assert pt["norm.weight"].dtype == torch.float16                    # other small: fp16
    assert pt["bf"].dtype == torch.float16 and obj["passthrough_orig_dtypes"]["bf"] == "bfloat16"
    assert pt["steps"].dtype == torch.int64
    blob = quant.baseline_int8_zlib_blob(sd)
    back = torch.load(io.BytesIO(zlib.decompress(blob)), weights_only=True)
    assert torch.equal(back["quantized"]["w"], q)
    # our int8 method stores the same codes and scales
    qm = quant.quantize_model(sd, method="int8")
    sd2 = qm.state_dict()
    torch.testing.assert_close(sd2["w"], q.float() * s.float()[:, None], rtol=0, atol=0)
    assert sd2["bf"].dtype == torch.bfloat16 and sd2["blocks.0.attn_scale"].dtype == torch.float32


def test_policy_classes_and_passthrough_dtypes():
    pol = quant.QuantPolicy()
    assert quant.classify("blocks.3.attn.c_q.weight", 262_144, 2, True, pol) == "attention"
    assert quant.classify("blocks.3.mlp.proj.weight", 786_432, 2, True, pol) == "mlp"
    assert quant.classify("tok_emb.weight", 524_288, 2, True, pol) == "embedding"
    assert quant.classify("blocks.3.attn.q_gain", 8, 1, True, pol) == "small"
    assert quant.classify("bigram.proj", 70_000, 2, True, pol) == "other"
    sd = {"blocks.0.attn.c_q.weight": _w(256, 300), "blocks.0.resid_mix": torch.rand(2, 32),
          "final_norm.weight": torch.rand(32)}
    q = quant.quantize_model(sd, method="rtn", policy=quant.QuantPolicy(row_steps="sdclip"))
    rows = {r["name"]: r for r in q.report}
    assert rows["blocks.0.attn.c_q.weight"]["bits"] == 6
    assert rows["blocks.0.attn.c_q.weight"]["k"] == pytest.approx(13.0, rel=2e-3)
    assert rows["blocks.0.resid_mix"]["method"] == "fp32"
    assert rows["final_norm.weight"]["method"] == "float16"
    with pytest.raises(quant.QuantError, match="QUANT_METHOD"):
        quant.quantize_model(sd, method="int3")
