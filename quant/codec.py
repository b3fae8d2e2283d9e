"""Byte-stream codecs: best-of zstd-22 / brotli-11 / lzma-9e / zlib-9, rANS, and the fp16 byte shuffle.

Every stream is compressed independently with each allowed general-purpose codec; the smallest
wins (ties go to the earlier name) and all sizes are kept for the report. "rans" (quant/rans.py,
an order-0 coder with one table per segment) is offered for the code streams jointly by the
artifact builder, which keeps it only when it beats their per-stream best. Framed coders take
whole code matrices: golfkit's context rANS (quant/ctxrans.py) competes with the others per
tensor, the records' per-group lrzip container (quant/pergroup.py) takes all it holds.
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

from . import ctxrans, rans
from .bounded import StreamError, brotli_d, lzma_d, raw_d, zlib_d, zstd_d
from .errors import QuantError
from .roworder import OrderMemo

_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


@dataclass(frozen=True)
class Codec:
    """One byte-stream compressor: adding a codec is one entry in REGISTRY (names are stored
    in artifact headers, so an entry is never renamed or removed). `decompress(data, limit)`
    never produces (or holds) much more than `limit` bytes: an artifact's streams are data
    from anyone, and a few hundred bytes of brotli can expand to gigabytes."""
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes, int], bytes]
    ratio: float = 1.2        # first guess of compressed size / order-0 entropy (the fitter's)
    tried: bool = False       # in QuantPolicy's default compressors (the per-stream best-of)
    since: int = 1            # the artifact format version a reader needs to decode it
    module: str = ""          # its third-party import, if any (the packed script requires it)
    pip: str = ""             # that import's pip distribution name
    frame: str = ""           # a framed coder over code matrices: "best" (the artifact builder
    #                           keeps it for the tensors where it is smaller) or "fixed" (it takes
    #                           every matrix it holds: a record's container, reproduced as is)


def _zstd_c(data: bytes) -> bytes:
    import zstandard  # optional dependency: only the codec that uses it needs it
    return zstandard.ZstdCompressor(level=22, write_content_size=True).compress(data)


def _brotli_c(data: bytes) -> bytes:
    import brotli  # optional dependency: only the codec that uses it needs it
    return brotli.compress(data, quality=11, lgwin=24)


def _rans_c(data: bytes) -> bytes:
    return rans.encode(data)


# The framed coders this program does not carry: none in a checkout; the packed script's header
# (golf.ship.markers) appends its own tuple here, so a framed artifact there gets one clear line.
LEFT_OUT: tuple[str, ...] = ()


def _framed(codec: str):
    """The module of a framed coder. The records' container is imported where it is used: it
    is left out of the packed script (golf/ship.py's table), which states so in LEFT_OUT; no
    import is guessed at. golfkit's context rANS ships (a default coder)."""
    if codec == "ctxrans":
        return ctxrans
    if "quant.pergroup" in LEFT_OUT:
        raise QuantError(f"codec {codec!r} is not in this packed script; quantize and load such "
                         "artifacts with a golfkit checkout")
    from . import pergroup
    return pergroup


def framed_problems(codecs: tuple[str, ...]) -> list[str]:
    """Why the framed coders among `codecs` cannot run here (lrzip missing, or a packed script
    without them), one line each: checked before training, so a baseline does not stop after."""
    out = []
    for codec in (c for c in codecs if c in FRAMED):
        try:
            mod = _framed(codec)
            if codec.startswith("pergroup"):
                mod.lrzip_binary()
        except QuantError as exc:
            out.append(str(exc))
    return out


def framed_encode(codec: str, mats: list[tuple[str, np.ndarray]]) -> bytes:
    """A FRAMED codec's frame of (name, int8 codes) matrices."""
    name = {"pergroup_v1": "encode_v1", "pergroup_v2": "encode_v2", "ctxrans": "encode"}[codec]
    return getattr(_framed(codec), name)(mats)


def framed_takes(codec: str, name: str) -> bool:
    """Whether a FRAMED codec holds this tensor's codes (v1: only its role groups' tensors)."""
    return codec != "pergroup_v1" or _framed(codec).group_of(name) is not None


def _joint_only(name: str) -> Callable[[bytes], bytes]:
    def refuse(_data: bytes) -> bytes:
        raise ValueError(f"codec {name!r} codes named code matrices jointly (the artifact builder "
                         "calls it), not a byte string")
    return refuse


def _framed_d(name: str) -> Callable[[bytes, int], bytes]:
    """A framed coder's decode: it refuses a frame whose declared sizes exceed the stream's
    declared length before it allocates, and its output is checked against that length."""
    def decode(data: bytes, limit: int) -> bytes:
        return raw_d(_framed(name).decode(data, limit), limit)
    return decode


# ratio guesses: measured on trained checkpoints' code streams (§6); order = the tie-break order
REGISTRY: dict[str, Codec] = {
    "zstd": Codec(_zstd_c, zstd_d, 1.018, True, module="zstandard", pip="zstandard"),
    "brotli": Codec(_brotli_c, brotli_d, 1.015, True, module="brotli", pip="brotli"),
    # raw LZMA2 stream: no container header or CRC (the artifact's sha256 covers it)
    "lzma": Codec(lambda d: lzma.compress(d, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS), lzma_d,
                  1.07, True),
    "zlib": Codec(lambda d: zlib.compress(d, 9), zlib_d, 1.16, True),
    "rans": Codec(_rans_c, rans.decode, 1.001, True, since=3),
    "raw": Codec(bytes, raw_d, 2.4),
    # the records' per-group lrzip container (quant/pergroup.py): record_1855 / record_2135 only
    "pergroup_v1": Codec(_joint_only("pergroup_v1"), _framed_d("pergroup_v1"), since=5,
                         frame="fixed"),
    "pergroup_v2": Codec(_joint_only("pergroup_v2"), _framed_d("pergroup_v2"), since=5,
                         frame="fixed"),
    # golfkit's context-modelled rANS over the code matrices (quant/ctxrans.py), pure numpy:
    # tried by default; ratio measured on trained CPU checkpoints' codes (docs/container.md)
    "ctxrans": Codec(_joint_only("ctxrans"), _framed_d("ctxrans"), 0.99, True, since=5,
                     frame="best"),
}
CODECS = tuple(REGISTRY)


def default_compressors() -> tuple[str, ...]:
    """The codecs a policy tries unless it names its own (QuantPolicy.compressors)."""
    return tuple(name for name, c in REGISTRY.items() if c.tried)


def pip_names() -> dict[str, str]:
    """Third-party import name -> pip distribution name, for the codecs that need one."""
    return {c.module: c.pip for c in REGISTRY.values() if c.module}


def codec_ratio(codecs: Iterable[str]) -> float:
    """First guess of compressed size / order-0 entropy for the best of `codecs`."""
    return min((REGISTRY[c].ratio if c in REGISTRY else 1.2 for c in codecs), default=1.2)
# framed coders: one frame over the code matrices they take (the artifact builder's
# _framed_codes; the first one listed in a policy's compressors is used)
FRAMED = tuple(name for name, c in REGISTRY.items() if c.frame)
# coded over several streams at once, not in the per-stream best-of
JOINT = ("rans", *FRAMED)


def _codec(name: str) -> Codec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; use one of {tuple(REGISTRY)}") from None


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
        self.orders = OrderMemo()  # context rANS row orders, kept across the fitter's builds
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

    def framed(self, codec: str, mats: list[tuple[str, np.ndarray]]) -> tuple[bytes, list[float]]:
        """A FRAMED codec's frame of the named code matrices (memoized: lrzip is slow, and the
        context rANS sorts rows) and each matrix's share of its bytes (by the coder's own
        estimate where it has one, else by size), scaled so the shares sum to the frame."""
        h = hashlib.sha256(codec.encode())
        for name, m in mats:
            h.update(repr((name, m.shape)).encode())
            h.update(np.ascontiguousarray(m).tobytes())
        key = h.digest()
        if key not in self._joint:
            if codec == "ctxrans":
                frame, bits = ctxrans.encode_with_bits(mats, self.orders)
            else:
                frame, bits = framed_encode(codec, mats), [float(m.size) for _n, m in mats]
            total = sum(bits)
            self._joint[key] = (frame, [b * len(frame) / total if total > 0
                                        else len(frame) / len(mats) for b in bits])
        return self._joint[key]

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
