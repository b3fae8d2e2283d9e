"""TTT=lora, the records' phased score-first LoRA: settings with the records' names and values,
the adapter count per document against the records' figures, batches and phases, the per-virtual-
slot adapters against a hand computation, and legality (C1 in processing order, bit for bit, with
global phases; C2; C4) on a frontier-shaped model (depth loop, two lanes, per-document attention)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conftest import randomize
from golf.run.config import Config
from golf.run.errors import EvalError
from golf.eval.score import Scoring, evaluate_bpb
from golf.eval.bpb import lut_target_bytes
from golf.model.layers import asym_softcap, final_lane, segment_ids, skip_merge, two_lane_update
from golf.eval.lora import DocLoRA
from golf.model.gpt import GPT, rms
from golf.eval.ttt import (TTTSettings, batch_chunk, chunk_windows, phase_boundaries, record_batches,
                      record_targets, split_documents)
from test_ttt import BOS, L, V, doc_stream, repetitive_stream, settings, toy_lut, ttt


def frontier_gpt(seed: int = 0, randomized: bool = True) -> GPT:
    """The cpu_frontier preset at toy size: 4 layers, layers 1..2 looped once (6 virtual slots),
    two lanes on layer 3, per-document attention, SmearGate with the BOS mask, sparse attention
    gate, skip gates. Randomized so zero-initialised projections and gates all matter."""
    cfg = Config.from_env({"PRESET": "cpu_frontier"}).replace(
        vocab_size=V, num_layers=4, model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=2.0,
        loop_start=1, loop_end=2, num_loops=1, parallel_start_layer=3,
        train_seq_len=L, eval_seq_len=L, compile=False)
    torch.manual_seed(seed)
    m = GPT(cfg).eval()
    return randomize(m, seed, std=0.05) if randomized else m


# ----------------------------------------------------------------------------- settings
def test_lora_defaults_are_the_records_and_read_their_variable_names():
    s = TTTSettings(mode="lora").validated()
    assert (s.lora_rank, s.lora_alpha, s.lora_lr, s.beta1, s.beta2, s.weight_decay) == \
        (80, 144.0, 1e-4, 0.0, 0.99, 0.5)
    assert (s.batch_size, s.chunk_size, s.grad_steps, s.warm_start_a) == (64, 48, 1, True)
    assert (s.phased_ttt_num_phases, s.phased_ttt_prefix_docs, s.global_ttt_lr,
            s.global_ttt_momentum, s.global_ttt_chunk_tokens, s.global_ttt_batch_seqs) == \
        (3, 2500, 0.001, 0.9, 32_768, 32)
    assert record_targets(s) == ("q", "k", "v", "o", "mlp")
    golf = TTTSettings(mode="lora_golf").validated()
    assert (golf.golf_lora_rank, golf.golf_lora_lr) == (8, 0.01)    # today's form keeps its values
    e = TTTSettings.from_env({"TTT": "lora", "TTT_MASK": "no_qv", "TTT_K_LORA": "0",
                              "PHASED_TTT_NUM_PHASES": "1", "GLOBAL_TTT_LR": "0.002",
                              "TTT_LORA_RANK": "16", "TTT_SHORT_SCORE_FIRST_ENABLED": "1"})
    assert record_targets(e) == ("o", "mlp") and e.phased_ttt_num_phases == 1
    assert (e.global_ttt_lr, e.lora_rank, e.lora_lr, e.short_score_first_enabled) == (0.002, 16, 1e-4, True)
    assert "PHASED_TTT_PREFIX_DOCS" == TTTSettings.env_name("phased_ttt_prefix_docs")


@pytest.mark.parametrize("env,name", [({"TTT_MASK": "no_k"}, "TTT_MASK"),
                                      ({"TTT_SHORT_SCORE_FIRST_STEPS": "256-8"}, "TTT_SHORT_SCORE_FIRST_STEPS"),
                                      ({"PHASED_TTT_NUM_PHASES": "-1"}, "PHASED_TTT_NUM_PHASES"),
                                      ({"TTT_BETA2": "1.0"}, "TTT_BETA2")])
def test_bad_lora_settings_are_one_clear_error(env, name):
    with pytest.raises(EvalError, match=name):
        TTTSettings.from_env({"TTT": "lora", **env})


def test_adapters_per_document_are_the_records_counts():
    """17 virtual slots of the 11-layer records' model, rank 80: #1855 all targets 6,963,200 per
    document; #2135 without K 5,918,720; #2014 no_qv 4,526,080 (built on the meta device)."""
    cfg = Config.from_env({"PRESET": "pr1855"})
    counts = []
    for targets in (("q", "k", "v", "o", "mlp"), ("q", "v", "o", "mlp"), ("k", "o", "mlp")):
        with torch.device("meta"):
            bank = DocLoRA(GPT(cfg), docs=1, rank=80, alpha=144.0, targets=targets)
        assert bank.slots == 17
        counts.append(sum(m.A[:, 0].numel() + m.B[:, 0].numel() for m in bank.lora_modules()))
    assert counts == [6_963_200, 5_918_720, 4_526_080]


# ----------------------------------------------------------------------------- plan
def test_batches_sorted_by_length_longest_first_and_phase_boundaries():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 5000, size=50_000)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    docs = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
    batches = record_batches(docs, 64)
    assert [len(b) for b in batches[:2]] == [16, 64] and len(batches) == 782
    flat = [j for b in batches for j in b]
    assert sorted(flat) == list(range(50_000))
    assert min(lengths[batches[0]]) >= max(lengths[batches[1]])          # longest batch first
    assert all(lengths[b[0]] <= lengths[b[-1]] for b in batches)         # ascending within one
    assert phase_boundaries(3, 2500) == [833, 1666, 2500] and phase_boundaries(0, 2500) == []
    s = TTTSettings(mode="lora", short_score_first_enabled=True).validated()
    assert [batch_chunk(s, [(0, n - 1)]) for n in (200, 256, 257, 2000, 2001)] == [8, 8, 24, 24, 48]
    assert batch_chunk(TTTSettings(mode="lora").validated(), [(0, 10)]) == 48


def _chunk_by_hand(doc_lens: list[int], steps: dict[int, int], default: int) -> int:
    """#2014's rule written out: the batch's longest doc_len, the smallest bound >= it."""
    longest = max(doc_lens)
    covering = [b for b in steps if b >= longest]
    return steps[min(covering)] if covering else default


def test_short_score_first_steps_pick_the_chunk_of_a_batch():
    """#2014's TTT_SHORT_SCORE_FIRST_STEPS: a batch gets the chunk of the smallest doc_len bound
    covering its longest document, else TTT_CHUNK_SIZE; checked against the rule written out."""
    from golf.eval.ttt import batch_chunk
    env = {"TTT": "lora", "TTT_SHORT_SCORE_FIRST_ENABLED": "1",
           "TTT_SHORT_SCORE_FIRST_STEPS": "256:8,1000:16", "TTT_CHUNK_SIZE": "40"}
    s = TTTSettings.from_env(env)
    for batch in ([100], [256], [257], [100, 1000], [1001], [5, 9000]):
        docs = [(0, n - 1) for n in batch]                  # doc_len = targets + 1
        assert batch_chunk(s, docs) == _chunk_by_hand(batch, {256: 8, 1000: 16}, 40), batch
    d = TTTSettings(mode="lora", short_score_first_enabled=True).validated()   # #2014's values
    assert [batch_chunk(d, [(0, n - 1)]) for n in (256, 257, 2000, 2001)] == [8, 24, 24, 48]
    off = TTTSettings.from_env({**env, "TTT_SHORT_SCORE_FIRST_ENABLED": "0"})
    assert batch_chunk(off, [(0, 99)]) == 40                # the schedule only when enabled


@pytest.mark.parametrize("env", [{"TTT_SHORT_SCORE_FIRST_STEPS": "2000:x"},
                                 {"TTT_SHORT_SCORE_FIRST_STEPS": "256:8,256:16"}])
def test_contradicting_short_steps_are_one_clear_error(env):
    with pytest.raises(EvalError, match="TTT_SHORT_"):
        TTTSettings.from_env({"TTT": "lora", **env})


# ----------------------------------------------------------------------------- adapters
def _delta_weight(lora, slot: int, doc: int) -> torch.Tensor:
    """The adapter as a dense matrix: scale * B @ A (out x in)."""
    return lora.scale * lora.B[slot, doc] @ lora.A[slot, doc]


def hand_logits(model: GPT, bank: DocLoRA, idx: torch.Tensor, doc: int) -> torch.Tensor:
    """The frontier forward written out over the virtual layer list, each virtual slot's Q/K/V
    adapters merged into the weights (W + scale·B·A), the O and MLP bypasses and the head adapter
    as dense matrices: an independent computation of what DocLoRA's routed bmm must give."""
    cfg, blk = model.cfg, bank.block
    x = x0 = model.embed(idx)
    seg = segment_ids(idx, cfg.bos_id) if cfg.doc_attention else None
    enc, dec = cfg.layer_plan(model.looping)

    def attn(slot, b, u):
        att = b.attn.inner
        w = {f"{n}.base.weight": getattr(att, n).base.weight + _delta_weight(blk[t], slot, doc)
             for t, n in (("q", "c_q"), ("k", "c_k"), ("v", "c_v"))}
        y = torch.func.functional_call(att, w, (u, None, seg), strict=False)
        return y + u @ _delta_weight(blk["o"], slot, doc).T

    def mlp(slot, b, n):
        return b.mlp.inner(n) + n @ _delta_weight(blk["mlp"], slot, doc).T

    def sequential(slot, b, x):
        mix = b.resid_mix
        xin = mix[0] * x + mix[1] * x0
        xm = xin + b.attn_scale * attn(slot, b, rms(xin) * b.s)
        return xm + b.mlp_scale * mlp(slot, b, rms(xm) * b.s)

    stack, lanes, slot = [], None, 0
    for layer in enc:
        x = sequential(slot, model.blocks[layer], x)
        stack.append(x)
        slot += 1
    for i, layer in enumerate(dec):
        b = model.blocks[layer]
        if lanes is None and 0 < cfg.parallel_start_layer <= layer:
            lanes = (x, x)
        if i < model.n_skip and stack:
            gate = model.skip_gates[i] if hasattr(model, "skip_gates") else None
            if lanes is None:
                x = skip_merge(x, stack.pop(), model.skip_weights[i], gate)
            else:
                lanes = (skip_merge(lanes[0], stack.pop(), model.skip_weights[i], gate), lanes[1])
        if lanes is None:
            x = sequential(slot, b, x)
        else:
            mix = b.resid_mix
            a = b.attn_scale * attn(slot, b, rms(mix[0] * lanes[0] + mix[1] * x0) * b.s)
            m = b.mlp_scale * mlp(slot, b, rms(lanes[1]) * b.s)
            lanes = two_lane_update(*lanes, a, m, model.parallel_resid_lambdas[layer],
                                    model.parallel_post_lambdas[layer])
        slot += 1
    assert slot == bank.slots
    h = rms(final_lane(*lanes, cfg.parallel_final_lane) if lanes is not None else x)
    z = h @ (model.tok_emb.weight + _delta_weight(bank.head, 0, doc)).T
    if hasattr(model, "softcap_pos"):                    # ASYM_LOGIT_RESCALE (frontier preset)
        return asym_softcap(z, model.softcap_pos, model.softcap_neg)
    return model.softcap * torch.tanh(z / model.softcap)


def test_adapters_per_virtual_slot_match_a_hand_computation(one_thread):
    """Every adapter random (B too), two documents on three rows: each row's logits equal the
    hand-written forward with its own document's adapters of every virtual slot. Layers 1 and 2
    run twice, so an adapter shared per physical layer would fail this."""
    model = frontier_gpt()
    base = copy.deepcopy(model)
    bank = DocLoRA(model, docs=2, rank=3, alpha=6.0)
    assert bank.slots == 6
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in bank.lora_modules():
            m.A.copy_(torch.randn(m.A.shape, generator=g) * 0.3)
            m.B.copy_(torch.randn(m.B.shape, generator=g) * 0.3)
    idx = torch.from_numpy(doc_stream()[:3 * L].astype(np.int64)).view(3, L)
    rows = torch.tensor([1, 0, 1])
    bank.route(rows)
    with torch.no_grad():
        got = model(idx)
        bank.route(None)
        assert torch.equal(model(idx), base(idx))                         # unrouted: the base exactly
        assert not torch.allclose(got[0], base(idx[:1])[0], atol=1e-3)   # the adapters matter
        for i, doc in enumerate(rows.tolist()):
            want = hand_logits(model, bank, idx[i:i + 1], doc)[0]
            torch.testing.assert_close(got[i], want, atol=2e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- legality
def _processing_order(toks: np.ndarray, s: TTTSettings) -> list[tuple[int, int]]:
    docs = split_documents(toks, len(toks) - 1, BOS)
    return [docs[j] for b in record_batches(docs, s.batch_size) for j in b]


def _perturb_after(toks: np.ndarray, order: list[tuple[int, int]], k: int, t: int, seed: int) -> np.ndarray:
    """New non-BOS tokens after position t in document k of the processing order and in every
    document processed after it; every BOS stays, so the documents and their order stay."""
    rng = np.random.default_rng(seed)
    out = toks.copy()
    for i, (a, b) in enumerate(order):
        lo = t + 1 if i == k else (a + 1 if i > k else b)
        if lo < b:
            out[lo:b] = rng.integers(2, V, size=b - lo)
    return out


@pytest.mark.parametrize("warm", [True, False])
def test_records_form_is_causal_in_processing_order_through_global_phases(warm, one_thread):
    """C1/C3, bit for bit: the records score documents in their own order (longest batch first),
    so 'before t' means every document processed earlier (they feed later scores through A's
    warm start and the global phases) plus the targets of t's document up to t. Changing all
    later tokens moves none of those scores, including those of the documents scored beside t's
    in its batch (each has its own adapters). Later scores do move, so the check is not vacuous."""
    model, toks = frontier_gpt(), doc_stream()
    s = settings("lora", warm_start_a=warm)
    order = _processing_order(toks, s)
    base = ttt(model, toks, s, 0).nll
    for seed, (k, frac) in enumerate([(3, 0.5), (9, 0.7)]):
        a, b = order[k]
        t = a + int((b - a) * frac)
        other = ttt(model, _perturb_after(toks, order, k, t, seed), s, 0).nll
        before = np.zeros(len(base), dtype=bool)
        for da, db in order[:k]:       # earlier batches, and the earlier slots of k's own batch
            before[da:db] = True
        before[a:t] = True
        assert np.array_equal(base[before], other[before]), f"a score before doc {k} pos {t} moved"
        assert not np.array_equal(base[~before], other[~before])


def test_each_target_scored_once_and_lr_zero_is_a_full_softmax_of_chunk_windows(one_thread):
    """C4: every target once, bytes exact. C2 and the windows: with both LRs 0 every score is an
    independent float64 -log_softmax over all V logits of the window of seq_len tokens ending at
    its chunk's end, never reaching back before the document's BOS."""
    model, toks = frontier_gpt(), doc_stream()
    n = len(toks) - 1
    r = ttt(model, toks, settings("lora"), 0)
    assert r.tokens == n and (r.counts == 1).all() and r.adapt_steps > 0 and r.ttt == "lora"
    assert r.bytes == lut_target_bytes(toks, n, toy_lut())
    r0 = ttt(model, toks, settings("lora", lora_lr=0.0, global_ttt_lr=0.0), 0)
    for a0, b0 in split_documents(toks, n, BOS):
        for k in range(-(-(b0 - a0) // 8)):
            for s0, a, e in chunk_windows(a0, b0, k, 8, L, 1):
                with torch.no_grad():
                    lg = model(torch.from_numpy(toks[s0:e].astype(np.int64))[None])[0, a - s0:].double()
                want = -torch.log_softmax(lg, -1).gather(1, torch.from_numpy(toks[a + 1:e + 1].astype(np.int64))[:, None])[:, 0]
                np.testing.assert_allclose(r0.nll[a:e], want.numpy(), atol=2e-5)


def test_records_form_lowers_the_loss_on_a_repetitive_stream(one_thread):
    """A real gain (adapters and global phases), not a no-op."""
    model, toks = frontier_gpt(randomized=False), repetitive_stream()
    before = evaluate_bpb(model, toks, toy_lut(), Scoring(seq_len=L, stride=8))
    r = ttt(model, toks, settings("lora", lora_lr=0.01), 8)
    assert r.val_bpb < before.val_bpb - 0.05, (before.val_bpb, r.val_bpb)


def test_the_processing_order_check_catches_a_phase_on_unscored_documents(monkeypatch, one_thread):
    """Teeth: the same check fails when a global phase also trains on documents not yet scored."""
    import golf.eval.ttt as ttt_mod
    real = ttt_mod._global_phase

    def leaky(model, params, stream, docs, prefix, *args, **kw):
        s = settings("lora")
        everything = [j for b in record_batches(docs, s.batch_size) for j in b]
        return real(model, params, stream, docs, everything, *args, **kw)

    monkeypatch.setattr(ttt_mod, "_global_phase", leaky)
    with pytest.raises(AssertionError, match="moved"):
        test_records_form_is_causal_in_processing_order_through_global_phases(True, None)


def test_a_misspelt_phase_variable_is_refused_not_ignored():
    """PHASED_TTT_* and GLOBAL_TTT_* are golfkit's prefixes: a typo is one line naming the fix."""
    from golf.run import settings as table
    got = table.environment_problems({"PHASED_TTT_NUM_PHASE": "1", "GLOBAL_TTT_LR": "0.002"})
    assert got == ["PHASED_TTT_NUM_PHASE: not a golfkit setting; did you mean PHASED_TTT_NUM_PHASES?"]
