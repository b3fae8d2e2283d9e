"""QuantPolicy.row_steps: "flat", one step for every row of a tensor (quant.scalar.flat_steps),
and "fisher" (the default), flat with no row clipped and the embedding's rows stepped by their
Fisher row weights (quant.scalar.fisher_steps, clip_free_step).

Why it should win at equal bytes: with entropy-coded codes a row of step d costs about
h - log2(d) bits per weight and adds d^2/12 squared error, so for a fixed sum of log d the
error is least with all d equal (AM >= GM); SDClip's steps grow with each row's std."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import quant
from quant.fitter import rung_step
from quant.scalar import clip_free_step, fisher_steps, flat_steps, order0_entropy, rtn_codes


def _rows(seed: int = 0) -> torch.Tensor:
    """128 x 64 Gaussian rows whose std spans ~10x (lognormal), like a trained embedding's."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(128, 64, generator=g) * torch.exp(0.6 * torch.randn(128, 1, generator=g)) * 0.02


def test_flat_steps_is_the_geometric_mean_in_every_row():
    step = torch.tensor([1.0, 4.0, 16.0, 0.25])
    out = flat_steps(step)
    assert out.shape == step.shape and torch.allclose(out, torch.full((4,), 2.0))


def test_equal_steps_beat_std_proportional_steps_at_equal_entropy():
    """The principle on its own (no fitter): same geometric-mean step, about the same order-0
    entropy of the codes, less squared error with one step for all rows."""
    w = _rows()
    prop = 0.5 * w.std(dim=1)          # SDClip-shaped: step proportional to the row's std
    flat = flat_steps(prop)
    err = {}
    ent = {}
    for name, s in (("prop", prop), ("flat", flat)):
        codes = rtn_codes(w, s, 127)
        err[name] = float(((w - codes.float() * s[:, None]) ** 2).sum())
        ent[name] = np.mean([order0_entropy(codes[i]) for i in range(len(w))])  # per-row tables
    assert ent["flat"] == pytest.approx(ent["prop"], abs=0.05)
    assert err["flat"] < 0.8 * err["prop"]


@pytest.mark.parametrize("frac", [0.45, 0.7])
def test_fitter_with_flat_rows_has_less_error_at_the_same_budget(frac):
    sd = {"tok_emb.weight": _rows(1), "blocks.0.mlp.fc.weight": _rows(2)}
    base = quant.QuantPolicy(small_numel=1000, float_rung=False)
    full = quant.quantize_model(sd, method="rtn", policy=base).total_bytes
    budget = int(frac * full)
    err, sizes = {}, {}
    for rows in ("sdclip", "flat"):
        q = quant.quantize_model(sd, method="rtn", policy=quant.QuantPolicy(
            small_numel=1000, float_rung=False, row_steps=rows), fit=quant.BudgetFit(budget))
        deq = q.state_dict()
        err[rows] = sum(float(((sd[n] - deq[n]) ** 2).sum()) for n in sd)
        sizes[rows] = q.total_bytes
        if rows == "flat":   # one step per tensor, codes anywhere in the 8-bit range
            for qt in q.tensors:
                assert qt.kind == "quant" and len(set(qt.scales.tolist())) == 1
                assert np.abs(qt.codes).max() <= 127
    assert max(sizes.values()) <= budget
    assert err["flat"] < err["sdclip"]


def test_fisher_steps_are_the_least_weighted_error_at_a_fixed_rate():
    """Without a floor, fisher_steps is the minimiser of sum w_r d_r^2 at a fixed sum of log d_r
    (found here by gradient descent, not by the formula), with the geometric mean it was given."""
    w = torch.tensor([1.0, 4.0, 100.0, 0.01, 7.0], dtype=torch.float64)
    step = torch.tensor([0.5, 1.0, 2.0, 4.0, 0.25])
    x = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.1)
    for _ in range(1500):
        d = torch.exp(x - x.mean())
        loss = (w * d ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    g = float(torch.exp(torch.log(step).mean()))
    best = g * torch.exp(x - x.mean()).detach()
    got = fisher_steps(step, w, floor=0.0)
    assert torch.allclose(got.double(), best, rtol=1e-3)
    assert float(torch.exp(torch.log(got.double()).mean())) == pytest.approx(g, rel=1e-6)


def test_fisher_steps_floor_and_degenerate_weights():
    """The floor bounds how coarse a weightless row gets (at most (1 + 1/floor)^(1/2) times a
    mean-weight row's step); equal or all-zero weights give flat steps."""
    step = torch.full((4,), 0.1)
    got = fisher_steps(step, torch.tensor([0.0, 1.0, 1.0, 2.0]), floor=0.1)
    assert float(got[0] / got[1]) == pytest.approx(((1.0 + 0.1) / 0.1) ** 0.5, rel=1e-5)
    for w in (torch.zeros(4), torch.full((4,), 3.0)):
        assert torch.allclose(fisher_steps(step, w), step)


def test_a_clip_free_rung_never_clips_a_row():
    """At a rung finer than the widest row's range allows, the shared step clips that row (an
    error far above step/2); floored by clip_free_step, every error stays within half a step."""
    w = _rows(3)
    base = flat_steps(0.5 * w.std(dim=1))
    j = 1                                      # the finest rung: 1/16 of the base step
    for floor, clips in ((None, True), (clip_free_step(w, 127), False)):
        s = rung_step(base, j, floor)
        err = (w - rtn_codes(w, s, 127).float() * s[:, None]).abs()
        assert bool((err > 0.5001 * s[:, None]).any()) == clips


def _fisher_case():
    """An embedding of 512 token rows whose loss weights span ~400x (lognormal), a matrix with
    equal weights, and both tensors' Fisher error weights; large enough (~30-50 KB fitted)
    that the fitter's 2,000-byte slack is a few per cent of the budget."""
    g = torch.Generator().manual_seed(5)

    def rows() -> torch.Tensor:
        spread = torch.exp(0.6 * torch.randn(512, 1, generator=g))
        return torch.randn(512, 128, generator=g) * spread * 0.02
    sd = {"tok_emb.weight": rows(), "blocks.0.mlp.fc.weight": rows()}
    token_weight = torch.exp(1.5 * torch.randn(512, 1, generator=g))
    om = {"tok_emb.weight": token_weight.expand(512, 128).clone(),
          "blocks.0.mlp.fc.weight": torch.ones(512, 128)}
    return sd, om


def test_fisher_rows_have_less_weighted_error_than_flat_at_the_same_budget():
    sd, om = _fisher_case()
    frac = 0.55
    full = quant.quantize_model(sd, method="rtn", policy=quant.QuantPolicy(
        small_numel=1000, float_rung=False)).total_bytes
    budget = int(frac * full)
    err, fitted = {}, {}
    for rows in ("flat", "fisher"):
        q = quant.quantize_model(sd, method="rtn", policy=quant.QuantPolicy(
            small_numel=1000, float_rung=False, row_steps=rows),
            fit=quant.BudgetFit(budget, error_weights=om))
        assert q.total_bytes <= budget
        deq = q.state_dict()
        err[rows] = sum(float((om[n] * (sd[n] - deq[n]) ** 2).sum()) for n in sd)
        fitted[rows] = {qt.name: qt for qt in q.tensors}
    assert err["fisher"] < 0.9 * err["flat"]
    emb = fitted["fisher"]["tok_emb.weight"].scales.astype(np.float64)
    heavy = om["tok_emb.weight"][:, 0].numpy()
    # heavier token rows get finer steps: the steps fall as the weights rise
    assert np.corrcoef(np.argsort(np.argsort(emb)), np.argsort(np.argsort(heavy)))[0, 1] < -0.9
    assert len(set(fitted["flat"]["tok_emb.weight"].scales.tolist())) == 1


def test_fisher_rows_without_error_weights_shape_nothing():
    """Without Fisher weights the embedding keeps one step."""
    sd = {"tok_emb.weight": _rows(1), "blocks.0.mlp.fc.weight": _rows(2)}
    full = quant.quantize_model(sd, method="rtn", policy=quant.QuantPolicy(
        small_numel=1000, float_rung=False)).total_bytes
    q = quant.quantize_model(sd, method="rtn", policy=quant.QuantPolicy(
        small_numel=1000, float_rung=False), fit=quant.BudgetFit(int(0.45 * full)))
    assert len(set(q.tensors[0].scales.tolist())) == 1


def test_unknown_row_steps_is_refused():
    with pytest.raises(ValueError, match="row_steps"):
        quant.QuantPolicy(row_steps="wide")


def test_the_row_steps_setting_offers_the_policys_shapes_and_refuses_others():
    """QUANT_ROW_STEPS reaches the fitter's QuantPolicy.row_steps: the same names, the same
    default, and a wrong name is one error naming the variable."""
    from golf.run.config import QUANT_ROW_STEPS, Config
    assert QUANT_ROW_STEPS == quant.policy.ROW_STEPS
    assert Config().quant_row_steps == quant.QuantPolicy().row_steps
    probs = Config().replace(quant_row_steps="wide").problems()
    assert len(probs) == 1 and probs[0].startswith("QUANT_ROW_STEPS='wide'")
    assert Config.from_env({"QUANT_ROW_STEPS": "sdclip"}, cpu_preset=False).quant_row_steps == "sdclip"
