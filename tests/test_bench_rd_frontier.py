"""bench.rd_frontier's paired statistics: the per-document standard error of a gap and of
"fitter gap - half the record's", against a jackknife over documents and hand cases."""
from __future__ import annotations

import numpy as np
import pytest

from bench.rd_frontier import add_ratios, doc_ratio_se, paired_excess


def _jackknife_se(x: np.ndarray, w: np.ndarray) -> float:
    """Leave-one-document-out standard error of Σx / Σw (an independent estimator)."""
    n = len(x)
    loo = (x.sum() - x) / (w.sum() - w)
    return float(np.sqrt((n - 1) / n * np.square(loo - loo.mean()).sum()))


def test_document_se_agrees_with_the_jackknife_on_uneven_documents():
    rng = np.random.default_rng(0)
    w = rng.integers(20, 5000, size=400).astype(float)            # bytes per document
    x = w * (0.01 + 0.02 * rng.standard_normal(400)) + rng.standard_normal(400)
    ratio, se = doc_ratio_se(x, w)
    assert ratio == pytest.approx(x.sum() / w.sum(), rel=1e-12)
    assert se == pytest.approx(_jackknife_se(x, w), rel=0.05)


def test_equal_documents_reduce_to_the_standard_error_of_a_mean():
    x = np.array([1.0, 3.0, 2.0, 6.0])
    _r, se = doc_ratio_se(x, np.full(4, 10.0))
    assert se == pytest.approx(np.std(x / 10.0, ddof=1) / np.sqrt(4), rel=1e-12)


def test_excess_is_the_fitter_gap_minus_half_the_records_in_bpb():
    rng = np.random.default_rng(1)
    nbytes = rng.integers(100, 900, size=30).tolist()
    pre = rng.uniform(100, 400, size=30)
    rec = pre + rng.uniform(1, 3, size=30)
    fit = pre + rng.uniform(0, 2, size=30)
    e = paired_excess(pre, fit, rec, nbytes)
    bpb = lambda v: float(np.sum(v)) / np.log(2.0) / sum(nbytes)   # noqa: E731
    assert e["excess"] == pytest.approx(bpb(fit) - bpb(pre) - 0.5 * (bpb(rec) - bpb(pre)), rel=1e-9)
    assert e["excess"] < 0 < e["excess_se"] and e["z"] == pytest.approx(e["excess"] / e["excess_se"])
    exact_half = paired_excess(pre, pre + 0.5 * (rec - pre), rec, nbytes)
    assert exact_half["excess"] == pytest.approx(0.0, abs=1e-12)
    assert exact_half["excess_se"] == pytest.approx(0.0, abs=1e-12)


def test_pairing_removes_what_the_documents_share():
    """Two methods with the same large per-document noise: each gap is uncertain, their
    paired difference is not."""
    rng = np.random.default_rng(2)
    nbytes = [1000] * 50
    pre = rng.uniform(1000, 2000, size=50)
    common = rng.standard_normal(50) * 20
    rec, fit = pre + 10 + common, pre + 5 + 0.5 * common + rng.standard_normal(50) * 0.01
    e = paired_excess(pre, fit, rec, nbytes)
    assert e["excess_se"] < e["record_gap_se"] / 100


def test_add_ratios_keeps_paired_figures_only_where_documents_were_kept():
    doc = {"doc_nats": [10.0, 20.0]}
    post = lambda b, d: {"bpb": b, "half1": b, "half2": b, **d}    # noqa: E731
    res = {"pre": post(1.0, {"doc_nats": [9.0, 19.0]}), "doc_bytes": [8, 8], "points": [
        {"method": "record_1855+0", "gap": {"bpb": 0.2, "half1": 0.2, "half2": 0.2},
         "post": post(1.2, doc)},
        {"method": "fitter[flat]@record_1855+0", "gap": {"bpb": 0.1, "half1": 0.1, "half2": 0.1},
         "post": post(1.1, {"doc_nats": [9.5, 19.5]})},
        {"method": "fitter[flat]@record_1060+0", "gap": {"bpb": 0.1, "half1": 0.1, "half2": 0.1},
         "post": post(1.1, {})}]}
    add_ratios(res)
    fit = res["points"][1]
    assert fit["gap_ratio"]["bpb"] == pytest.approx(0.5) and fit["paired"]["excess"] == pytest.approx(0.0)
    assert "paired" not in res["points"][0] and "gap_ratio" not in res["points"][2]
