"""GPT shapes, XSA geometry, q_gain learning, causality and the reference parameter count."""
from __future__ import annotations

import pytest
import torch

from golf.run.config import Config
from golf.model.gpt import GPT, apply_rope, count_parameters, rope_tables, xsa


pytestmark = pytest.mark.usefixtures("one_thread")


def small_cfg(**kw) -> Config:
    return Config().replace(num_layers=3, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=2.0,
                            vocab_size=97, **kw)


def test_shapes_and_loss():
    torch.manual_seed(0)
    m = GPT(small_cfg())
    x = torch.randint(0, 97, (2, 16))
    logits = m(x)
    assert logits.shape == (2, 16, 97) and logits.dtype == torch.float32
    assert logits.abs().max() <= 30.0
    loss = m(x, x)
    assert loss.ndim == 0 and abs(loss.item() - torch.log(torch.tensor(97.0)).item()) < 0.5


def test_default_11l_param_count_matches_reference():
    with torch.device("meta"):
        m = GPT(Config())
    assert count_parameters(m) == 26_501_720
    with torch.device("meta"):
        g = GPT(Config().replace(xsa_gate=True))
    assert count_parameters(g) == 26_501_720 + 11 * 8


def test_xsa_output_orthogonal_to_own_value_direction():
    torch.manual_seed(0)
    y, v = torch.randn(2, 5, 8, 16), torch.randn(2, 5, 4, 16)
    z = xsa(y, v)
    vhat = torch.nn.functional.normalize(v, dim=-1)
    for h in range(8):
        dots = (z[:, :, h] * vhat[:, :, h // 2]).sum(-1)
        assert dots.abs().max() < 1e-5
    # and it removes nothing else: y - z is parallel to vhat
    diff = (y - z)[:, :, 3]
    assert torch.allclose(diff, (diff * vhat[:, :, 1]).sum(-1, keepdim=True) * vhat[:, :, 1], atol=1e-5)


def test_xsa_gate_scales_removed_component():
    y, v = torch.randn(1, 3, 4, 8), torch.randn(1, 3, 2, 8)
    full = y - xsa(y, v)
    half = y - xsa(y, v, torch.zeros(4))  # sigmoid(0) = 0.5
    assert torch.allclose(half, 0.5 * full, atol=1e-6)


def test_rope_preserves_norm_and_leaves_tail_dims():
    x = torch.randn(1, 7, 2, 32)
    cos, sin = rope_tables(7, 8, 10000.0, "cpu", torch.float32)
    r = apply_rope(x, cos, sin, 8)
    assert torch.allclose(r[..., 8:], x[..., 8:])
    assert torch.allclose(r[..., :8].norm(dim=-1), x[..., :8].norm(dim=-1), atol=1e-5)
    assert torch.allclose(r[:, 0], x[:, 0])  # position 0 is not rotated


def test_q_gain_gets_gradient_and_changes():
    from golf.train.optim import build_optimizers
    torch.manual_seed(0)
    cfg = small_cfg()
    m = GPT(cfg)
    # output projections start at zero, so give them weight for a gradient to reach q_gain
    with torch.no_grad():
        for b in m.blocks:
            b.attn.proj.weight.normal_(std=0.05)
    x = torch.randint(0, 97, (2, 16))
    before = m.blocks[1].attn.q_gain.detach().clone()
    m(x, x).backward()
    assert m.blocks[1].attn.q_gain.grad.abs().sum() > 0
    for o in build_optimizers(m, cfg):
        o.step()
    assert not torch.equal(m.blocks[1].attn.q_gain.detach(), before)


def test_causality():
    torch.manual_seed(0)
    m = GPT(small_cfg())
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim == 2 and (p == 0).all():
                p.normal_(std=0.05)
    x = torch.randint(0, 97, (1, 20))
    x2 = x.clone()
    x2[0, 12:] = (x2[0, 12:] + 5) % 97
    with torch.no_grad():
        a, b = m(x), m(x2)
    assert torch.allclose(a[:, :12], b[:, :12], atol=1e-5)
    assert not torch.allclose(a[:, 12:], b[:, 12:], atol=1e-3)


def test_hessian_modules_cover_linears_and_tied_embedding():
    m = GPT(small_cfg())
    mods = m.hessian_modules()
    assert "blocks.0.attn.c_q.weight" in mods and mods["tok_emb.weight"] is m.lm_head
    seen = {}
    h = m.lm_head.register_forward_hook(lambda mod, inp, out: seen.setdefault("x", inp[0]))
    m(torch.randint(0, 97, (1, 4)))
    h.remove()
    assert seen["x"].shape[-1] == 64
