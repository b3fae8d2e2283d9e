"""Student-t tail and the one-sided Welch test a record claim needs (numpy-free pure math).

Why hand-rolled: the packed tools must not depend on scipy. The t CDF is expressed through
the regularized incomplete beta function, evaluated with a continued fraction (modified Lentz).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

RECORD_MARGIN_NATS = 0.005
RECORD_P_VALUE = 0.01


def _betacf(a: float, b: float, x: float, max_iter: int = 500, eps: float = 1e-15) -> float:
    """Continued fraction for I_x(a, b) (valid when x < (a+1)/(a+b+2))."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                    -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0) or not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc needs a, b > 0 and 0 <= x <= 1 (got {a}, {b}, {x})")
    if x in (0.0, 1.0):
        return x
    ln_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln_front) * _betacf(b, a, 1.0 - x) / b


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive (got {df})")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value)."""
    n = len(xs)
    if n == 0:
        raise ValueError("mean_std needs at least one value")
    m = math.fsum(xs) / n
    s = math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return m, s


@dataclass(frozen=True)
class WelchResult:
    delta_nats: float   # baseline_mean - our_mean (positive = we are better)
    t: float
    df: float
    p_value: float      # one-sided, H0: improvement <= margin

    def to_dict(self) -> dict[str, float]:
        return {"delta_nats": self.delta_nats, "t": self.t, "df": self.df, "p_value": self.p_value}


def welch_one_sided(mean: float, std: float, n: int, base_mean: float, base_std: float,
                    base_n: int, margin: float = RECORD_MARGIN_NATS) -> WelchResult:
    """One-sided Welch t-test that ours improves on the baseline by more than `margin`."""
    if n < 2:
        raise ValueError(f"a Welch test needs at least 2 runs of ours (got {n})")
    v1 = std * std / n
    v2 = base_std * base_std / base_n if base_n >= 1 else 0.0
    se2 = v1 + v2
    if se2 <= 0:
        raise ValueError("both samples have zero variance; the t statistic is undefined")
    delta = base_mean - mean
    t = (delta - margin) / math.sqrt(se2)
    terms = v1 * v1 / (n - 1) + (v2 * v2 / (base_n - 1) if base_n > 1 else 0.0)
    df = se2 * se2 / terms if terms > 0 else float(n - 1)
    return WelchResult(delta, t, df, student_t_sf(t, df))
