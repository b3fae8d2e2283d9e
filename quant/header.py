"""The artifact header's schema: every field a decoder reads is checked before anything is
decoded or allocated.

Why: an artifact may come from anyone, and its header sizes everything the reader does
(streams to decompress, arrays to view, tensors to build). Checked here: JSON types, every
stream inside the payload, every declared raw length within a stated bound and equal to the
extent the tensors reference, every reference inside its stream with the length its shape
and dtype imply, tensor names unique, aliases pointing at a stored tensor. A file that passes
can still hold wrong *values* (the payload checksum is the writer's, not a signature), but
it can no longer make the reader allocate more than its tensors declare or trace back.
Failures raise ValueError with a short reason; quant.artifact turns it into ArtifactError.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .codec import REGISTRY
from .logscale import MODES
from .lqer import LqerFormat, block_bytes
from .tensors import TORCH_DTYPES

# Stated bounds (far above any artifact that fits the challenge's 16 MB, far below a machine's
# memory): the file read whole, its header JSON, and the decoded elements of all tensors.
MAX_ARTIFACT_BYTES = 1 << 30
MAX_HEADER_BYTES = 8 << 20
MAX_ELEMENTS = 1 << 28
KINDS = ("quant", "pass", "alias")
SCALE_DTYPES = ("float16", "float32")
SHUFFLES = (1, 2, 4)


def _int(v: Any, what: str, lo: int = 0, hi: int = MAX_ARTIFACT_BYTES) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{what} is {v!r}, expected an integer in [{lo}, {hi}]")
    return v


def _is(v: Any, typ: type | tuple, what: str) -> Any:
    if not isinstance(v, typ) or isinstance(v, bool) and typ is not bool:
        names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise ValueError(f"{what} is {type(v).__name__}, expected {names}")
    return v


def _dtype(v: Any) -> bool:
    return isinstance(v, str) and v in TORCH_DTYPES


def check_header(header: Any, payload_len: int) -> None:
    """Types and bounds of the whole header against a payload of `payload_len` bytes."""
    _is(header, dict, "header")
    if _int(header.get("payload_len"), "payload_len") != payload_len:
        raise ValueError(f"payload_len {header['payload_len']} but the file holds {payload_len} bytes")
    _is(header.get("payload_sha256"), str, "payload_sha256")
    _is(header.get("meta"), dict, "meta")
    streams = _is(header.get("streams"), list, "streams")
    tensors = _is(header.get("tensors"), list, "tensors")
    for i, st in enumerate(streams):
        _check_stream(_is(st, dict, f"stream {i}"), i, payload_len)
    extents = [0] * len(streams)
    names: dict[str, str] = {}
    total = 0
    for i, e in enumerate(tensors):
        _is(e, dict, f"tensor {i}")
        name = _is(e.get("name"), str, f"tensor {i} name")
        if name in names:
            raise ValueError(f"tensor {name!r} appears twice")
        names[name] = _is(e.get("kind"), str, f"{name}: kind")
        _is(e.get("class"), str, f"{name}: class")
        total += _check_tensor(e, name, streams, extents)
        if total > MAX_ELEMENTS:
            raise ValueError(f"tensors hold more than {MAX_ELEMENTS:,} elements")
    for e in tensors:
        if e["kind"] == "alias" and names.get(_is(e.get("alias_of"), str, f"{e['name']}: alias_of"),
                                              "alias") == "alias":
            raise ValueError(f"{e['name']}: alias_of {e['alias_of']!r} names no stored tensor")
    for i, st in enumerate(streams):
        if st["raw_length"] != extents[i]:
            raise ValueError(f"stream {st['name']!r} declares {st['raw_length']} raw bytes, its "
                             f"tensors use {extents[i]}")


def _check_stream(st: dict, i: int, payload_len: int) -> None:
    _is(st.get("name"), str, f"stream {i} name")
    if st.get("codec") not in REGISTRY:
        raise ValueError(f"stream {st['name']!r}: unknown codec {st.get('codec')!r}")
    off = _int(st.get("offset"), f"stream {st['name']!r} offset")
    n = _int(st.get("length"), f"stream {st['name']!r} length")
    if off + n > payload_len:
        raise ValueError(f"stream {st['name']!r} ends at {off + n}, past the payload's {payload_len} bytes")
    raw = _int(st.get("raw_length"), f"stream {st['name']!r} raw_length", 0, MAX_ELEMENTS * 4)
    if st.get("shuffle") not in SHUFFLES or raw % st["shuffle"]:
        raise ValueError(f"stream {st['name']!r}: shuffle {st.get('shuffle')!r} for {raw} bytes")


def _ref(ref: Any, what: str, streams: list, extents: list[int], nbytes: int) -> None:
    """[stream index, offset, length]: inside the stream, `nbytes` long; extends its extent."""
    if not isinstance(ref, list) or len(ref) != 3:
        raise ValueError(f"{what} is {ref!r}, expected [stream, offset, length]")
    sid = _int(ref[0], f"{what} stream", 0, len(streams) - 1)
    off, n = _int(ref[1], f"{what} offset"), _int(ref[2], f"{what} length")
    if n != nbytes:
        raise ValueError(f"{what} is {n} bytes, its shape needs {nbytes}")
    if off + n > streams[sid]["raw_length"]:
        raise ValueError(f"{what} ends at {off + n}, past stream {streams[sid]['name']!r}'s "
                         f"{streams[sid]['raw_length']} bytes")
    extents[sid] = max(extents[sid], off + n)


def _check_tensor(e: dict, name: str, streams: list, extents: list[int]) -> int:
    """Check one tensor entry; returns the elements it decodes to (0 for an alias)."""
    shape = _is(e.get("shape"), list, f"{name}: shape")
    for d in shape:
        _int(d, f"{name}: a dimension", 0, MAX_ELEMENTS)
    numel = math.prod(shape)
    if numel > MAX_ELEMENTS:
        raise ValueError(f"{name}: shape {shape} holds more than {MAX_ELEMENTS:,} elements")
    if not _dtype(e.get("dtype")):
        raise ValueError(f"{name}: dtype {e.get('dtype')!r}, expected one of {list(TORCH_DTYPES)}")
    kind = e["kind"]
    if kind == "pass":
        sd = e.get("stored_dtype")
        if not _dtype(sd) or sd == "bfloat16":
            raise ValueError(f"{name}: stored_dtype {sd!r}")
        _ref(e.get("data"), f"{name}: data", streams, extents, numel * np.dtype(sd).itemsize)
        return numel
    if kind == "alias":
        return 0
    if kind != "quant":
        raise ValueError(f"{name}: kind {kind!r}, expected one of {KINDS}")
    rows = _int(e.get("rows"), f"{name}: rows", 1, MAX_ELEMENTS)
    cols = _int(e.get("cols"), f"{name}: cols", 1, MAX_ELEMENTS)
    if rows * cols != numel:
        raise ValueError(f"{name}: {rows} x {cols} codes for shape {shape}")
    _int(e.get("bits"), f"{name}: bits", 1, 8)
    _is(e.get("method"), str, f"{name}: method")
    if e.get("k") is not None:
        _is(e["k"], (int, float), f"{name}: k")
    _ref(e.get("codes"), f"{name}: codes", streams, extents, numel)
    _check_scales(e, name, rows, streams, extents)
    if "lqer" in e:
        _check_lqer(_is(e["lqer"], dict, f"{name}: lqer"), name, rows, cols, streams, extents)
    return numel + (e["lqer"]["rank"] * (rows + cols) if "lqer" in e else 0)


def _check_scales(e: dict, name: str, rows: int, streams: list, extents: list[int]) -> None:
    if e.get("scale_dtype") not in SCALE_DTYPES:
        raise ValueError(f"{name}: scale_dtype {e.get('scale_dtype')!r}, expected one of {SCALE_DTYPES}")
    if "scale_log" not in e:
        ref = e.get("scales")
        n = ref[2] if isinstance(ref, list) and len(ref) == 3 else None
        size = np.dtype(e["scale_dtype"]).itemsize
        count = rows if n == rows * size else 1  # per row, or one per tensor
        _ref(ref, f"{name}: scales", streams, extents, count * size)
        return
    info = _is(e["scale_log"], dict, f"{name}: scale_log")
    _int(info.get("r"), f"{name}: scale_log r", 1, 1 << 16)
    _int(info.get("base"), f"{name}: scale_log base", -(1 << 31), 1 << 31)
    width = _int(info.get("width"), f"{name}: scale_log width", 1, 2)
    if info.get("mode") not in MODES:
        raise ValueError(f"{name}: scale_log mode {info.get('mode')!r}, expected one of {MODES}")
    _ref(e.get("scales"), f"{name}: scales", streams, extents, width * rows)


def _check_lqer(lq: dict, name: str, rows: int, cols: int, streams: list, extents: list[int]) -> None:
    rank = _int(lq.get("rank"), f"{name}: lqer rank", 1, min(rows, cols))
    fmt = LqerFormat(*(_int(lq.get(k), f"{name}: lqer {k}", 0, MAX_ELEMENTS)
                       for k in ("a_bits", "a_group", "b_bits", "b_group")))
    _ref(lq.get("data"), f"{name}: lqer data", streams, extents, block_bytes(rows, cols, rank, fmt))
