"""The records' per-group lrzip container for int8 code matrices (#1855's v1 and #2135's v2).

Why: record_1855 and record_2135 are baselines, so their codes are stored the way the records
shipped them, not under a coder golfkit chose. v1 (#1855, #2014): the codes are routed into 7
role groups (GROUPS, in that order; within a group in the artifact's tensor order, i.e.
layers 0..n), rows of tok_emb, c_q and mlp.fc reordered by the greedy L1 nearest-neighbour
chain, every matrix transposed, each group's bytes through `lrzip -z -L 9` (seven processes
in parallel), the uint16 permutations concatenated and brotli'd. v2 (#2135): every tensor in
name order, every tensor chain-sorted, transposed, one blob, one lrzip call; the raw uint16
permutations sit in the per-tensor headers.

What golfkit keeps as its own: the records' "remainder" (scales, LQER factors, passthrough
tensors, meta) stays in the artifact's other streams under brotli-11, so this module holds
only the codes. v1 frames carry the shape manifest (brotli JSON) in their remainder slot;
v2's remainder size is 0. Codes that fall in no v1 group stay in their own brotli streams
(in the records every quantized tensor is in a group). lrzip is a baseline-only system
binary: without it, compressing or decoding raises LrzipMissing (one line naming the fix),
never a silent brotli fallback.

Frames (little-endian):
  v1: b"PGRP", u32 1, u32 9, 9 x u32 lengths, then 7 group blobs (lrzip), the manifest
      (brotli JSON [[name, rows, cols, group, sorted], ...] in artifact order), the
      permutations (brotli of uint16 rows, sorted tensors in manifest order).
  v2: b"PGRP", u32 2, u32 n; per tensor in artifact order: u16 name length, name, u32 rows,
      u32 cols, rows x uint16 permutation; u8 method (1 = lrzip), u32 size, Q blob, u32 0.
The decoded bytes are every tensor's codes row-major in artifact order, concatenated.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from .bounded import FrameReader, StreamError, brotli_d
from .errors import QuantError
from .roworder import MAX_ROWS, is_permutation, l1_chain_order

MAGIC = b"PGRP"
# v1's role groups: (group, the name suffix that routes a tensor to it), in stream order
GROUPS = (("tok_emb", "tok_emb.weight"), ("c_k", "attn.c_k.weight"),
          ("c_q", "attn.c_q.weight"), ("c_v", "attn.c_v.weight"),
          ("attn.proj", "attn.proj.weight"), ("mlp.fc", "mlp.fc.weight"),
          ("mlp.proj", "mlp.proj.weight"))
SORTED_GROUPS = ("tok_emb", "c_q", "mlp.fc")  # v1 chain-sorts only these
LRZIP_ARGS = ("-z", "-L", "9")                 # the records' invocation
METHOD_LRZIP = 1
MAX_CODES = 1 << 34                            # a declared size above this is corrupt, not big
MANIFEST_BOUND = 1 << 24                       # bytes of v1's JSON manifest (a few dozen per tensor)


class LrzipMissing(QuantError):
    """The lrzip binary is not on PATH (the records' container needs it)."""


class PergroupError(QuantError):
    """A per-group frame that does not decode (truncated, corrupt, or lrzip failed)."""


def lrzip_binary() -> str:
    """Path of lrzip, or LrzipMissing naming the package to install."""
    path = shutil.which("lrzip")
    if path is None:
        raise LrzipMissing("lrzip not found on PATH: the records' per-group container "
                           "(QUANT_METHOD=record_1855 / record_2135) needs it; install it with "
                           "`apt-get install lrzip` (a baseline-only dependency)")
    return path


def _lrzip(data: bytes, decompress: bool) -> bytes:
    """One lrzip run on temp files golfkit creates and removes (no shell)."""
    exe = lrzip_binary()
    env = {**os.environ, "LRZIP": "NOCONFIG"}  # an lrzip.conf must not change the bytes
    with tempfile.TemporaryDirectory(prefix="golf-lrzip-") as d:
        src, dst = os.path.join(d, "in"), os.path.join(d, "out")
        with open(src, "wb") as f:
            f.write(data)
        args = ["-d"] if decompress else list(LRZIP_ARGS)
        proc = subprocess.run([exe, *args, "-q", "-f", "-o", dst, src], env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=3600)
        if proc.returncode != 0 or not os.path.exists(dst):
            msg = proc.stderr.decode(errors="replace").strip().splitlines()
            what = "decode a per-group stream" if decompress else "compress codes"
            raise PergroupError(f"lrzip could not {what} (exit {proc.returncode}: "
                                f"{msg[-1] if msg else 'no message'})")
        with open(dst, "rb") as f:
            return f.read()


def lrzip_compress(data: bytes) -> bytes:
    return _lrzip(data, decompress=False)


def lrzip_decompress(data: bytes, expect: int) -> bytes:
    """Decode one lrzip blob that must expand to exactly `expect` bytes; its header's declared
    size is checked before lrzip runs, so a corrupt frame cannot make it write gigabytes."""
    if len(data) < 14 or data[:4] != b"LRZI":
        raise PergroupError("per-group stream is not an lrzip blob (bad magic)")
    (declared,) = struct.unpack_from("<Q", data, 6)
    if declared != expect:
        raise PergroupError(f"per-group lrzip blob declares {declared} bytes, its frame {expect}")
    out = _lrzip(data, decompress=True)
    if len(out) != expect:
        raise PergroupError(f"per-group lrzip blob decoded to {len(out)} bytes, not {expect}")
    return out


def group_of(name: str) -> str | None:
    """v1's group for a tensor name, or None (its codes stay out of the container)."""
    for group, suffix in GROUPS:
        if name == suffix or name.endswith("." + suffix):
            return group
    return None


def _layout(codes: np.ndarray, perm: np.ndarray | None) -> bytes:
    """Rows in `perm` order (if any), then transposed: the bytes lrzip sees."""
    m = codes if perm is None else codes[perm]
    return np.ascontiguousarray(m.T).astype(np.int8).tobytes()


def _unlayout(data: bytes, rows: int, cols: int, perm: np.ndarray | None) -> np.ndarray:
    m = np.frombuffer(data, dtype=np.int8).reshape(cols, rows).T
    if perm is None:
        return np.ascontiguousarray(m)
    out = np.empty_like(m)
    out[perm] = m
    return out


def _perm(codes: np.ndarray, name: str) -> np.ndarray:
    if codes.shape[0] > MAX_ROWS:
        raise QuantError(f"{name}: {codes.shape[0]} rows; the per-group container's uint16 "
                         f"permutation holds at most {MAX_ROWS}")
    return l1_chain_order(codes)


def encode_v1(tensors: Sequence[tuple[str, np.ndarray]]) -> bytes:
    """#1855's frame for (name, int8 codes) pairs, every name in a group (see group_of)."""
    import brotli  # optional dependency: only the records' container needs it here
    manifest, perms = [], []
    streams: dict[str, list[bytes]] = {g: [] for g, _s in GROUPS}
    for name, codes in tensors:
        group = group_of(name)
        if group is None:
            raise QuantError(f"{name}: in no per-group role group ({[s for _g, s in GROUPS]})")
        perm = _perm(codes, name) if group in SORTED_GROUPS else None
        if perm is not None:
            perms.append(perm.astype("<u2").tobytes())
        streams[group].append(_layout(codes, perm))
        manifest.append([name, int(codes.shape[0]), int(codes.shape[1]), group, perm is not None])
    raw = [b"".join(streams[g]) for g, _s in GROUPS]
    with ThreadPoolExecutor(len(raw)) as ex:
        blobs = list(ex.map(lambda b: lrzip_compress(b) if b else b"", raw))
    blobs.append(brotli.compress(json.dumps(manifest, separators=(",", ":")).encode(), quality=11))
    blobs.append(brotli.compress(b"".join(perms), quality=11, lgwin=24))
    head = MAGIC + struct.pack("<II", 1, len(blobs)) + struct.pack(f"<{len(blobs)}I",
                                                                  *map(len, blobs))
    return head + b"".join(blobs)


def encode_v2(tensors: Sequence[tuple[str, np.ndarray]]) -> bytes:
    """#2135's frame: headers in artifact order, the blob in name order, all rows chain-sorted."""
    head = bytearray(MAGIC + struct.pack("<II", 2, len(tensors)))
    layouts = {}
    for name, codes in tensors:
        perm = _perm(codes, name)
        key = name.encode()
        head += struct.pack("<H", len(key)) + key + struct.pack("<II", *codes.shape)
        head += perm.astype("<u2").tobytes()
        layouts[name] = _layout(codes, perm)
    blob = lrzip_compress(b"".join(layouts[n] for n in sorted(layouts)))
    return bytes(head) + struct.pack("<BI", METHOD_LRZIP, len(blob)) + blob + struct.pack("<I", 0)


def _check_perm(perm: np.ndarray, name: str) -> np.ndarray:
    if not is_permutation(perm):
        raise PergroupError(f"per-group frame: the row order of {name} is not a permutation")
    return perm.astype(np.int64)


def _check_shape(name: str, rows: int, cols: int, total: int) -> int:
    if rows <= 0 or cols <= 0 or rows > MAX_ROWS or total + rows * cols > MAX_CODES:
        raise PergroupError(f"per-group frame: {name} declares {rows} x {cols} codes")
    return total + rows * cols


def _check_manifest(manifest: object) -> list[tuple[str, int, int, str, bool]]:
    """v1's manifest as typed rows, every group known and every shape within bounds."""
    groups = {g for g, _s in GROUPS}
    out, total = [], 0
    try:
        for name, rows, cols, group, is_sorted in manifest:  # type: ignore[union-attr]
            if not (isinstance(name, str) and type(rows) is int and type(cols) is int
                    and group in groups and isinstance(is_sorted, bool)):
                raise ValueError(f"bad row {[name, rows, cols, group, is_sorted]!r:.80}")
            total = _check_shape(name, rows, cols, total)
            out.append((name, rows, cols, group, is_sorted))
    except (TypeError, ValueError) as exc:
        raise PergroupError(f"per-group v1 manifest is malformed ({exc})") from None
    return out


def decode(frame: bytes, limit: int = MAX_CODES) -> bytes:
    """Every tensor's codes row-major in artifact order (inverse of encode_v1 / encode_v2);
    a frame declaring more than `limit` codes (the artifact stream's declared length) is
    refused before lrzip runs or anything is allocated."""
    r = FrameReader(bytes(frame), PergroupError, "per-group frame")
    if r.take(4) != MAGIC:
        raise PergroupError("not a per-group frame (bad magic)")
    (version,) = r.unpack("<I")
    if version == 1:
        return _decode_v1(r, limit)
    if version == 2:
        return _decode_v2(r, limit)
    raise PergroupError(f"per-group frame version {version} is not 1 or 2")


def _decode_v1(r: FrameReader, limit: int) -> bytes:
    (n,) = r.unpack("<I")
    if n != len(GROUPS) + 2:
        raise PergroupError(f"per-group v1 frame has {n} streams, not {len(GROUPS) + 2}")
    blobs = [r.take(k) for k in r.unpack(f"<{n}I")]
    if r.pos != len(r.data):
        raise PergroupError("per-group v1 frame has trailing bytes")
    try:  # a manifest row is a short JSON list; a permutation entry is 2 bytes per row
        manifest = json.loads(brotli_d(blobs[-2], MANIFEST_BOUND))
        perms = np.frombuffer(brotli_d(blobs[-1], 2 * MAX_ROWS * len(GROUPS)), dtype="<u2")
    except (StreamError, ValueError) as exc:
        raise PergroupError(f"per-group v1 manifest or permutations do not decode ({exc})") from None
    manifest = _check_manifest(manifest)
    sizes = {g: 0 for g, _s in GROUPS}
    for _name, rows, cols, group, _s in manifest:
        sizes[group] += rows * cols
    if sum(sizes.values()) > limit:
        raise PergroupError(f"per-group v1 frame declares {sum(sizes.values())} codes, its "
                            f"stream {limit}")
    with ThreadPoolExecutor(len(GROUPS)) as ex:
        raw = dict(zip(sizes, ex.map(lambda b, k: lrzip_decompress(b, k) if b or k else b"",
                                     blobs[:-2], sizes.values())))
    offs = {g: 0 for g, _s in GROUPS}
    pk = 0
    out = []
    for name, rows, cols, group, is_sorted in manifest:
        perm = None
        if is_sorted:
            perm = _check_perm(perms[pk:pk + rows], name)
            pk += rows
        data = raw[group][offs[group]:offs[group] + rows * cols]
        if len(data) != rows * cols:
            raise PergroupError(f"per-group v1 group {group} is too short for {name}")
        offs[group] += rows * cols
        out.append(_unlayout(data, rows, cols, perm).tobytes())
    if pk != perms.size or any(offs[g] != len(raw[g]) for g in offs):
        raise PergroupError("per-group v1 frame: streams longer than the manifest says")
    return b"".join(out)


def _decode_v2(r: FrameReader, limit: int) -> bytes:
    (n,) = r.unpack("<I")
    heads, total = [], 0
    for _ in range(n):
        (k,) = r.unpack("<H")
        name = r.take(k).decode(errors="replace")
        rows, cols = r.unpack("<II")
        total = _check_shape(name, rows, cols, total)
        if total > limit:
            raise PergroupError(f"per-group v2 frame declares more codes than its stream ({limit})")
        perm = _check_perm(np.frombuffer(r.take(2 * rows), dtype="<u2"), name)
        heads.append((name, rows, cols, perm))
    method, size = r.unpack("<BI")
    if method != METHOD_LRZIP:
        raise PergroupError(f"per-group v2 method byte {method} is not lrzip ({METHOD_LRZIP})")
    blob = lrzip_decompress(r.take(size), total)
    (rest,) = r.unpack("<I")
    r.take(rest)
    if r.pos != len(r.data):
        raise PergroupError("per-group v2 frame: sizes do not match its headers")
    offs, off = {}, 0
    for name, rows, cols, _p in sorted(heads, key=lambda h: h[0]):
        offs[name] = off
        off += rows * cols
    return b"".join(_unlayout(blob[offs[nm]:offs[nm] + rows * cols], rows, cols, perm).tobytes()
                    for nm, rows, cols, perm in heads)
