"""The 2026-04 records' optimizer options (PR #1855 / #2135): the Polar-Express
Newton–Schulz iteration against a float64 evaluation of its polynomials, Muon's row
normalisation against a hand-written step, EMBED_WD, and WARMDOWN_FRAC with MIN_LR."""
from __future__ import annotations

import pytest
import torch

from golf.run.config import Config
from golf.run.errors import ConfigError
from golf.train.muon import NS_COEFF_SETS, Muon, newton_schulz, shape_factor
from golf.train.optim import build_optimizers, frac_multiplier, schedule_multiplier

pytestmark = pytest.mark.usefixtures("one_thread")

# the five tuples as the reference lists them (PR #1344 -> #1787), exactly
POLAR = [(8.156554524902461, -22.48329292557795, 15.878769915207462),
         (4.042929935166739, -2.808917465908714, 0.5000178451051316),
         (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
         (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
         (2.3465413258596377, -1.7097828382687081, 0.42323551169305323)]


def polar_f64(g: torch.Tensor, tuples) -> torch.Tensor:
    """X = G/||G||_F (transposed when tall); per (a, b, c): A = X Xᵀ, X = aX + (bA + cA²)X."""
    x = g.double()
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / (torch.linalg.matrix_norm(x) + 1e-7)
    for a, b, c in tuples:
        A = x @ x.T
        x = a * x + (b * A + c * A @ A) @ x
    return x.T if tall else x


def test_polar_express_tuples_are_exact():
    assert NS_COEFF_SETS["polar_express"] == tuple(POLAR)
    assert NS_COEFF_SETS["classic"] == ((3.4445, -4.7750, 2.0315),)


@pytest.mark.parametrize("shape", [(16, 48), (48, 16), (32, 32)])
def test_polar_express_iteration_matches_float64_polynomial(shape):
    torch.manual_seed(0)
    g = torch.randn(shape)
    got = newton_schulz(g, 5, coeffs="polar_express")
    want = polar_f64(g, POLAR)
    assert torch.allclose(got.double(), want, atol=2e-4)
    assert not torch.allclose(newton_schulz(g, 5).double(), want, atol=1e-2)   # not the classic
    # past the fifth step the last tuple repeats
    assert torch.allclose(newton_schulz(g, 7, coeffs="polar_express").double(),
                          polar_f64(g, POLAR + [POLAR[-1]] * 2), atol=2e-4)


def test_row_normalized_muon_step_by_hand():
    torch.manual_seed(1)
    w = torch.nn.Parameter(torch.randn(24, 8))
    w0, g, buf = w.detach().clone(), torch.randn(24, 8), torch.randn(24, 8)
    opt = Muon([w], lr=0.1, momentum=0.9, ns_steps=5, weight_decay=0.2, ns_coeffs="polar_express",
               row_normalize=True)
    opt.state[w]["momentum_buffer"] = buf.clone()
    w.grad = g
    opt.step()
    b2 = 0.9 * buf + g
    u = g + 0.9 * b2
    u = u / u.norm(dim=1, keepdim=True)
    want = w0 * (1 - 0.1 * 0.2) - 0.1 * shape_factor((24, 8)) * polar_f64(u, POLAR).float()
    assert torch.allclose(w.detach(), want, atol=1e-4)
    assert torch.allclose(opt.state[w]["momentum_buffer"], b2)


def test_muon_options_reach_the_optimizer_and_embed_wd_the_embedding_group():
    cfg = Config.from_preset("cpu_frontier").replace(num_layers=2, model_dim=32, num_heads=4,
                                                     vocab_size=64, rope_dims=4)
    from golf.model.gpt import GPT
    m = GPT(cfg)
    muon, adam = build_optimizers(m, cfg)
    assert muon.param_groups[0]["ns_coeffs"] == "polar_express" and muon.param_groups[0]["row_normalize"]
    emb = [g for g in adam.param_groups if any(p is m.tok_emb.weight for p in g["params"])]
    assert emb[0]["weight_decay"] == 0.085
    plain = Config.from_preset("cpu").replace(num_layers=2, model_dim=32, num_heads=4, vocab_size=64,
                                              rope_dims=4, bigram_vocab_size=0, ve_dim=0)
    _, adam = build_optimizers(GPT(plain), plain)
    assert {g["weight_decay"] for g in adam.param_groups} == {plain.adam_wd}   # EMBED_WD=-1


def test_warmdown_frac_with_min_lr():
    assert frac_multiplier(0.14, 0.85, 0.1) == 1.0
    assert frac_multiplier(0.15, 0.85, 0.1) == pytest.approx(1.0)
    assert frac_multiplier(0.5, 0.85, 0.1) == pytest.approx(0.5 / 0.85)
    assert frac_multiplier(0.915, 0.85, 0.1) == pytest.approx(0.1)
    assert frac_multiplier(0.99, 0.85, 0.1) == 0.1
    cfg = Config().replace(warmdown_frac=0.85, min_lr=0.1, iterations=1000)
    assert schedule_multiplier(cfg, 10, 50_000.0, 100_000.0) == pytest.approx(0.5 / 0.85)  # by time
    assert schedule_multiplier(cfg, 500, 0.0, 0.0) == pytest.approx(0.5 / 0.85)           # by steps
    old = Config().replace(warmdown_iters=100, iterations=1000)
    assert schedule_multiplier(old, 950, 0.0, 0.0) == pytest.approx(0.5)   # WARMDOWN_ITERS as before


def test_bad_optimizer_settings_name_the_variable():
    with pytest.raises(ConfigError) as exc:
        Config.from_env({"PRESET": "cpu", "MUON_NS_COEFFS": "polar", "WARMDOWN_FRAC": "1.2",
                         "EMBED_WD": "-0.5"}).validate()
    text = str(exc.value)
    assert "MUON_NS_COEFFS='polar'" in text and "WARMDOWN_FRAC=1.2" in text and "EMBED_WD=-0.5" in text


def test_momentum_warms_up_from_092_to_097_over_1500_steps():
    from golf.train.optim import muon_momentum, set_lrs
    cfg = Config.from_preset("pr1855")
    assert [round(muon_momentum(s, cfg), 6) for s in (0, 750, 1500, 4000)] == [0.92, 0.945, 0.97, 0.97]
    w = torch.nn.Parameter(torch.randn(4, 4))
    opt = Muon([w], lr=0.1, momentum=cfg.muon_momentum_warmup_start)
    for g in opt.param_groups:
        g["base_lr"] = g["lr"]
    set_lrs([opt], 0.5, muon_momentum(750, cfg))
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.945) and opt.param_groups[0]["lr"] == 0.05
