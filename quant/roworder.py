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

import numpy as np

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
    """l1_chain_order by the sha256 of a matrix's shape and codes: equal codes, one sort.

    Bounded: past `capacity` entries the oldest is dropped (an order is 8 bytes per row, and
    the fitter's options differ per tensor, so a build touches at most one entry per tensor)."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._orders: dict[bytes, np.ndarray] = {}
        self.sorts = 0  # how many orders were computed (tests and the bench read it)

    def order(self, codes: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(codes, dtype=np.int8)
        key = hashlib.sha256(repr(x.shape).encode() + x.tobytes()).digest()
        hit = self._orders.get(key)
        if hit is None:
            hit = self._orders[key] = l1_chain_order(x)
            self.sorts += 1
            if len(self._orders) > self.capacity:
                self._orders.pop(next(iter(self._orders)))
        return hit
