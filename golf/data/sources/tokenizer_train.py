"""Training a challenge-settings SentencePiece BPE: `python -m golf.data.prepare tokenizer`.

Kept apart from golf/data/tokenizer.py (loading, shipped in train_gpt.py): a submission trains
on given shards with a given tokenizer, so training one never ships.
"""
from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path
from typing import Sequence

import sentencepiece as spm

from golf.run.atomic import atomic_write_bytes, file_sha256
from golf.data.sources.text import iter_text_docs
from golf.data.tokenizer import load_tokenizer
from golf.run.errors import PrepareError

TRAINER_SETTINGS = dict(
    model_type="bpe", vocab_size=1024, byte_fallback=True, normalization_rule_name="nmt_nfkc",
    add_dummy_prefix=False, remove_extra_whitespaces=True, split_digits=True,
    character_coverage=0.999, pad_id=0, bos_id=1, eos_id=2, unk_id=3, hard_vocab_limit=False,
    max_sentencepiece_length=16, num_threads=1, shuffle_input_sentence=False,
    input_sentence_size=0, seed_sentencepiece_size=1_000_000, minloglevel=2,
)


def train_tokenizer(docs: list[str], model_path: Path, vocab_size: int = 1024,
                    user_defined_symbols: Sequence[str] = ()) -> None:
    """Train a challenge-settings BPE model; write .model/.vocab atomically.

    Input comes from an iterator and the model from a writer, so no temp path is recorded
    in the model's trainer spec (same inputs -> same bytes). `user_defined_symbols` are
    operator pieces (a CaseOps-style transform): text made with them needs a byte sidecar.
    """
    model_path.parent.mkdir(parents=True, exist_ok=True)
    lines = [line[:4000] for d in docs for line in d.splitlines() if line.strip()]
    if not lines:
        raise PrepareError(f"{model_path}: no text to train the tokenizer on; pass non-empty --input")
    extra = {"user_defined_symbols": list(user_defined_symbols)} if user_defined_symbols else {}
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf,
                                       **{**TRAINER_SETTINGS, "vocab_size": vocab_size, **extra})
    except RuntimeError as exc:
        raise PrepareError(f"{model_path}: SentencePiece could not train a {vocab_size}-piece "
                           f"model on this text ({exc}); pass more --input text or a smaller "
                           "--vocab") from None
    model = buf.getvalue()
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(model)
    vocab = "".join(f"{sp.id_to_piece(i)}\t{sp.GetScore(i):g}\n" for i in range(sp.vocab_size()))
    atomic_write_bytes(model_path.with_suffix(".vocab"), vocab.encode("utf-8"))
    atomic_write_bytes(model_path, model)


def prepare_tokenizer(inputs: Sequence[str | Path], vocab_size: int, out: str | Path, *,
                      force: bool = False) -> Path:
    """`prepare tokenizer`: a challenge-settings BPE of `vocab_size` pieces on the user's text
    (same text, same .model bytes), for `prepare text` to build sp4096/sp8192 shards with.
    An existing model is kept unless `force` (nothing is overwritten by surprise)."""
    out = Path(out)
    if out.suffix != ".model":
        raise PrepareError(f"{out}: the tokenizer path must end in .model; fix --out")
    if out.exists() and not force:
        raise PrepareError(f"{out}: already exists; pass --force to replace it or another --out")
    if vocab_size < 260 + 4 or vocab_size > 65536:
        raise PrepareError(f"--vocab {vocab_size}: must be in 264..65536 (4 special + 256 byte "
                           "pieces, and token ids must fit the shards' uint16)")
    docs = list(iter_text_docs(inputs))
    with tempfile.TemporaryDirectory() as tmp:   # check the size before touching `out`
        trial = Path(tmp) / out.name
        train_tokenizer(docs, trial, vocab_size)
        got = load_tokenizer(trial).vocab_size()
        if got != vocab_size:
            raise PrepareError(f"{', '.join(map(str, inputs))}: this text supports only {got} "
                               f"pieces, {vocab_size} requested; pass more --input text or "
                               f"--vocab {got}")
        atomic_write_bytes(out.with_suffix(".vocab"), trial.with_suffix(".vocab").read_bytes())
        atomic_write_bytes(out, trial.read_bytes())
    return out


def add_parser(sub) -> argparse.ArgumentParser:
    k = sub.add_parser("tokenizer", help="train a challenge-settings BPE of any vocabulary size")
    k.add_argument("--vocab", type=int, required=True)
    k.add_argument("--input", nargs="+", required=True)
    k.add_argument("--out", default=None, help="default ROOT/tokenizers/fineweb_<vocab>_bpe.model")
    k.add_argument("--root", default="./data")
    k.add_argument("--force", action="store_true", help="replace an existing --out")
    return k


def run(args: argparse.Namespace) -> None:
    out = args.out or Path(args.root) / "tokenizers" / f"fineweb_{args.vocab}_bpe.model"
    p = prepare_tokenizer(args.input, args.vocab, out, force=args.force)
    print(f"tokenizer {p} sha256 {file_sha256(p)}")
