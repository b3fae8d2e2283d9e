"""The budget fitter: exact written size never over budget, within 2,000 bytes when reachable,
and an impossible budget says the smallest reachable size."""
from __future__ import annotations

import random
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

import quant

FAST = quant.QuantPolicy(compressors=("zlib",))  # fast path: same logic, one cheap codec


def _sd():
    g = torch.Generator().manual_seed(0)
    def w(r, c, s):
        return torch.randn(r, c, generator=g) * s * torch.exp(0.3 * torch.randn(r, 1, generator=g))
    return {"blocks.0.attn.c_q.weight": w(128, 600, 0.03), "blocks.0.mlp.fc.weight": w(300, 256, 0.02),
            "tok_emb.weight": w(200, 400, 0.05), "blocks.0.attn_scale": torch.rand(128, generator=g)}


CODES_ONLY = replace(FAST, float_rung=False)


@pytest.fixture(scope="module")
def extremes():
    """Exact sizes at the coarsest and the finest quantized step of every tensor (the range the
    step ladder covers; above it only the fp16 rung can spend more bytes)."""
    finest = quant.quantize_model(_sd(), method="rtn", policy=CODES_ONLY,
                                  fit=quant.BudgetFit(10**9))
    with pytest.raises(quant.BudgetError) as ei:
        quant.quantize_model(_sd(), method="rtn", policy=FAST, fit=quant.BudgetFit(1_000))
    smallest = int(re.search(r"can reach is ([\d,]+) bytes", str(ei.value)).group(1).replace(",", ""))
    return smallest, finest.total_bytes


def test_impossible_budget_names_smallest_reachable_size(extremes):
    smallest, largest = extremes
    assert 0 < smallest < largest
    # the size it names is really reachable
    q = quant.quantize_model(_sd(), method="rtn", policy=FAST, fit=quant.BudgetFit(smallest))
    assert q.total_bytes <= smallest


@pytest.mark.parametrize("lqer_ranks", [(), (2, 4)])
def test_fitter_never_over_and_within_2k_across_random_budgets(extremes, lqer_ranks):
    smallest, largest = extremes
    rng = random.Random(1234)
    sd = _sd()
    for _ in range(6 if not lqer_ranks else 3):
        budget = rng.randint(smallest, largest + 5_000)
        q = quant.quantize_model(sd, method="rtn", policy=FAST,
                                 fit=quant.BudgetFit(budget, lqer_ranks=lqer_ranks))
        assert q.total_bytes <= budget
        assert len(q.to_bytes()) == q.total_bytes
        if budget <= largest:
            assert budget - q.total_bytes <= 2_000, (budget, q.total_bytes)


def test_fp16_rung_spends_a_large_budget_and_can_be_switched_off(extremes):
    """Far above the finest codes the fitter keeps tensors in fp16 (lower error than any code);
    between the two it stays under budget; with float_rung=False it never stores them in fp16."""
    _smallest, finest = extremes
    sd = _sd()
    roomy = quant.quantize_model(sd, method="rtn", policy=FAST, fit=quant.BudgetFit(10**9))
    big = [r for r in roomy.report if r["class"] != "small"]
    assert all(r["kind"] == "pass" and r["method"] == "float16" for r in big)
    assert roomy.total_bytes > finest
    for budget in (finest + 20_000, (finest + roomy.total_bytes) // 2):
        mid = quant.quantize_model(sd, method="rtn", policy=FAST, fit=quant.BudgetFit(budget))
        assert mid.total_bytes <= budget
        assert mid.total_bytes >= finest - 10_000  # never worse-filled than codes alone
    # the fp16 rung is real data: it loads back to the fp16-rounded weights
    out = roomy.state_dict()
    assert torch.equal(out["blocks.0.mlp.fc.weight"], sd["blocks.0.mlp.fc.weight"].half().float())
    codes = quant.quantize_model(sd, method="rtn", policy=CODES_ONLY, fit=quant.BudgetFit(10**9))
    assert all(r["kind"] == "quant" for r in codes.report if r["class"] != "small")


def test_fitter_spends_bytes_where_error_is_weighted(extremes):
    """Same budget: the tensor with 100x sensitivity gets a finer step than without it."""
    smallest, largest = extremes
    budget = (smallest + largest) // 2
    base = quant.quantize_model(_sd(), method="rtn", policy=FAST, fit=quant.BudgetFit(budget))
    hot = quant.quantize_model(_sd(), method="rtn", policy=FAST,
                               fit=quant.BudgetFit(budget,
                                                   sensitivity={"blocks.0.mlp.fc.weight": 100.0}))
    k = {r["name"]: r["step_over_std"] for r in base.report if r["kind"] == "quant"}
    k_hot = {r["name"]: r["step_over_std"] for r in hot.report if r["kind"] == "quant"}
    assert k_hot["blocks.0.mlp.fc.weight"] < k["blocks.0.mlp.fc.weight"]
    assert hot.total_bytes <= budget


def test_error_norm_evens_out_relative_steps(extremes):
    """QUANT_ERROR_NORM=1 prices relative error: the small-norm tensor (row std 0.02) no longer
    gets a coarser step relative to its std than the large-norm one (0.05), as it does when
    absolute error is minimized."""
    smallest, largest = extremes
    budget = (smallest + largest) // 2
    ratio = {}
    for alpha in (0.0, 1.0):
        q = quant.quantize_model(_sd(), method="rtn", policy=CODES_ONLY,
                                 fit=quant.BudgetFit(budget, error_norm=alpha))
        k = {r["name"]: r["step_over_std"] for r in q.report if r["kind"] == "quant"}
        ratio[alpha] = k["blocks.0.mlp.fc.weight"] / k["tok_emb.weight"]
        assert q.total_bytes <= budget
    assert ratio[0.0] > 1.5 and ratio[1.0] < 0.75 * ratio[0.0], ratio


def test_gptq_fit_with_all_codecs_lands_under_budget():
    sd = {k: v for k, v in _sd().items() if k != "tok_emb.weight"}
    hs = {}
    for name in ("blocks.0.attn.c_q.weight", "blocks.0.mlp.fc.weight"):
        cols = sd[name].shape[1]
        x = torch.randn(1024, cols, generator=torch.Generator().manual_seed(2)) * torch.linspace(0.3, 2, cols)
        hs[name] = x.T @ x / 1024
    free = quant.quantize_model(sd, hessians=hs, method="gptq")
    budget = free.total_bytes - 20_000
    q = quant.quantize_model(sd, hessians=hs, method="gptq", fit=quant.BudgetFit(budget))
    assert budget - 2_000 <= q.total_bytes <= budget
    assert all(r["method"] == "gptq" for r in q.report if r["kind"] == "quant")


def test_int8_over_budget_is_a_budget_error():
    with pytest.raises(quant.BudgetError, match="int8 baseline artifact is"):
        quant.quantize_model(_sd(), method="int8", fit=quant.BudgetFit(10_000))


@pytest.mark.parametrize("bad", [None, 1.5e6, True])
def test_a_budget_fit_without_whole_bytes_names_the_fix(bad):
    with pytest.raises(quant.QuantError, match="pass fit=None"):
        quant.BudgetFit(bad)
    assert quant.BudgetFit(np.int64(9_000)).budget_bytes == 9_000


def test_loss_slopes_are_delta_over_error_and_steer_the_fitter(extremes):
    """loss_slopes = measured delta / relative weighted error; a tensor measured 100x more
    costly per unit error than the others gets a finer step at the same budget."""
    smallest, largest = extremes
    sd = _sd()
    q = quant.quantize_model(sd, method="rtn", policy=CODES_ONLY)
    deq = q.state_dict()
    errs = {r["name"]: r["weighted_error"] for r in q.report if r["kind"] == "quant"}
    names = sorted(errs)
    slopes = quant.loss_slopes(sd, deq, None, {n: 0.01 for n in names} | {"missing": 1.0})
    assert set(slopes) == set(names)
    for n in names:
        assert slopes[n] == pytest.approx(0.01 / errs[n], rel=1e-6)
    budget = (smallest + largest) // 2
    flat = quant.quantize_model(sd, method="rtn", policy=CODES_ONLY,
                                fit=quant.BudgetFit(budget, loss_slopes=slopes))
    hot = quant.quantize_model(sd, method="rtn", policy=CODES_ONLY,
                               fit=quant.BudgetFit(budget, loss_slopes=slopes | {
                                   "blocks.0.mlp.fc.weight":
                                   100 * slopes["blocks.0.mlp.fc.weight"]}))
    step = lambda qm: {r["name"]: r["step_over_std"] for r in qm.report if r["kind"] == "quant"}
    assert step(hot)["blocks.0.mlp.fc.weight"] < step(flat)["blocks.0.mlp.fc.weight"]
    assert hot.total_bytes <= budget and flat.total_bytes <= budget


def test_loss_slopes_price_relative_error_whatever_the_error_weights_scale(extremes):
    """A measured slope is loss per unit of *relative* error, so with slopes given, scaling one
    tensor's Fisher error weights by 1,000 must not move the fit (the weights then only say
    where inside the tensor the error costs); before, it multiplied that tensor's price by
    1,000 (the 0.355 bpb artifact of docs/rate-distortion.md). Without slopes it must move."""
    smallest, largest = extremes
    sd = _sd()
    g = torch.Generator().manual_seed(1)
    names = [n for n, t in sd.items() if t.ndim == 2]
    omega = {n: torch.rand(*sd[n].shape, generator=g) + 0.5 for n in names}
    hot = dict(omega, **{"blocks.0.attn.c_q.weight": 1000 * omega["blocks.0.attn.c_q.weight"]})
    slopes = {n: 0.01 for n in names}
    budget = (smallest + largest) // 2

    def levels(weights, **kw):
        q = quant.quantize_model(sd, method="rtn", policy=CODES_ONLY, fit=quant.BudgetFit(
            budget, error_weights=weights, **kw))
        return {t.name: t.extra["ladder"] for t in q.tensors if t.kind == "quant"}

    assert levels(hot, loss_slopes=slopes) == levels(omega, loss_slopes=slopes)
    assert (levels(hot)["blocks.0.attn.c_q.weight"] < levels(omega)["blocks.0.attn.c_q.weight"])


def test_the_ladder_reaches_fine_enough_to_spend_a_generous_budget():
    """A 256 x 256 Gaussian tensor (fp16 rung off) at 55,000 B, ~6.7 bits/weight: the fit lands
    within the slack, on a rung finer than the ladder's old floor (-40, 0.18x the SDClip step:
    49,288 B at most here, the 6-bit tie of docs/rate-distortion.md). With no byte limit, flat
    rows stop short of the finest rung (there int8 codes clip and the error grows again);
    fisher rows (the default) hold each row at its clip-free step and take the finest."""
    from quant import fitter
    g = torch.Generator().manual_seed(0)
    sd = {"blocks.0.mlp.fc.weight": torch.randn(256, 256, generator=g) * 0.02}
    pol = quant.QuantPolicy(small_numel=1000, float_rung=False, row_steps="flat")
    q = quant.quantize_model(sd, method="rtn", policy=pol, fit=quant.BudgetFit(55_000))
    (qt,) = [t for t in q.tensors if t.kind == "quant"]
    assert 55_000 - fitter.SLACK <= q.total_bytes <= 55_000
    assert qt.extra["ladder"] < -40
    free = quant.quantize_model(sd, method="rtn", policy=pol, fit=quant.BudgetFit(10 ** 7))
    (ft,) = [t for t in free.tensors if t.kind == "quant"]
    assert int(fitter.LADDER.min()) < ft.extra["ladder"] < -40
    free = quant.quantize_model(sd, method="rtn", policy=replace(pol, row_steps="fisher"),
                                fit=quant.BudgetFit(10 ** 7))
    (ft,) = [t for t in free.tensors if t.kind == "quant"]
    err = (sd[ft.name] - free.state_dict()[ft.name]).abs()
    assert ft.extra["ladder"] == int(fitter.LADDER.min())
    assert bool((err <= 0.5001 * torch.from_numpy(ft.scales.astype(np.float32))[:, None]).all())


def test_an_opened_fit_builds_what_quantize_model_writes_and_names_its_options(extremes):
    """open_fit is quantize_model's fitted path opened up: its fit, built, is the same artifact
    byte for byte, each tensor at the ladder step it chose; a corrected curve (one tensor
    priced 100x) moves that tensor finer; a choice built past the budget is not refused (a
    bench measures such moves), quantize_model's own result never is over."""
    smallest, largest = extremes
    budget = (smallest + largest) // 2
    sd = _sd()
    fit = quant.BudgetFit(budget)
    session = quant.open_fit(sd, policy=CODES_ONLY, fit=fit)
    choice = session.fit()
    built = session.build(choice)
    ref = quant.quantize_model(sd, method="gptq", policy=CODES_ONLY, fit=fit)
    assert built.to_bytes() == ref.to_bytes() and built.total_bytes <= budget
    from quant import fitter
    by_name = {t.name: t for t in built.tensors}
    assert [by_name[n].extra["ladder"] for n in session.names] == [
        int(fitter.LADDER[j - 1]) for j in choice]
    i = session.names.index("blocks.0.mlp.fc.weight")
    hot = [c if k != i else replace(c, dist=100 * c.dist) for k, c in enumerate(session.curves)]
    assert session.fit(hot)[i] < choice[i]
    finest = [max(j - 20, 1) if j else j for j in choice]
    assert session.build(finest).total_bytes > budget
