"""Row order of a code matrix: the greedy L1 nearest-neighbour chain, memoised by content.

Why: sorted so that each row follows its nearest unused neighbour, a trained matrix's rows
differ by a fraction of a step where they cluster, which a context coder turns into bytes
(quant/ctxrans.py; the records' lrzip container, quant/pergroup.py, sorts the same way). The
chain costs O(rows^2 cols) numpy work and the budget fitter builds the artifact many times with
most tensors unchanged, so OrderMemo keeps each matrix's order by the hash of its codes.
Shipped in the packed script: decoding never sorts, but ctxrans (the default coder) encodes.
"""
from __future__ import annotations

import hashlib
from typing import Callable, TypeVar

import numpy as np

T = TypeVar("T")

MAX_ROWS = 1 << 16   # orders travel as uint16


def l1_chain_order(codes: np.ndarray) -> np.ndarray:
    """The greedy L1 nearest-neighbour chain: row 0 first, then repeatedly the unused row with
    the smallest sum |delta| to the current row (ties: the lowest row index)."""
    x = np.asarray(codes).astype(np.int32)
    n = x.shape[0]
    order = np.empty(n, dtype=np.int64)
    if n == 0:
        return order
    left = np.arange(1, n)
    cur = 0
    order[0] = 0
    for i in range(1, n):
        d = np.abs(x[left] - x[cur]).sum(axis=1)
        j = int(np.argmin(d))  # `left` is ascending, so the first minimum is the lowest index
        cur = int(left[j])
        order[i] = cur
        left = np.delete(left, j)
    return order


def is_permutation(perm: np.ndarray) -> bool:
    """Whether `perm` holds each of 0..len-1 once (a decoder checks a stored order with it)."""
    return bool(np.array_equal(np.sort(perm), np.arange(perm.size)))


class OrderMemo:
    """Results computed from a code matrix, kept by the sha256 of its shape and codes: the
    row order (l1_chain_order) and whatever a coder derives from the same codes (`lookup`,
    e.g. the context rANS's chosen mode and cost). Equal codes, one sort.

    Bounded: past `capacity` entries the oldest is dropped (an entry is small: 8 bytes per row
    for an order; the fitter's options differ per tensor, so a build adds at most a few per
    tensor)."""

    def __init__(self, capacity: int = 8192) -> None:
        self.capacity = capacity
        self._memo: dict[tuple[str, bytes], object] = {}
        self.sorts = 0  # how many orders were computed (tests and the bench read it)

    def lookup(self, kind: str, codes: np.ndarray, compute: Callable[[], T]) -> T:
        """compute()'s value for these codes under `kind`, computed at most once per content."""
        x = np.ascontiguousarray(codes, dtype=np.int8)
        key = (kind, hashlib.sha256(repr(x.shape).encode() + x.tobytes()).digest())
        if key not in self._memo:
            self._memo[key] = compute()
            if len(self._memo) > self.capacity:
                self._memo.pop(next(iter(self._memo)))
        return self._memo[key]  # type: ignore[return-value]

    def order(self, codes: np.ndarray) -> np.ndarray:
        def sort() -> np.ndarray:
            self.sorts += 1
            return l1_chain_order(codes)
        return self.lookup("order", codes, sort)
