"""Loading SentencePiece models with one clear error instead of a C++ abort; piece types."""
from __future__ import annotations

import os
from pathlib import Path

import sentencepiece as spm

from golf.run.errors import TokenizerError


def load_tokenizer(path: str | os.PathLike, expected_vocab: int | None = None) -> spm.SentencePieceProcessor:
    """Load a .model file; check its vocabulary size matches what the model expects."""
    p = Path(path)
    if not p.is_file():
        raise TokenizerError(f"{p}: tokenizer file not found; run `python -m golf.data.prepare "
                             "embedded` (or fineweb) or fix TOKENIZER_PATH")
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(str(p))
    except Exception as exc:
        raise TokenizerError(f"{p}: not a valid SentencePiece model ({exc}); fix TOKENIZER_PATH") from None
    if expected_vocab is not None and sp.vocab_size() != expected_vocab:
        raise TokenizerError(f"{p}: tokenizer vocab size {sp.vocab_size()} != expected "
                             f"{expected_vocab}; set VOCAB_SIZE={sp.vocab_size()} or use the "
                             "matching tokenizer")
    return sp


USER_DEFINED = 4  # ModelProto.SentencePiece.Type.USER_DEFINED


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    """Protobuf base-128 varint at buf[i]: (value, next index)."""
    value, shift = 0, 0
    while True:
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return value, i
        shift += 7


def _skip_field(buf: bytes, i: int, wire: int) -> int:
    if wire == 0:
        return _varint(buf, i)[1]
    if wire == 1:
        return i + 8
    if wire == 2:
        n, i = _varint(buf, i)
        return i + n
    if wire == 5:
        return i + 4
    raise ValueError(f"unsupported protobuf wire type {wire}")


def piece_types(model_proto: bytes) -> list[int]:
    """Type of every piece (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).

    Read straight from the serialized ModelProto (field 1 = repeated pieces, piece field 3 =
    type, default NORMAL) because sentencepiece's own generated reader needs protobuf, which
    sentencepiece does not install.
    """
    types: list[int] = []
    i, end = 0, len(model_proto)
    while i < end:
        key, i = _varint(model_proto, i)
        field, wire = key >> 3, key & 7
        if field == 1 and wire == 2:
            n, i = _varint(model_proto, i)
            j, stop, kind = i, i + n, 1
            while j < stop:
                k2, j = _varint(model_proto, j)
                if k2 >> 3 == 3 and k2 & 7 == 0:
                    kind, j = _varint(model_proto, j)
                else:
                    j = _skip_field(model_proto, j, k2 & 7)
            types.append(kind)
            i = stop
        else:
            i = _skip_field(model_proto, i, wire)
    return types


def is_user_defined(sp, t: int) -> bool:
    """Piece type from the model proto (the processor has no IsUserDefined)."""
    types = getattr(sp, "_golf_piece_types", None)
    if types is None:
        types = piece_types(sp.serialized_model_proto())
        try:
            sp._golf_piece_types = types
        except AttributeError:
            pass
    return types[t] == USER_DEFINED


def user_defined_pieces(sp) -> list[int]:
    """Ids of user_defined pieces (operator symbols: the table would count their UTF-8)."""
    return [t for t in range(sp.vocab_size()) if is_user_defined(sp, t)]
