"""Loading SentencePiece models with one clear error instead of a C++ abort."""
from __future__ import annotations

import os
from pathlib import Path

import sentencepiece as spm


class TokenizerError(ValueError):
    """Missing or mismatched tokenizer; the message names the file and the fix."""


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
