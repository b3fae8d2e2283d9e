"""Budget fitter: per-tensor step (and bits) minimizing predicted loss increase under a byte cap.

Each quantized tensor gets a ladder of options: option 0 keeps it in fp16 (the top rung, so a
model far below the budget is not forced into 8-bit codes), options 1.. are steps 2^(j/16)
times its policy step, finest first. Rates are
predicted from the order-0 entropy of round-to-nearest codes on a fixed row sample, times a
correction re-measured from the real compressed streams at every step tried; distortion is
the weighted squared error: by the Fisher error weights Omega when given (a second-order
estimate of the loss increase in nats per token, quant.collect_error_weights), else by
diag(H) (times an optional sensitivity). A Lagrangian picks steps for
a byte target, then the artifact is built for real and the target corrected until the exact
written size is <= budget (and within `slack` bytes of it when reachable).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .errors import BudgetError
from .lqer import FITTER_FORMAT, factor_entropy_bytes, lqer_ladder
from .scalar import qmax_for

# step multiplier 2^(j/16), 1/16x .. 16x the policy step. The finest rung was 0.18x (-40) until
# 2026-12-06: at ~6 bits/param on the 1,200-step CPU frontier model every tensor sat on it and
# the fit stopped 0.7 % under its target, which was the whole 6-bit tie with record_1060
# (docs/rate-distortion.md). Codes are int8, so the finest rungs clip; the fitter's predicted
# error includes the clipping, and it takes them only where they pay (QUANT_ROW_STEPS=fisher
# holds each row at its clip-free step instead: rung_step).
LADDER = np.arange(-64, 65)
FLOAT = 0                            # option index of the fp16 rung
N_OPTIONS = len(LADDER) + 1          # option i >= 1 is ladder step LADDER[i - 1]
J0 = 1 + int(np.where(LADDER == 0)[0][0])
SAMPLE = 32_768
SLACK = 2_000
# LQER rungs: a rank-r correction on top of these ladder steps (0.5x .. 8x the policy step,
# every 4th step; the SVDs are full-matrix, so not on all 128 steps)
LQER_STEPS = tuple(j for j in range(1, N_OPTIONS) if LADDER[j - 1] % 4 == 0
                   and -16 <= LADDER[j - 1] <= 48)
CHUNK = 16                           # ladder options per batched evaluation in predict_curve
FP16_RATIO = 0.93                    # first guess of shuffled+compressed fp16 bytes / raw bytes


def multiplier(j_index: int) -> float:
    """Step multiplier of quantized option j_index (>= 1)."""
    if j_index < 1:
        raise ValueError("option 0 is the fp16 rung and has no step")
    return float(2.0 ** (LADDER[j_index - 1] / 16.0))


def bits_for(policy_bits: int, j_index: int) -> int:
    """Fewest bits >= policy bits whose range still covers the policy clip at this step (max 8)."""
    need = qmax_for(policy_bits) / multiplier(j_index)
    for b in range(policy_bits, 9):
        if qmax_for(b) >= need - 1e-9:
            return b
    return 8


def decode_option(o: int) -> tuple[int, int | None]:
    """(ladder option, index into the LQER ranks or None) of option o."""
    if o < N_OPTIONS:
        return o, None
    ri, si = divmod(o - N_OPTIONS, len(LQER_STEPS))
    return LQER_STEPS[si], ri


@dataclass
class Curve:
    rate: np.ndarray     # predicted stream bytes per option (before measured correction)
    dist: np.ndarray     # predicted weighted squared error per option


def error_weight(rows: int, cols: int, col_weight: torch.Tensor | None,
                 elem_weight: torch.Tensor | None) -> torch.Tensor:
    """Weight of each entry's squared error: the Fisher error weights Omega (rows, cols) from
    quant.collect_error_weights when given, else diag(H) per column, (1, cols)."""
    if elem_weight is not None:
        if tuple(elem_weight.shape) != (rows, cols):
            raise ValueError(f"error weights of shape {tuple(elem_weight.shape)} for a "
                             f"({rows}, {cols}) matrix")
        return elem_weight.to(torch.float32).clamp_min(0)
    cw = torch.ones(cols) if col_weight is None else col_weight.to(torch.float32).clamp_min(0)
    return cw[None, :]


@dataclass(frozen=True)
class CurveOptions:
    """How one tensor's curve is priced, besides its weights, steps and diag(H): its error's
    multiplier (sensitivity times measured loss slope), whether the fp16 rung is offered, the
    LQER ranks offered, its Fisher error weights (rows x cols), its bytes per row scale and
    each row's least step (scalar.clip_free_step: rungs finer than it do not clip the row)."""
    sensitivity: float = 1.0
    allow_float: bool = True
    lqer_ranks: tuple[int, ...] = ()
    elem_weight: torch.Tensor | None = None
    scale_row_bytes: float = 2.0
    min_step: torch.Tensor | None = None


def predict_curve(w: torch.Tensor, base_step: torch.Tensor, policy_bits: int,
                  col_weight: torch.Tensor | None, opts: CurveOptions = CurveOptions()) -> Curve:
    """Entropy-based rate (codes + row scales at `scale_row_bytes` each: 2 raw fp16 bytes,
    or the log-grid codes' estimate) and weighted distortion (diag(H) per
    column, or the Fisher error weights when given: error_weight) for every option, on a row
    sample. Without allow_float the fp16 rung costs infinitely many bytes. With lqer_ranks,
    the LQER options follow (see _lqer_columns)."""
    sensitivity, allow_float, lqer_ranks = opts.sensitivity, opts.allow_float, opts.lqer_ranks
    elem_weight, scale_row_bytes = opts.elem_weight, opts.scale_row_bytes
    rows, cols = w.shape
    stride = max(1, (rows * cols) // SAMPLE)
    idx = torch.arange(0, rows, max(1, stride // max(cols, 1)) if cols < SAMPLE else 1)
    ws, ss = w[idx], base_step[idx].clamp_min(1e-30)
    floor = None if opts.min_step is None else opts.min_step[idx]
    full_cw = error_weight(rows, cols, col_weight, elem_weight)
    cw = full_cw if elem_weight is None else full_cw[idx]
    factor = (rows * cols) / ws.numel()
    rate, dist = np.zeros(N_OPTIONS), np.zeros(N_OPTIONS)
    rate[FLOAT] = (rows * cols) * 2.0 * FP16_RATIO if allow_float else np.inf
    dist[FLOAT] = sensitivity * factor * float((((ws - ws.half().float()) ** 2) * cw).sum())
    for j0 in range(1, N_OPTIONS, CHUNK):
        js = list(range(j0, min(j0 + CHUNK, N_OPTIONS)))
        h, err = _ladder_stats(ws, ss, policy_bits, js, cw, floor)
        for j, hj, ej in zip(js, h, err):
            rate[j] = (rows * cols) * hj / 8.0 + 32.0 + scale_row_bytes * rows
            dist[j] = sensitivity * factor * ej
    if lqer_ranks:
        def step_at(j: int) -> torch.Tensor:
            return rung_step(base_step.clamp_min(1e-30), j, opts.min_step)
        lr, ld = _lqer_columns(w, step_at, policy_bits, full_cw, col_weight, lqer_ranks,
                               Curve(rate, dist))
        rate, dist = np.concatenate([rate, lr]), np.concatenate([dist, ld])
    return Curve(rate, dist)


def rung_step(base_step: torch.Tensor, j: int, min_step: torch.Tensor | None) -> torch.Tensor:
    """Each row's step at ladder option j: the base step times the rung's multiplier, no finer
    than min_step where one is given. The curves and the realized codes both step this way."""
    step = base_step * multiplier(j)
    return step if min_step is None else torch.maximum(step, min_step)


def _ladder_stats(ws: torch.Tensor, ss: torch.Tensor, policy_bits: int, js: list[int],
                  cw: torch.Tensor, floor: torch.Tensor | None = None
                  ) -> tuple[list[float], list[float]]:
    """(order-0 entropy of the round-to-nearest codes in bits, weighted squared error) of the
    sample at each ladder option in js. The elementwise work is batched over the options (one
    kernel per op instead of one per option: the curves were most of a fit's time)."""
    qmax = torch.tensor([float(qmax_for(bits_for(policy_bits, j))) for j in js])[:, None, None]
    s = torch.stack([rung_step(ss, j, floor) for j in js])[:, :, None]
    q = torch.clamp(torch.round(ws[None] / s), -qmax, qmax)
    codes = (q.reshape(len(js), -1) + 128).to(torch.int64)
    codes += 256 * torch.arange(len(js))[:, None]
    counts = torch.bincount(codes.reshape(-1), minlength=256 * len(js)).double()
    err = (((ws[None] - q * s) ** 2) * cw).reshape(len(js), -1).sum(1)
    c = counts.reshape(len(js), 256)
    p = c / c.sum(1, keepdim=True)
    h = -(p * torch.log2(torch.where(p > 0, p, 1.0))).sum(1)
    return h.tolist(), err.tolist()


def _lqer_columns(w: torch.Tensor, step_at: Callable[[int], torch.Tensor], policy_bits: int,
                  cw: torch.Tensor, col_weight: torch.Tensor | None, ranks: tuple[int, ...],
                  plain_steps: Curve) -> tuple[np.ndarray, np.ndarray]:
    """Rate and distortion of step j + a rank-r correction, for every LQER step and rank: the
    plain step's (sampled) prediction (plain_steps), plus the factors' entropy-coded bytes,
    times the ratio of corrected to uncorrected weighted error measured on the full
    round-to-nearest matrix. step_at(j): each row's step at option j (rung_step)."""
    rate, dist = plain_steps.rate, plain_steps.dist
    lr = np.zeros(len(ranks) * len(LQER_STEPS))
    ld = np.zeros_like(lr)
    for si, j in enumerate(LQER_STEPS):
        qmax = qmax_for(bits_for(policy_bits, j))
        s = step_at(j)[:, None]
        e = w - torch.clamp(torch.round(w / s), -qmax, qmax) * s
        plain = float(((e ** 2) * cw).sum())
        for ri, lq in enumerate(lqer_ladder(e, ranks, FITTER_FORMAT, col_weight)):
            fixed = float((((e - lq.correction()) ** 2) * cw).sum())
            k = ri * len(LQER_STEPS) + si
            lr[k] = rate[j] + factor_entropy_bytes(lq)
            ld[k] = dist[j] * (fixed / plain if plain > 0 else 1.0)
    return lr, ld


def lagrange_choice(rate: np.ndarray, dist: np.ndarray, target: float) -> np.ndarray:
    """Option index per tensor minimizing total distortion with total rate <= target (greedy fill)."""
    n = rate.shape[0]
    coarsest = np.full(n, rate.shape[1] - 1)
    if rate[np.arange(n), coarsest].sum() > target:
        return coarsest

    def pick(lam: float) -> np.ndarray:
        return np.argmin(dist + lam * rate, axis=1)

    lo, hi = -80.0, 80.0  # log10(lambda)
    for _ in range(100):
        mid = (lo + hi) / 2
        if rate[np.arange(n), pick(10 ** mid)].sum() > target:
            lo = mid
        else:
            hi = mid
    choice = pick(10 ** hi)  # fits: hi only takes fitting values, and at 1e80 each row's
    # fewest-bytes option is picked, which sum to no more than the coarsest (checked above)
    for _ in range(10 * n * rate.shape[1]):  # spend what is left on the best finer steps
        slack = target - rate[np.arange(n), choice].sum()
        best, best_gain = None, 0.0
        for i in range(n):
            for j in range(choice[i] - 1, -1, -1):
                dr = rate[i, j] - rate[i, choice[i]]
                dd = dist[i, choice[i]] - dist[i, j]
                if dr > slack:
                    break
                if dd > 0:
                    gain = dd / max(dr, 1e-9)
                    if gain > best_gain:
                        best, best_gain = (i, j), gain
        if best is None:
            break
        choice[best[0]] = best[1]
    return _float_swaps(rate, dist, choice, target)


def _lagrange_pick(rate: np.ndarray, dist: np.ndarray, target: float) -> np.ndarray | None:
    """The Lagrangian choice (no fill) with the largest total rate <= target; None if none fits."""
    n = rate.shape[0]
    rows = np.arange(n)
    cols = np.arange(rate.shape[1])
    coarsest = np.where(np.isfinite(rate), cols[None, :], -1).max(axis=1)  # last allowed option
    if rate[rows, coarsest].sum() > target:
        return None
    lo, hi = -80.0, 80.0  # log10(lambda)
    with np.errstate(invalid="ignore", over="ignore"):
        for _ in range(60):
            mid = (lo + hi) / 2
            if rate[rows, np.argmin(dist + 10 ** mid * rate, axis=1)].sum() > target:
                lo = mid
            else:
                hi = mid
        # fits: hi only takes fitting values, and 1e80 picks each row's fewest-bytes option
        return np.argmin(dist + 10 ** hi * rate, axis=1)


def _float_swaps(rate: np.ndarray, dist: np.ndarray, choice: np.ndarray,
                 target: float) -> np.ndarray:
    """Keep a tensor in fp16 and pay for it by coarsening the others, when that lowers total
    distortion. The fp16 rung is a big jump in bytes (about 2x the finest codes), so Lagrangian
    solutions step over it and can leave that many bytes unused; this local search closes it."""
    n = rate.shape[0]
    rows = np.arange(n)
    for _ in range(n):
        best, best_total = None, dist[rows, choice].sum()
        for i in range(n):
            if choice[i] == FLOAT or not rate[i, FLOAT] < target:
                continue
            r, d = rate.copy(), dist.copy()
            r[i, 1:], d[i, 1:] = np.inf, np.inf  # tensor i pinned to fp16
            trial = _lagrange_pick(r, d, target)
            if trial is not None and trial[i] == FLOAT and dist[rows, trial].sum() < best_total:
                best, best_total = trial, dist[rows, trial].sum()
        if best is None:
            break
        choice = best
    return choice


def _coarsen(rate: np.ndarray, dist: np.ndarray, choice: list[int],
             need: float) -> list[int] | None:
    """Save at least `need` predicted bytes by moving quantized tensors one step coarser at a
    time, least distortion per saved byte first (fp16 tensors stay); None if it cannot."""
    trial = list(choice)
    saved = 0.0
    while saved < need:
        best_k, best_cost = -1, np.inf
        for k, j in enumerate(trial):
            if j == FLOAT or j + 1 >= rate.shape[1]:
                continue
            dr = rate[k, j] - rate[k, j + 1]
            if dr > 0:
                cost = (dist[k, j + 1] - dist[k, j]) / dr
                if cost < best_cost:
                    best_k, best_cost = k, cost
        if best_k < 0:
            return None
        saved += rate[best_k, trial[best_k]] - rate[best_k, trial[best_k] + 1]
        trial[best_k] += 1
    return trial


def rate_order(rate: np.ndarray) -> np.ndarray:
    """Options by predicted bytes, most first, fp16 kept first: with LQER options the index
    order is no longer the order of bytes, which the fitter's neighbour moves rely on."""
    return np.concatenate([[FLOAT], 1 + np.argsort(-rate[1:], kind="stable")]).astype(int)


@dataclass(frozen=True)
class FitSearch:
    """How the fit searches and reports, besides the curves, the budget and its two
    callbacks: the bytes it may leave under the budget (slack), the exact builds it may make
    per phase (max_rounds), its first guess of coded over entropy bytes (initial_ratio: the
    codecs' quant.codec.codec_ratio) and where it logs (None: nowhere)."""
    slack: int = SLACK
    max_rounds: int = 12
    initial_ratio: float = 1.02
    log: Callable[[str], None] | None = None


def fit_budget(curves: list[Curve], budget: int, realize: Callable[[int, int], object],
               measure: Callable[[list[int]], tuple[int, list[int]]], fixed_guess: int,
               search: FitSearch = FitSearch()) -> tuple[list[int], int]:
    """Choose an option index per tensor so the exact artifact size is <= budget.

    realize(i, j) quantizes tensor i at option j (cached by the caller); measure(choice)
    returns (exact total bytes, that tensor's own stream bytes per tensor). Returns
    (choice, total bytes). With LQER options (curves wider than N_OPTIONS) the fit runs on
    each tensor's options sorted by predicted bytes and maps the choice back.
    """
    max_rounds = search.max_rounds
    if max_rounds < 1:  # no build: nothing would be measured, and an empty choice came back
        raise ValueError(f"max_rounds={max_rounds}: the fit needs at least one build")
    if not curves or curves[0].rate.size == N_OPTIONS:
        return _fit(curves, budget, realize, measure, fixed_guess, search)
    orders = [rate_order(c.rate) for c in curves]
    by_rate = [Curve(c.rate[o], c.dist[o]) for c, o in zip(curves, orders)]
    choice, total = _fit(by_rate, budget, lambda i, k: realize(i, int(orders[i][k])),
                         lambda ch: measure([int(orders[i][k]) for i, k in enumerate(ch)]),
                         fixed_guess, search)
    return [int(orders[i][k]) for i, k in enumerate(choice)], total


class _Fit:
    """State shared by the fit's phases: the predicted curves, every exact build measured so
    far (cached by choice) and the per-step corrections those builds taught."""

    def __init__(self, curves: list[Curve], budget: int, realize: Callable[[int, int], object],
                 measure: Callable[[list[int]], tuple[int, list[int]]],
                 log: Callable[[str], None], initial_ratio: float) -> None:
        n = len(curves)
        self.n, self.budget, self.log = n, budget, log
        self.rate = np.stack([c.rate for c in curves]) if n else np.zeros((0, N_OPTIONS))
        self.dist = np.stack([c.dist for c in curves]) if n else np.zeros((0, N_OPTIONS))
        self.last = self.rate.shape[1] - 1
        self.rows = np.arange(n)
        self.measured: dict[tuple[int, ...], tuple[int, list[int]]] = {}
        self.seen: list[dict[int, float]] = [dict() for _ in range(n)]  # {j: actual - predicted}
        self._realize, self._measure, self._ratio = realize, measure, initial_ratio

    def predicted(self) -> np.ndarray:
        """Predicted code bytes per (tensor, step): the entropy estimate plus the measured
        correction, interpolated over steps (GPTQ codes and real coders deviate from the RTN
        entropy differently at each step; additive so near-empty streams stay well-behaved)."""
        rate = self.rate
        out = rate * self._ratio
        out[:, FLOAT] = rate[:, FLOAT]  # FP16_RATIO already is a compressed-size guess
        grid = np.arange(1, rate.shape[1])
        for i, pts in enumerate(self.seen):
            if FLOAT in pts:
                out[i, FLOAT] = max(rate[i, FLOAT] + pts[FLOAT], 1.0)
            js = sorted(j for j in pts if j != FLOAT)  # fp16 bytes say nothing about codes
            if js:
                out[i, 1:] = np.maximum(rate[i, 1:] + np.interp(grid, js, [pts[j] for j in js]), 1.0)
        return out

    def run(self, choice: list[int]) -> tuple[int, list[int]]:
        """Exact (total bytes, per-tensor stream bytes) of a choice, built once per choice."""
        key = tuple(choice)
        if key not in self.measured:
            for i, j in enumerate(choice):
                self._realize(i, j)
            self.measured[key] = self._measure(list(choice))
            for i, (j, b) in enumerate(zip(choice, self.measured[key][1])):
                self.seen[i][j] = b - self.rate[i, j]
        return self.measured[key]

    def error(self, choice: list[int]) -> float:
        """Total predicted distortion of a choice."""
        return self.dist[self.rows, list(choice)].sum()


def _fit(curves: list[Curve], budget: int, realize: Callable[[int, int], object],
         measure: Callable[[list[int]], tuple[int, list[int]]], fixed_guess: int,
         search: FitSearch) -> tuple[list[int], int]:
    """fit_budget on options ordered finest (most bytes) first: bisect the byte target, step
    back if nothing fitted, repair a better over-budget build, refine with exact builds."""
    slack, max_rounds = search.slack, search.max_rounds
    st = _Fit(curves, budget, realize, measure, search.log or (lambda s: None),
              search.initial_ratio)
    best, choice, total, done = _bisect(st, fixed_guess, slack, max_rounds)
    if done:
        return choice, total
    if best is None:  # still over: step back greedily, cheapest distortion per saved byte first
        best = _step_back(st, list(choice), total)
    choice, total = best
    if budget - total > slack:  # an over-budget choice with less error may be repaired instead
        choice, total = _repair(st, choice, total, max_rounds)
    choice, total = _refine(st, choice, total, slack)
    _log_done(st, choice, total, slack)
    return choice, total


def _bisect(st: _Fit, fixed_guess: int, slack: int, max_rounds: int
            ) -> tuple[tuple[list[int], int] | None, list[int], int, bool]:
    """Bisect the code-byte target between the largest target whose choice fitted (lo) and the
    smallest whose choice was over (hi). Repeated choices cost nothing (measurements are cached).
    Returns (best fitting build or None, last choice, its total, whether the fit is done)."""
    budget = st.budget
    margin = 512.0
    best: tuple[list[int], int] | None = None
    choice, total = [], 0
    lo: float | None = None
    hi: float | None = None
    target = budget - float(fixed_guess) - margin
    builds = 0
    for rnd in range(4 * max_rounds):
        nxt = [int(c) for c in lagrange_choice(st.predicted(), st.dist, target)]
        fresh = tuple(nxt) not in st.measured
        if fresh and builds >= max_rounds:
            break  # (choice, total) stay the last build's: the step back starts from what was measured
        choice = nxt
        total, _ = st.run(choice)
        if fresh:
            builds += 1
            st.log(f"quant:fit round:{builds} target_codes:{int(target)} total:{total} "
                   f"budget:{budget} under:{budget - total}")
        if total <= budget:
            if best is None or total > best[1]:
                best = (choice, total)
            if budget - total <= slack or all(j == 0 for j in choice):
                return best, choice, total, True
            # targets only move inward: after a fit each next one is above it, after a miss below
            lo = target
            target = target + (budget - total) if hi is None else (lo + hi) / 2
        else:
            if all(j == st.last for j in choice):
                raise BudgetError(f"budget of {budget:,} bytes is impossible: the smallest artifact "
                                  f"this model and policy can reach is {total:,} bytes (every "
                                  "tensor at its coarsest step); raise BUDGET_BYTES or keep fewer "
                                  "tensors in floating point")
            hi = target
            if lo is None:
                target = target - (total - budget) - margin
                margin *= 2
            else:
                target = (lo + hi) / 2
        if lo is not None and hi is not None and hi - lo < 16:
            break
    return best, choice, total, False


def _step_back(st: _Fit, choice: list[int], total: int) -> tuple[list[int], int]:
    """Coarsen one tensor at a time, least distortion per saved byte first, until it fits."""
    rate, dist = st.rate, st.dist
    while total > st.budget:
        cand = [(dist[i, j + 1] - dist[i, j]) / max(rate[i, j] - rate[i, j + 1], 1e-9)
                if j + 1 <= st.last else np.inf for i, j in enumerate(choice)]
        i = int(np.argmin(cand))
        if not np.isfinite(cand[i]):
            raise BudgetError(f"budget of {st.budget:,} bytes is impossible: the smallest artifact "
                              f"this model and policy can reach is {total:,} bytes; raise "
                              "BUDGET_BYTES")
        choice[i] += 1
        total, _ = st.run(choice)
    return choice, total


def _repair(st: _Fit, choice: list[int], total: int, max_rounds: int) -> tuple[list[int], int]:
    """Take the over-budget build with the least error that beats the fitting one and coarsen it
    (doubling the predicted saving asked for) until it fits; keep it if it still has less error."""
    budget = st.budget
    better = [(float(st.error(c)), list(c), t) for c, (t, _) in st.measured.items()
              if t > budget and st.error(c) < st.error(choice)]
    if not better:
        return choice, total
    _d, trial, t_total = min(better)
    pad = 1024.0
    for _ in range(max_rounds):
        trial = _coarsen(st.predicted(), st.dist, trial, t_total - budget + pad)
        if trial is None:
            break
        t_total, _ = st.run(trial)
        st.log(f"quant:fit repair total:{t_total} budget:{budget} under:{budget - t_total}")
        if t_total <= budget:
            if st.error(trial) < st.error(choice):
                choice, total = trial, t_total
            break
        pad *= 2
    return choice, total


def _refine(st: _Fit, choice: list[int], total: int, slack: int) -> tuple[list[int], int]:
    """While more than `slack` under: try the best-gain one-step-finer moves with exact builds."""
    budget, dist = st.budget, st.dist
    pred_now = st.predicted()
    for _ in range(4 * st.n + 8):
        if budget - total <= slack or all(j == 0 for j in choice):
            break
        room = budget - total
        opts = []
        for i, j in enumerate(choice):
            if j > 0:
                dr = pred_now[i, j - 1] - pred_now[i, j]
                if dr <= room and dist[i, j] > dist[i, j - 1]:  # landing on the budget fits
                    opts.append(((dist[i, j] - dist[i, j - 1]) / max(dr, 1e-9), i))
        if not opts:
            break
        opts.sort(reverse=True)
        moved = False
        for _gain, i in opts[:4]:
            trial = list(choice)
            trial[i] -= 1
            t_total, _ = st.run(trial)
            if t_total <= budget:
                choice, total, moved = trial, t_total, True
                break
        if not moved:
            break
    return choice, total


def _log_done(st: _Fit, choice: list[int], total: int, slack: int) -> None:
    """The fit's last log line, and why it stopped short of `slack` when it did."""
    budget = st.budget
    st.log(f"quant:fit done total:{total} budget:{budget} under:{budget - total}")
    if budget - total > slack:
        if all(j <= 1 for j in choice):
            st.log("quant:fit every tensor is in fp16 or at its finest step; the next option (one "
                   "more tensor in fp16) does not fit, or costs more error than it saves")
        else:
            st.log("quant:fit no finer step of any tensor fits the remaining room")
