"""The budget fitter's guard rails on synthetic tensors (fast, exact): the budget is never
exceeded, an impossible budget names the smallest reachable size, a roomy budget takes the
finest options, and the result is what `measure` says, not what was predicted."""
from __future__ import annotations

import re

import numpy as np
import pytest

from quant.fitter import FLOAT, N_OPTIONS, Curve, _coarsen, fit_budget
from quant.errors import BudgetError


def _curves(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    j = np.arange(N_OPTIONS)
    out = []
    for _ in range(n):
        size = float(rng.integers(5_000, 50_000))
        rate = size * np.exp(-j / 30.0) + 50.0
        rate[FLOAT] = size * 2.2
        dist = np.exp(j / 12.0) * rng.uniform(0.5, 2.0)
        dist[FLOAT] = dist[1] * 0.01
        out.append(Curve(rate, dist))
    return out


def _measure(curves, factor=1.1, fixed=500):
    calls = []

    def measure(choice):
        b = [int(curves[i].rate[j] * factor) for i, j in enumerate(choice)]
        calls.append(list(choice))
        return fixed + sum(b), b
    return measure, calls


def test_impossible_budget_names_the_measured_smallest_size():
    curves = _curves(3)
    measure, _ = _measure(curves)
    smallest = 500 + sum(int(c.rate[-1] * 1.1) for c in curves)
    with pytest.raises(BudgetError) as ei:
        fit_budget(curves, smallest - 1, lambda i, j: None, measure, 500)
    got = int(re.search(r"can reach is ([\d,]+) bytes", str(ei.value)).group(1).replace(",", ""))
    assert got == smallest and f"budget of {smallest - 1:,} bytes is impossible" in str(ei.value)
    choice, total = fit_budget(curves, smallest, lambda i, j: None, measure, 500)
    assert total == smallest and choice == [N_OPTIONS - 1] * 3


def test_roomy_budget_keeps_everything_in_fp16_and_stops_at_once():
    curves = _curves(3)
    measure, calls = _measure(curves)
    top = 500 + sum(int(c.rate[FLOAT] * 1.1) for c in curves)
    choice, total = fit_budget(curves, 10 * top, lambda i, j: None, measure, 500)
    assert choice == [FLOAT] * 3 and total == top and len(calls) == 1


@pytest.mark.parametrize("factor", [0.7, 1.0, 1.4])
@pytest.mark.parametrize("where", [0.05, 0.5, 0.95])
def test_fit_lands_under_budget_and_within_slack_when_reachable(factor, where):
    """Prediction off by -30 %..+40 %: still under budget; with a fine enough ladder the fit
    leaves at most `slack` bytes unused; the total is the measured one."""
    curves = _curves(4, seed=int(10 * where + factor))
    measure, calls = _measure(curves, factor)
    lo = 500 + sum(int(c.rate[-1] * factor) for c in curves)
    hi = 500 + sum(int(c.rate[1] * factor) for c in curves)
    budget = int(lo + where * (hi - lo))
    choice, total = fit_budget(curves, budget, lambda i, j: None, measure, 500, slack=2_000)
    assert total <= budget and budget - total <= 2_000
    assert total == 500 + sum(int(curves[i].rate[j] * factor) for i, j in enumerate(choice))
    assert choice in calls


def test_realize_is_called_for_every_tensor_of_every_measured_choice():
    curves = _curves(3, seed=5)
    measure, calls = _measure(curves)
    realized = set()
    lo = 500 + sum(int(c.rate[-1] * 1.1) for c in curves)
    fit_budget(curves, lo + 20_000, lambda i, j: realized.add((i, j)), measure, 500)
    assert {(i, j) for c in calls for i, j in enumerate(c)} <= realized


def test_coarsen_saves_at_least_what_is_asked_cheapest_first_and_keeps_fp16():
    curves = _curves(3, seed=2)
    rate = np.stack([c.rate for c in curves])
    dist = np.stack([c.dist for c in curves])
    start = [FLOAT, 10, 20]
    trial = _coarsen(rate, dist, start, 500.0)
    assert trial[0] == FLOAT and trial[1] >= 10 and trial[2] >= 20
    saved = sum(rate[i, start[i]] - rate[i, trial[i]] for i in range(3))
    assert saved >= 500.0
    # one step less would not have saved enough (it stops as soon as it has)
    assert sum(trial) - sum(start) >= 1
    assert _coarsen(rate, dist, [FLOAT, N_OPTIONS - 1, N_OPTIONS - 1], 1.0) is None


def test_a_model_with_nothing_to_quantize_fits_with_its_fixed_bytes():
    calls = []

    def measure(choice):
        calls.append(list(choice))
        return 1234, []
    assert fit_budget([], 5_000, lambda i, j: None, measure, 1234) == ([], 1234)
    assert calls == [[]]
