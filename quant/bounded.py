"""Decompression that never produces much more than a stated number of bytes, one function
per library (zstd, brotli, lzma, zlib, raw).

Why: an artifact is data from anyone, and its streams state their own decompressed sizes. A
plain `brotli.decompress` of 809 crafted bytes allocated 2.2 GiB; each library here is driven
through its bounded interface (zstd's stream reader with a capped window, brotli's
output_buffer_limit, lzma's max_length with the dictionary sized by the output, zlib's
max_length) and stops one byte past `limit`, raising StreamError. FrameReader does the same for
the framed code coders' own headers: every read is checked against the bytes that are there.
"""
from __future__ import annotations

import lzma
import struct
import zlib


class StreamError(ValueError):
    """A stream that does not decompress, or would decompress past its declared length."""


def _over(limit: int) -> StreamError:
    return StreamError(f"stream decompresses to more than its declared {limit} bytes")


def zstd_d(data: bytes, limit: int) -> bytes:
    import zstandard  # optional dependency: only the codec that uses it needs it
    # a frame also states its window; a stream of `limit` bytes needs no larger one
    window = min(1 << 27, max(1 << 10, 1 << max(limit - 1, 1).bit_length()))
    dctx = zstandard.ZstdDecompressor(max_window_size=window)
    out = bytearray()
    with dctx.stream_reader(data, read_across_frames=False) as reader:
        while len(out) <= limit:
            chunk = reader.read(limit + 1 - len(out))
            if not chunk:
                break
            out += chunk
    if len(out) > limit:
        raise _over(limit)
    # the reader stops quietly at the end of a cut frame; a frame that states its size says so
    size = zstandard.get_frame_parameters(data).content_size
    if size != zstandard.CONTENTSIZE_UNKNOWN and size != len(out):
        raise StreamError(f"zstd stream is truncated ({len(out)} of {size} bytes)")
    return bytes(out)


def brotli_d(data: bytes, limit: int) -> bytes:
    import brotli  # optional dependency: only the codec that uses it needs it
    dec = brotli.Decompressor()
    try:
        out = bytearray(dec.process(data, output_buffer_limit=limit + 1))
        while len(out) <= limit and not dec.is_finished():
            chunk = dec.process(b"", output_buffer_limit=limit + 1 - len(out))
            if not chunk:
                break
            out += chunk
    except TypeError:  # brotli < 1.2 has no output limit, and without one no bound holds
        raise StreamError("the installed brotli cannot bound its output; pip install "
                          "'brotli>=1.2'") from None
    except brotli.error:  # its own error class: callers expect this module's one error
        raise StreamError("brotli stream is corrupt") from None
    if len(out) > limit:
        raise _over(limit)
    if not dec.is_finished():
        raise StreamError("brotli stream is truncated or corrupt")
    return bytes(out)


def _capped(dec, data: bytes, limit: int, name: str) -> bytes:
    """One call of a decompressor object that takes a maximum output length (lzma, zlib)."""
    out = dec.decompress(data, limit + 1)
    if len(out) > limit:
        raise _over(limit)
    if not dec.eof:
        raise StreamError(f"{name} stream is truncated or corrupt")
    return out


def lzma_d(data: bytes, limit: int) -> bytes:
    """Raw LZMA2 (quant.codec's format); no match distance can exceed the output's length,
    so the dictionary is sized by `limit`, not by the encoder's preset (64 MiB)."""
    filt = [{"id": lzma.FILTER_LZMA2, "dict_size": min(1 << 26, max(1 << 12, limit))}]
    return _capped(lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=filt), data, limit, "lzma")


def zlib_d(data: bytes, limit: int) -> bytes:
    return _capped(zlib.decompressobj(), data, limit, "zlib")


def raw_d(data: bytes, limit: int) -> bytes:
    if len(data) > limit:
        raise _over(limit)
    return bytes(data)


class FrameReader:
    """Bounds-checked reads from a frame: an overrun raises `error` naming `what`, never an
    IndexError or a short read that a caller could mistake for data."""

    def __init__(self, data: bytes, error: type[Exception], what: str) -> None:
        self.data, self.pos, self.error, self.what = data, 0, error, what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.error(f"{self.what} truncated (needs {n} bytes at {self.pos}, "
                             f"has {len(self.data) - self.pos})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))
