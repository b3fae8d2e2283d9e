"""rANS coder: exact round trips on edge cases, near-entropy size, determinism, corrupt input."""
from __future__ import annotations

import numpy as np
import pytest

from quant import rans


def _entropy_bytes(data: bytes, lengths: list[int]) -> float:
    sym = np.frombuffer(data, dtype=np.uint8)
    total, off = 0.0, 0
    for n in lengths:
        c = np.bincount(sym[off:off + n], minlength=256)
        off += n
        c = c[c > 0]
        total += float(-(c * np.log2(c / c.sum())).sum()) / 8 if c.size else 0.0
    return total


@pytest.mark.parametrize("n", [0, 1, 2, 15, 16, 17, 1000, 70_001])
def test_round_trip_uniform_bytes(n):
    data = np.random.default_rng(n).integers(0, 256, n).astype(np.uint8).tobytes()
    assert rans.decode(rans.encode(data)) == data


def test_round_trip_segments_with_degenerate_tables():
    rng = np.random.default_rng(1)
    parts = [np.full(100, 7, np.uint8), np.zeros(0, np.uint8),
             np.clip(np.rint(rng.normal(128, 5, 50_000)), 0, 255).astype(np.uint8),
             np.arange(256, dtype=np.uint8), np.full(5, 255, np.uint8), np.zeros(3, np.uint8)]
    data = b"".join(p.tobytes() for p in parts)
    lengths = [len(p) for p in parts]
    for lanes in (1, 3, 16, 1024):
        assert rans.decode(rans.encode(data, lengths, lanes=lanes)) == data


def test_size_is_within_a_hair_of_order0_entropy_and_deterministic():
    rng = np.random.default_rng(2)
    parts = [(np.clip(np.rint(rng.normal(0, s, 400_000)), -31, 31).astype(np.int16) + 128).astype(np.uint8)
             for s in (2.0, 6.0, 11.0)]
    data = b"".join(p.tobytes() for p in parts)
    lengths = [len(p) for p in parts]
    blob = rans.encode(data, lengths)
    assert blob == rans.encode(data, lengths)
    ent = _entropy_bytes(data, lengths)
    lanes = rans.lanes_for(len(data))
    assert ent <= len(blob) <= ent * 1.001 + 8 * lanes + 400, (len(blob), ent)
    bits = rans.segment_bits(data, lengths)
    assert ent * 8 <= bits.sum() <= len(blob) * 8
    assert rans.decode(blob) == data


def test_corrupt_or_truncated_blobs_raise():
    data = (np.random.default_rng(3).normal(0, 8, 200_000).astype(np.int8)).tobytes()
    blob = bytearray(rans.encode(data))
    with pytest.raises(rans.RansError):
        rans.decode(bytes(blob[:-7]))
    with pytest.raises(rans.RansError):
        rans.decode(b"XXXX" + bytes(blob[4:]))
    blob[len(blob) // 2] ^= 0x10  # one flipped bit among the words
    with pytest.raises(rans.RansError):
        rans.decode(bytes(blob))


def test_normalized_tables_are_valid_for_any_counts():
    rng = np.random.default_rng(4)
    for _ in range(200):
        counts = rng.integers(0, 10, 256) * (rng.random(256) < rng.random()) \
            * rng.integers(1, 10**rng.integers(1, 9), 256)
        f = rans.normalize(counts)
        if counts.sum() == 0:
            assert f.sum() == 0
            continue
        assert f.sum() == rans.M and (f[counts > 0] >= 1).all() and (f[counts == 0] == 0).all()


def test_log_count_codes_keep_counts_within_their_resolution():
    counts = np.array([0, 1, 2, 3, 10, 999, 123_456, 10**9])
    codes = rans.log_count_codes(counts)
    back = rans.counts_from_codes(codes)
    assert back[0] == 0 and back[1] == 1 and back.dtype == np.int64
    # the table bytes (part of the blob format): round(8 log2 count) + 1, 0 for absent symbols
    assert codes.dtype == np.uint8 and list(codes[:5]) == [0, 1, 9, 14, 28]
    assert np.all(np.abs(back[1:] / counts[1:] - 1) <= 0.05)
    # beyond ~3.6e9 of one symbol the code saturates: still a valid (largest) count
    assert rans.counts_from_codes(rans.log_count_codes(np.array([2**40])))[0] >= back[-1]


def test_lanes_double_from_16_to_keep_8192_symbols_a_lane_up_to_1024():
    """The lane count is part of the blob (8 bytes of state per lane, in the header): 16 lanes
    up to 8192 symbols each, doubled while a lane would hold more, at most 1024 lanes."""
    assert [rans.lanes_for(n) for n in (0, 1000, 16 * 8192, 16 * 8192 + 15)] == [16] * 4
    assert rans.lanes_for(16 * 8193) == 32 == rans.lanes_for(32 * 8192)
    assert rans.lanes_for(32 * 8192 + 32) == 64
    assert rans.lanes_for(1024 * 8192 * 4) == 1024 == rans.lanes_for(10 ** 12)


def _largest_remainders(counts: np.ndarray) -> list[int]:
    """normalize's documented rule in exact fractions: floor of each share of M, +1 for the
    largest remainders (ties: lowest symbol), 1 for a present symbol that got 0, the excess
    then taken one symbol at a time from the largest frequency (lowest symbol), never below 1."""
    from fractions import Fraction
    total = int(counts.sum())
    quota = [Fraction(int(c) * rans.M, total) for c in counts]
    f = [int(q) for q in quota]
    short = rans.M - sum(f)
    for i in sorted(range(len(f)), key=lambda i: (-(quota[i] - int(quota[i])), i))[:short]:
        f[i] += 1
    f = [1 if c > 0 and x == 0 else x for c, x in zip(counts, f)]
    excess = sum(f) - rans.M
    while excess > 0:
        i = max(range(len(f)), key=lambda k: (f[k], -k))
        take = min(excess, f[i] - 1)
        f[i] -= take
        excess -= take
    return f


def test_normalize_is_largest_remainder_apportionment():
    rng = np.random.default_rng(9)
    cases = [np.array([1, 1, 1]), np.array([3, 0, 5, 7]), np.array([10**9, 1, 0, 1, 2]),
             np.array([1] * 300 + [10**6])]
    for _ in range(60):
        cases.append(rng.integers(0, 10, 256) * (rng.random(256) < rng.random())
                     * rng.integers(1, 10 ** rng.integers(1, 9), 256))
    for counts in cases:
        f = rans.normalize(counts)
        assert f.dtype == np.int64 and f.shape == counts.shape
        if counts.sum() == 0:
            assert not f.any()
            continue
        assert f.tolist() == _largest_remainders(counts), counts
    zero = rans.normalize(np.zeros(5, dtype=np.int64))
    assert zero.tolist() == [0] * 5 and zero.dtype == np.int64
