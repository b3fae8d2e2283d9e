"""Exact bits-per-byte: a per-token byte table and the loss -> bpb conversion.

Bytes are those of the normalized, decoded text (what `sp.decode` returns), which is what
the challenge scores; the only context-dependent term is the leading "▁", worth one
space byte unless the previous token is a control/boundary token.

A tokenizer trained on transformed text (CaseOps: user-defined operator pieces that stand for
no text of their own) cannot be scored from its pieces: its val stream must come with a byte
sidecar (`fineweb_val_bytes_*.bin`, the original-text bytes of each token), and then the
sidecar, never the table, is the denominator (`val_byte_counter` picks).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np


class ByteLUTError(ValueError):
    """A tokenizer whose pieces the standard byte table would miscount."""


@dataclass(frozen=True)
class ByteLUT:
    base_bytes: np.ndarray         # int16: UTF-8 bytes of the piece without a leading ▁
    has_leading_space: np.ndarray  # bool: piece starts with ▁
    is_boundary: np.ndarray        # bool: control/unknown/unused (and ids beyond the sp vocab)

    def torch(self, device="cpu"):
        """The three tables as torch tensors (for scoring on an accelerator)."""
        import torch
        return (torch.as_tensor(self.base_bytes.astype(np.int64), device=device),
                torch.as_tensor(self.has_leading_space, device=device),
                torch.as_tensor(self.is_boundary, device=device))


@dataclass(frozen=True)
class SidecarBytes:
    """Original-text bytes of every token of one val stream (token i -> bytes[i]; BOS and
    operator tokens 0), read from the byte sidecar. Target t is token t+1."""
    per_token: np.ndarray   # int64, same length as the val stream
    source: str


def bytes_at(tokens: np.ndarray, idx: np.ndarray, counter) -> np.ndarray:
    """Bytes of the targets `idx` (target t = tokens[t+1], predicted after tokens[t]) from a
    ByteLUT (piece table) or a SidecarBytes (per-token counts): the one dispatch point."""
    idx = np.asarray(idx, dtype=np.int64)
    if isinstance(counter, SidecarBytes):
        return counter.per_token[idx + 1]
    return target_bytes(np.asarray(tokens[idx]).astype(np.int64),
                        np.asarray(tokens[idx + 1]).astype(np.int64), counter)


def range_bytes(tokens: np.ndarray, a: int, e: int, counter) -> int:
    """Σ bytes of targets a..e-1 (see bytes_at)."""
    if isinstance(counter, SidecarBytes):
        return int(counter.per_token[a + 1:e + 1].sum())
    t = np.asarray(tokens[a:e + 1]).astype(np.int64)
    return int(np.asarray(target_bytes(t[:-1], t[1:], counter), dtype=np.int64).sum())


def user_defined_pieces(sp) -> list[int]:
    """Ids of user_defined pieces (operator symbols: the table would count their UTF-8)."""
    return [t for t in range(sp.vocab_size()) if _is_user_defined(sp, t)]


def val_byte_counter(sp, vocab_size: int, tokens: np.ndarray, sidecar: np.ndarray | None, *,
                     text_transform: str | None = None, where: str = "DATA_PATH"):
    """The byte denominator of a val stream: the sidecar when there is one, else the table.

    Rules (anchor_eval.md §1.1, §2.1): a tokenizer with user_defined pieces, or a dataset
    declaring a text transform, needs the sidecar (its pieces do not spell the original
    text), so without one it is refused. A sidecar next to a plain tokenizer must agree with
    the table on every token (a disagreement means one of them is wrong: error).
    """
    ops = user_defined_pieces(sp)
    needs = []
    if ops:
        needs.append(f"{len(ops)} user_defined pieces (e.g. {sp.id_to_piece(ops[0])!r}, id "
                     f"{ops[0]}) that stand for no text bytes")
    if text_transform:
        needs.append(f"the dataset declares text_transform {text_transform!r}")
    if sidecar is not None and len(sidecar) != len(tokens):
        raise ByteLUTError(f"{where}: byte sidecar has {len(sidecar):,} entries but the val "
                           f"stream has {len(tokens):,} tokens; it belongs to other val shards, "
                           "fetch the matching fineweb_val_bytes_*.bin")
    if needs and sidecar is None:
        raise ByteLUTError(f"{where}: the tokenizer's val bytes cannot be counted from its pieces: "
                           f"{'; '.join(needs)}; the original-text byte counts must come from a "
                           "byte sidecar fineweb_val_bytes_*.bin beside the val shards (the "
                           "variant's download ships it)")
    if sidecar is None:
        return build_byte_lut(sp, vocab_size)
    counts = SidecarBytes(np.asarray(sidecar).astype(np.int64), where)
    if not needs:
        lut = build_byte_lut(sp, vocab_size)
        toks = np.asarray(tokens).astype(np.int64)
        from_lut = np.concatenate([[0], target_bytes(toks[:-1], toks[1:], lut)])
        bad = np.flatnonzero(from_lut != counts.per_token)
        if bad.size:
            i = int(bad[0])
            raise ByteLUTError(f"{where}: byte sidecar and byte table disagree on {bad.size:,} "
                               f"tokens (first: token {i}, id {int(toks[i])}, sidecar "
                               f"{int(counts.per_token[i])} vs table {int(from_lut[i])} bytes); "
                               "the sidecar was made for other shards or another tokenizer")
    return counts


def build_byte_lut(sp_or_path, vocab_size: int) -> ByteLUT:
    """Per-token byte table for any SentencePiece model (rules: challenge README "Score").

    Refused: no standalone "▁" piece (every space would cost byte-fallback pieces, Issue
    #897) and user_defined pieces (need a sidecar). Byte-fallback pieces count exactly 1 byte
    each; control, unknown and unused pieces 0 (unk targets are refused at scoring time)."""
    sp = sp_or_path
    where = "<tokenizer>"
    if isinstance(sp_or_path, (str, os.PathLike)):
        from golf.data.tokenizer import load_tokenizer
        where = str(sp_or_path)
        sp = load_tokenizer(sp_or_path)
    n = sp.vocab_size()
    size = max(n, vocab_size)
    base = np.zeros(size, dtype=np.int16)
    lead = np.zeros(size, dtype=bool)
    boundary = np.ones(size, dtype=bool)
    space_id = sp.piece_to_id("▁")
    if space_id == sp.unk_id() or sp.id_to_piece(space_id) != "▁":
        raise ByteLUTError(f"{where}: tokenizer has no standalone '▁' piece, so space bytes "
                           "would be miscounted; retrain it with the challenge's settings")
    for t in range(n):
        if sp.is_control(t) or sp.is_unknown(t) or sp.is_unused(t):
            continue
        if _is_user_defined(sp, t):
            raise ByteLUTError(f"{where}: piece {t} ({sp.id_to_piece(t)!r}) is user_defined; the "
                               "byte table cannot count it exactly, use a byte sidecar or "
                               "a tokenizer without user_defined symbols")
        boundary[t] = False
        if sp.is_byte(t):
            base[t] = 1
            continue
        piece = sp.id_to_piece(t)
        if piece.startswith("▁"):
            lead[t] = True
            piece = piece[1:]
        base[t] = len(piece.encode("utf-8"))
    return ByteLUT(base, lead, boundary)


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
    sentencepiece does not install; this is the one fact the byte table needs from the proto.
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


def _is_user_defined(sp, t: int) -> bool:
    """Piece type from the model proto (the processor has no IsUserDefined)."""
    types = getattr(sp, "_golf_piece_types", None)
    if types is None:
        types = piece_types(sp.serialized_model_proto())
        try:
            sp._golf_piece_types = types
        except AttributeError:
            pass
    return types[t] == USER_DEFINED


def target_bytes(prev_ids, target_ids, lut: ByteLUT):
    """Bytes each target contributes: base + 1 for a leading ▁ not right after a boundary."""
    if hasattr(target_ids, "device") and not isinstance(target_ids, np.ndarray):
        base, lead, bound = lut.torch(target_ids.device)
        t = target_ids.long()
        p = prev_ids.long()
        return base[t] + (lead[t] & ~bound[p]).long()
    t = np.asarray(target_ids).astype(np.int64)
    p = np.asarray(prev_ids).astype(np.int64)
    return lut.base_bytes[t].astype(np.int64) + (lut.has_leading_space[t] & ~lut.is_boundary[p])


def bpb_from_sums(nll_sum_nats: float, n_tokens: int, n_bytes: int) -> tuple[float, float]:
    """(val_loss nats/token, val_bpb bits/byte) from summed NLL, scored targets and their bytes."""
    if n_tokens <= 0 or n_bytes <= 0:
        raise ValueError(f"cannot score: {n_tokens} tokens and {n_bytes} bytes (need > 0 of each)")
    val_loss = nll_sum_nats / n_tokens
    return val_loss, nll_sum_nats / math.log(2) / n_bytes
