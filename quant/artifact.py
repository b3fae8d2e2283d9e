"""The .gkq artifact: a versioned, checksummed container of independently compressed streams.

Layout (all integers little-endian):

    0   4  magic b"GKQF"
    4   2  format version (uint16)
    6   4  header length L (uint32)
    10 32  sha256 of the header bytes
    42  L  header: UTF-8 JSON (sorted keys, compact): meta, streams, tensors, payload_len,
           payload_sha256; brotli-compressed since version 2 (version 1, plain JSON, still
           loads). The sha256 covers the stored header bytes.
    42+L   payload: the streams back to back

Each stream entry: name, codec (zstd|brotli|lzma|zlib|rans|raw), offset/length inside the
payload, raw_length, shuffle width (1 = none; 2 = fp16 bytes split low/high). Since version 3
the codes of all tensors may share one stream, "codes", coded by rANS with one table per
tensor (quant/rans.py); the builder picks it only when it is smaller than the per-tensor
streams under their best general-purpose codec, and tensors then point into it by offset. Each tensor entry: name,
shape, dtype (original), class, kind (quant|pass|alias), method, bits, k, and references
[stream index, byte offset, byte length] to its codes (int8, one per byte), scales (fp16 per row
or fp32 per tensor, or since version 5 log-grid codes) or passthrough data (stored dtype). Since version 4 a quantized tensor may
carry "lqer": rank, factor bits and groups, and a reference into its own stream lqer/<name>
holding A codes (rows x rank int8), B codes (rank x cols int8), then their fp16 group scales;
the tensor loads as codes * scales + A·B (quant/lqer.py). Since version 5 a quantized
tensor's entry may carry "scale_log": {r, mode, base, width}: its per-row steps are the
log-grid values fp16(2^(c/r)) (quant/scalar.log_scale_value, computed from c alone) and its
"scales" reference holds the integer codes c packed by quant/logscale.py (one or two bytes
per row: c - base with base = min c, or zigzag first differences along the rows after base
= the first c; width 2 = all low bytes, then all high bytes). Those bytes travel in the
joint "codes" rANS stream (one table per byte plane, after the codes) or, all tensors
together, in "scales/log" under the best general codec; the builder also builds the whole
artifact with those steps as plain fp16 (the same values) and keeps whichever is smaller.
With a framed coder (added without a version change: an older
reader refuses its codec name), the code matrices may instead sit in one stream "codes.framed"
whose codec is pergroup_v1 / pergroup_v2 (the records' per-group lrzip container,
quant/pergroup.py; record_1855 / record_2135 only, listed in their policies' compressors; v1
leaves codes outside its role groups in their own streams) or ctxrans (golfkit's
context-modelled rANS, quant/ctxrans.py, a default coder: the builder frames no matrix, every
matrix, or those it codes smaller, and keeps the smallest artifact; the others stay in their
own or the joint rANS stream). Codes are never bit-packed. Small
passthrough tensors share one stream per dtype (pass/float16, pass/float32); a large tensor the
budget fitter kept in fp16 has its own (pass/<name>/float16).

Reading: an artifact is data from anyone. Before any stream is decoded, the header passes
quant/header.py's schema (types, bounds, every reference inside its stream) and, when the
caller gives `expect`, the tensors' names and shapes are compared with the model its meta
describes; each stream then decodes through quant/bounded.py to at most its declared length.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from . import rans
from .codec import FRAMED, REGISTRY, StreamCache, compress, decompress, framed_takes, shuffle, unshuffle
from .errors import ArtifactError, ConfigMismatchError
from .header import MAX_ARTIFACT_BYTES, MAX_HEADER_BYTES, check_header
from .logscale import pack_scale_codes, plane_lengths, unpack_scale_codes
from .lqer import LqerFormat, lqer_from_bytes
from .scalar import log_scale_value
from .tensors import QTensor, dequant_tensor
from .policy import CLASSES

MAGIC = b"GKQF"
# the layout's own versions: 1: plain JSON header; 2: brotli-compressed header; 3: + rans;
# 4: + LQER factors; 5: + log-grid row scales. A codec's entry says which version it needs
# (quant/codec.py REGISTRY `since`): the version written is the newer of the two.
LAYOUT_VERSION = 5


def format_version() -> int:
    """The version this golfkit writes (and the newest it reads)."""
    return max(LAYOUT_VERSION, *(c.since for c in REGISTRY.values()))


FORMAT_VERSION = format_version()
SUPPORTED_VERSIONS = tuple(range(1, FORMAT_VERSION + 1))
JOINT_CODES = "codes"  # the one stream that holds every tensor's codes when rANS wins
SCALE_LOG = "scales/log"  # every tensor's log-grid scale codes, when a general codec wins
FRAMED_CODES = "codes.framed"  # the code matrices under one framed coder (codec.FRAMED)
_PREFIX = struct.Struct("<4sHI32s")


def _np_dtype(name: str) -> np.dtype:
    return np.dtype("bool" if name == "bool" else name)


def logical_streams(streams: list[dict]) -> dict[str, dict]:
    """Every stream by name as if each tensor's codes and scales had their own: a shared
    stream (joint rANS, the scale streams) is split into its parts, each with its share of the
    bytes (float) and, for codes, the sizes its standalone stream had under the
    general-purpose codecs (for reports and the fitter; scales as rowscales/<name>)."""
    out: dict[str, dict] = {}
    for st in streams:
        if st.get("parts"):
            for p in st["parts"]:
                out[p["name"]] = {"name": p["name"], "codec": st["codec"], "length": p["bytes"],
                                  "raw_length": p["raw_length"], "shuffle": st["shuffle"],
                                  "sizes": p["sizes"], "standalone_codec": p["standalone_codec"]}
        else:
            out[st["name"]] = {**st, "standalone_codec": st["codec"]}
    return out


def row_scales_name(name: str) -> str:
    """A tensor's scale bytes by name, wherever they are stored (a part of a shared stream)."""
    return f"rowscales/{name}"


def lqer_stream_name(name: str) -> str:
    """Each tensor's LQER factors get their own stream, so their bytes are measurable."""
    return f"lqer/{name}"


def pass_stream_name(qt: QTensor) -> str:
    """Stream of a passthrough tensor: small tensors share one stream per dtype; a large tensor
    the budget fitter kept in fp16 (it has a quantizable class) gets its own, so its bytes
    are measurable and it does not disturb the small tensors' compression."""
    sd = str(qt.data.dtype)
    return f"pass/{qt.name}/{sd}" if qt.cls in CLASSES else f"pass/{sd}"


def build_artifact(tensors: list[QTensor], meta: Mapping[str, Any], codecs: tuple[str, ...],
                   cache: StreamCache | None = None, shuffle_fp16: bool = True,
                   stream_codecs: Mapping[str, tuple[str, ...]] | None = None
                   ) -> tuple[bytes, list[dict]]:
    """Serialize to the exact bytes save_artifact writes; also return per-stream info.

    Tensors with log-grid scale codes are built both ways, scales as fp16 and as log codes,
    and the smaller artifact wins (both decode to the same values). With a "best" framed
    coder (the context rANS) each way is also built with it holding no code matrix, every
    one, and the ones it codes smaller than the other coders did; the smallest wins.
    stream_codecs narrows the codecs tried for named streams (the budget fitter uses each
    stream's earlier winner while it iterates; the final build tries them all again)."""
    cache = cache or StreamCache()
    has_log = any(qt.kind == "quant" and qt.scale_codes is not None for qt in tensors)
    codec = next((c for c in codecs if c in FRAMED), None)
    coding = _Coding(codecs, cache, shuffle_fp16, stream_codecs)
    best: tuple[bytes, list[dict]] | None = None
    for log_scales in (False, True) if has_log else (False,):
        def build(framed: Sequence[str] | None) -> tuple[bytes, list[dict]]:
            return _build_once(tensors, meta, coding, log_scales, codec if framed else None, framed)
        if codec is None or REGISTRY[codec].frame == "fixed":
            tries = [build([qt.name for qt in tensors if qt.kind == "quant"])]
        else:
            tries = [build(None)]
            tries += [build(names) for names in _frame_choices(tensors, tries[0][1], cache)]
        for blob, streams in tries:
            if best is None or len(blob) < len(best[0]):
                best = (blob, streams)
    return best


def _frame_choices(tensors: list[QTensor], plain: list[dict], cache: StreamCache
                   ) -> list[list[str]]:
    """Which code matrices to try in the context-rANS frame: all of them, and those whose
    frame alone (exact bytes, memoised by content) is smaller than their bytes in the build
    without it (`plain`'s streams)."""
    quant_t = [qt for qt in tensors if qt.kind == "quant"]
    if not quant_t:
        return []
    before = logical_streams(plain)
    fewer = [qt.name for qt in quant_t if len(cache.framed(
        "ctxrans", [(qt.name, np.ascontiguousarray(qt.codes, np.int8))])[0])
        < before[f"codes/{qt.name}"]["length"]]
    every = [qt.name for qt in quant_t]
    return [every] + ([fewer] if fewer and len(fewer) < len(every) else [])


@dataclass(frozen=True)
class _Coding:
    """How one build_artifact call codes its streams; the same for each of its candidate builds."""
    codecs: tuple[str, ...]
    cache: StreamCache
    shuffle_fp16: bool
    stream_codecs: Mapping[str, tuple[str, ...]] | None


def _build_once(tensors: list[QTensor], meta: Mapping[str, Any], coding: _Coding,
                log_scales: bool, frame_codec: str | None, framed_names: Sequence[str] | None
                ) -> tuple[bytes, list[dict]]:
    """One artifact: scales as log codes or fp16, and the named code matrices (if any) in
    `frame_codec`'s frame, the rest under the best of the other codecs."""
    c = coding
    entries, raw_streams, segments = _tensor_entries(tensors, log_scales)
    framed = _framed_codes(raw_streams, entries, frame_codec, framed_names or (), c.cache)
    rest = {n: b for n, b in raw_streams.items() if n not in (framed[1] if framed else {})}
    plain = {n: b for n, b in rest.items() if n not in segments}
    chosen = _compress_streams(plain, c.codecs, c.cache, c.shuffle_fp16, c.stream_codecs)
    chosen, moved = _join_codes(rest, segments, chosen, c.codecs, c.cache)
    if framed:
        chosen[FRAMED_CODES], moved = framed[0], {**moved, **framed[1]}
    _scale_parts(chosen, entries)
    streams, payload = _lay_out(chosen, entries, moved)
    return _seal(meta, streams, entries, payload), streams


def _tensor_entries(tensors: list[QTensor], log_scales: bool = False
                    ) -> tuple[list[dict], dict[str, bytearray], dict[str, list[int]]]:
    """Header entry per tensor, and the raw streams (in first-use order) its references point
    into as [stream name, byte offset, byte length]. With log_scales, a tensor's log-grid
    scale codes go to its own rowscales/<name> part (quant/logscale.py), returned with its
    rANS segment lengths (the builder gathers the parts into one stream)."""
    raw_streams: dict[str, bytearray] = {}
    segments: dict[str, list[int]] = {}
    entries: list[dict] = []

    def put(stream: str, data: bytes) -> list:
        buf = raw_streams.setdefault(stream, bytearray())
        off = len(buf)
        buf += data
        return [stream, off, len(data)]

    for qt in tensors:
        e: dict[str, Any] = {"name": qt.name, "shape": list(qt.shape), "dtype": qt.dtype,
                             "class": qt.cls, "kind": qt.kind}
        if qt.kind == "quant":
            rows = int(qt.codes.shape[0])
            e.update(method=qt.method, bits=qt.bits, k=qt.k, rows=rows,
                     cols=int(qt.codes.shape[1]))
            e["codes"] = put(f"codes/{qt.name}", np.ascontiguousarray(qt.codes, np.int8).tobytes())
            sd = str(qt.scales.dtype)
            e["scale_dtype"] = sd
            if log_scales and qt.scale_codes is not None and qt.scale_codes.size == rows:
                data, info = pack_scale_codes(qt.scale_codes, qt.scale_r)
                e["scale_log"] = info
                e["scales"] = put(row_scales_name(qt.name), data)
                segments[row_scales_name(qt.name)] = plane_lengths(info, rows)
            else:
                e["scales"] = put(f"scales/{sd}", np.ascontiguousarray(qt.scales).tobytes())
            if qt.lqer is not None:
                f = qt.lqer.fmt
                e["lqer"] = {"rank": qt.lqer.rank, "a_bits": f.a_bits, "a_group": f.a_group,
                             "b_bits": f.b_bits, "b_group": f.b_group,
                             "data": put(lqer_stream_name(qt.name), qt.lqer.to_bytes())}
        elif qt.kind == "pass":
            sd = str(qt.data.dtype)
            e["stored_dtype"] = sd
            e["data"] = put(pass_stream_name(qt), np.ascontiguousarray(qt.data).tobytes())
        elif qt.kind == "alias":
            e["alias_of"] = qt.alias_of
        else:
            raise ValueError(f"unknown tensor kind {qt.kind!r} for {qt.name}")
        entries.append(e)
    return entries, raw_streams, segments


def _compress_streams(raw_streams: dict[str, bytearray], codecs: tuple[str, ...],
                      cache: StreamCache, shuffle_fp16: bool,
                      stream_codecs: Mapping[str, tuple[str, ...]] | None) -> dict[str, dict]:
    """Each stream under its smallest allowed codec, fp16/fp32 streams also tried byte-shuffled
    (kept only when smaller)."""
    def plan(name: str) -> tuple[bytes, tuple[str, ...], int]:
        width = 1
        if shuffle_fp16 and (name.endswith("float16") or name.endswith("float32")):
            width = 2 if name.endswith("float16") else 4
        return bytes(raw_streams[name]), tuple((stream_codecs or {}).get(name, codecs)), width

    plans = {name: plan(name) for name in raw_streams}
    jobs = [(raw, use) for raw, use, _w in plans.values()]
    jobs += [(shuffle(raw, w), use) for raw, use, w in plans.values() if w > 1]
    cache.prefetch(jobs)  # every stream and codec at once, on all cores
    chosen: dict[str, dict] = {}
    for name in raw_streams:
        raw, use, width = plans[name]
        codec, blob, sizes = cache.best(raw, use)
        if width > 1:
            c2, b2, s2 = cache.best(shuffle(raw, width), use)
            if len(b2) < len(blob):
                codec, blob, sizes = c2, b2, s2
            else:
                width = 1
        chosen[name] = {"name": name, "codec": codec, "blob": blob, "raw_length": len(raw),
                        "shuffle": width, "sizes": dict(sizes)}
    return chosen


def _join_codes(raw_streams: dict[str, bytearray], segments: dict[str, list[int]],
                chosen: dict[str, dict], codecs: tuple[str, ...], cache: StreamCache
                ) -> tuple[dict[str, dict], dict[str, tuple[str, int]]]:
    """Codes: one joint rANS stream instead of the per-tensor streams when rans is allowed and
    that is smaller. Log scale parts (`segments`): gathered into SCALE_LOG under the best
    general codec, or appended to the joint rANS stream as more segments (one table per byte
    plane), whichever makes codes + scales smaller. Returns the streams and, per moved
    stream, (the stream now holding it, offset inside it)."""
    code_names = [n for n in raw_streams if n.startswith("codes/")]
    scale_names = list(segments)
    gen = sum(len(chosen[n]["blob"]) for n in code_names)
    # every code tensor and up to two scale planes each: within what the decoder accepts
    use_rans = "rans" in codecs and bool(code_names) and 3 * len(code_names) <= rans.MAX_SEGMENTS
    joint = cache.joint([bytes(raw_streams[n]) for n in code_names]) if use_rans else None
    codes_joint = joint is not None and len(joint[0]) < gen
    moved: dict[str, tuple[str, int]] = {}
    out = dict(chosen)
    if scale_names:
        gathered = b"".join(bytes(raw_streams[n]) for n in scale_names)
        codec, blob, sizes = cache.best(gathered, codecs)
        alone = (len(joint[0]) if codes_joint else gen) + len(blob)
        if use_rans:
            planes = [bytes(raw_streams[n][i * (len(raw_streams[n]) // len(segments[n])):
                                           (i + 1) * (len(raw_streams[n]) // len(segments[n]))])
                      for n in scale_names for i in range(len(segments[n]))]
            merged = cache.joint([bytes(raw_streams[n]) for n in code_names] + planes)
            if len(merged[0]) < alone:
                return _joint_stream(code_names, scale_names, segments, raw_streams, chosen,
                                     merged)
        parts, off = [], 0
        for n in scale_names:
            k = len(raw_streams[n])
            moved[n] = (SCALE_LOG, off)
            parts.append({"name": n, "raw_length": k, "standalone_codec": codec,
                          "bytes": len(blob) * k / max(len(gathered), 1), "sizes": {}})
            off += k
        out[SCALE_LOG] = {"name": SCALE_LOG, "codec": codec, "blob": blob, "shuffle": 1,
                          "raw_length": len(gathered), "sizes": dict(sizes), "parts": parts}
    if codes_joint:
        j, m = _joint_stream(code_names, [], {}, raw_streams, chosen, joint)
        out = {**j, **{n: c for n, c in out.items() if n not in m}}
        moved.update(m)
    return out, moved


def _joint_stream(code_names: list[str], scale_names: list[str], segments: dict[str, list[int]],
                  raw_streams: dict[str, bytearray], chosen: dict[str, dict],
                  joint: tuple[bytes, list[float]]
                  ) -> tuple[dict[str, dict], dict[str, tuple[str, int]]]:
    """The joint rANS stream (codes, then scale planes) first, then the streams it leaves."""
    blob, shares = joint
    shares = list(shares)
    parts, moved, off = [], {}, 0
    for n in code_names + scale_names:
        k = len(raw_streams[n])
        share = sum(shares.pop(0) for _ in range(len(segments.get(n, [0]))))
        alone = chosen.get(n, {"codec": "rans", "sizes": {}})
        moved[n] = (JOINT_CODES, off)
        parts.append({"name": n, "raw_length": k, "bytes": share,
                      "standalone_codec": alone["codec"], "sizes": {**alone["sizes"], "rans": share}})
        off += k
    stream = {"name": JOINT_CODES, "codec": "rans", "blob": blob, "raw_length": off,
              "shuffle": 1, "sizes": {"rans": len(blob)}, "parts": parts}
    return {JOINT_CODES: stream, **{n: c for n, c in chosen.items() if n not in moved}}, moved


def _framed_codes(raw_streams: dict[str, bytearray], entries: list[dict],
                  codec: str | None, names: Sequence[str], cache: StreamCache
                  ) -> tuple[dict, dict[str, tuple[str, int]]] | None:
    """`codec`'s frame (codec.FRAMED: the records' per-group lrzip container, v1 only its role
    groups, or golfkit's context rANS) over the named code matrices it takes: (its stream, and
    per code stream moved into it, (FRAMED_CODES, offset)). None when it takes none."""
    if codec is None:
        return None
    wanted = set(names)
    mats = [(e["name"], np.frombuffer(bytes(raw_streams[f"codes/{e['name']}"]), np.int8)
             .reshape(e["rows"], e["cols"])) for e in entries if e["kind"] == "quant"
            and e["name"] in wanted and framed_takes(codec, e["name"])]
    if not mats:
        return None
    frame, shares = cache.framed(codec, mats)
    moved, parts, off = {}, [], 0
    for (name, m), share in zip(mats, shares):
        moved[f"codes/{name}"] = (FRAMED_CODES, off)
        parts.append({"name": f"codes/{name}", "raw_length": m.size, "standalone_codec": codec,
                      "bytes": share, "sizes": {}})
        off += m.size
    return {"name": FRAMED_CODES, "codec": codec, "blob": frame, "raw_length": off,
            "shuffle": 1, "sizes": {codec: len(frame)}, "parts": parts}, moved


def _scale_parts(chosen: dict[str, dict], entries: list[dict]) -> None:
    """Split the shared fp16/fp32 scale streams into per-tensor parts (bytes in proportion to
    raw length), so every tensor's scale bytes read as rowscales/<name> (in place)."""
    for e in entries:
        ref = e.get("scales")
        st = chosen.get(ref[0]) if ref else None
        if st is None or not ref[0].startswith("scales/") or ref[0] == SCALE_LOG:
            continue
        st.setdefault("parts", []).append(
            {"name": row_scales_name(e["name"]), "raw_length": ref[2],
             "bytes": len(st["blob"]) * ref[2] / max(st["raw_length"], 1),
             "standalone_codec": st["codec"], "sizes": {}})


def _lay_out(chosen: dict[str, dict], entries: list[dict], moved: dict[str, tuple[str, int]]
             ) -> tuple[list[dict], bytearray]:
    """Streams back to back in the payload; every entry's reference rewritten from stream name
    to stream index (and into the joint stream for moved codes)."""
    streams: list[dict] = []
    payload = bytearray()
    index = {}
    for name, c in chosen.items():
        index[name] = len(streams)
        blob = c.pop("blob")
        streams.append({**c, "offset": len(payload), "length": len(blob)})
        payload += blob
    for e in entries:
        for key in ("codes", "scales", "data"):
            if key in e:
                name = e[key][0]
                if name in moved:
                    e[key] = [moved[name][0], moved[name][1] + e[key][1], e[key][2]]
                e[key][0] = index[e[key][0]]
        if "lqer" in e:
            e["lqer"]["data"][0] = index[e["lqer"]["data"][0]]
    return streams, payload


def _seal(meta: Mapping[str, Any], streams: list[dict], entries: list[dict],
          payload: bytearray) -> bytes:
    """Prefix + checksummed brotli JSON header + payload: the artifact's exact bytes."""
    table = [{k: v for k, v in st.items() if k not in ("sizes", "parts")} for st in streams]
    version = format_version()
    header = {"format": "golfkit-quant", "version": version, "meta": dict(meta),
              "streams": table, "tensors": entries, "payload_len": len(payload),
              "payload_sha256": hashlib.sha256(payload).hexdigest()}
    hjson = json.dumps(header, sort_keys=True, separators=(",", ":"), default=str).encode()
    hbytes = compress(hjson, "brotli")  # ~7x smaller: ~25 KB of an 11L budget back for weights
    prefix = _PREFIX.pack(MAGIC, version, len(hbytes), hashlib.sha256(hbytes).digest())
    return prefix + hbytes + bytes(payload)


def write_atomic(path: str | os.PathLike, data: bytes) -> int:
    """Write via a temp file in the same folder + os.replace (a failed write leaves the old file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename in (None, tmp):  # a full disk names the file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    return len(data)


def save_artifact(path: str | os.PathLike, qmodel) -> int:
    """Write qmodel's bytes atomically; returns the number of bytes written."""
    return write_atomic(path, qmodel.to_bytes())


_FIX = "re-run quantization (or re-copy the file) to regenerate it"


def _corrupt(path: str, reason: str) -> ArtifactError:
    return ArtifactError(f"{path}: corrupt artifact ({reason}); {_FIX}")


def parse_artifact(blob: bytes, path: str = "<bytes>") -> tuple[dict, bytes]:
    """Validate magic, version, lengths, checksums and the header's schema (quant/header.py)
    before anything is decoded; return (header, payload)."""
    if len(blob) < 4 or blob[:4] != MAGIC:
        raise ArtifactError(f"{path}: not a golfkit artifact (bad magic {blob[:4]!r}, expected "
                            f"{MAGIC!r}); pass a .gkq file written by quant.save_artifact")
    if len(blob) < _PREFIX.size:
        raise ArtifactError(f"{path}: truncated artifact ({len(blob)} bytes, header incomplete); {_FIX}")
    _, version, hlen, hsha = _PREFIX.unpack_from(blob)
    if not 1 <= version <= format_version():
        raise ArtifactError(f"{path}: unsupported artifact format version {version}; this golfkit "
                            f"reads versions {list(range(1, format_version() + 1))}; use the golfkit that wrote it "
                            "or re-quantize")
    hstart = _PREFIX.size
    if len(blob) < hstart + hlen:
        raise ArtifactError(f"{path}: truncated artifact ({len(blob)} bytes, header needs "
                            f"{hstart + hlen}); {_FIX}")
    hbytes = blob[hstart:hstart + hlen]
    if hashlib.sha256(hbytes).digest() != hsha:
        raise _corrupt(path, "header checksum mismatch")
    header = _read_header_json(hbytes, version, path)
    payload = blob[hstart + hlen:]
    declared = header.get("payload_len")
    if isinstance(declared, int) and not isinstance(declared, bool) and declared >= 0:
        if len(payload) < declared:
            raise ArtifactError(f"{path}: truncated artifact (payload {len(payload)} of "
                                f"{declared} bytes); {_FIX}")
        if len(payload) > declared:
            raise _corrupt(path, f"{len(payload) - declared} unexpected trailing bytes")
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise _corrupt(path, "payload checksum mismatch")
    try:
        check_header(header, len(payload))
    except Exception as exc:  # ValueError by design; anything else still fails closed, in one line
        raise _corrupt(path, f"header: {exc}") from None
    return header, payload


def _read_header_json(hbytes: bytes, version: int, path: str) -> dict:
    """The header object: brotli (since version 2) capped at MAX_HEADER_BYTES, then JSON."""
    try:
        text = decompress(hbytes, "brotli", MAX_HEADER_BYTES) if version >= 2 else hbytes
        if len(text) > MAX_HEADER_BYTES:
            raise ValueError(f"more than {MAX_HEADER_BYTES} bytes")
        header = json.loads(text)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise _corrupt(path, f"header does not decode: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:100] if str(exc) else ''}") from None
    if not isinstance(header, dict):
        raise _corrupt(path, f"header is a JSON {type(header).__name__}, expected an object")
    return header


def decode_streams(header: dict, payload: bytes) -> list[bytes]:
    """Every stream decompressed to exactly its declared raw length (never more)."""
    raw: list[bytes] = []
    for s in header["streams"]:
        data = decompress(payload[s["offset"]:s["offset"] + s["length"]], s["codec"], s["raw_length"])
        if len(data) != s["raw_length"]:
            raise ValueError(f"stream {s['name']!r} decodes to {len(data)} bytes, its header "
                             f"says {s['raw_length']}")
        raw.append(unshuffle(data, s["shuffle"]))
    return raw


def decode_tensors(header: dict, payload: bytes) -> list[QTensor]:
    """Rebuild QTensor records (codes, scales, passthrough data) from a verified payload."""
    raw = decode_streams(header, payload)

    def view(ref: list, dtype: str) -> np.ndarray:
        sid, off, n = ref
        return np.frombuffer(raw[sid], dtype=_np_dtype(dtype), count=n // _np_dtype(dtype).itemsize,
                             offset=off)

    out = []
    for e in header["tensors"]:
        qt = QTensor(name=e["name"], shape=tuple(e["shape"]), dtype=e["dtype"], cls=e["class"],
                     kind=e["kind"])
        if e["kind"] == "quant":
            qt.codes = view(e["codes"], "int8").reshape(e["rows"], e["cols"])
            if "scale_log" in e:  # version 5: log-grid codes -> the values the quantizer used
                sid, off, n = e["scales"]
                info = e["scale_log"]
                qt.scale_codes = unpack_scale_codes(raw[sid][off:off + n], info, e["rows"])
                qt.scale_r = int(info["r"])
                qt.scales = log_scale_value(qt.scale_codes, qt.scale_r)
            else:
                qt.scales = view(e["scales"], e["scale_dtype"])
            qt.bits, qt.method, qt.k = e["bits"], e["method"], e["k"]
            if "lqer" in e:
                lq = e["lqer"]
                fmt = LqerFormat(lq["a_bits"], lq["a_group"], lq["b_bits"], lq["b_group"])
                sid, off, n = lq["data"]
                qt.lqer = lqer_from_bytes(raw[sid][off:off + n], e["rows"], e["cols"],
                                          lq["rank"], fmt)
        elif e["kind"] == "pass":
            qt.data = view(e["data"], e["stored_dtype"])
        else:
            qt.alias_of = e["alias_of"]
        out.append(qt)
    return out


def state_dict_from_tensors(tensors: list[QTensor]) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}
    for qt in tensors:
        if qt.kind != "alias":
            sd[qt.name] = dequant_tensor(qt)
    for qt in tensors:
        if qt.kind == "alias":
            sd[qt.name] = sd[qt.alias_of]
    return {qt.name: sd[qt.name] for qt in tensors}


Shapes = Callable[[dict], Mapping[str, Sequence[int]]]


def load_artifact(path: str | os.PathLike, blob: bytes | None = None, expect: Shapes | None = None
                  ) -> tuple[dict[str, torch.Tensor], dict]:
    """(dequantized state_dict keyed like model.state_dict(), meta) from a .gkq file, or from
    `blob`, its bytes already read (a caller that hashes what it scores decodes those bytes).

    `expect(meta)` gives the tensor names and shapes the header's model must have (golf
    derives them from meta["config"], checked like a setting; raising there is reported as a
    corrupt artifact too); they are compared before any stream is decoded. Every failure is
    one ArtifactError line: "<path>: corrupt artifact (<reason>); <fix>" (or not found /
    not a golfkit artifact / truncated / unsupported version)."""
    path = str(path)
    try:
        size = os.stat(path).st_size if blob is None else len(blob)
        if size > MAX_ARTIFACT_BYTES:
            raise _corrupt(path, f"{size:,} bytes, more than an artifact may be ({MAX_ARTIFACT_BYTES:,})")
        blob = Path(path).read_bytes() if blob is None else blob
    except FileNotFoundError:
        raise ArtifactError(f"{path}: artifact not found; check the path (ARTIFACT=...)") from None
    header, payload = parse_artifact(blob, path)
    if expect is not None:
        _check_shapes(header, expect, path)
    try:
        tensors = decode_tensors(header, payload)
        return state_dict_from_tensors(tensors), header["meta"]
    except Exception as exc:  # checksums and schema passed: a writer bug or a forged file
        raise _corrupt(path, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from None


def _check_shapes(header: dict, expect: Shapes, path: str) -> None:
    """The header's tensors are exactly the expected model's, name by name and shape by shape."""
    try:
        want = {k: list(v) for k, v in expect(header["meta"]).items()}
    except Exception as exc:  # the meta's own model is invalid (e.g. num_heads=0)
        reason = "; ".join(ln.strip(" -") for ln in str(exc).splitlines() if ln.strip())
        raise _corrupt(path, f"meta.config: {reason[:400]}") from None
    got = {e["name"]: e["shape"] for e in header["tensors"]}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    wrong = [f"{k} {got[k]} (model: {want[k]})" for k in sorted(set(want) & set(got)) if got[k] != want[k]]
    problems = ([f"missing {', '.join(missing[:5])}"] if missing else []) + \
               ([f"unknown {', '.join(extra[:5])}"] if extra else []) + \
               ([f"shapes {', '.join(wrong[:5])}"] if wrong else [])
    if problems:
        raise _corrupt(path, "tensors do not fit the model of its meta.config: " + "; ".join(problems))


def check_artifact_config(meta: Mapping[str, Any], expected_model_dict: Mapping[str, Any],
                          path: str = "artifact") -> None:
    """Raise ConfigMismatchError listing every model field that differs from the artifact's."""
    cfg = dict(meta.get("config") or {})
    if not cfg:
        raise ConfigMismatchError(f"{path}: artifact meta has no 'config'; re-quantize with "
                                  "meta={'config': cfg.to_dict()}")
    diffs = [f"{k}: artifact={cfg.get(k, '<missing>')!r} expected={v!r}"
             for k, v in expected_model_dict.items() if cfg.get(k, "<missing>") != v]
    if diffs:
        raise ConfigMismatchError(f"{path}: artifact was produced for another model config ("
                                  + "; ".join(diffs) + "); set these env vars to match or "
                                  "re-quantize for this config")
