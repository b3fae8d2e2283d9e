"""Byte accounting against ground truth: the LUT's byte sum equals len(decode(ids).encode())."""
from __future__ import annotations

import gzip
import hashlib
import json
import math

import numpy as np
import pytest
import sentencepiece as spm
import torch

from conftest import OFFICIAL_TOKENIZER_SHA256
from golf.bpb import ByteLUTError, build_byte_lut, bpb_from_sums, piece_types, target_bytes
from golf.data.shards import find_shards, read_shard


def _doc_bytes(sp, lut, text):
    ids = sp.encode(text)
    seq = np.array([1] + ids)
    counted = int(target_bytes(seq[:-1], seq[1:], lut).sum())
    return counted, len(sp.decode(ids).encode("utf-8"))


def _check_docs(sp, lut, docs):
    total_counted = total_true = 0
    for i, text in enumerate(docs):
        counted, true = _doc_bytes(sp, lut, text)
        assert counted == true, f"document {i}: LUT counts {counted} bytes, decode gives {true}"
        total_counted += counted
        total_true += true
    assert total_counted == total_true > 0


@pytest.fixture(scope="module")
def official(official_tokenizer):
    sp = spm.SentencePieceProcessor()
    sp.Load(str(official_tokenizer))
    return sp, build_byte_lut(sp, 1024)


def test_official_tokenizer_identity(official_tokenizer, official):
    sp, lut = official
    assert hashlib.sha256(official_tokenizer.read_bytes()).hexdigest() == OFFICIAL_TOKENIZER_SHA256
    assert sp.vocab_size() == 1024
    assert all(sp.is_byte(i) for i in range(4, 260))
    assert (lut.base_bytes[4:260] == 1).all() and lut.is_boundary[:4].all()
    assert (lut.base_bytes[:4] == 0).all()


def test_fineweb_docs_exact(shared_data, official):
    path = shared_data / "corpora" / "fineweb_pgolf_docs200" / "verify_docs.jsonl"
    docs = [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    assert len(docs) == 200
    _check_docs(*official, docs)


def test_c4_sample_exact(shared_data, official):
    path = shared_data / "corpora" / "c4_en_olmo_sample1000" / "c4-sample.00000-of-00001.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f if line.strip()]
    assert len(docs) >= 1000
    _check_docs(*official, docs)


def test_embedded_val_exact(embedded_data):
    sp = spm.SentencePieceProcessor()
    sp.Load(str(embedded_data.tokenizer_path))
    lut = build_byte_lut(str(embedded_data.tokenizer_path), 1024)
    toks = np.concatenate([np.asarray(read_shard(p)) for p in find_shards(
        str(embedded_data.dataset_dir / "fineweb_val_*.bin"))]).astype(np.int64)
    starts = np.flatnonzero(toks == 1).tolist() + [len(toks)]
    total = 0
    for a, b in zip(starts[:-1], starts[1:]):
        ids = toks[a + 1:b].tolist()
        counted = int(target_bytes(toks[a:b - 1], toks[a + 1:b], lut).sum())
        assert counted == len(sp.decode(ids).encode("utf-8"))
        total += counted
    # whole stream at once (prev of each BOS is the last token of the previous doc)
    assert int(target_bytes(toks[:-1], toks[1:], lut).sum()) == total


def test_bos_boundary_and_special_pieces(official):
    sp, lut = official
    lead = sp.piece_to_id("▁the")
    assert lut.has_leading_space[lead]
    word = lut.base_bytes[lead]
    prev = np.array([1, 500, 2, 0, 3]); tgt = np.full(5, lead)
    np.testing.assert_array_equal(target_bytes(prev, tgt, lut), [word, word + 1, word, word, word])
    # byte-fallback pieces count 1; control/unknown pieces count 0 even after a normal token
    np.testing.assert_array_equal(target_bytes(np.array([500] * 4), np.array([4, 259, 1, 3]), lut),
                                  [1, 1, 0, 0])
    # ids beyond the sp vocab (padded embedding) are boundaries worth 0 bytes
    big = build_byte_lut(sp, 1040)
    assert big.is_boundary[1024:].all() and (big.base_bytes[1024:] == 0).all()


def test_torch_matches_numpy(official):
    _, lut = official
    rng = np.random.default_rng(0)
    prev, tgt = rng.integers(0, 1024, 500), rng.integers(0, 1024, 500)
    out = target_bytes(torch.from_numpy(prev), torch.from_numpy(tgt), lut)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), target_bytes(prev, tgt, lut))


def test_uniform_model_scores_log2_vocab(official):
    sp, lut = official
    ids = np.array([1] + sp.encode("Uniform models know nothing, so every token costs 10 bits."))
    n_tok = len(ids) - 1
    n_bytes = int(target_bytes(ids[:-1], ids[1:], lut).sum())
    logits = torch.zeros(n_tok, 1024)
    nll = float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(ids[1:]), reduction="sum"))
    loss, bpb = bpb_from_sums(nll, n_tok, n_bytes)
    assert loss == pytest.approx(math.log(1024), rel=1e-6)
    assert bpb == pytest.approx(10.0 * n_tok / n_bytes, rel=1e-6)
    with pytest.raises(ValueError):
        bpb_from_sums(1.0, 0, 10)


def _train_tiny(tmp_path, **extra):
    text = tmp_path / "t.txt"
    text.write_text("\n".join(f"line {i} of some tiny text with words and more words" for i in range(300)))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "m"), vocab_size=300,
                                   model_type="bpe", num_threads=1, minloglevel=2, byte_fallback=True,
                                   add_dummy_prefix=False, **extra)
    sp = spm.SentencePieceProcessor()
    sp.Load(str(tmp_path / "m.model"))
    return sp


def test_rejects_user_defined_pieces(tmp_path):
    sp = _train_tiny(tmp_path, user_defined_symbols=["\ue001"])
    with pytest.raises(ByteLUTError, match="user_defined"):
        build_byte_lut(sp, 300)


def test_piece_types_match_the_processor(tmp_path):
    """The proto reader agrees with every is_* query and finds the user-defined piece."""
    sp = _train_tiny(tmp_path, user_defined_symbols=["\ue001"], control_symbols=["<sep>"])
    types = piece_types(sp.serialized_model_proto())
    assert len(types) == sp.vocab_size()
    for i, t in enumerate(types):
        assert (t == 3) == sp.is_control(i) and (t == 2) == sp.is_unknown(i)
        assert (t == 6) == sp.is_byte(i) and (t == 5) == sp.is_unused(i)
    assert [sp.id_to_piece(i) for i, t in enumerate(types) if t == 4] == ["\ue001"]


class _NoSpacePiece:
    """Stand-in for a tokenizer with no standalone '▁' piece (piece_to_id falls back to unk)."""
    def vocab_size(self): return 8
    def unk_id(self): return 3
    def piece_to_id(self, piece): return 3
    def id_to_piece(self, i): return "<unk>"


def test_rejects_tokenizer_without_space_piece():
    with pytest.raises(ByteLUTError, match="standalone"):
        build_byte_lut(_NoSpacePiece(), 8)
