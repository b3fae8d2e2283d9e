"""Token-only n-gram tilt: a causal, renormalised boost of the token an n-gram table predicts.

Why this module exists: the #2130/#2135 records lower their score at evaluation time by
tilting the model's distribution towards the token that most often followed the same
(TOKEN_ORDER-1)-token context earlier in the validation stream. It is legal (the challenge's
conditions C1, causality, and C2, a normalised distribution) only because the hint and its
gate are fixed by the strict prefix before the scored token is seen, and the tilted
distribution is renormalised over the whole vocabulary. Here both hold by construction:

- `token_hints` reads targets y_<t only (the table is updated after the look-up at t);
- `tilted_nll` is the closed form of a full softmax over logits + β·onehot(h):
  NLL' = NLL − β·1[y = h] + log1p(q·(e^β − 1)), q = p_model(h) from the same logits.

The tilt changes the scored NLL only; a TTT training loss is computed before it and stays
untilted. The hint table is a vectorised pass (two stable sorts of N keys) instead of the
records' per-token hash table in C. The within-word / word-start / agreement channels of the
records are refused (`ILLEGAL`): their gate reads the token being scored.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from golf.run.errors import EvalError
from golf.run.settings import fields_table, parse_env, register, setting

# ----------------------------------------------------------------------------- settings
_ENV_NAMES = {"enabled": "NGRAM_TILT_ENABLED", "order": "TOKEN_ORDER",
              "threshold": "TOKEN_THRESHOLD", "boost": "TOKEN_BOOST"}

_WHY_ILLEGAL = ("it gates on whether the token being scored starts or continues a word, so "
                "whether and how the distribution is tilted depends on that token itself (C1: a "
                "prediction must be fixed by the prefix before the token is seen; ruled illegal "
                "in #1967, #2018, #2140); only the token-only tilt (TOKEN_*) is supported")
# The records' other channels (disabled in #2135 by τ = 99 and boost 0): any non-zero boost or
# a threshold that can fire switches one on, which golfkit refuses.
ILLEGAL: dict[str, Callable[[float], bool]] = {
    "WITHIN_BOOST": lambda v: v != 0.0, "WITHIN_TAU": lambda v: v <= 1.0,
    "WORD_BOOST": lambda v: v != 0.0, "WORD_TAU": lambda v: v <= 1.0,
    "AGREE_ADD_BOOST": lambda v: v != 0.0,
}


@dataclass(frozen=True)
class TiltSettings:
    """The tilt's knobs, declared once in golf.run.settings' table under the records' names.
    Defaults are #2135's launch values except NGRAM_TILT_ENABLED (off unless asked for)."""
    enabled: bool = setting(False, "1 = tilt the scored NLL towards the token-only n-gram hint")
    order: int = setting(16, "n of the n-gram: the hint's context is the previous n-1 targets",
                         ge=1, le=64)
    threshold: float = setting(0.8, "the hint fires when its share of the context's "
                               "continuations is >= this", ge=0, le=1)
    boost: float = setting(2.625, "beta: the hinted token's logit is raised by beta, then "
                           "renormalised", ge=0)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "TiltSettings":
        """Read the tilt's variables (unset or empty = default); refuse the illegal channels."""
        env = os.environ if env is None else env
        refuse_illegal(env)
        vals, bad = parse_env(TILT_SETTINGS, env)
        if bad:
            raise EvalError(f"{bad[0]}; fix the variable")
        return cls(**vals)

    def knobs(self) -> dict[str, Any]:
        """The settings under their env names (for eval.json and submission.json)."""
        return {s.name: getattr(self, s.field) for s in TILT_SETTINGS}

    def build(self, tokens: np.ndarray, n: int) -> "TokenTilt | None":
        """The tilt of a stream's first n targets when enabled, else None (the scorer calls
        this, so it needs no import of this module)."""
        return TokenTilt(tokens, n, self) if self.enabled else None


TILT_SETTINGS = fields_table(TiltSettings, "tilt", _ENV_NAMES.__getitem__)
register("tilt", TILT_SETTINGS)


def refuse_illegal(env: Mapping[str, str]) -> None:
    """One error if a within-word / word-start / agreement channel is switched on."""
    for name, switched_on in ILLEGAL.items():
        raw = env.get(name, "").strip()
        if not raw:
            continue
        try:
            on = switched_on(float(raw))
        except ValueError:
            on = True
        if on:
            raise EvalError(f"{name}={raw!r}: this n-gram tilt variant is illegal, because "
                            f"{_WHY_ILLEGAL}; unset {name}")


# ----------------------------------------------------------------------------- hint table
# One fixed odd 64-bit multiplier per context slot (TOKEN_ORDER <= 64 allows 63 slots).
_MULT = np.random.default_rng(0x7117).integers(0, 2**63, size=64, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def context_keys(y: np.ndarray, order: int) -> np.ndarray:
    """64-bit key of the context of every target: y[t-order+1 .. t-1], with positions before
    the stream's start read as y[0] (as the records seed their ring). A random odd multiplier
    per context slot, summed mod 2^64: distinct contexts collide with probability ~2^-51 per
    pair (golfkit keys the context; the records' XOR key of ~30 bits merges many)."""
    n = len(y)
    k = order - 1
    keys = np.zeros(n, dtype=np.uint64)
    if n == 0 or k == 0:
        return keys
    pad = np.concatenate([np.full(k, y[0], dtype=np.int64), np.asarray(y, dtype=np.int64)])
    term = np.empty(n, dtype=np.uint64)
    for j in range(k):                        # slot j holds y[t - k + j]
        np.multiply(pad[j:j + n].astype(np.uint64), _MULT[j], out=term)
        keys += term
    return keys


def _run_starts(sorted_vals: np.ndarray) -> np.ndarray:
    """Bool mask of the first element of each run of equal values."""
    new = np.empty(len(sorted_vals), dtype=bool)
    new[:1] = True
    np.not_equal(sorted_vals[1:], sorted_vals[:-1], out=new[1:])
    return new


def _rank_in_run(new: np.ndarray) -> np.ndarray:
    """0-based position of each element inside its run (runs start where `new`), int64."""
    idx = np.arange(len(new), dtype=np.int64)
    start = np.where(new, idx, 0)
    np.maximum.accumulate(start, out=start)
    np.subtract(idx, start, out=idx)
    return idx


def _sorted_by_context(y: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions in context order, stable: time order within a context; mask of each
    context's first position in that order)."""
    keys = context_keys(y, order)
    by_ctx = np.argsort(keys, kind="stable")
    new = _run_starts(keys[by_ctx])
    return by_ctx.astype(np.int32 if len(y) < 2**31 else np.int64), new


def _pair_counts(ys: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Count of (context, token) after each target, in context order (int32)."""
    gid = np.cumsum(new, dtype=np.int64)
    gid *= int(ys.max()) + 1
    gid += ys                                                    # the pair's key
    by_pair = np.argsort(gid, kind="stable")                     # time order kept within a pair
    ranks = _rank_in_run(_run_starts(gid[by_pair]))
    del gid
    count = np.empty(len(ys), dtype=np.int32)
    count[by_pair] = ranks + 1
    return count


def token_hints(y: np.ndarray, order: int, threshold: float) -> np.ndarray:
    """Gated hint per target (int32, -1 = none): the context's most frequent continuation
    among earlier targets, when its share top_count/total is >= threshold.

    Equal to the records' sequential pass (per position: look up, then count, then push): the top
    token changes only when another token's count strictly exceeds the top count, i.e. it is
    the token at the last position where the context's running maximum pair count rose.
    Computed in context order: sort by key (stable, so time order within a context), rank
    each (context, token) pair by a second stable sort, then running maxima per context.
    """
    y = np.asarray(y)
    n = len(y)
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    by_ctx, new = _sorted_by_context(y, order)
    ys = y[by_ctx].astype(np.int32)
    count = _pair_counts(ys, new)
    top = np.cumsum(new, dtype=np.int64)                         # context id, then running max
    top *= n + 1
    top += count
    np.maximum.accumulate(top, out=top)
    top %= n + 1                                                 # top count after each target
    rose = new.copy()
    rose[1:] |= count[1:] > top[:-1]
    del count
    last_rise = np.where(rose, np.arange(n, dtype=np.int64), 0)
    np.maximum.accumulate(last_rise, out=last_rise)
    prev = np.flatnonzero(~new)                                  # targets whose context was seen
    seen = _rank_in_run(new)[prev]                               # earlier targets in the context
    fire = prev[top[prev - 1] / seen >= threshold]
    del prev, seen, top
    hint = np.full(n, -1, dtype=np.int32)
    hint[by_ctx[fire]] = ys[last_rise[fire - 1]]
    return hint


# ----------------------------------------------------------------------------- the tilt
def tilted_nll(nll: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
               hints: torch.Tensor, boost: float) -> torch.Tensor:
    """Per-target NLL under p'(a) = p(a)·e^{β·1[a=h]} / (1 + q(e^β − 1)), q = p(h).

    nll: untilted NLL of `targets` under `logits` (rows = targets); hints: -1 = no hint (NLL
    unchanged). log q in float32 (as the scorer's cross-entropy), the rest in float64."""
    out = nll.double().clone()
    rows = torch.nonzero(hints >= 0).flatten()
    if rows.numel() == 0 or boost == 0.0:
        return out.to(nll.dtype)
    z = logits[rows].float()
    h = hints[rows].long()
    log_q = (z.gather(1, h[:, None]).squeeze(1) - torch.logsumexp(z, dim=1)).double()
    hit = (targets[rows].long() == h).double()
    out[rows] += -boost * hit + torch.log1p(torch.exp(log_q) * math.expm1(boost))
    return out.to(nll.dtype)


class TokenTilt:
    """The tilt of one scored stream: hints for targets 0..n-1 (target t = tokens[t+1]),
    built once from the targets, then applied to each scored batch by target index."""

    def __init__(self, tokens: np.ndarray, n: int, settings: TiltSettings):
        t0 = time.perf_counter()
        self.settings = settings
        self.hints = torch.from_numpy(token_hints(np.asarray(tokens)[1:n + 1], settings.order,
                                                  settings.threshold))
        self.seconds = time.perf_counter() - t0      # the precompute, which eval time counts

    @property
    def gated(self) -> int:
        return int((self.hints >= 0).sum())

    def apply(self, nll: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
              spans: Sequence[tuple[int, int]]) -> torch.Tensor:
        """Tilted NLL of the scored target ranges `spans` (concatenated in order: the rows of
        `nll`, `logits` and `targets`). The one call a scorer makes."""
        index = torch.cat([torch.arange(a, b) for a, b in spans])
        hints = self.hints[index].to(nll.device)
        return tilted_nll(nll, logits, targets, hints, self.settings.boost)
