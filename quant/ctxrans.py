"""Context-modelled rANS for int8 code matrices: golfkit's own coder, no external binary.

Why: the records' per-group lrzip (ZPAQ) container beats order-0 rANS on trained codes because
it models context: in a trained tied embedding the rows of rare tokens form a tight cluster (the
LM head's gradient moves them together), so after the L1 chain sort neighbouring rows differ by
a fraction of a step, and in MLP output projections whole columns (hidden units) are quieter
than others. This coder captures both with static tables chosen per tensor by exact cost:

  mode 0 "plain":   one table (what the joint rANS stream does).
  mode 1 "columns": each column gets a class (its mean |code| bucketed, COL_CLASSES), one table
                    per class; the classes travel as side information.
  mode 2 "delta":   rows in the greedy L1 nearest-neighbour order (quant/roworder.py), each row
                    either raw (tables by column class, as mode 1) or the difference to the row
                    before it modulo 256 (tables by the row's class: its mean |difference|
                    bucketed, ROW_EDGES); order, row and column classes travel as side info.
  mode 3 "above":   as mode 2, but a raw row's symbol takes its table from the symbol above it
                    (clipped to +-ABOVE): neighbouring sorted rows that are too far apart to
                    code as differences still share signs and sizes.

In modes 0-2 every symbol's table is known from the side information before any symbol is
decoded; in mode 3 it is known once the row above is decoded, so the lanes are capped at that
tensor's width (a row above is always at least one lane step back). The rANS core is
quant/rans.py's lane-parallel numpy loop with a table index per symbol (tables rebuilt from one
log-count byte per symbol, as there). Differences are undone after decoding, one row at a time
across all columns. Measured on a trained CPU-preset model's record_1855 codes (docs/container.md):
2.7 KB (0.8 %) under the records' per-group lrzip container; encode 0.7 s, decode 0.3 s.

Blob (little-endian): b"gkC1", u32 n; per tensor u32 rows, u32 cols, u8 mode; u32 size +
brotli(side info: per tensor in order, modes 2-3: rows x uint16 order, rows x u8 row class;
modes 1-2: cols x u8 column class); then the rANS part: u32 lanes, u64 symbols, u32 tables,
u32 size + brotli(table block), lanes x u64 states, u64 words, words x u32.
"""
from __future__ import annotations

import struct
from typing import Sequence

import numpy as np

from . import rans
from .bounded import FrameReader, StreamError, brotli_d
from .errors import QuantError
from .roworder import MAX_ROWS, OrderMemo, is_permutation, l1_chain_order

MAGIC = b"gkC1"
COL_CLASSES = 4
ABOVE = 2                           # mode 3: the symbol above, clipped to +-ABOVE, is the context
DELTA0 = max(COL_CLASSES, 2 * ABOVE + 1)  # modes 2-3: difference rows' tables start here
MIN_COLS_ABOVE = 64                 # mode 3 sets lanes <= cols: only for rows this wide
ROW_EDGES = (0.25, 0.5, 1.0, 2.0)   # mean |row difference| class edges (in code steps)
RAW = len(ROW_EDGES) + 1            # a row class past the edges: coded raw
MAX_SYMBOLS = 1 << 34


class CtxRansError(QuantError):
    """A context-rANS blob that does not decode (truncated or corrupt)."""


def _col_classes(x: np.ndarray) -> np.ndarray:
    """Column class: the column's mean |code| against the tensor's quartiles of that mean."""
    m = np.abs(x.astype(np.int64)).mean(axis=0)
    edges = np.quantile(m, np.linspace(0, 1, COL_CLASSES + 1)[1:-1])
    return np.searchsorted(edges, m, side="right").astype(np.uint8)


def _transform(x: np.ndarray, mode: int, order: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, bytes]:
    """(symbols uint8 rows x cols, table class per symbol, side info) of one tensor; modes 2-3
    take the L1 chain `order` when the caller has it (it is O(rows^2 cols) to compute)."""
    if mode == 0:
        return x.view(np.uint8), np.zeros(x.shape, np.int64), b""
    colc = _col_classes(x)
    if mode == 1:
        return x.view(np.uint8), np.broadcast_to(colc.astype(np.int64), x.shape), colc.tobytes()
    order = l1_chain_order(x) if order is None else order
    xs = x[order]
    diff = np.zeros_like(xs)
    diff[1:] = (xs[1:].astype(np.int16) - xs[:-1]).astype(np.int8)  # wraps modulo 256
    mad = np.abs(xs[1:].astype(np.int64) - xs[:-1]).mean(axis=1)
    rowc = np.concatenate([[RAW], np.searchsorted(ROW_EDGES, mad, side="right")]).astype(np.uint8)
    rowc[rowc == len(ROW_EDGES)] = RAW  # past the last edge: cheaper raw
    sym = np.where((rowc < RAW)[:, None], diff, xs).view(np.uint8)
    side = order.astype("<u2").tobytes() + rowc.tobytes()
    if mode == 2:
        return sym, _classes(rowc, colc), side + colc.tobytes()
    above = np.zeros_like(sym)
    above[1:] = sym[:-1]
    return sym, _classes(rowc, _above_class(above)), side


def _above_class(above: np.ndarray) -> np.ndarray:
    """Mode 3's class of a raw-row symbol: the symbol above it (as int8) clipped to +-ABOVE."""
    return np.clip(above.view(np.int8).astype(np.int64), -ABOVE, ABOVE) + ABOVE


def _classes(rowc: np.ndarray, raw_class: np.ndarray) -> np.ndarray:
    """Modes 2-3: a difference row's symbols use its row class's table (after the raw ones),
    a raw row's its column class (mode 2, per column) or class of the symbol above (mode 3)."""
    delta = DELTA0 + rowc[:, None].astype(np.int64)
    raw = raw_class if raw_class.ndim == 2 else raw_class[None, :].astype(np.int64)
    return np.where((rowc < RAW)[:, None], delta, raw)


def _tables_of(mode: int) -> int:
    return (1, COL_CLASSES, DELTA0 + len(ROW_EDGES), DELTA0 + len(ROW_EDGES))[mode]


def _untransform(sym: np.ndarray, mode: int, rowc: np.ndarray | None,
                 order: np.ndarray | None) -> np.ndarray:
    x = sym.view(np.int8)
    if mode < 2:
        return x
    xs = x.copy()
    for r in np.nonzero(rowc < RAW)[0]:
        if r:
            xs[r] = (xs[r].astype(np.int16) + xs[r - 1]).astype(np.int8)
    out = np.empty_like(xs)
    out[order] = xs
    return out


def _cost(sym: np.ndarray, cls: np.ndarray) -> float:
    """Ideal bits of `sym` under one static table per class, plus ~5 bits per table entry."""
    key = cls.reshape(-1).astype(np.int64) * 256 + sym.reshape(-1)
    counts = np.bincount(key, minlength=(int(cls.max(initial=0)) + 1) * 256).reshape(-1, 256)
    tot = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        bits = -(counts * np.log2(np.where(counts > 0, counts / np.maximum(tot, 1), 1))).sum()
    used = counts > 0
    span = sum(int(np.nonzero(u)[0][-1] - np.nonzero(u)[0][0] + 3) for u in used if u.any())
    return float(bits) + 5.0 * span


def choose_mode(x: np.ndarray) -> int:
    """The cheapest mode for one tensor by ideal bits + table and side-information estimates."""
    return _plan(x)[0]


def _choice(x: np.ndarray, memo: OrderMemo | None) -> tuple[int, float]:
    """(cheapest mode, its estimated bits), kept in `memo` by content when given."""
    if memo is None:
        return _search(x, None)[:2]
    return memo.lookup("ctxrans.mode", x, lambda: _search(x, memo)[:2])


def _search(x: np.ndarray, memo: OrderMemo | None) -> tuple[int, float, tuple]:
    """(mode, estimated bits, its transform) of the cheapest mode by ideal bits + table and
    side-information estimates; the row order computed once (or taken from `memo`)."""
    rows, cols = x.shape
    order_bits = rows * (np.log2(max(rows, 2)) + 2.0)
    side = {0: 0.0, 1: 2.0 * cols, 2: 2.0 * cols + order_bits, 3: order_bits}
    modes = [0, 1] + ([2] if rows <= MAX_ROWS else [])
    modes += [3] if rows <= MAX_ROWS and cols >= MIN_COLS_ABOVE else []
    order = None
    if len(modes) > 2:
        order = memo.order(x) if memo is not None else l1_chain_order(x)
    best: tuple[float, int, tuple] | None = None
    for m in modes:
        t = _transform(x, m, order)
        cost = _cost(t[0], t[1]) + side[m]
        if best is None or cost < best[0]:
            best = (cost, m, t)
    return best[1], best[0], best[2]


def _plan(x: np.ndarray, memo: OrderMemo | None = None
          ) -> tuple[int, np.ndarray, np.ndarray, bytes, float]:
    """(mode, symbols, classes, side info, estimated bits) of the cheapest mode; with `memo`,
    a matrix seen before is transformed in its known mode only."""
    if memo is None:
        mode, cost, t = _search(x, None)
        return (mode, *t, cost)
    mode, cost = _choice(x, memo)
    return (mode, *_transform(x, mode, memo.order(x) if mode >= 2 else None), cost)


def _dependencies(rows: int, cols: int, rowc: np.ndarray, first: int) -> np.ndarray:
    """Mode 3: for each symbol of a raw row after the first, the flat index of the symbol above
    it (whose value sets its table); -1 elsewhere. `first` is the tensor's first flat index."""
    dep = np.full((rows, cols), -1, np.int64)
    raw = np.nonzero(rowc[1:] == RAW)[0] + 1
    dep[raw] = first + (raw[:, None] - 1) * cols + np.arange(cols)[None, :]
    return dep.reshape(-1)


def encode(tensors: Sequence[tuple[str, np.ndarray]], memo: OrderMemo | None = None) -> bytes:
    """Frame of (name, int8 codes) matrices; decode() returns their codes concatenated.
    `memo` keeps row orders across calls (the budget fitter's repeated builds)."""
    return encode_with_bits(tensors, memo)[0]


def encode_with_bits(tensors: Sequence[tuple[str, np.ndarray]], memo: OrderMemo | None = None
                     ) -> tuple[bytes, list[float]]:
    """encode(), plus each tensor's estimated bits (its share of the frame, for the fitter)."""
    import brotli  # optional dependency: only the side-information block needs it
    head = bytearray(MAGIC + struct.pack("<I", len(tensors)))
    syms, tids, sides, bits, base = [], [], [], [], 0
    lanes = rans.lanes_for(sum(int(np.asarray(c).size) for _n, c in tensors))
    for _name, codes in tensors:
        x = np.ascontiguousarray(codes, dtype=np.int8)
        mode, sym, cls, side, cost = _plan(x, memo)
        head += struct.pack("<IIB", x.shape[0], x.shape[1], mode)
        syms.append(sym.reshape(-1))
        tids.append(cls.reshape(-1) + base)
        base += _tables_of(mode)
        sides.append(side)
        bits.append(cost)
        if mode == 3:  # a symbol's context is decoded a row earlier: at least one lane step
            lanes = min(lanes, x.shape[1])
    side = brotli.compress(b"".join(sides), quality=11)
    core = _encode_core(np.concatenate(syms) if syms else np.zeros(0, np.uint8),
                        np.concatenate(tids) if tids else np.zeros(0, np.int64), base, lanes)
    return bytes(head) + struct.pack("<I", len(side)) + side + core, bits


def _encode_core(sym: np.ndarray, tid: np.ndarray, n_tables: int, lanes: int) -> bytes:
    """Lane-parallel static rANS with table `tid[i]` for symbol i (quant/rans.py's coder)."""
    import brotli  # optional dependency: only the table block needs it
    n = sym.size
    counts = np.bincount(tid * 256 + sym, minlength=n_tables * 256).reshape(n_tables, 256)
    block, freqs = bytearray(), np.zeros((n_tables, 256), np.int64)
    for t in range(n_tables):
        nz = np.nonzero(counts[t])[0]
        if nz.size == 0:
            block += bytes((1, 0))
            continue
        lo, hi = int(nz[0]), int(nz[-1])
        codes = rans.log_count_codes(counts[t, lo:hi + 1])
        block += bytes((lo, hi)) + codes.tobytes()
        freqs[t, lo:hi + 1] = rans.normalize(rans.counts_from_codes(codes))
    f_flat, c_flat = rans._flat_tables(freqs)
    key_all = tid * 256 + sym
    state = np.full(lanes, rans.LOW, dtype=np.uint64)
    rows = (n + lanes - 1) // lanes
    words_by_row: list[np.ndarray] = [np.zeros(0, np.uint32)] * rows
    for t in range(rows - 1, -1, -1):
        start = t * lanes
        cnt = min(lanes, n - start)
        key = key_all[start:start + cnt]
        f, c = f_flat[key], c_flat[key]
        x = state[:cnt]
        need = (x >> np.uint64(48)) >= f
        words_by_row[t] = (x[need] & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        x = np.where(need, x >> np.uint64(32), x)
        state[:cnt] = ((x // f) << np.uint64(rans.PROB_BITS)) + (x % f) + c
    words = np.concatenate(words_by_row) if rows else np.zeros(0, np.uint32)
    tables = brotli.compress(bytes(block), quality=11)
    return (struct.pack("<IQII", lanes, n, n_tables, len(tables)) + tables
            + state.astype("<u8").tobytes() + struct.pack("<Q", words.size)
            + words.astype("<u4").tobytes())


def decode(blob: bytes, limit: int = MAX_SYMBOLS) -> bytes:
    """Every tensor's codes row-major, concatenated (inverse of encode). A blob declaring more
    than `limit` symbols (the artifact stream's declared length) is refused before any
    allocation, and its brotli blocks are decoded no further than their headers allow."""
    r = FrameReader(bytes(blob), CtxRansError, "context-rANS blob")
    if r.take(4) != MAGIC:
        raise CtxRansError("not a context-rANS blob (bad magic)")
    (n,) = r.unpack("<I")
    heads, total = [], 0
    for _ in range(n):
        rows, cols, mode = r.unpack("<IIB")
        total += rows * cols
        if mode > 3 or rows == 0 or cols == 0 or total > min(MAX_SYMBOLS, limit) or (
                mode >= 2 and rows > MAX_ROWS):
            raise CtxRansError(f"context-rANS blob: a tensor declares {rows} x {cols}, mode {mode}")
        heads.append((rows, cols, mode))
    (k,) = r.unpack("<I")
    side_len = sum((0, c, 3 * rw + c, 3 * rw)[m] for rw, c, m in heads)
    try:
        side = brotli_d(r.take(k), side_len)
    except StreamError:
        raise CtxRansError("context-rANS side information does not decode") from None
    tids, deps, plans, pos, base, first = [], [], [], 0, 0, 0
    for rows, cols, mode in heads:
        need = (0, cols, 3 * rows + cols, 3 * rows)[mode]
        part = side[pos:pos + need]
        pos += need
        if len(part) != need:
            raise CtxRansError("context-rANS side information is too short")
        cls, dep, rowc, order = _side_plan(part, rows, cols, mode, first)
        tids.append(cls + base)
        deps.append(dep)
        plans.append((rows, cols, mode, rowc, order))
        base += _tables_of(mode)
        first += rows * cols
    if pos != len(side):
        raise CtxRansError("context-rANS side information has trailing bytes")
    tid = np.concatenate(tids) if tids else np.zeros(0, np.int64)
    dep = np.concatenate(deps) if deps else np.zeros(0, np.int64)
    sym = _decode_core(r, tid, dep, base, min([c for _r, c, m in heads if m == 3], default=None))
    out, off = [], 0
    for rows, cols, mode, rowc, order in plans:
        s = sym[off:off + rows * cols].reshape(rows, cols)
        off += rows * cols
        out.append(_untransform(s, mode, rowc, order).tobytes())
    return b"".join(out)


def _side_plan(part: bytes, rows: int, cols: int, mode: int, first: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """One tensor's (static table class, dependency, row classes, row order) per symbol from
    its side information; mode 3's raw rows add the class of the symbol above when decoded."""
    order = rowc = None
    dep = np.full(rows * cols, -1, np.int64)
    if mode == 0:
        cls = np.zeros(rows * cols, np.int64)
    elif mode == 1:
        colc = np.frombuffer(part, np.uint8).astype(np.int64)
        cls = np.broadcast_to(colc, (rows, cols)).reshape(-1)
    else:
        order = np.frombuffer(part, "<u2", rows).astype(np.int64)
        if not is_permutation(order):
            raise CtxRansError("context-rANS side information: a row order is not a permutation")
        rowc = np.frombuffer(part, np.uint8, rows, 2 * rows)
        raw = (np.frombuffer(part, np.uint8, cols, 3 * rows) if mode == 2
               else np.zeros((rows, cols), np.int64))
        cls = _classes(rowc, raw).reshape(-1)
        if mode == 3:
            dep = _dependencies(rows, cols, rowc, first)
            cls = np.where((rowc == RAW)[:, None] & (np.arange(rows) == 0)[:, None],
                           ABOVE, cls.reshape(rows, cols)).reshape(-1)  # row 0: above is 0
    if cls.size and (cls.max() >= _tables_of(mode) or (rowc is not None and (
            (rowc > RAW).any() or (rowc == len(ROW_EDGES)).any()))):
        raise CtxRansError("context-rANS side information names a table that does not exist")
    return cls, dep, rowc, order


def _decode_core(r: FrameReader, tid: np.ndarray, dep: np.ndarray, n_tables: int,
                 min_cols_above: int | None) -> np.ndarray:
    """Symbols of the rANS part; a symbol with dep >= 0 adds the class of the symbol at dep
    (decoded at least one lane step earlier, since lanes <= the cols of such a tensor)."""
    lanes, n, tables, tlen = r.unpack("<IQII")
    if (n != tid.size or tables != n_tables or not 1 <= lanes <= 1 << 16
            or (min_cols_above is not None and lanes > min_cols_above)):
        raise CtxRansError("context-rANS core does not match its headers")
    try:  # a table is at most 2 + 256 bytes (rans._parse_tables)
        block = brotli_d(r.take(tlen), n_tables * 258)
    except StreamError:
        raise CtxRansError("context-rANS tables do not decode") from None
    try:
        freqs = rans._parse_tables(block, n_tables)
    except (rans.RansError, IndexError, ValueError) as exc:
        raise CtxRansError(f"context-rANS tables are corrupt ({exc})") from None
    state = np.frombuffer(r.take(8 * lanes), "<u8").astype(np.uint64)
    (n_words,) = r.unpack("<Q")
    words = np.frombuffer(r.take(4 * n_words), "<u4").astype(np.uint64)
    if r.pos != len(r.data):
        raise CtxRansError("context-rANS blob has trailing bytes")
    tables = rans.decode_tables(freqs, zero_check=True)
    out = np.empty(n, dtype=np.uint8)
    ptr = 0
    for t in range((n + lanes - 1) // lanes):
        start = t * lanes
        cnt = min(lanes, n - start)
        seg = tid[start:start + cnt]
        d = dep[start:start + cnt]
        if (d >= 0).any():
            seg = seg + np.where(d >= 0, _above_class(out[np.maximum(d, 0)]), 0)
        try:
            s, state[:cnt], ptr = rans.decode_step(state[:cnt], seg, tables, words, ptr)
        except rans.RansError as exc:
            raise CtxRansError(str(exc).replace("rANS blob", "context-rANS blob")) from None
        out[start:start + cnt] = s
    if ptr != words.size or not np.all(state == rans.LOW):
        raise CtxRansError("context-rANS blob is corrupt (final states or word count)")
    return out
