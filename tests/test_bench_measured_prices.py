"""bench.measured_prices' curve correction: through the measured points, constant beyond."""
import numpy as np
import pytest

from bench.measured_prices import FLOOR, corrected
from quant import fitter


def _curve():
    return fitter.Curve(np.arange(6, dtype=float), np.array([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]))


def test_no_point_leaves_the_curve_and_one_point_scales_it_whole():
    c = _curve()
    assert corrected(c, []) is c
    one = corrected(c, [(1e-3, 4e-4)])
    np.testing.assert_allclose(one.dist, 0.4 * c.dist)
    np.testing.assert_array_equal(one.rate, c.rate)


def test_two_points_are_hit_interpolated_in_log_log_and_held_beyond():
    c = _curve()
    two = corrected(c, [(1e-2, 5e-2), (1e-4, 1e-5)])      # ratios 5 and 0.1, given unsorted
    assert two.dist[2] == pytest.approx(1e-5) and two.dist[4] == pytest.approx(5e-2)
    # halfway in log(predicted): the ratio is the geometric mean of 0.1 and 5
    assert two.dist[3] == pytest.approx(1e-3 * np.sqrt(0.1 * 5))
    assert two.dist[0] == pytest.approx(0.1 * 1e-6) and two.dist[5] == pytest.approx(5 * 1e-1)


def test_a_delta_below_the_noise_floor_is_priced_at_the_floor():
    c = _curve()
    neg = corrected(c, [(1e-3, -3e-5)])
    np.testing.assert_allclose(neg.dist, FLOOR / 1e-3 * c.dist)
