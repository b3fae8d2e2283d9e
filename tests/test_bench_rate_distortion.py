"""bench.rate_distortion's pure helpers: budget grid, monotonic exceptions, merging two runs,
and the Fisher-predicted loss of a replaced state, against hand computations."""
from __future__ import annotations

import pytest
import torch

from bench.rate_distortion import budget_grid, merge, monotonic_exceptions, predicted_nats


def _pt(method, b, gap):
    return {"method": method, "bytes": b, "gap": gap}


def test_grid_spans_forty_percent_of_the_smaller_record_to_the_larger_and_holds_both():
    g = budget_grid([1000, 600], 4)
    assert g[0] == 240 and g[-1] == 1000 and {600, 1000} <= set(g) and g == sorted(g)


def test_monotonic_exceptions_list_only_pairs_where_more_bytes_gave_a_larger_gap():
    pts = [_pt("f", 300, 0.1), _pt("f", 100, 0.5), _pt("f", 200, 0.05)]
    assert monotonic_exceptions(pts) == [{"smaller": 200, "gap_smaller": 0.05, "larger": 300,
                                          "gap_larger": 0.1}]


def test_merge_keeps_this_runs_methods_and_adds_the_others():
    res = {"checkpoint": "c", "eval_tokens": 5, "points": [_pt("record_1060", 9, 0.1),
                                                            _pt("fitter diagH", 5, 0.3)]}
    old = {"checkpoint": "c", "eval_tokens": 5, "points": [
        _pt("record_1060", 9, 0.2), _pt("fitter", 4, 0.2), _pt("fitter", 8, 0.25)]}
    merge(res, old)
    assert sorted((p["method"], p["gap"]) for p in res["points"]) == [
        ("fitter", 0.2), ("fitter", 0.25), ("fitter diagH", 0.3), ("record_1060", 0.1)]
    assert len(res["monotonic"]["fitter"]) == 1 and res["monotonic"]["fitter diagH"] == []
    with pytest.raises(SystemExit, match="same one"):
        merge(res, {**old, "eval_tokens": 6})


def test_predicted_nats_is_the_omega_weighted_squared_change():
    w = {"a": torch.tensor([[1.0, 2.0]]), "b": torch.ones(3)}
    deq = {"a": torch.tensor([[1.5, 1.0]]), "b": torch.zeros(3)}
    om = {"a": torch.tensor([[2.0, 3.0]])}  # b has no weights: not counted
    assert predicted_nats(w, deq, om) == pytest.approx(2.0 * 0.25 + 3.0 * 1.0)
