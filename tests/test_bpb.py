"""Byte accounting against ground truth: the LUT's byte sum equals len(decode(ids).encode())."""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import re

import numpy as np
import pytest
import sentencepiece as spm
import torch

from conftest import OFFICIAL_TOKENIZER_SHA256
from golf.eval.bpb import ByteLUTError, build_byte_lut, bpb_from_sums, target_bytes
from golf.data.shards import find_shards, read_shard
from golf.data.tokenizer import piece_types


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
    """Refused from a processor or from a file; given a file, the error names it."""
    sp = _train_tiny(tmp_path, user_defined_symbols=["\ue001"])
    with pytest.raises(ByteLUTError, match="user_defined"):
        build_byte_lut(sp, 300)
    path = tmp_path / "m.model"
    with pytest.raises(ByteLUTError, match="user_defined") as e:
        build_byte_lut(path, 300)
    assert str(e.value).startswith(f"{path}:")


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


# ----------------------------------------------------------------------------- every tokenizer
def _held_tokenizers() -> list[str]:
    from conftest import SHARED_DATA
    root = SHARED_DATA / "tokenizers"
    found = sorted(str(p.relative_to(root)) for p in root.rglob("*.model")) if root.is_dir() else []
    return found or ["<none: ../shared/data/tokenizers missing>"]


def _corpus_docs(shared_data, corpus: str) -> list[str]:
    if corpus == "fineweb":
        path = shared_data / "corpora" / "fineweb_pgolf_docs200" / "verify_docs.jsonl"
        return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    path = shared_data / "corpora" / "c4_en_olmo_sample1000" / "c4-sample.00000-of-00001.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()][:300]


def _decoded_without_unk(sp, ids: list[int]) -> int:
    """Ground truth by SentencePiece's own decoder: the text of the pieces between <unk>s
    (an <unk> replaced text that is gone; the decoder would print ' ⁇ ' for it)."""
    total, seg = 0, []
    for i in ids + [sp.unk_id()]:
        if i == sp.unk_id():
            if seg:
                total += len(sp.decode(seg).encode("utf-8"))
            seg = []
        else:
            seg.append(i)
    return total


@pytest.mark.parametrize("corpus", ["fineweb", "c4"])
@pytest.mark.parametrize("name", _held_tokenizers())
def test_every_held_tokenizer_table_is_exact(shared_data, name, corpus):
    """LUT bytes == decoded UTF-8 bytes, document by document, for every tokenizer we hold;
    a tokenizer without byte fallback emits <unk>, and the scorer refuses such a stream."""
    from golf.eval.bpb import check_bytes
    from golf.eval.score import EvalError
    path = shared_data / "tokenizers" / name
    if not path.is_file():
        pytest.skip(f"{path} missing")
    sp = spm.SentencePieceProcessor(model_file=str(path))
    lut = build_byte_lut(sp, sp.vocab_size())
    stream, n_unk = [], 0
    for i, text in enumerate(_corpus_docs(shared_data, corpus)):
        ids = sp.encode(text)
        seq = np.array([1] + ids)
        counted = int(target_bytes(seq[:-1], seq[1:], lut).sum())
        truth = _decoded_without_unk(sp, ids)
        assert counted == truth, f"{name} {corpus} doc {i}: table {counted}, decoded {truth}"
        n_unk += ids.count(sp.unk_id())
        if ids.count(sp.unk_id()) == 0:
            assert counted == len(sp.decode(ids).encode("utf-8"))
        stream.extend(seq.tolist())
    toks = np.array(stream)
    if n_unk == 0:
        assert check_bytes(sp, toks, len(toks) - 1, lut, log=None) == int(
            target_bytes(toks[:-1], toks[1:], lut).sum())
    else:
        with pytest.raises(EvalError, match="<unk>"):
            check_bytes(sp, toks, len(toks) - 1, lut, log=None)


def test_byte_fallback_pieces_count_one_byte_each(official):
    """A character outside the vocabulary becomes one byte piece per UTF-8 byte, each 1."""
    sp, lut = official
    ch = "\u9f98"                                   # a 3-byte CJK character, not a piece
    ids = sp.encode(ch)
    assert [sp.is_byte(i) for i in ids] == [True, True, True]
    seq = np.array([1] + ids)
    assert int(target_bytes(seq[:-1], seq[1:], lut).sum()) == len(ch.encode()) == 3


# ----------------------------------------------------------------------------- byte sidecar
TITLE, ALLCAPS = "\ue001", "\ue002"     # CaseOps-like operator pieces (no text of their own)


def _case_transform(text: str) -> str:
    """Lossless case transform: TITLE before a capitalized word, ALLCAPS before an all-caps
    one, the word lowercased (ASCII only, so lowercasing keeps every byte count)."""
    out = []
    for w in text.split(" "):
        if len(w) > 1 and w.isupper():
            out.append(ALLCAPS + w.lower())
        elif w[:1].isupper():
            out.append(TITLE + w.lower())
        else:
            out.append(w)
    return " ".join(out)


def _caseops_docs(n: int) -> list[str]:
    rng = np.random.default_rng(1)
    words = ["the", "River", "NASA", "flows", "North", "into", "a", "Sea", "of", "USA", "data",
             "Paris", "and", "small", "Boats", "carry", "IBM", "cargo", "every", "Day"]
    return [" ".join(rng.choice(words, size=int(rng.integers(5, 30)))) for _ in range(n)]


def _independent_sidecar(sp, toks: np.ndarray) -> np.ndarray:
    """Original-text bytes per token, written from the transform's definition: operators and
    BOS 0, byte pieces 1, other pieces their UTF-8 with ▁ as one space (no ▁ after BOS)."""
    out = np.zeros(len(toks), dtype=np.int64)
    for i, t in enumerate(toks.tolist()):
        piece = sp.id_to_piece(t)
        if sp.is_control(t) or piece in (TITLE, ALLCAPS):
            continue
        if sp.is_byte(t):
            out[i] = 1
            continue
        if i and toks[i - 1] == 1 and piece.startswith("▁"):
            piece = piece[1:]
        out[i] = len(piece.replace("▁", " ").encode("utf-8"))
    return out


@pytest.fixture(scope="module")
def caseops_data(tmp_path_factory):
    """A tiny CaseOps-like dataset: tokenizer with operator pieces trained on transformed
    text, val/train shards of transformed text, the val byte sidecar and a manifest."""
    from golf.run.atomic import atomic_write_json
    from golf.data.sources.splits import encode_docs
    from golf.data.sources.tokenizer_train import train_tokenizer
    from golf.data.shards import write_shard
    root = tmp_path_factory.mktemp("caseops")
    docs = _caseops_docs(240)
    model = root / "tok" / "caseops_320.model"
    train_tokenizer([_case_transform(d) for d in docs[40:]], model, 320,
                    user_defined_symbols=[TITLE, ALLCAPS])
    sp = spm.SentencePieceProcessor(model_file=str(model))
    ds = root / "ds"
    val = encode_docs(sp, [_case_transform(d) for d in docs[:40]])
    write_shard(ds / "fineweb_val_000000.bin", val)
    write_shard(ds / "fineweb_train_000000.bin", encode_docs(sp, [_case_transform(d) for d in docs[40:]]))
    write_shard(ds / "fineweb_val_bytes_000000.bin", _independent_sidecar(sp, val))
    atomic_write_json(ds / "manifest.json", {"name": "ds", "text_transform": "case_ops_test"})
    return sp, model, ds, val, docs[:40]


def test_caseops_sidecar_scores_the_original_bytes(caseops_data):
    """val bytes = the untransformed documents' UTF-8 bytes; the table would count each
    operator as 3 bytes (the #2071 inflation), and the sidecar path never uses it."""
    from golf.eval.bpb import SidecarBytes
    from golf.eval.score import Scoring, evaluate_bpb, load_eval_data
    from golf.model.gpt import GPT
    from conftest import tiny_pipeline_config
    sp, model, ds, val, originals = caseops_data
    original = sum(len(d.encode("utf-8")) for d in originals)
    ops = int(np.isin(val, [sp.piece_to_id(TITLE), sp.piece_to_id(ALLCAPS)]).sum())
    assert ops > 40 and all(sp.id_to_piece(sp.piece_to_id(o)) == o for o in (TITLE, ALLCAPS))
    lines: list[str] = []
    ed = load_eval_data(str(ds), str(model), 320, log=lines.append)
    assert isinstance(ed.lut, SidecarBytes)
    assert ed.decoded_bytes == original and "sidecar_bytes:" in lines[0]
    cfg = tiny_pipeline_config(type("D", (), {"dataset_dir": ds, "tokenizer_path": model})(),
                               vocab_size=320)
    torch.manual_seed(0)
    res = evaluate_bpb(GPT(cfg), ed.tokens, ed.lut, Scoring(seq_len=64))
    assert res.bytes == original
    # what the piece table would have said: operator pieces at 3 UTF-8 bytes each
    table_guess = sum(len(sp.id_to_piece(int(t)).replace("▁", " ").encode()) for t in val[1:]
                      if not sp.is_control(int(t)))
    assert table_guess > original + 2 * ops


def test_operator_pieces_without_sidecar_are_refused(caseops_data, tmp_path):
    import shutil
    from golf.eval.bpb import ByteLUTError
    from golf.eval.score import load_eval_data
    sp, model, ds, _, _ = caseops_data
    bare = tmp_path / "bare"
    shutil.copytree(ds, bare)
    (bare / "fineweb_val_bytes_000000.bin").unlink()
    with pytest.raises(ByteLUTError, match="user_defined pieces.*sidecar"):
        load_eval_data(str(bare), str(model), 320, log=None)


def test_sidecar_that_disagrees_with_the_table_is_an_error(official, tmp_path):
    """A plain tokenizer's sidecar must equal the table token for token; when it does, the
    sidecar is what is scored; one wrong entry is refused, as is a text transform with no
    sidecar and a sidecar of the wrong length."""
    from golf.eval.bpb import SidecarBytes, bytes_at, val_byte_counter
    sp, lut = official
    toks = np.concatenate([[1] + sp.encode(t) for t in ("Hello there, world.", "Second doc ok")])
    good = np.concatenate([[0], target_bytes(toks[:-1], toks[1:], lut)])
    got = val_byte_counter(sp, 1024, toks, good.astype(np.uint16))   # as read from the file
    assert isinstance(got, SidecarBytes) and int(got.per_token.sum()) == int(good.sum())
    idx = np.arange(len(toks) - 1)
    from_sidecar, from_table = bytes_at(toks, idx, got), bytes_at(toks, idx, lut)
    assert np.array_equal(from_sidecar, from_table) and from_sidecar.dtype == from_table.dtype
    bad = good.copy()
    bad[5] += 1
    with pytest.raises(ByteLUTError, match="disagree on 1 tokens.*token 5"):
        val_byte_counter(sp, 1024, toks, bad)
    with pytest.raises(ByteLUTError, match="entries but the val stream"):
        val_byte_counter(sp, 1024, toks, good[:-1])
    with pytest.raises(ByteLUTError, match="text_transform 'lower'"):
        val_byte_counter(sp, 1024, toks, None, text_transform="lower")
    assert isinstance(val_byte_counter(sp, 1024, toks, None), type(lut))


def test_operator_error_names_the_setting_and_a_real_operator_piece(caseops_data):
    """Without a sidecar the refusal names DATA_PATH (what to fix) and, as its example, a
    piece and the id that piece really has, of a user_defined piece."""
    from golf.eval.bpb import val_byte_counter
    from golf.data.tokenizer import is_user_defined
    sp, _, _, val, _ = caseops_data
    with pytest.raises(ByteLUTError, match="user_defined pieces") as e:
        val_byte_counter(sp, 320, val, None)
    msg = str(e.value)
    assert msg.startswith("DATA_PATH:")
    m = re.search(r"\(e\.g\. ('.+?'), id (\d+)\)", msg)  # the piece as repr() writes it
    assert m, msg
    assert repr(sp.id_to_piece(int(m.group(2)))) == m.group(1) and is_user_defined(sp, int(m.group(2)))


def _doc_ids(sp) -> list[list[int]]:
    """Documents as ids; the last starts with a ▁ piece (which encode never puts first)."""
    docs = ["Hello there, world.", "Second doc: caf\u00e9 \u9f98 ok", "x"]
    the = sp.piece_to_id("\u2581the")
    return [sp.encode(t) for t in docs] + [[the, the, sp.piece_to_id("\u2581a")]]


def test_bytes_at_and_range_bytes_count_target_t_as_token_t_plus_1(official):
    """Any targets (unsorted, repeated, none) and any inner range, from the table and from a
    sidecar: the bytes written from the pieces' definition (_independent_sidecar: ▁ one space,
    none after BOS, byte pieces 1; its per-document sums are the decoded text's), target t
    being token t+1; an arbitrary sidecar is read at t+1 too."""
    from golf.eval.bpb import SidecarBytes, bytes_at, range_bytes
    sp, lut = official
    docs = _doc_ids(sp)
    toks = np.concatenate([[1] + d for d in docs]).astype(np.int64)
    truth = _independent_sidecar(sp, toks)
    starts = np.flatnonzero(toks == 1).tolist() + [len(toks)]
    assert [int(truth[a:b].sum()) for a, b in zip(starts[:-1], starts[1:])] == \
        [len(sp.decode(d).encode()) for d in docs]
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.permutation(len(toks) - 1), rng.integers(0, len(toks) - 1, 20)])
    marks = SidecarBytes(np.arange(len(toks), dtype=np.int64) * 7 + 3)
    for counter, per_token in ((lut, truth), (SidecarBytes(truth), truth), (marks, marks.per_token)):
        np.testing.assert_array_equal(bytes_at(toks, idx, counter), per_token[idx + 1])
        np.testing.assert_array_equal(bytes_at(toks, idx.tolist(), counter), per_token[idx + 1])
        assert len(bytes_at(toks, [], counter)) == 0
        for _ in range(30):
            a, e = sorted(int(x) for x in rng.integers(0, len(toks), 2))
            assert range_bytes(toks, a, e, counter) == int(per_token[a + 1:e + 1].sum()), (a, e)
        assert range_bytes(toks, 0, len(toks) - 1, counter) == int(per_token[1:].sum())


def test_numpy_counts_are_int64_like_the_torch_ones(official):
    """Byte counts are integers on both branches (the torch twin: test_bpb_edges)."""
    _, lut = official
    rng = np.random.default_rng(1)
    out = target_bytes(rng.integers(0, 1024, 50), rng.integers(0, 1024, 50), lut)
    assert out.dtype == np.int64
