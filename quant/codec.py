"""Byte-stream codecs: best-of zstd-22 / brotli-11 / lzma-9e / zlib-9, rANS, and the fp16 byte shuffle.

Every stream is compressed independently with each allowed general-purpose codec; the smallest
wins (ties go to the earlier name) and all sizes are kept for the report. "rans" (quant/rans.py,
an order-0 coder with one table per segment) is offered for the code streams jointly by the
artifact builder, which keeps it only when it beats their per-stream best.
"""
from __future__ import annotations

import hashlib
import lzma
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from . import rans
from .bounded import StreamError, brotli_d, lzma_d, raw_d, zlib_d, zstd_d

_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


@dataclass(frozen=True)
class Codec:
    """One byte-stream compressor: adding a codec is one entry in REGISTRY (names are stored
    in artifact headers, so an entry is never renamed or removed). `decompress(data, limit)`
    never produces (or holds) much more than `limit` bytes: an artifact's streams are data
    from anyone, and a few hundred bytes of brotli can expand to gigabytes."""
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes, int], bytes]


def _zstd_c(data: bytes) -> bytes:
    import zstandard  # optional dependency: only the codec that uses it needs it
    return zstandard.ZstdCompressor(level=22, write_content_size=True).compress(data)


def _brotli_c(data: bytes) -> bytes:
    import brotli  # optional dependency: only the codec that uses it needs it
    return brotli.compress(data, quality=11, lgwin=24)


def _rans_c(data: bytes) -> bytes:
    return rans.encode(data)


REGISTRY: dict[str, Codec] = {
    "zstd": Codec(_zstd_c, zstd_d),
    "brotli": Codec(_brotli_c, brotli_d),
    # raw LZMA2 stream: no container header or CRC (the artifact's sha256 covers it)
    "lzma": Codec(lambda d: lzma.compress(d, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS), lzma_d),
    "zlib": Codec(lambda d: zlib.compress(d, 9), zlib_d),
    "rans": Codec(_rans_c, rans.decode),
    "raw": Codec(bytes, raw_d),
}
CODECS = tuple(REGISTRY)
JOINT = ("rans",)  # coded over several streams at once, not in the per-stream best-of


def _codec(name: str) -> Codec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; use one of {CODECS}") from None


def compress(data: bytes, codec: str) -> bytes:
    return _codec(codec).compress(bytes(data))


def decompress(data: bytes, codec: str, limit: int) -> bytes:
    """Decompress to at most `limit` bytes (StreamError past it, or on a stream that does not
    decode; the caller compares the length with what it declared)."""
    try:
        return _codec(codec).decompress(bytes(data), limit)
    except StreamError:
        raise
    except Exception as exc:  # each library's own error (zstd, brotli, lzma, zlib, rANS)
        raise StreamError(f"{codec} stream does not decode ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:100] if str(exc) else ''})") from None


def shuffle(data: bytes, width: int) -> bytes:
    """Group byte k of every `width`-byte element together (low bytes, then high bytes)."""
    if width <= 1:
        return bytes(data)
    return np.frombuffer(data, np.uint8).reshape(-1, width).T.copy().tobytes()


def unshuffle(data: bytes, width: int) -> bytes:
    if width <= 1:
        return bytes(data)
    return np.frombuffer(data, np.uint8).reshape(width, -1).T.copy().tobytes()


def compress_workers() -> int:
    """Compression threads: every codec here releases the GIL, so streams compress in parallel.
    GOLF_COMPRESS_THREADS overrides the default (all cores, at most 32); a value that is not a
    positive integer raises ValueError naming the variable (golf.main checks it before training)."""
    env = os.environ.get("GOLF_COMPRESS_THREADS", "").strip()
    if not env:
        return max(1, min(32, os.cpu_count() or 1))
    try:
        n = int(env)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"GOLF_COMPRESS_THREADS={env!r}: not a positive integer; set a thread "
                         "count such as 4, or unset it (all cores, at most 32)")
    return n


class StreamCache:
    """Memo of compressed streams by content hash, so the budget fitter never recompresses.

    `prefetch` compresses every missing (stream, codec) pair on a thread pool, largest first;
    the result is identical to compressing them one by one (each codec is deterministic)."""

    def __init__(self, workers: int | None = None) -> None:
        self._memo: dict[tuple[bytes, tuple[str, ...]], tuple[str, bytes, dict[str, int]]] = {}
        self._joint: dict[bytes, tuple[bytes, list[float]]] = {}
        self.workers = workers or compress_workers()

    def prefetch(self, jobs: Iterable[tuple[bytes, tuple[str, ...]]]) -> None:
        """Compress all (data, codecs) jobs not yet memoized, in parallel."""
        pending: dict[tuple[bytes, tuple[str, ...]], bytes] = {}
        for data, codecs in jobs:
            codecs = tuple(c for c in codecs if c not in JOINT)
            key = (hashlib.sha256(data).digest(), codecs)
            if key not in self._memo:
                pending.setdefault(key, data)
        if not pending:
            return
        work = sorted(((len(d), k, c) for k, d in pending.items() for c in k[1]),
                      key=lambda t: -t[0])
        if self.workers > 1 and len(work) > 1:
            with ThreadPoolExecutor(self.workers) as ex:
                futs = [(k, c, ex.submit(compress, pending[k], c)) for _n, k, c in work]
                blobs = {(k, c): f.result() for k, c, f in futs}
        else:
            blobs = {(k, c): compress(pending[k], c) for _n, k, c in work}
        for key, data in pending.items():
            sizes: dict[str, int] = {}
            best_name, best_blob = "", b""
            for name in key[1]:
                blob = blobs[(key, name)]
                sizes[name] = len(blob)
                if not best_name or len(blob) < len(best_blob):
                    best_name, best_blob = name, blob
            if not best_name or len(best_blob) >= len(data):
                best_name, best_blob = "raw", bytes(data)
            self._memo[key] = (best_name, best_blob, sizes)

    def best(self, data: bytes, codecs: tuple[str, ...]) -> tuple[str, bytes, dict[str, int]]:
        """(winning codec, compressed bytes, {codec: size}) over `codecs` (joint ones skipped)."""
        self.prefetch([(data, codecs)])
        return self._memo[(hashlib.sha256(data).digest(), tuple(c for c in codecs if c not in JOINT))]

    def joint(self, parts: list[bytes]) -> tuple[bytes, list[float]]:
        """rANS blob of the concatenated parts (one table each) and each part's share of its
        bytes (ideal coded bits, scaled so the shares sum to the blob size)."""
        data = b"".join(parts)
        lengths = [len(p) for p in parts]
        key = hashlib.sha256(data + repr(lengths).encode()).digest()
        if key not in self._joint:
            blob, bits = rans.encode_with_bits(data, lengths)
            total = float(bits.sum())
            shares = ([float(b) * len(blob) / total for b in bits] if total > 0
                      else [len(blob) / max(len(parts), 1)] * len(parts))
            self._joint[key] = (blob, shares)
        return self._joint[key]
