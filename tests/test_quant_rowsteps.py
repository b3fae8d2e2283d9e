"""QuantPolicy.row_steps="flat": one step for every row of a tensor (quant.scalar.flat_steps).

Why it should win at equal bytes: with entropy-coded codes a row of step d costs about
h - log2(d) bits per weight and adds d^2/12 squared error, so for a fixed sum of log d the
error is least with all d equal (AM >= GM); SDClip's steps grow with each row's std."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import quant
from quant.scalar import flat_steps, order0_entropy, rtn_codes


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
