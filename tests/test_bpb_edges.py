"""Edges of golf/eval/bpb.py the corpus tests do not reach (found by bench.mutation): the protobuf
reader on hand-built messages (every wire type, multi-byte varints), bpb_from_sums at its
smallest valid inputs, and the torch tables following the targets' device and dtype."""
from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch

from golf.eval.bpb import ByteLUT, bpb_from_sums, target_bytes
from golf.data.tokenizer import _varint, piece_types


def _v(n: int) -> bytes:
    """Protobuf base-128 varint, written here from the spec."""
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, wire: int, payload: bytes) -> bytes:
    return _v(num << 3 | wire) + payload


@pytest.mark.parametrize("n", [0, 1, 127, 128, 129, 255, 256, 300, 16_383, 16_384, 2**35 + 5])
def test_varint_reads_every_length(n):
    buf = b"\x07" + _v(n) + b"\x09"
    assert _varint(buf, 1) == (n, 1 + len(_v(n)))
    assert _varint(bytes([0x80, 0x01]), 0) == (128, 2)      # 0x80 continues, never ends


def test_piece_types_skips_every_wire_type():
    """A ModelProto (field 1 = pieces: piece 1 string, 2 float score, 3 varint type) with
    unknown fields of wire types 0, 1, 2 and 5 between and inside the pieces."""
    def piece(text: str, kind: int | None, extra: bytes = b"", after: bytes = b"") -> bytes:
        body = _field(1, 2, _v(len(text.encode())) + text.encode())
        body += _field(2, 5, struct.pack("<f", -1.5)) + extra
        if kind is not None:
            body += _field(3, 0, _v(kind))
        body += after
        return _field(1, 2, _v(len(body)) + body)
    junk = (_field(7, 0, _v(300)) + _field(8, 1, struct.pack("<d", 2.0))
            + _field(9, 5, struct.pack("<f", 1.0)) + _field(10, 2, _v(3) + b"abc"))
    proto = (junk + piece("<unk>", 2, _field(6, 1, b"\x80" * 8)) + piece("a", None)
             + _field(11, 0, _v(2**40)) + piece("<0x41>", 6, _field(7, 0, _v(128))) + junk
             + piece("b", 4, after=_field(4, 0, _v(5))) + piece("x" * 200, 1))
    assert piece_types(proto) == [2, 1, 6, 4, 1]  # field 4 (a varint) after the type is not it
    with pytest.raises(ValueError, match="wire type 3"):
        piece_types(_field(5, 3, b""))


def test_bpb_from_sums_at_the_smallest_valid_inputs():
    assert bpb_from_sums(2.0, 1, 1) == (2.0, 2.0 / math.log(2))
    assert bpb_from_sums(3.0, 2, 1) == (1.5, 3.0 / math.log(2))
    for tokens, n_bytes in ((0, 5), (5, 0), (-1, 5), (5, -1)):
        with pytest.raises(ValueError, match="cannot score"):
            bpb_from_sums(1.0, tokens, n_bytes)


def test_torch_tables_follow_the_targets_device_and_count_in_int64():
    lut = ByteLUT(np.array([0, 3, 2, 1], dtype=np.int16), np.array([False, True, True, False]),
                  np.array([True, False, False, False]))
    prev = torch.tensor([0, 1, 2, 3])
    tgt = torch.tensor([1, 2, 1, 3])
    out = target_bytes(prev, tgt, lut)
    assert out.dtype == torch.int64 and out.tolist() == [3, 3, 4, 1]
    base, lead, bound = lut.torch("meta")
    assert {base.device.type, lead.device.type, bound.device.type} == {"meta"}
    assert base.dtype == torch.int64 and lead.dtype == torch.bool and bound.dtype == torch.bool
    meta = target_bytes(prev.to("meta"), tgt.to("meta"), lut)
    assert meta.device.type == "meta" and meta.shape == (4,) and meta.dtype == torch.int64
