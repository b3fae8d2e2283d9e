"""Byte-stream codecs: best-of zstd-22 / brotli-11 / lzma-9e / zlib-9, and the fp16 byte shuffle.

Every stream is compressed independently with each allowed codec; the smallest wins (ties
go to the earlier name) and all sizes are kept for the report.
"""
from __future__ import annotations

import hashlib
import lzma
import zlib

import numpy as np

CODECS = ("zstd", "brotli", "lzma", "zlib", "raw")
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


def compress(data: bytes, codec: str) -> bytes:
    if codec == "zstd":
        import zstandard
        return zstandard.ZstdCompressor(level=22, write_content_size=True).compress(data)
    if codec == "brotli":
        import brotli
        return brotli.compress(data, quality=11, lgwin=24)
    if codec == "lzma":  # raw LZMA2 stream: no container header or CRC (the sha256 covers it)
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    if codec == "zlib":
        return zlib.compress(data, 9)
    if codec == "raw":
        return bytes(data)
    raise ValueError(f"unknown codec {codec!r}; use one of {CODECS}")


def decompress(data: bytes, codec: str) -> bytes:
    if codec == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().decompress(data)
    if codec == "brotli":
        import brotli
        return brotli.decompress(data)
    if codec == "lzma":
        return lzma.decompress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    if codec == "zlib":
        return zlib.decompress(data)
    if codec == "raw":
        return bytes(data)
    raise ValueError(f"unknown codec {codec!r}")


def shuffle(data: bytes, width: int) -> bytes:
    """Group byte k of every `width`-byte element together (low bytes, then high bytes)."""
    if width <= 1:
        return bytes(data)
    return np.frombuffer(data, np.uint8).reshape(-1, width).T.copy().tobytes()


def unshuffle(data: bytes, width: int) -> bytes:
    if width <= 1:
        return bytes(data)
    return np.frombuffer(data, np.uint8).reshape(width, -1).T.copy().tobytes()


class StreamCache:
    """Memo of compressed streams by content hash, so the budget fitter never recompresses."""

    def __init__(self) -> None:
        self._memo: dict[tuple[bytes, tuple[str, ...]], tuple[str, bytes, dict[str, int]]] = {}

    def best(self, data: bytes, codecs: tuple[str, ...]) -> tuple[str, bytes, dict[str, int]]:
        """(winning codec, compressed bytes, {codec: size}) over `codecs`."""
        key = (hashlib.sha256(data).digest(), tuple(codecs))
        hit = self._memo.get(key)
        if hit is None:
            sizes: dict[str, int] = {}
            best_name, best_blob = "", b""
            for name in codecs:
                blob = compress(data, name)
                sizes[name] = len(blob)
                if not best_name or len(blob) < len(best_blob):
                    best_name, best_blob = name, blob
            if not best_name or len(best_blob) >= len(data):
                best_name, best_blob = "raw", bytes(data)
            hit = (best_name, best_blob, sizes)
            self._memo[key] = hit
        return hit
