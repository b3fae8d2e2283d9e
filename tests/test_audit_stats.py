"""stats.significance against --against: the Welch p-values checked by numeric integration."""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from golf.audit import load_folder  # noqa: E402
from test_audit import BYTES_PER_TOKEN_NATS, audit, evidence, make_folder, status  # noqa: E402

OURS = (1.0561, 1.0568, 1.0565)


def t_tail_by_integration(t: float, df: float) -> float:
    """P(T > t) = 1/2 - integral of the t density over [0, t] (trapezoid, 200,001 points)."""
    x = np.linspace(0.0, abs(t), 200_001)
    logc = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    dens = np.exp(logc - (df + 1) / 2 * np.log1p(x * x / df))
    half = float(np.sum((dens[1:] + dens[:-1]) * np.diff(x)) / 2)
    return 0.5 - half if t >= 0 else 0.5 + half


def welch_by_hand(ours, base, margin):
    a, b = np.array(ours), np.array(base)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    t = (b.mean() - a.mean() - margin) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    return t, df, t_tail_by_integration(t, df)


def _reported(ev: str, label: str) -> tuple[float, float, float]:
    line = next(x for x in ev.splitlines() if label in x)
    m = re.search(r"t=(-?[\d.]+) df=([\d.]+) p=([\d.e-]+)", line)
    return float(m.group(1)), float(m.group(2)), float(m.group(3))


@pytest.mark.parametrize("base, practised", [((1.0570, 1.0580, 1.0566), "PASS"),
                                              ((1.0562, 1.0569, 1.0561), "FAIL")])
def test_welch_p_values_match_numeric_integration(tmp_path, base, practised):
    ours = make_folder(tmp_path / "ours")
    prev = make_folder(tmp_path / "prev", bpbs=base)
    result = audit(ours, against=[load_folder(prev)])
    ev = evidence(result, "stats.significance")
    t, df, p = _reported(ev, "practised rule")
    want_t, want_df, want_p = welch_by_hand(OURS, base, 0.0)
    assert t == pytest.approx(want_t, abs=1e-3) and df == pytest.approx(want_df, abs=1e-2)
    assert p == pytest.approx(want_p, rel=1e-3)
    assert (status(result, "stats.significance") == "FAIL") == (practised == "FAIL")
    t, df, p = _reported(ev, "README rule")
    loss = lambda xs: [round(x * BYTES_PER_TOKEN_NATS, 8) for x in xs]  # noqa: E731 - as logged
    assert p == pytest.approx(welch_by_hand(loss(OURS), loss(base), 0.005)[2], rel=1e-3)
    assert "p=" in ev and (p < 0.01) == ("WARN: README rule" not in ev)


def test_against_bpb_numbers_and_no_against(tmp_path):
    ours = make_folder(tmp_path / "ours")
    result = audit(ours, against_values=[1.0570, 1.0580, 1.0566])
    assert status(result, "stats.significance") == "PASS"
    assert "README rule (0.005 nats, p < 0.01): N/A" in evidence(result, "stats.significance")
    assert status(audit(ours), "stats.significance") == "N/A"


def test_integration_reference_itself():
    assert t_tail_by_integration(1.0, 1) == pytest.approx(0.25, abs=1e-9)      # Cauchy
    assert t_tail_by_integration(2.0, 5) == pytest.approx(0.0509697394, abs=1e-8)


def test_reproductions_of_the_previous_row_are_pooled(tmp_path):
    ours = make_folder(tmp_path / "ours")
    row = make_folder(tmp_path / "row", bpbs=(1.0570, 1.0580, 1.0566))
    rerun = make_folder(tmp_path / "rerun", bpbs=(1.0575, 1.0571, 1.0578))
    result = audit(ours, against=[load_folder(row), load_folder(rerun)])
    ev = evidence(result, "stats.significance")
    assert "n=6, 2 folder(s) pooled" in ev
    _, _, p = _reported(ev, "practised rule")
    assert p == pytest.approx(welch_by_hand(OURS, (1.0570, 1.0580, 1.0566, 1.0575, 1.0571,
                                                   1.0578), 0.0)[2], rel=1e-3)
