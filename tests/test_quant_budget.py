"""The budget fitter: exact written size never over budget, within 10,000 bytes when reachable,
and an impossible budget says the smallest reachable size."""
from __future__ import annotations

import random
import re
from dataclasses import replace

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
    finest = quant.quantize_model(_sd(), method="rtn", policy=CODES_ONLY, budget_bytes=10**9)
    with pytest.raises(quant.BudgetError) as ei:
        quant.quantize_model(_sd(), method="rtn", policy=FAST, budget_bytes=1_000)
    smallest = int(re.search(r"can reach is ([\d,]+) bytes", str(ei.value)).group(1).replace(",", ""))
    return smallest, finest.total_bytes


def test_impossible_budget_names_smallest_reachable_size(extremes):
    smallest, largest = extremes
    assert 0 < smallest < largest
    # the size it names is really reachable
    q = quant.quantize_model(_sd(), method="rtn", policy=FAST, budget_bytes=smallest)
    assert q.total_bytes <= smallest


def test_fitter_never_over_and_within_10k_across_random_budgets(extremes):
    """Real tensors and codecs at budgets spread over the whole reachable range: one random
    budget in each of 8 equal strata from the smallest size to 5,000 bytes above the finest
    codes (the many-budgets property on synthetic sizes is in test_properties/test_fitter_guard)."""
    smallest, largest = extremes
    rng = random.Random(1234)
    sd = _sd()
    edges = [smallest + k * (largest + 5_000 - smallest) // 8 for k in range(9)]
    for lo, hi in zip(edges, edges[1:]):
        budget = rng.randint(lo, hi)
        q = quant.quantize_model(sd, method="rtn", policy=FAST, budget_bytes=budget)
        assert q.total_bytes <= budget
        assert len(q.to_bytes()) == q.total_bytes
        if budget <= largest:
            assert budget - q.total_bytes <= 10_000, (budget, q.total_bytes)


def test_fp16_rung_spends_a_large_budget_and_can_be_switched_off(extremes):
    """Far above the finest codes the fitter keeps tensors in fp16 (lower error than any code);
    between the two it stays under budget; with float_rung=False it never stores them in fp16."""
    _smallest, finest = extremes
    sd = _sd()
    roomy = quant.quantize_model(sd, method="rtn", policy=FAST, budget_bytes=10**9)
    big = [r for r in roomy.report if r["class"] != "small"]
    assert all(r["kind"] == "pass" and r["method"] == "float16" for r in big)
    assert roomy.total_bytes > finest
    for budget in (finest + 20_000, (finest + roomy.total_bytes) // 2):
        mid = quant.quantize_model(sd, method="rtn", policy=FAST, budget_bytes=budget)
        assert mid.total_bytes <= budget
        assert mid.total_bytes >= finest - 10_000  # never worse-filled than codes alone
    # the fp16 rung is real data: it loads back to the fp16-rounded weights
    out = roomy.state_dict()
    assert torch.equal(out["blocks.0.mlp.fc.weight"], sd["blocks.0.mlp.fc.weight"].half().float())
    codes = quant.quantize_model(sd, method="rtn", policy=CODES_ONLY, budget_bytes=10**9)
    assert all(r["kind"] == "quant" for r in codes.report if r["class"] != "small")


def test_fitter_spends_bytes_where_error_is_weighted(extremes):
    """Same budget: the tensor with 100x sensitivity gets a finer step than without it."""
    smallest, largest = extremes
    budget = (smallest + largest) // 2
    base = quant.quantize_model(_sd(), method="rtn", policy=FAST, budget_bytes=budget)
    hot = quant.quantize_model(_sd(), method="rtn", policy=FAST, budget_bytes=budget,
                               sensitivity={"blocks.0.mlp.fc.weight": 100.0})
    k = {r["name"]: r["step_over_std"] for r in base.report if r["kind"] == "quant"}
    k_hot = {r["name"]: r["step_over_std"] for r in hot.report if r["kind"] == "quant"}
    assert k_hot["blocks.0.mlp.fc.weight"] < k["blocks.0.mlp.fc.weight"]
    assert hot.total_bytes <= budget


def test_gptq_fit_with_all_codecs_lands_under_budget():
    sd = {k: v for k, v in _sd().items() if k != "tok_emb.weight"}
    hs = {}
    for name in ("blocks.0.attn.c_q.weight", "blocks.0.mlp.fc.weight"):
        cols = sd[name].shape[1]
        x = torch.randn(1024, cols, generator=torch.Generator().manual_seed(2)) * torch.linspace(0.3, 2, cols)
        hs[name] = x.T @ x / 1024
    free = quant.quantize_model(sd, hessians=hs, method="gptq")
    budget = free.total_bytes - 20_000
    q = quant.quantize_model(sd, hessians=hs, method="gptq", budget_bytes=budget)
    assert budget - 10_000 <= q.total_bytes <= budget
    assert all(r["method"] == "gptq" for r in q.report if r["kind"] == "quant")


def test_int8_over_budget_is_a_budget_error():
    with pytest.raises(quant.BudgetError, match="int8 baseline artifact is"):
        quant.quantize_model(_sd(), method="int8", budget_bytes=10_000)


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
    flat = quant.quantize_model(sd, method="rtn", policy=CODES_ONLY, budget_bytes=budget,
                                loss_slopes=slopes)
    hot = quant.quantize_model(sd, method="rtn", policy=CODES_ONLY, budget_bytes=budget,
                               loss_slopes=slopes | {"blocks.0.mlp.fc.weight":
                                                     100 * slopes["blocks.0.mlp.fc.weight"]})
    step = lambda qm: {r["name"]: r["step_over_std"] for r in qm.report if r["kind"] == "quant"}
    assert step(hot)["blocks.0.mlp.fc.weight"] < step(flat)["blocks.0.mlp.fc.weight"]
    assert hot.total_bytes <= budget and flat.total_bytes <= budget
