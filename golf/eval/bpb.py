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
from typing import Any, Callable

import numpy as np
import torch

from golf.data.tokenizer import is_user_defined, load_tokenizer, user_defined_pieces
from golf.run.errors import ByteLUTError, EvalError

# Bytes of the official 50k-doc FineWeb val split (sp1024), back-computed from official logs.
OFFICIAL_VAL_BYTES = 151_080_168
OFFICIAL_VAL_TARGETS_SP1024 = 62_021_845   # untruncated stream (62,021,846 tokens) - 1
# (vocab, scored from a sidecar) -> (val targets as logged, val bytes back-computed from the
# records' logs): the sanity figure each variant's check prints.
REFERENCE_VAL = {(1024, False): (OFFICIAL_VAL_TARGETS_SP1024, OFFICIAL_VAL_BYTES),
                 (4096, False): (45_508_608, 151_073_877),
                 (8192, False): (40_540_160, 151_078_218),
                 (8192, True): (47_853_343, 151_074_495)}


@dataclass(frozen=True)
class ByteLUT:
    base_bytes: np.ndarray         # int16: UTF-8 bytes of the piece without a leading ▁
    has_leading_space: np.ndarray  # bool: piece starts with ▁
    is_boundary: np.ndarray        # bool: control/unknown/unused (and ids beyond the sp vocab)

    def torch(self, device):
        """The three tables as torch tensors on `device` (the targets' device: scoring on an
        accelerator)."""
        return (torch.as_tensor(self.base_bytes.astype(np.int64), device=device),
                torch.as_tensor(self.has_leading_space, device=device),
                torch.as_tensor(self.is_boundary, device=device))


@dataclass(frozen=True)
class SidecarBytes:
    """Original-text bytes of every token of one val stream (token i -> bytes[i]; BOS and
    operator tokens 0), read from the byte sidecar. Target t is token t+1."""
    per_token: np.ndarray   # int64, same length as the val stream


def bytes_at(tokens: np.ndarray, idx: np.ndarray, counter) -> np.ndarray:
    """Bytes of the targets `idx` (target t = tokens[t+1], predicted after tokens[t]) from a
    ByteLUT (piece table) or a SidecarBytes (per-token counts): the one dispatch point."""
    idx = np.asarray(idx, dtype=np.int64)
    if isinstance(counter, SidecarBytes):
        return counter.per_token[idx + 1]
    return target_bytes(np.asarray(tokens[idx]), np.asarray(tokens[idx + 1]), counter)


def range_bytes(tokens: np.ndarray, a: int, e: int, counter) -> int:
    """Σ bytes of targets a..e-1 (see bytes_at)."""
    if isinstance(counter, SidecarBytes):
        return int(counter.per_token[a + 1:e + 1].sum())
    t = np.asarray(tokens[a:e + 1])
    return int(target_bytes(t[:-1], t[1:], counter).sum())   # int64 counts (target_bytes)


def val_byte_counter(sp, vocab_size: int, tokens: np.ndarray, sidecar: np.ndarray | None, *,
                     text_transform: str | None = None, where: str = "DATA_PATH"):
    """The byte denominator of a val stream: the sidecar when there is one, else the table.

    Rules: a tokenizer with user_defined pieces, or a dataset declaring a text transform,
    needs the sidecar (its pieces do not spell the original text), so without one it is
    refused. A sidecar next to a plain tokenizer must agree with the table on every token
    (a disagreement means one of them is wrong: error).
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
    counts = SidecarBytes(np.asarray(sidecar).astype(np.int64))
    if not needs:
        lut = build_byte_lut(sp, vocab_size)
        toks = np.asarray(tokens)
        from_lut = np.concatenate([[0], target_bytes(toks[:-1], toks[1:], lut)])
        bad = np.flatnonzero(from_lut != counts.per_token)
        if bad.size:
            i = int(bad[0])
            raise ByteLUTError(f"{where}: byte sidecar and byte table disagree on {bad.size:,} "
                               f"tokens (first: token {i}, id {int(toks[i])}, sidecar "
                               f"{int(counts.per_token[i])} vs table {int(from_lut[i])} bytes); "
                               "the sidecar was made for other shards or another tokenizer")
    return counts


# ----------------------------------------------------------------------------- byte rules
@dataclass(frozen=True)
class PieceRule:
    """What one kind of piece counts as (challenge README "Score"): `count(sp, id, where)` gives
    (bytes without a leading ▁, has a leading ▁), None for a boundary (0 bytes; a ▁ after it is
    no space), or raises ByteLUTError to refuse the tokenizer."""
    applies: Callable[[Any, int], bool]
    count: Callable[[Any, int, str], "tuple[int, bool] | None"]


def _refuse_user_defined(sp: Any, t: int, where: str) -> None:
    raise ByteLUTError(f"{where}: piece {t} ({sp.id_to_piece(t)!r}) is user_defined; the "
                       "byte table cannot count it exactly, use a byte sidecar or "
                       "a tokenizer without user_defined symbols")


def _text_bytes(sp: Any, t: int, where: str) -> tuple[int, bool]:
    piece = sp.id_to_piece(t)
    lead = piece.startswith("▁")
    return len((piece[1:] if lead else piece).encode("utf-8")), lead


# The byte rules, declared once: build_byte_lut counts a piece by the first rule that applies.
# boundary: control / unknown / unused (unk targets are refused at scoring time); user_defined:
# refused (a byte sidecar counts them); byte: a byte-fallback piece is 1 byte; text: the rest.
PIECE_RULES: dict[str, PieceRule] = {
    "boundary": PieceRule(lambda sp, t: sp.is_control(t) or sp.is_unknown(t) or sp.is_unused(t),
                          lambda sp, t, where: None),
    "user_defined": PieceRule(is_user_defined, _refuse_user_defined),
    "byte": PieceRule(lambda sp, t: sp.is_byte(t), lambda sp, t, where: (1, False)),
    "text": PieceRule(lambda sp, t: True, _text_bytes),
}


def build_byte_lut(sp_or_path, vocab_size: int) -> ByteLUT:
    """Per-token byte table for any SentencePiece model: each piece counted by the first of
    PIECE_RULES that applies. Refused: no standalone "▁" piece (every space would cost
    byte-fallback pieces, Issue #897)."""
    sp = sp_or_path
    where = "<tokenizer>"
    if isinstance(sp_or_path, (str, os.PathLike)):
        where = str(sp_or_path)
        sp = load_tokenizer(sp_or_path)
    n = sp.vocab_size()
    size = max(n, vocab_size)
    base = np.zeros(size, dtype=np.int16)
    lead = np.zeros(size, dtype=bool)
    boundary = np.ones(size, dtype=bool)
    space_id = sp.piece_to_id("▁")
    if space_id == sp.unk_id():  # SentencePiece's piece_to_id of a missing piece
        raise ByteLUTError(f"{where}: tokenizer has no standalone '▁' piece, so space bytes "
                           "would be miscounted; retrain it with the challenge's settings")
    rules = tuple(PIECE_RULES.values())   # read at call time: a rule added there counts
    for t in range(n):
        counted = next(r for r in rules if r.applies(sp, t)).count(sp, t, where)
        if counted is not None:
            boundary[t] = False
            base[t], lead[t] = counted
    return ByteLUT(base, lead, boundary)


def target_bytes(prev_ids, target_ids, lut: ByteLUT):
    """Bytes each target contributes: base + 1 for a leading ▁ not right after a boundary
    (int64, from ids of any integer dtype, numpy or torch)."""
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


# ----------------------------------------------------------------------------- ground truth
def decoded_target_bytes(sp: Any, tokens: np.ndarray, n_targets: int) -> int:
    """UTF-8 length of the text the first `n_targets` targets decode to (ground truth).

    Targets are tokens[1:n+1]. Split at control/unknown tokens (BOS etc.: they add no text)
    and decode each segment with SentencePiece. Two exact corrections at the edges:
    the decoder drops a leading '▁' of a segment's first piece, which the scorer counts as a
    space when the token before it is ordinary text (only possible at the stream start or
    after a cut byte run); and a run of byte-fallback pieces cut by the range edge would
    decode to U+FFFD, so edge byte runs are counted as one byte per piece.
    """
    ids = np.asarray(tokens[: n_targets + 1]).astype(np.int64)
    vocab = sp.get_piece_size()
    if ids.size and int(ids.max()) >= vocab:
        raise EvalError(f"token id {int(ids.max())} >= tokenizer vocab {vocab}: the shards were "
                        "made with another tokenizer; pass the matching --tokenizer")
    special = np.array([sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i)
                        for i in range(vocab)], dtype=bool)
    is_byte = np.array([sp.is_byte(i) for i in range(vocab)], dtype=bool)
    lead = np.array([sp.id_to_piece(i).startswith("\u2581") for i in range(vocab)], dtype=bool)

    tgt = ids[1:]
    cuts = np.flatnonzero(special[tgt])               # positions (in tgt) of segment separators
    bounds = np.concatenate([[-1], cuts, [len(tgt)]])
    segs = [(int(bounds[i]), int(bounds[i] + 1), int(bounds[i + 1]))
            for i in range(len(bounds) - 1) if bounds[i + 1] > bounds[i] + 1]
    total = 0
    texts: list[list[int]] = []
    for k, (sep, a, b) in enumerate(segs):
        before = int(ids[0]) if sep < 0 else int(tgt[sep])   # token preceding the segment
        if k == 0 and not special[before] and is_byte[before]:
            run = a
            while run < b and is_byte[tgt[run]]:
                run += 1
            total += run - a
            if run > a:
                before = int(tgt[run - 1])
            a = run
        if k == len(segs) - 1 and a < b:
            run = b
            while run > a and is_byte[tgt[run - 1]]:
                run -= 1
            total += b - run
            b = run
        if a < b:
            if lead[tgt[a]] and not special[before]:
                total += 1
            texts.append(tgt[a:b].tolist())
    if texts:
        total += sum(len(t.encode("utf-8")) for t in sp.decode(texts))
    return total


def lut_target_bytes(tokens: np.ndarray, n_targets: int, lut: Any) -> int:
    """Σ bytes of the first n_targets targets (what the scorer's denominator will be), from
    the piece table or the byte sidecar."""
    return range_bytes(tokens, 0, n_targets, lut)


def _reference(vocab: int, sidecar: bool, n_targets: int) -> str:
    ref = REFERENCE_VAL.get((vocab, sidecar))
    if ref and abs(n_targets - ref[0]) < 0.01 * ref[0]:
        return f" official_reference_bytes:{ref[1]:,}"
    return ""


def check_bytes(sp: Any, tokens: np.ndarray, n_targets: int, lut: Any,
                log: Callable[[str], None] | None = print, source: str = "") -> int:
    """Raise unless the scorer's bytes == the decoded text's UTF-8 bytes; print both (and the
    official reference of the variant when the stream is the full val split).

    With a byte sidecar the ground truth is the decoded text less the operator
    (user_defined) pieces, which stand for no text. Targets that are <unk> are refused: the
    text they replaced is lost, so no byte count of it is exact (retrain with byte_fallback).
    """
    sidecar = isinstance(lut, SidecarBytes)
    counted = lut_target_bytes(tokens, n_targets, lut)
    dec = decoded_target_bytes(sp, tokens, n_targets)
    tgt = np.asarray(tokens[1:n_targets + 1]).astype(np.int64)
    n_unk = int((tgt == sp.unk_id()).sum())
    if n_unk:
        raise EvalError(f"{source or 'the val tokens'}: {n_unk:,} scored targets are <unk> "
                        "(the tokenizer has no byte fallback), so the text behind them is lost "
                        "and no byte count is exact; use a tokenizer trained with "
                        "byte_fallback=True (python -m golf.data.prepare tokenizer)")
    ops = user_defined_pieces(sp)
    if sidecar and ops:
        op_len = np.zeros(sp.get_piece_size(), dtype=np.int64)
        op_len[ops] = [len(sp.id_to_piece(i).encode("utf-8")) for i in ops]
        dec -= int(op_len[tgt].sum())
    if log:
        kind = "sidecar_bytes" if sidecar else "lut_bytes"
        log(f"byte_check {kind}:{counted:,} decoded_utf8_bytes:{dec:,}"
            f"{_reference(sp.get_piece_size(), sidecar, n_targets)}")
    if counted != dec:
        what = "the byte sidecar" if sidecar else "the byte LUT"
        raise EvalError(f"byte check failed for {source or 'the val tokens'}: {what} counts "
                        f"{counted:,} bytes but the decoded text is {dec:,} UTF-8 bytes; the "
                        "tokenizer (or sidecar) does not match the shards (fix TOKENIZER_PATH / "
                        "--tokenizer), or pass --skip-byte-check to score anyway")
    return dec
