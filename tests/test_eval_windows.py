"""Per-document eval windows (no window crosses a BOS) and the records' long windows: every
target scored once, each document scored as if it were alone, counts at the full val split."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from golf.eval.score import Scoring, document_spans, document_window_plan, evaluate_bpb, window_plan
from test_ttt import BOS, L, doc_stream, tiny_gpt, toy_lut


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), seq_len=st.integers(1, 40), stride_frac=st.sampled_from([0, 1, 2, 4]),
       bos_p=st.sampled_from([0.0, 0.03, 0.2]), seed=st.integers(0, 1000))
def test_document_windows_cover_each_target_once_and_never_cross_a_bos(n, seq_len, stride_frac,
                                                                        bos_p, seed):
    rng = np.random.default_rng(seed)
    toks = rng.integers(2, 50, size=n + 1)
    toks[rng.random(n + 1) < bos_p] = BOS
    stride = seq_len // stride_frac if stride_frac else 0
    plan = document_window_plan(toks, n, seq_len, max(stride, 0), BOS)
    counts = np.zeros(n, dtype=int)
    for s, a, e in plan:
        counts[a:e] += 1
        assert 0 <= s <= a < e <= n and e - s <= seq_len
        assert not (toks[s + 1:e] == BOS).any()          # a BOS only as the first input token
    assert (counts == 1).all()
    assert [w[1] for w in plan] == sorted(w[1] for w in plan)   # target order: contiguous per rank


@pytest.mark.parametrize("stride", [0, 8])
def test_each_document_is_scored_as_if_alone(stride, one_thread):
    """Today's model (dense causal attention) with document windows == the sum of each
    document scored on its own stream (BOS .. next BOS); without them it differs."""
    model, toks = tiny_gpt(), doc_stream(n_docs=10)
    n = len(toks) - 1
    plain_windows = Scoring(seq_len=L, stride=stride, batch_tokens=4 * L)
    docs = evaluate_bpb(model, toks, toy_lut(), replace(plain_windows, doc_bos=BOS))
    alone = sum(evaluate_bpb(model, toks[a:b + 1], toy_lut(), plain_windows).val_loss * (b - a)
                for a, b in document_spans(toks, n, BOS))
    assert docs.tokens == n and docs.val_loss == pytest.approx(alone / n, rel=1e-12)
    plain = evaluate_bpb(model, toks, toy_lut(), plain_windows)   # context crosses documents
    assert plain.bytes == docs.bytes and abs(plain.val_loss - docs.val_loss) > 1e-6


def test_per_target_nll_adds_up_to_each_document_scored_alone(one_thread):
    """evaluate_bpb's per_target array: each document's slice sums to that document scored on
    its own stream, and the whole array to the reported loss (the per-document statistics of
    bench.rd_frontier rest on it)."""
    model, toks = tiny_gpt(), doc_stream(n_docs=6)
    n = len(toks) - 1
    scoring = Scoring(seq_len=L, batch_tokens=3 * L)
    nll = np.full(n, np.nan)
    r = evaluate_bpb(model, toks, toy_lut(), replace(scoring, doc_bos=BOS), per_target=nll)
    assert not np.isnan(nll).any() and nll.sum() == pytest.approx(r.val_loss * n, rel=1e-12)
    for a, b in document_spans(toks, n, BOS):
        alone = evaluate_bpb(model, toks[a:b + 1], toy_lut(), scoring)
        assert nll[a:b].sum() == pytest.approx(alone.val_loss * (b - a), rel=1e-9)


FULL_TARGETS = 47_853_343        # the full CaseOps val split (#2014's logs)


@pytest.mark.parametrize("seq_len", [2048, 2560, 3072])
def test_long_windows_score_every_target_of_the_full_split(seq_len):
    """golfkit scores all 47,853,343 targets at the records' window lengths; #1855/#2135 cut the
    stream to a multiple of the window (47,851,520 at 2048 and 2560), #2014 scores them all."""
    plan = window_plan(FULL_TARGETS, seq_len, 0)
    assert plan[0][1] == 0 and plan[-1][2] == FULL_TARGETS
    assert all(p[2] == q[1] for p, q in zip(plan, plan[1:]))       # contiguous, no overlap
    assert sum(e - a for _, a, e in plan) == FULL_TARGETS
    records = FULL_TARGETS // seq_len * seq_len
    assert FULL_TARGETS - records == {2048: 1823, 2560: 1823, 3072: 799}[seq_len]


from test_ttt import ttt_run  # noqa: E402,F401  (fixture: a run directory on the embedded corpus)


def test_eval_cli_doc_windows_flag(ttt_run, tmp_path, one_thread):
    """--doc-windows reaches the scorer: same targets and bytes, another loss, recorded."""
    import json

    import eval_bpb
    run, _cfg = ttt_run
    a, b = tmp_path / "plain.json", tmp_path / "docs.json"
    assert eval_bpb.main([str(run), "--mode", "chunked", "--out", str(a)]) == 0
    plain = json.loads(a.read_text())
    assert eval_bpb.main([str(run), "--mode", "chunked", "--doc-windows", "--out", str(b)]) == 0
    docs = json.loads(b.read_text())
    assert (plain["doc_windows"], docs["doc_windows"]) == (False, True)
    for label in ("pre", "post"):
        assert docs[label]["tokens"] == plain[label]["tokens"]
        assert docs[label]["bytes"] == plain[label]["bytes"] == docs["decoded_bytes"]
        assert docs[label]["val_loss"] != plain[label]["val_loss"]


@pytest.mark.parametrize("stride", [0, 8])
def test_chunk_ttt_with_document_windows_at_lr_zero_is_the_document_score(stride, one_thread):
    from golf.eval.ttt import TTTPass, TTTSettings, run_ttt
    model, toks = tiny_gpt(), doc_stream(n_docs=10)
    kw = dict(seq_len=L, stride=stride, batch_tokens=4 * L)
    ref = evaluate_bpb(model, toks, toy_lut(), Scoring(doc_bos=BOS, **kw))
    s = TTTSettings(mode="chunk", chunk_tokens=96, lr=0.0, batch_seqs=4).validated()
    r = run_ttt(model, toks, toy_lut(), s, TTTPass(Scoring(doc_bos=BOS, **kw), record=True))
    assert r.adapt_steps > 0 and (r.counts == 1).all()
    assert (r.tokens, r.bytes) == (ref.tokens, ref.bytes)
    assert r.val_loss == pytest.approx(ref.val_loss, rel=1e-9)
