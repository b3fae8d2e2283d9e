"""Static rANS over byte streams with one frequency table per segment (pure numpy).

Why: the quantizer's int codes are close to i.i.d. per tensor, so an order-0 coder with the
tensor's own histogram is within ~0.1 % of the entropy, while brotli-11 / zstd-22 land
0.8-1.5 % above it (docs/results.md): on a 16 MB artifact that is 100-200 KB of weights.

Coder: 64-bit states in [2^32, 2^64), 32-bit renormalization words, probabilities quantized
to 1/2^16 (a state range far above the probability resolution keeps the coder's own loss
negligible; 32-bit states with 16-bit words cost ~0.08 %). Symbols are dealt round-robin to
`lanes` independent states (symbol i goes to lane i % lanes), so encode and decode advance
every lane at once with numpy vector ops; a
run of one segment's symbols uses that segment's table. Encoding runs backwards over the
rows of `lanes` symbols, decoding forwards; the words of each row are stored in lane order.

Tables travel as one byte per symbol in the segment's [lo, hi] range: 8*log2(count) rounded
(0 = absent), rebuilt with exact integer arithmetic, so encoder and decoder derive identical
frequencies on any platform. The ~4 % count resolution costs < 0.01 % of the coded size.

Blob layout (little-endian): b"gkR1", u32 lanes, u64 symbols, u32 segments, u32 x segments
lengths, u32 table bytes + brotli(table block), u64 x lanes final states, u64 words, u32 x words.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from .bounded import brotli_d

MAGIC = b"gkR1"
PROB_BITS = 16
M = 1 << PROB_BITS            # probability resolution
LOW = 1 << 32                 # state lower bound; states live in [LOW, LOW << 32)
# round(2^(k/8) * 2^16) for k = 0..7: counts from log-bytes by integer shifts only
_LOG_BASE = (65536, 71468, 77936, 84990, 92682, 101070, 110218, 120194)
# Decoder bounds: a blob states its own sizes, and a one-symbol table codes any number of
# symbols in no words, so the caller's expected count caps them. Segments are capped because
# each used one costs a 64 KiB slot table while decoding (64 MiB at most); an artifact has
# one per code tensor and scale plane (~200 for 11 layers).
MAX_SYMBOLS = 1 << 28
MAX_SEGMENTS = 1024
MAX_LANES = 1 << 16


class RansError(ValueError):
    """A rANS blob that does not decode (truncated or corrupt)."""


def lanes_for(n_symbols: int) -> int:
    """Lanes: enough for fast vector steps, few enough that 8 bytes of state each stay small."""
    lanes = 16
    while lanes < 1024 and n_symbols // lanes > 8192:
        lanes *= 2
    return lanes


def log_count_codes(counts: np.ndarray) -> np.ndarray:
    """One byte per symbol: round(8*log2(count)) + 1, 0 for an absent symbol (max 255)."""
    c = np.asarray(counts, dtype=np.float64)
    out = np.zeros(c.shape, dtype=np.uint8)
    nz = c > 0
    out[nz] = np.clip(np.rint(8.0 * np.log2(c[nz])) + 1, 1, 255).astype(np.uint8)
    return out


def counts_from_codes(codes: np.ndarray) -> np.ndarray:
    """Inverse of log_count_codes up to its resolution, in exact integer arithmetic."""
    v = codes.astype(np.int64) - 1
    base = np.asarray(_LOG_BASE, dtype=np.int64)[np.maximum(v, 0) % 8]
    out = (base << (np.maximum(v, 0) // 8)) >> 16
    return np.where(codes > 0, np.maximum(out, 1), 0).astype(np.int64)


def normalize(counts: np.ndarray) -> np.ndarray:
    """Integer frequencies summing to M, >= 1 wherever count > 0 (largest remainders first)."""
    c = np.asarray(counts, dtype=np.int64)
    total = int(c.sum())
    if total <= 0:
        return np.zeros(c.shape, dtype=np.int64)
    f = (c * M) // total
    rem = (c * M) % total
    short = M - int(f.sum())
    if short > 0:
        order = np.lexsort((np.arange(c.size), -rem))  # largest remainder, then lowest symbol
        f[order[:short]] += 1
    zero = (c > 0) & (f == 0)
    f[zero] = 1
    excess = int(f.sum()) - M
    while excess > 0:  # paid by the most frequent symbols, never below 1
        i = int(np.argmax(f))
        take = min(excess, int(f[i]) - 1)
        f[i] -= take
        excess -= take
    return f


def _tables(data: np.ndarray, lengths: list[int]) -> tuple[bytes, np.ndarray, np.ndarray]:
    """(table block, freqs, symbol counts), the last two (segments, 256), for the segments of
    `data` (symbols 0..255)."""
    block = bytearray()
    freqs = np.zeros((len(lengths), 256), dtype=np.int64)
    all_counts = np.zeros((len(lengths), 256), dtype=np.int64)
    off = 0
    for s, n in enumerate(lengths):
        counts = all_counts[s] = np.bincount(data[off:off + n], minlength=256)
        off += n
        nz = np.nonzero(counts)[0]
        if nz.size == 0:
            block += bytes((1, 0))
            continue
        lo, hi = int(nz[0]), int(nz[-1])
        codes = log_count_codes(counts[lo:hi + 1])
        block += bytes((lo, hi)) + codes.tobytes()
        freqs[s, lo:hi + 1] = normalize(counts_from_codes(codes))
    return bytes(block), freqs, all_counts


def _flat_tables(freqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies and cumulative starts, flattened to index by segment * 256 + symbol."""
    cum = np.zeros_like(freqs)
    cum[:, 1:] = np.cumsum(freqs, axis=1)[:, :-1]
    return freqs.reshape(-1).astype(np.uint64), cum.reshape(-1).astype(np.uint64)


def _ideal_bits(freqs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Coded bits per segment under its table, before state, table and rounding overhead."""
    with np.errstate(divide="ignore"):
        cost = np.where(counts > 0, PROB_BITS - np.log2(np.maximum(freqs, 1)), 0.0)
    return (counts * cost).sum(axis=1)


def _parse_tables(block: bytes, n_seg: int) -> np.ndarray:
    freqs = np.zeros((n_seg, 256), dtype=np.int64)
    i = 0
    for s in range(n_seg):
        lo, hi = block[i], block[i + 1]
        i += 2
        if hi >= lo:
            codes = np.frombuffer(block, dtype=np.uint8, count=hi - lo + 1, offset=i)
            i += hi - lo + 1
            freqs[s, lo:hi + 1] = normalize(counts_from_codes(codes))
    if i != len(block):
        raise RansError("rANS table block has trailing bytes")
    return freqs


def _row_tables(ends: np.ndarray, start: int, cnt: int) -> np.ndarray:
    """Segment index of symbols start..start+cnt-1."""
    return np.searchsorted(ends, np.arange(start, start + cnt), side="right")


def encode(data: bytes, lengths: list[int] | None = None, lanes: int | None = None) -> bytes:
    """rANS-code `data` whose consecutive `lengths` (default: one segment) each get a table."""
    return encode_with_bits(data, lengths, lanes)[0]


def encode_with_bits(data: bytes, lengths: list[int] | None = None,
                     lanes: int | None = None) -> tuple[bytes, np.ndarray]:
    """encode(), plus each segment's ideal coded bits (its share of the blob, for reports)."""
    import brotli  # optional dependency: only this stream coder needs it
    sym = np.frombuffer(data, dtype=np.uint8)
    n = sym.size
    lengths = [n] if lengths is None else [int(x) for x in lengths]
    if sum(lengths) != n or any(x < 0 for x in lengths):
        raise ValueError(f"segment lengths sum to {sum(lengths)}, data has {n} symbols")
    if len(lengths) > MAX_SEGMENTS:  # the decoder refuses more (see MAX_SEGMENTS)
        raise ValueError(f"{len(lengths)} segments; a rANS blob holds at most {MAX_SEGMENTS}")
    lanes = lanes or lanes_for(n)
    block, freqs, counts = _tables(sym, lengths)
    f_flat, c_flat = _flat_tables(freqs)
    ends = np.cumsum(np.asarray(lengths, dtype=np.int64))
    state = np.full(lanes, LOW, dtype=np.uint64)
    rows = (n + lanes - 1) // lanes
    words_by_row: list[np.ndarray] = [np.zeros(0, np.uint32)] * rows
    for t in range(rows - 1, -1, -1):
        start = t * lanes
        cnt = min(lanes, n - start)
        key = _row_tables(ends, start, cnt) * 256 + sym[start:start + cnt]
        f, c = f_flat[key], c_flat[key]
        x = state[:cnt]
        need = (x >> np.uint64(48)) >= f  # x >= f * 2^48, without overflowing
        words_by_row[t] = (x[need] & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        x = np.where(need, x >> np.uint64(32), x)
        state[:cnt] = ((x // f) << np.uint64(PROB_BITS)) + (x % f) + c
    words = np.concatenate(words_by_row) if rows else np.zeros(0, np.uint32)
    tables = brotli.compress(block, quality=11)
    head = MAGIC + struct.pack("<IQI", lanes, n, len(lengths))
    head += np.asarray(lengths, dtype="<u4").tobytes() + struct.pack("<I", len(tables)) + tables
    blob = (head + state.astype("<u8").tobytes() + struct.pack("<Q", words.size)
            + words.astype("<u4").tobytes())
    return blob, _ideal_bits(freqs, counts)


def _read_header(blob: bytes, limit: int) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lanes, symbols, segment lengths, freqs, final states, words), every count checked
    against `limit` and the blob's own length before anything it sizes is allocated."""
    if blob[:4] != MAGIC:
        raise RansError("not a rANS blob (bad magic)")
    lanes, n, n_seg = struct.unpack_from("<IQI", blob, 4)
    if n > limit:
        raise RansError(f"rANS blob declares {n} symbols, more than the {limit} expected")
    if not 1 <= lanes <= MAX_LANES or n_seg > MAX_SEGMENTS:
        raise RansError(f"rANS blob declares {lanes} lanes and {n_seg} segments (at most "
                        f"{MAX_LANES} and {MAX_SEGMENTS})")
    i = 4 + struct.calcsize("<IQI")
    lengths = np.frombuffer(blob, dtype="<u4", count=n_seg, offset=i).astype(np.int64)
    if int(lengths.sum()) != n:
        raise RansError("rANS blob length does not match its header")
    i += 4 * n_seg
    (tlen,) = struct.unpack_from("<I", blob, i)
    i += 4
    block = brotli_d(blob[i:i + tlen], (2 + 256) * n_seg)
    freqs = _parse_tables(block, n_seg)
    i += tlen
    state = np.frombuffer(blob, dtype="<u8", count=lanes, offset=i).astype(np.uint64)
    i += 8 * lanes
    (n_words,) = struct.unpack_from("<Q", blob, i)
    i += 8
    if i + 4 * n_words != len(blob):
        raise RansError("rANS blob length does not match its header")
    words = np.frombuffer(blob, dtype="<u4", count=n_words, offset=i).astype(np.uint64)
    return lanes, n, lengths, freqs, state, words


def symbol_lookup(freqs: np.ndarray) -> np.ndarray:
    """Flat (table, slot) -> symbol map of the normalised tables: entry t*M + slot."""
    lookup = np.zeros((len(freqs), M), dtype=np.uint8)
    for t in np.nonzero(freqs.sum(axis=1))[0]:
        lookup[t] = np.repeat(np.arange(256, dtype=np.uint8), freqs[t])
    return lookup.reshape(-1)


@dataclass(frozen=True)
class DecodeTables:
    """The normalised tables as decode_step reads them, built once per blob: slot -> symbol
    (symbol_lookup), each (table, symbol)'s frequency and cumulative start (_flat_tables).
    `zero_check`: refuse a symbol its table gives no frequency (a context coder's tables may
    be sparse)."""
    lookup: np.ndarray
    freq: np.ndarray
    cum: np.ndarray
    zero_check: bool = False


def decode_tables(freqs: np.ndarray, zero_check: bool = False) -> DecodeTables:
    f_flat, c_flat = _flat_tables(freqs)
    return DecodeTables(symbol_lookup(freqs), f_flat, c_flat, zero_check)


def decode_step(x: np.ndarray, seg: np.ndarray, tables: DecodeTables, words: np.ndarray,
                ptr: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One interleaved step of every lane: (symbols, new states, words consumed so far), each
    lane decoding with table seg[lane]. The one rANS decode step, shared with quant.ctxrans.
    RansError when the words run out."""
    slot = x & np.uint64(M - 1)
    s = tables.lookup[seg * M + slot.astype(np.int64)]
    key = seg * 256 + s
    if tables.zero_check and np.any(tables.freq[key] == 0):
        raise RansError("rANS blob is corrupt (a symbol outside its table)")
    x = tables.freq[key] * (x >> np.uint64(PROB_BITS)) + slot - tables.cum[key]
    need = x < LOW
    k = int(need.sum())
    if ptr + k > words.size:
        raise RansError("rANS blob is truncated (ran out of words)")
    x[need] = (x[need] << np.uint64(32)) | words[ptr:ptr + k]
    return s, x, ptr + k


def decode(blob: bytes, limit: int = MAX_SYMBOLS) -> bytes:
    """Inverse of encode; raises RansError when the blob does not decode exactly, or would
    decode to more than `limit` symbols (refused before decoding any)."""
    try:
        lanes, n, lengths, freqs, state, words = _read_header(blob, limit)
    except (struct.error, ValueError, IndexError) as exc:
        if isinstance(exc, RansError):
            raise
        raise RansError(f"rANS blob is truncated or corrupt ({exc})") from None
    n_seg = len(lengths)
    tables = decode_tables(freqs)
    ends = np.cumsum(lengths)
    out = np.empty(n, dtype=np.uint8)
    ptr = 0
    for t in range((n + lanes - 1) // lanes):
        start = t * lanes
        cnt = min(lanes, n - start)
        seg = _row_tables(ends, start, cnt)
        s, state[:cnt], ptr = decode_step(state[:cnt], seg, tables, words, ptr)
        out[start:start + cnt] = s
    if ptr != words.size or not np.all(state == LOW):
        raise RansError("rANS blob is corrupt (final states or word count do not match)")
    return out.tobytes()


def segment_bits(data: bytes, lengths: list[int]) -> np.ndarray:
    """Ideal coded bits of each segment under the tables encode() would use (its share of
    the blob before state, table and word-rounding overhead)."""
    _block, freqs, counts = _tables(np.frombuffer(data, dtype=np.uint8), lengths)
    return _ideal_bits(freqs, counts)
