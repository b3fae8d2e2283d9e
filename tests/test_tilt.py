"""Token-only n-gram tilt: the hint table against the records' sequential pass, the closed form
against a direct softmax over tilted logits, causality by perturbing later tokens, refusal of
the illegal variants, and the scorer hook (plain and with TTT)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from golf.run.errors import EvalError
from golf.eval.tilt import TILT_SETTINGS, TiltSettings, TokenTilt, tilted_nll, token_hints


def sequential_hints(y: list[int], order: int, threshold: float) -> list[int]:
    """The records' pass written out: per position look up the exact context tuple, then count, then push;
    the top changes only when a pair count strictly exceeds the top count."""
    k = order - 1
    ring = [y[0]] * k if y else []
    total: dict[tuple, int] = {}
    top: dict[tuple, tuple[int, int]] = {}
    pairs: dict[tuple, int] = {}
    out = []
    for tok in y:
        ctx = tuple(ring[len(ring) - k:]) if k else ()
        hint = -1
        if total.get(ctx, 0) > 0:
            tok_top, cnt_top = top[ctx]
            if cnt_top / total[ctx] >= threshold:
                hint = tok_top
        out.append(hint)
        pairs[ctx + (tok,)] = c = pairs.get(ctx + (tok,), 0) + 1
        total[ctx] = total.get(ctx, 0) + 1
        if c > top.get(ctx, (-1, 0))[1]:
            top[ctx] = (tok, c)
        ring.append(tok)
    return out


def _text_like(n: int, vocab: int, seed: int, copy: int = 12) -> np.ndarray:
    """Repetitive stream (copied phrases) so that contexts recur and hints fire."""
    rng = np.random.default_rng(seed)
    out: list[int] = []
    while len(out) < n:
        if out and rng.random() < 0.6:
            a = int(rng.integers(0, len(out)))
            out.extend(out[a:a + int(rng.integers(2, copy))])
        else:
            out.extend(rng.integers(0, vocab, size=int(rng.integers(1, 6))).tolist())
    return np.array(out[:n], dtype=np.uint16)


# ----------------------------------------------------------------------------- hint table
@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 300), vocab=st.integers(1, 6), order=st.integers(1, 5),
       threshold=st.sampled_from([0.0, 0.3, 0.5, 0.8, 1.0]), seed=st.integers(0, 10_000))
def test_hints_equal_the_records_sequential_pass(n, vocab, order, threshold, seed):
    y = _text_like(n, vocab, seed)
    assert token_hints(y, order, threshold).tolist() == sequential_hints(y.tolist(), order, threshold)


def test_hints_match_on_a_longer_stream_with_the_records_order():
    y = _text_like(5000, 50, 3, copy=60)
    got = token_hints(y, 16, 0.8)
    assert got.tolist() == sequential_hints(y.tolist(), 16, 0.8)
    assert (got >= 0).sum() > 100          # the check is not vacuous: hints do fire


def test_ties_keep_the_earlier_top_and_a_context_seen_once_fires():
    # order 2: context = previous target. After 5 come 7, then 8, then 8: the tie at 1:1 keeps
    # 7, and 8 takes over only when its count (2) strictly exceeds the top's (1).
    y = np.array([9, 5, 7, 5, 8, 5, 8, 5, 1], dtype=np.int64)
    h = token_hints(y, 2, 0.0).tolist()
    assert h[1] == 9               # the records' seed: position 0's context reads as y[0]
    assert h[2] == -1 and h[4] == 7 and h[6] == 7 and h[8] == 8
    assert token_hints(y, 2, 1.0).tolist()[4] == 7      # seen once: share 1 fires at threshold 1
    assert token_hints(y, 2, 0.6).tolist()[6] == -1     # share 1/2 < 0.6: no hint


@pytest.mark.parametrize("t", [0, 1, 7, 150, 398])
def test_hint_at_t_reads_only_targets_before_t(t):
    """Change target t and everything after: hints up to and including t do not move."""
    y = _text_like(400, 5, 11)
    z = y.copy()
    z[t:] = (z[t:] + 1 + np.arange(len(z) - t) % 3) % 5
    assert np.array_equal(token_hints(y, 4, 0.5)[:t + 1], token_hints(z, 4, 0.5)[:t + 1])


# ----------------------------------------------------------------------------- closed form
def test_closed_form_equals_a_softmax_over_the_tilted_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 11, generator=g) * 3
    targets = torch.randint(0, 11, (64,), generator=g)
    hints = torch.randint(-1, 11, (64,), generator=g)
    hints[:11] = targets[:11]                                  # some hits for sure
    beta = 2.625
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    got = tilted_nll(nll, logits, targets, hints, beta)
    bump = torch.zeros_like(logits, dtype=torch.float64)
    on = hints >= 0
    bump[on.nonzero().flatten(), hints[on]] = beta
    direct = -torch.log_softmax(logits.double() + bump, dim=1).gather(1, targets[:, None]).squeeze(1)
    assert torch.allclose(got.double(), direct, atol=1e-5, rtol=0)
    assert torch.equal(got[~on], nll[~on])                     # no hint: NLL untouched
    assert (got[:11] < nll[:11]).all()                         # a hit always gains


def test_tilted_distribution_sums_to_one_over_the_vocabulary():
    logits = torch.randn(1, 9)
    nll_all = torch.stack([tilted_nll(torch.nn.functional.cross_entropy(logits, torch.tensor([a]),
                                                                        reduction="none"),
                                      logits, torch.tensor([a]), torch.tensor([4]), 1.7)
                           for a in range(9)])
    assert math.isclose(float(torch.exp(-nll_all.double()).sum()), 1.0, abs_tol=1e-6)


# ----------------------------------------------------------------------------- settings
def test_settings_are_declared_once_with_the_records_defaults():
    s = TiltSettings.from_env({})
    assert (s.enabled, s.order, s.threshold, s.boost) == (False, 16, 0.8, 2.625)
    assert set(s.knobs()) == {t.name for t in TILT_SETTINGS}
    s = TiltSettings.from_env({"NGRAM_TILT_ENABLED": "1", "TOKEN_ORDER": "8",
                               "TOKEN_THRESHOLD": "0.5", "TOKEN_BOOST": "1"})
    assert (s.enabled, s.order, s.threshold, s.boost) == (True, 8, 0.5, 1.0)


@pytest.mark.parametrize("name,raw", [("TOKEN_ORDER", "0"), ("TOKEN_ORDER", "x"),
                                      ("TOKEN_THRESHOLD", "1.5"), ("TOKEN_BOOST", "-1"),
                                      ("TOKEN_BOOST", "nan"), ("NGRAM_TILT_ENABLED", "2")])
def test_bad_settings_name_the_variable(name, raw):
    with pytest.raises(EvalError, match=name):
        TiltSettings.from_env({name: raw})


@pytest.mark.parametrize("name,raw", [("WITHIN_BOOST", "0.75"), ("WORD_BOOST", "1"),
                                      ("WITHIN_TAU", "0.45"), ("WORD_TAU", "0.6"),
                                      ("AGREE_ADD_BOOST", "0.5")])
def test_within_word_and_word_start_variants_are_refused_with_the_reason(name, raw):
    with pytest.raises(EvalError, match=rf"{name}=.*illegal.*token being scored"):
        TiltSettings.from_env({"NGRAM_TILT_ENABLED": "1", name: raw})


def test_the_records_disabled_channels_are_accepted():
    s = TiltSettings.from_env({"NGRAM_TILT_ENABLED": "1", "WITHIN_TAU": "99", "WORD_TAU": "99",
                               "WITHIN_BOOST": "0", "WORD_BOOST": "0", "AGREE_ADD_BOOST": "0"})
    assert s.enabled


# ----------------------------------------------------------------------------- in the scorer
from test_ttt import (BOS, L, V, _assert_causal, doc_stream, tiny_gpt, toy_lut,  # noqa: E402
                      ttt as run_ttt_recorded, settings as ttt_settings)
from golf.eval.score import Scoring, evaluate_bpb, window_plan  # noqa: E402

TILT = TiltSettings(enabled=True, order=4, threshold=0.5, boost=2.0)


def _direct_tilted(model, toks: np.ndarray, stride: int) -> np.ndarray:
    """Per-target NLL from an independent path: the model's logits per window, hints from the
    sequential reference, then -log_softmax(logits + β·onehot(hint)) in float64."""
    n = len(toks) - 1
    hints = sequential_hints(toks[1:].tolist(), TILT.order, TILT.threshold)
    out = np.full(n, np.nan)
    for s, a, e in window_plan(n, L, stride):
        with torch.no_grad():
            z = model(torch.from_numpy(toks[s:e].astype(np.int64))[None])[0, a - s:].double()
        for i, t in enumerate(range(a, e)):
            if hints[t] >= 0:
                z[i, hints[t]] += TILT.boost
        tgt = torch.from_numpy(toks[a + 1:e + 1].astype(np.int64))
        out[a:e] = -torch.log_softmax(z, -1).gather(1, tgt[:, None])[:, 0].numpy()
    return out


@pytest.mark.parametrize("stride", [0, 8])
def test_scorer_tilt_equals_a_softmax_over_tilted_logits(stride, one_thread):
    model, toks = tiny_gpt(), doc_stream()
    tilt = TILT.build(toks, len(toks) - 1)
    assert 30 < tilt.gated < len(toks) - 30                      # some, not all, targets hinted
    direct = _direct_tilted(model, toks, stride)
    rec = run_ttt_recorded(model, toks, ttt_settings("chunk", lr=0.0), stride, tilt=tilt)
    np.testing.assert_allclose(rec.nll, direct, atol=2e-5)
    plain = evaluate_bpb(model, toks, toy_lut(),
                         Scoring(seq_len=L, stride=stride, batch_tokens=4 * L))
    tilted = evaluate_bpb(model, toks, toy_lut(),
                          Scoring(seq_len=L, stride=stride, batch_tokens=4 * L), tilt=tilt)
    assert tilted.val_loss == pytest.approx(direct.mean(), rel=1e-6)
    assert (tilted.tokens, tilted.bytes) == (plain.tokens, plain.bytes)
    assert tilted.val_loss != pytest.approx(plain.val_loss, rel=1e-4)


@pytest.mark.parametrize("mode,stride", [("chunk", 0), ("chunk", 8), ("lora_golf", 0), ("lora_golf", 8)])
def test_tilted_ttt_score_at_t_ignores_tokens_after_t(mode, stride, one_thread):
    """C1 with the tilt on top of adapting TTT: perturbing tokens after t moves no score <= t
    (the hint table is rebuilt from each perturbed stream, as the scorer does)."""
    model = tiny_gpt()

    def nll_of(x):
        return run_ttt_recorded(model, x, ttt_settings(mode), stride,
                                tilt=TILT.build(x, len(x) - 1)).nll
    _assert_causal(nll_of, doc_stream(n_docs=8), ts=(150, 301))


@pytest.mark.parametrize("mode", ["chunk", "lora", "lora_golf"])
def test_ttt_adapts_on_the_untilted_loss(mode, one_thread):
    """The tilt changes hinted scores only: unhinted targets score bit-identically with and
    without it, so every adaptation step saw the same (untilted) loss."""
    model, toks = tiny_gpt(), doc_stream()
    tilt = TILT.build(toks, len(toks) - 1)
    plain = run_ttt_recorded(model, toks, ttt_settings(mode), 8)
    tilted = run_ttt_recorded(model, toks, ttt_settings(mode), 8, tilt=tilt)
    hinted = tilt.hints.numpy() >= 0
    assert plain.adapt_steps == tilted.adapt_steps > 0
    assert np.array_equal(plain.nll[~hinted], tilted.nll[~hinted])
    assert not np.allclose(plain.nll[hinted], tilted.nll[hinted])


from test_ttt import ttt_run  # noqa: E402,F401  (fixture: a run directory on the embedded corpus)


def test_eval_cli_reports_post_tilt_and_tilts_post_ttt(ttt_run, monkeypatch, capsys, one_thread):
    import json

    import eval_bpb
    run, _cfg = ttt_run
    monkeypatch.setenv("NGRAM_TILT_ENABLED", "1")
    monkeypatch.setenv("TOKEN_ORDER", "3")
    assert eval_bpb.main([str(run), "--ttt", "chunk", "--ttt-chunk-tokens", "512"]) == 0
    written = sorted(run.glob("eval.*.json"))          # a tilt/TTT eval is a diagnostic: beside eval.json
    assert len(written) == 1 and "tilt" in written[0].name
    rep = json.loads(written[0].read_text())
    k, t, post = rep["post_tilt"], rep["post_ttt"], rep["post"]
    assert (k["tokens"], k["bytes"], k["weights"]) == (post["tokens"], post["bytes"], "post")
    assert k["tilt"]["TOKEN_ORDER"] == 3 and t["tilt"] == k["tilt"] and 0 < k["gated"] < k["tokens"]
    assert k["tilt_gain"] == pytest.approx(k["val_bpb"] - post["val_bpb"])
    assert k["val_bpb"] != post["val_bpb"]
    out = capsys.readouterr().out
    assert "post+tilt (n-gram)" in out and "post+TTT+tilt (chunk, on post)" in out
    monkeypatch.setenv("WITHIN_BOOST", "0.75")
    with pytest.raises(SystemExit) as exc:
        eval_bpb.main([str(run)])
    assert exc.value.code == 2 and "WITHIN_BOOST" in capsys.readouterr().err
