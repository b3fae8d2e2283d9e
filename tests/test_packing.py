"""DOC_PACKING: the records' document-packing loader (#1855's DocumentPackingLoader) and packed rows in
the model, against computations written out from the spec on tiny streams."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import randomize
from golf.run.config import Config
from golf.data.packing import DocumentPackingLoader
from golf.data.shards import write_shard
from golf.model.layers import banded_doc_attention, segment_ids, segment_mask
from golf.model.gpt import GPT

pytestmark = pytest.mark.usefixtures("one_thread")
BOS = 1
SHARD0 = [9, 9, 1, 20, 21, 1, 22, 23, 24, 1, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34]   # first BOS at 2
SHARD1 = [40, 41, 1, 42, 43, 44, 45, 46, 47, 48, 49, 50]                            # first BOS at 2


@pytest.fixture()
def stream(tmp_path):
    for i, toks in enumerate((SHARD0, SHARD1)):
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", np.array(toks, dtype=np.uint16))
    return tmp_path


def test_rows_are_the_records_sequential_spans(stream):
    """2 ranks, 3 tokens each: a step takes a span of 2 x (3+1) = 8 tokens from the cursor
    (shard 0's first BOS, position 2), rank r the r-th 4; a span that does not fit moves to
    the next shard's first BOS, and after the last shard back to shard 0."""
    spans = [(SHARD0, 2), (SHARD0, 10), (SHARD1, 2), (SHARD0, 2)]   # step 2: 18 + 8 > 20
    loaders = [DocumentPackingLoader(str(stream), rank=r, world_size=2, vocab_size=64, bos_id=BOS)
               for r in range(2)]
    for shard, cursor in spans:
        for r, ld in enumerate(loaders):
            x, y = ld.next_batch(6, 3, 1)
            piece = shard[cursor + 4 * r: cursor + 4 * r + 4]
            assert x.dtype == torch.int64 and x.tolist() == [piece[:3]] and y.tolist() == [piece[1:]]


def test_accumulation_takes_one_span_per_micro_step_and_resumes_exactly(stream):
    ld = DocumentPackingLoader(str(stream), rank=0, world_size=1, vocab_size=64, bos_id=BOS)
    first, second = ld.next_batch(8, 2, 2), ld.next_batch(8, 2, 2)   # 4 tokens per micro-step
    assert first[0].tolist() == [SHARD0[2:6]] and second[0].tolist() == [SHARD0[7:11]]
    state = ld.state_dict()
    want = [ld.next_batch(8, 2, 2)[0].tolist() for _ in range(4)]
    again = DocumentPackingLoader(str(stream), rank=0, world_size=1, vocab_size=64, bos_id=BOS)
    again.load_state_dict(state)
    assert [again.next_batch(8, 2, 2)[0].tolist() for _ in range(4)] == want


def test_bad_spans_and_foreign_state_are_readable_errors(stream):
    ld = DocumentPackingLoader(str(stream), rank=0, world_size=1, vocab_size=64, bos_id=BOS)
    with pytest.raises(ValueError, match="TRAIN_BATCH_TOKENS=64.*longer than every train shard"):
        ld.next_batch(64, 8, 1)
    with pytest.raises(ValueError, match="TRAIN_BATCH_TOKENS=6 must be a multiple"):
        ld.next_batch(6, 4, 1)
    with pytest.raises(ValueError, match="DOC_PACKING"):
        ld.load_state_dict({"state": {}, "shards": ["fineweb_train_000000.bin"]})


def _segments(row: list[int], window: int) -> list[tuple[int, int]]:
    """The records' cu_seqlens rule written out: BOS positions (and 0) start documents, each
    cut every `window` tokens from its start."""
    starts = sorted({0} | {i for i, t in enumerate(row) if t == BOS}) + [len(row)]
    return [(p, min(p + window, b)) for a, b in zip(starts, starts[1:]) for p in range(a, b, window)]


def test_segment_boundaries_of_a_packed_row():
    row = [5, 5, 5, 5, 5, 1, 5, 5, 1, 5, 5, 5, 5, 5, 5, 5, 1]
    seg = segment_ids(torch.tensor([row]), BOS, max_len=3)[0].tolist()
    got = [(i, i + seg.count(s)) for i, s in enumerate(seg) if i == 0 or seg[i - 1] != s]
    assert got == _segments(row, 3) == [(0, 3), (3, 5), (5, 8), (8, 11), (11, 14), (14, 16), (16, 17)]


def test_banded_attention_equals_the_dense_segment_mask():
    torch.manual_seed(0)
    idx = torch.randint(2, 50, (2, 70))
    idx[0, [5, 30, 31, 60]] = BOS
    idx[1, 40] = BOS
    seg = segment_ids(idx, BOS, max_len=16)
    q, k, v = torch.randn(2, 70, 4, 8), torch.randn(2, 70, 2, 8), torch.randn(2, 70, 2, 8)
    dense = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=segment_mask(seg), enable_gqa=True).transpose(1, 2)
    assert torch.allclose(banded_doc_attention(q, k, v, seg, 16), dense, atol=1e-5)


def test_model_on_a_packed_row_equals_each_segment_alone():
    """A 1,200-token packed row (the banded path) cut at 64: each segment's logits are the
    model's on that segment alone (RoPE is relative, so the row offset does not matter)."""
    cfg = Config().replace(vocab_size=64, num_layers=2, model_dim=32, num_heads=4, num_kv_heads=2,
                           rope_dims=4, mlp_mult=2.0, doc_attention=True, doc_packing=True,
                           skip_gates_enabled=True, sparse_attn_gate_enabled=True, gate_window=6)
    torch.manual_seed(3)
    m = randomize(GPT(cfg), 0, std=0.3)
    m.doc_window = 64
    row = torch.randint(2, 64, (1, 1200))
    row[0, [0, 100, 101, 500, 1130]] = BOS
    with torch.no_grad():
        packed = m(row)
        for lo, hi in _segments(row[0].tolist(), 64):
            assert torch.allclose(packed[:, lo:hi], m(row[:, lo:hi]), atol=1e-4), (lo, hi)


def test_doc_packing_needs_doc_attention():
    problems = Config().replace(doc_packing=True, doc_attention=False).problems()
    assert any(p.startswith("DOC_PACKING=1 needs DOC_ATTENTION=1") for p in problems)
    for name in ("pr1855", "pr2135", "frontier"):
        assert Config.from_preset(name).doc_packing


def test_training_on_packed_rows(tiny_config, tmp_path):
    from golf.train.loop import train
    cfg = tiny_config.replace(runs_dir=str(tmp_path), run_id="packed", doc_attention=True,
                              doc_packing=True, iterations=4, gptq_calib_batches=1,
                              max_eval_tokens=2048)
    res = train(cfg, log=lambda _m: None)
    assert res.steps == 4 and math.isfinite(res.final_val_bpb)


def test_round_trip_eval_scores_a_doc_attention_model_as_eval_json(embedded_data, tmp_path):
    """EVAL_ONLY (the packed script's round trip, evaluate_source) scores a DOC_ATTENTION model
    in per-document windows, as run_eval's eval.json does: the two numbers are the same bits
    (they differed by 1e-4 on cpu_frontier, so every CPU-default submission failed its round
    trip), and whole-row windows give another number."""
    from conftest import tiny_pipeline_config, untrained_run
    from golf.eval.score import EvalRequest, evaluate_source, run_eval
    cfg = tiny_pipeline_config(embedded_data, doc_attention=True, max_eval_tokens=1500)
    run = tmp_path / "run"
    untrained_run(run, cfg)
    asked = EvalRequest(mode="chunked", max_tokens=1500, device="cpu")
    rep = run_eval(run, asked, out=tmp_path / "eval.json", log=None)
    from golf.run import rundir as rd
    alone = EvalRequest(data=str(embedded_data.dataset_dir), tokenizer=str(embedded_data.tokenizer_path),
                        seq_len=64, stride=0, max_tokens=1500, device="cpu")
    assert evaluate_source(run / rd.ARTIFACT, alone).val_bpb == rep["post"]["val_bpb"]
    rows = run_eval(run, replace(asked, doc_windows=False), out=tmp_path / "rows.json", log=None)
    assert rows["post"]["val_bpb"] != rep["post"]["val_bpb"]
