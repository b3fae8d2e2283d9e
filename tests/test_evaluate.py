"""Scoring invariants: every target scored exactly once, indexing, exact byte accounting."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import golf.eval.bpb as bpb
from golf.eval.bpb import decoded_target_bytes, lut_target_bytes
from golf.eval.score import EvalError, Scoring, evaluate_bpb, plan_coverage, window_plan
from conftest import exit_without_teardown


# ----------------------------------------------------------------------------- tiny models
class UniformModel(torch.nn.Module):
    """Equal logits everywhere: NLL is exactly ln V per target."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.zeros(*x.shape, self.vocab) + 0 * self.dummy


class BigramModel(torch.nn.Module):
    """Logits depend on the current token only, so every mode must give the same NLL."""

    def __init__(self, vocab: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=g))

    def forward(self, x):
        return self.table[x]


def _toy_lut(vocab: int):
    """A synthetic ByteLUT: token 0 is a boundary (BOS-like), others 1..4 bytes, some with '▁'."""
    rng = np.random.default_rng(0)
    base = rng.integers(1, 5, size=vocab).astype(np.int16)
    base[0] = 0
    lead = rng.random(vocab) < 0.4
    lead[0] = False
    boundary = np.zeros(vocab, dtype=bool)
    boundary[0] = True
    return bpb.ByteLUT(base_bytes=base, has_leading_space=lead, is_boundary=boundary)


def _rule_bytes(toks: np.ndarray, n: int, lut) -> int:
    """The challenge's byte rule written out per target (the challenge's scoring rule): base bytes, plus one
    for a leading space unless the previous token is a boundary. Targets are toks[1:n+1]."""
    total = 0
    for prev, y in zip(toks[:n].tolist(), toks[1:n + 1].tolist()):
        total += int(lut.base_bytes[y]) + int(bool(lut.has_leading_space[y]) and not lut.is_boundary[prev])
    return total


def _stream(n_tokens: int, vocab: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = rng.integers(1, vocab, size=n_tokens).astype(np.uint16)
    t[:: 37] = 0  # documents start with the boundary token
    return t


# ----------------------------------------------------------------------------- window plan
COMBOS = [(n, L, s) for n in (1, 5, 63, 64, 65, 100, 257, 1000) for L in (1, 8, 64)
          for s in sorted({0, 1, 3, L // 2 or 1, L}) if s <= L]


@pytest.mark.parametrize("n,seq_len,stride", COMBOS)
def test_every_target_scored_exactly_once(n, seq_len, stride):
    plan = window_plan(n, seq_len, stride)
    assert (plan_coverage(plan, n) == 1).all()
    for start, a, b in plan:
        assert 0 <= start <= a < b <= n
        assert b - start <= seq_len                 # window fits the model's length


@pytest.mark.parametrize("n,seq_len,stride", [c for c in COMBOS if c[2] > 0])
def test_sliding_gives_the_longest_available_context(n, seq_len, stride):
    """Target t sees min(t+1, seq_len-stride+1) tokens at least; the tail a full window."""
    for start, a, b in window_plan(n, seq_len, stride):
        for t in range(a, b):
            assert t - start + 1 >= min(t + 1, seq_len - stride + 1)
        if a > 0:
            assert b - start == min(seq_len, b)   # every later window is as long as possible


def test_first_public_sliding_bug_would_be_caught():
    """The PR #50 form re-scored the tail; our coverage check flags such a plan."""
    n, W, s = 10_000, 1024, 64
    buggy = []
    for ws in range(0, n, s):
        wlen = min(W, n - ws)
        lo = 0 if ws == 0 else max(wlen - s, 0)
        buggy.append((ws, ws + lo, ws + wlen))
    cov = plan_coverage(buggy, n)
    assert cov.max() == 16 and cov.sum() == 10_960      # the bug as documented
    assert (plan_coverage(window_plan(n, W, s), n) == 1).all()


def test_chunked_and_sliding_agree_when_stride_is_seq_len():
    for n in (1, 50, 64, 128, 129, 150):
        chunked, sliding = window_plan(n, 64, 0), window_plan(n, 64, 64)
        assert [w[1:] for w in chunked] == [w[1:] for w in sliding]   # same scored ranges
        if n % 64 == 0 or n < 64:
            assert chunked == sliding
        else:   # only the short tail differs: sliding gives it a full window of context
            assert chunked[:-1] == sliding[:-1] and sliding[-1][0] == n - 64
    toks, lut = _stream(300, 32), _toy_lut(32)
    m = BigramModel(32)
    a = evaluate_bpb(m, toks, lut, Scoring(seq_len=64, stride=0))
    b = evaluate_bpb(m, toks, lut, Scoring(seq_len=64, stride=64))
    assert (a.val_bpb, a.tokens, a.bytes) == (b.val_bpb, b.tokens, b.bytes)
    assert a.mode == "chunked" and b.mode == "sliding"


@pytest.mark.parametrize("bad", [dict(seq_len=0, stride=0), dict(seq_len=8, stride=9),
                                 dict(seq_len=8, stride=-1)])
def test_bad_plan_arguments_raise_one_clear_error(bad):
    with pytest.raises(EvalError, match="seq_len|stride"):
        window_plan(10, **bad)


# ----------------------------------------------------------------------------- scoring math
@pytest.mark.parametrize("stride", [0, 16])
def test_uniform_model_gives_log2_vocab_per_token(stride):
    V = 48
    toks, lut = _stream(501, V), _toy_lut(V)
    res = evaluate_bpb(UniformModel(V), toks, lut,
                       Scoring(seq_len=64, stride=stride, batch_tokens=256))
    assert res.tokens == 500 and not res.partial
    assert res.bytes == _rule_bytes(toks, 500, lut)
    per_token = torch.logsumexp(torch.zeros(V), 0).item()      # ln V as float32 CE computes it
    assert per_token == pytest.approx(math.log(V), rel=1e-6)
    assert res.val_loss == pytest.approx(per_token, rel=1e-12)
    assert res.val_bpb == pytest.approx(per_token / math.log(2) * res.tokens / res.bytes, rel=1e-12)


@pytest.mark.parametrize("seq_len,stride", [(16, 0), (16, 5), (64, 16), (200, 0)])
def test_bigram_nll_matches_direct_computation(seq_len, stride):
    """Checks target/logit alignment: target t+1 is scored with logits at position t."""
    V = 40
    toks, lut = _stream(333, V, seed=3), _toy_lut(V)
    m = BigramModel(V, seed=4)
    res = evaluate_bpb(m, toks, lut, Scoring(seq_len=seq_len, stride=stride, batch_tokens=64))
    logp = torch.log_softmax(m.table.detach().double(), dim=-1).numpy()
    t = toks.astype(np.int64)
    expected = -logp[t[:-1], t[1:]].sum()
    assert res.tokens == len(toks) - 1
    assert res.val_loss * res.tokens == pytest.approx(expected, rel=1e-6)


def test_batching_does_not_change_the_result_and_is_deterministic():
    V = 40
    toks, lut = _stream(400, V), _toy_lut(V)
    m = BigramModel(V)
    r1 = evaluate_bpb(m, toks, lut, Scoring(seq_len=32, stride=8, batch_tokens=32))
    r2 = evaluate_bpb(m, toks, lut, Scoring(seq_len=32, stride=8, batch_tokens=4096))
    r3 = evaluate_bpb(m, toks, lut, Scoring(seq_len=32, stride=8, batch_tokens=4096))
    assert r1.val_bpb == pytest.approx(r2.val_bpb, rel=1e-9)
    assert r2.val_bpb == r3.val_bpb                               # bit-identical on CPU


def test_max_tokens_is_partial_and_exact():
    V = 40
    toks, lut = _stream(400, V), _toy_lut(V)
    res = evaluate_bpb(BigramModel(V), toks, lut, Scoring(seq_len=32, stride=8), max_tokens=123)
    assert res.partial and res.tokens == 123
    assert res.bytes == _rule_bytes(toks, 123, lut)
    full = evaluate_bpb(BigramModel(V), toks, lut, Scoring(seq_len=32, stride=8), max_tokens=10_000)
    assert not full.partial and full.tokens == 399


def test_result_round_trips_through_json():
    toks, lut = _stream(100, 16), _toy_lut(16)
    d = evaluate_bpb(UniformModel(16), toks, lut, Scoring(seq_len=16)).to_dict()
    back = json.loads(json.dumps(d))
    assert back == d and set(d) >= {"val_loss", "val_bpb", "tokens", "bytes", "seconds",
                                    "tokens_per_s", "mode", "seq_len", "stride", "partial"}


def test_ranks_split_windows_and_sums_add_up():
    """Without a process group, each rank's share of tokens/bytes must add to the whole."""
    V = 40
    toks, lut = _stream(400, V), _toy_lut(V)
    m = BigramModel(V)
    whole = evaluate_bpb(m, toks, lut, Scoring(seq_len=32, stride=8))
    parts = [evaluate_bpb(m, toks, lut, Scoring(seq_len=32, stride=8, rank=r, world_size=3)) for r in range(3)]
    assert sum(p.tokens for p in parts) == whole.tokens
    assert sum(p.bytes for p in parts) == whole.bytes
    nll = sum(p.val_loss * p.tokens for p in parts)
    assert nll == pytest.approx(whole.val_loss * whole.tokens, rel=1e-9)


# ----------------------------------------------------------------------------- ground truth
def _fineweb_stream(shared_data, sp, n_docs: int = 60) -> np.ndarray:
    path = shared_data / "corpora" / "fineweb_pgolf_docs200" / "verify_docs.jsonl"
    ids: list[int] = []
    with open(path) as fh:
        for i, line in enumerate(fh):
            if i >= n_docs:
                break
            ids += [sp.bos_id()] + sp.encode(json.loads(line)["text"])
    return np.asarray(ids, dtype=np.uint16)


def test_lut_bytes_equal_decoded_text_on_official_tokenizer(official_tokenizer, shared_data):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(official_tokenizer))
    lut = bpb.build_byte_lut(sp, 1024)
    toks = _fineweb_stream(shared_data, sp)
    n = len(toks) - 1
    assert lut_target_bytes(toks, n, lut) == decoded_target_bytes(sp, toks, n)
    # every doc's bytes are the doc's decoded length (no double-counted leading space)
    # and cuts anywhere (inside words and byte-fallback runs) still match exactly
    is_byte = np.array([sp.is_byte(int(t)) for t in toks])
    cuts = list(np.flatnonzero(is_byte)[:20]) + list(np.random.default_rng(0).integers(1, n, 40))
    for c in cuts:
        assert lut_target_bytes(toks, int(c), lut) == decoded_target_bytes(sp, toks, int(c)), c
    # a stream that starts mid-document (prev of the first target is ordinary text)
    for k in (5, 17, int(np.flatnonzero(is_byte)[0])):
        sub = toks[k:]
        assert lut_target_bytes(sub, len(sub) - 1, lut) == decoded_target_bytes(sp, sub, len(sub) - 1)


def test_lut_bytes_equal_decoded_text_on_embedded_val(embedded_data):
    from golf.data.shards import load_val_tokens
    from golf.data.tokenizer import load_tokenizer
    sp = load_tokenizer(embedded_data.tokenizer_path, expected_vocab=1024)
    lut = bpb.build_byte_lut(sp, 1024)
    toks = load_val_tokens(str(embedded_data.dataset_dir), 1024)
    n = len(toks) - 1
    assert n > 1000
    assert lut_target_bytes(toks, n, lut) == decoded_target_bytes(sp, toks, n)
    for c in np.random.default_rng(1).integers(1, n, 10):
        assert lut_target_bytes(toks, int(c), lut) == decoded_target_bytes(sp, toks, int(c))


def test_byte_check_catches_a_wrong_lut(official_tokenizer, shared_data):
    """A LUT that bakes the '▁' byte into base_bytes (the GDN-lineage bug) must be refused."""
    import sentencepiece as spm
    from golf.eval.bpb import check_bytes
    sp = spm.SentencePieceProcessor(model_file=str(official_tokenizer))
    good = bpb.build_byte_lut(sp, 1024)
    bad = bpb.ByteLUT(base_bytes=(np.asarray(good.base_bytes) + np.asarray(good.has_leading_space)).astype(np.int16),
                      has_leading_space=np.asarray(good.has_leading_space),
                      is_boundary=np.asarray(good.is_boundary))
    toks = _fineweb_stream(shared_data, sp, n_docs=5)
    lines: list[str] = []
    assert check_bytes(sp, toks, len(toks) - 1, good, log=lines.append) > 0
    assert "lut_bytes" in lines[0] and "decoded_utf8_bytes" in lines[0]
    with pytest.raises(EvalError, match="byte check failed"):
        check_bytes(sp, toks, len(toks) - 1, bad, log=None)


def _gloo_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    import golf.eval.score as ev
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        V = 40
        res = evaluate_bpb(BigramModel(V), _stream(400, V), _toy_lut(V),
                           Scoring(seq_len=32, stride=8, batch_tokens=64, rank=rank,
                                   world_size=world))
        # one window for two ranks: rank 1 scores nothing and must add nothing
        one = evaluate_bpb(BigramModel(V), _stream(20, V), _toy_lut(V),
                           Scoring(seq_len=32, rank=rank, world_size=world))
        real_plan = ev.window_plan
        ev.window_plan = lambda *a: real_plan(*a)[:-1]      # a plan that skips its last window
        try:
            evaluate_bpb(BigramModel(V), _stream(200, V), _toy_lut(V),
                         Scoring(seq_len=32, rank=rank, world_size=world))
            broken = "no error"
        except EvalError as e:
            broken = str(e)
        finally:
            ev.window_plan = real_plan
        with open(f"{out_dir}/rank{rank}.json", "w") as fh:
            json.dump({"res": res.to_dict(), "one": one.to_dict(), "broken": broken}, fh)
        dist.barrier()  # leave together: gloo aborts a rank whose peer closed mid-read
    finally:
        dist.destroy_process_group()
    exit_without_teardown()


def test_two_rank_gloo_equals_single_process(tmp_path):
    """Every rank returns the single-process result, also when a rank has no window; a plan
    that misses targets is refused on every rank."""
    import torch.multiprocessing as mp
    mp.spawn(_gloo_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    V = 40
    single = evaluate_bpb(BigramModel(V), _stream(400, V), _toy_lut(V),
                          Scoring(seq_len=32, stride=8))
    one = evaluate_bpb(BigramModel(V), _stream(20, V), _toy_lut(V), Scoring(seq_len=32))
    for r in range(2):
        d = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert d["res"]["tokens"] == single.tokens and d["res"]["bytes"] == single.bytes
        assert d["res"]["val_bpb"] == pytest.approx(single.val_bpb, rel=1e-9)
        assert (d["one"]["tokens"], d["one"]["bytes"]) == (19, _rule_bytes(_stream(20, V), 19, _toy_lut(V)))
        assert d["one"]["val_bpb"] == pytest.approx(one.val_bpb, rel=1e-12)
        assert "window plan bug" in d["broken"]


def test_official_val_prints_the_reference_byte_count(official_tokenizer, shared_data, monkeypatch):
    """On the official sp1024 val split (~62M targets) the known 151,080,168 bytes is printed."""
    import sentencepiece as spm
    import golf.eval.bpb as ev
    sp = spm.SentencePieceProcessor(model_file=str(official_tokenizer))
    toks = _fineweb_stream(shared_data, sp, n_docs=3)
    lines: list[str] = []
    ev.check_bytes(sp, toks, len(toks) - 1, bpb.build_byte_lut(sp, 1024), log=lines.append)
    assert "151,080,168" not in lines[0]                      # a small stream is not the val split
    monkeypatch.setitem(ev.REFERENCE_VAL, (1024, False), (len(toks) - 1, ev.OFFICIAL_VAL_BYTES))
    ev.check_bytes(sp, toks, len(toks) - 1, bpb.build_byte_lut(sp, 1024), log=lines.append)
    assert "official_reference_bytes:151,080,168" in lines[1]


# ----------------------------------------------------------------------------- scorer edges
class PositionModel(torch.nn.Module):
    """Logits = table[token] + (position in the window) * bias: a target's NLL tells how many
    tokens of context its window gave it."""

    def __init__(self, vocab: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=g))
        self.bias = torch.nn.Parameter(torch.randn(vocab, generator=g))

    def forward(self, x):
        pos = torch.arange(x.shape[1], dtype=torch.float32)[None, :, None]
        return self.table[x] + pos * self.bias


def _nll_with_context(m: PositionModel, toks: np.ndarray, context: list[int]) -> float:
    """Σ NLL in float64 when target t is predicted after context[t] tokens (itself included)."""
    table, bias = m.table.detach().double().numpy(), m.bias.detach().double().numpy()
    t = toks.astype(np.int64)
    total = 0.0
    for i, c in enumerate(context):
        z = table[t[i]] + (c - 1) * bias
        total += float(np.logaddexp.reduce(z) - z[t[i + 1]])
    return total


@pytest.mark.parametrize("stride", [0, 1])
def test_each_target_is_scored_with_the_context_its_mode_gives(stride):
    """Chunked: target t sees t mod L + 1 tokens; stride 1: min(t + 1, L), every target with
    the longest context the window allows (written from the rule, not from window_plan)."""
    V, L = 24, 16
    toks, lut = _stream(101, V, seed=5), _toy_lut(V)
    m = PositionModel(V, seed=6)
    n = len(toks) - 1
    context = [t % L + 1 for t in range(n)] if stride == 0 else [min(t + 1, L) for t in range(n)]
    res = evaluate_bpb(m, toks, lut, Scoring(seq_len=L, stride=stride, batch_tokens=64))
    assert res.tokens == n
    assert res.val_loss * n == pytest.approx(_nll_with_context(m, toks, context), rel=1e-6)


class LinearModel(torch.nn.Module):
    """Embedding then a linear layer: autocast would run the matmul in bf16."""

    def __init__(self, vocab: int):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, 32)
        self.out = torch.nn.Linear(32, vocab)

    def forward(self, x):
        return self.out(self.emb(x))


def test_cpu_scores_are_float32_even_inside_a_callers_autocast():
    """The NLL is the float32 model's (within float32 of a float64 computation), and a CPU
    autocast around the call changes no bit."""
    V = 40
    toks, lut = _stream(200, V), _toy_lut(V)
    m = LinearModel(V)
    plain = evaluate_bpb(m, toks, lut, Scoring(seq_len=32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = evaluate_bpb(m, toks, lut, Scoring(seq_len=32))
    assert inside.val_bpb == plain.val_bpb
    with torch.no_grad():
        w = m.out.weight.double()
        logits = m.emb.weight.double() @ w.T + m.out.bias.double()
    logp = torch.log_softmax(logits, -1).numpy()
    t = toks.astype(np.int64)
    assert plain.val_loss * plain.tokens == pytest.approx(-logp[t[:-1], t[1:]].sum(), rel=1e-6)


def test_cuda_scoring_runs_under_bf16_autocast_like_the_baseline():
    """On CUDA the forward runs in bf16 autocast (the precision the challenge baseline scores
    its val loss in); on any other device autocast is off."""
    import warnings
    from golf.eval.score import _autocast
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")           # "CUDA is not available" on a CPU machine
        cuda = _autocast(torch.device("cuda"))
    assert cuda.device == "cuda" and cuda.fast_dtype == torch.bfloat16
    for dev in ("cpu", "meta"):
        assert _autocast(torch.device(dev)).device == "cpu"


class _DeviceSpy(torch.nn.Module):
    """Zero logits on the input's device; records the devices it was called on."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.seen, self.shapes = vocab, [], []
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        self.seen.append(x.device.type)
        self.shapes.append(tuple(x.shape))
        return torch.zeros(*x.shape, self.vocab, device=x.device)


def test_batches_run_on_the_device_asked(monkeypatch):
    """batch_nll moves inputs and targets to `dev` (meta stands in for an accelerator);
    evaluate_bpb hands every batch the device it was given."""
    import golf.eval.score as ev
    V = 16
    stream = torch.from_numpy(_stream(40, V).astype(np.int32))
    spy = _DeviceSpy(V)
    out = ev.batch_nll(spy, stream, [(0, 0, 8), (8, 8, 16)], torch.device("meta"))
    assert out.device.type == "meta" and out.shape == (16,) and spy.seen == ["meta"]
    devs = []
    real = ev.batch_nll

    def on_cpu(model, stream, batch, dev, tilt=None):
        devs.append(dev.type)
        return real(model, stream, batch, torch.device("cpu"), tilt)

    monkeypatch.setattr(ev, "batch_nll", on_cpu)
    toks, lut = _stream(100, V), _toy_lut(V)
    res = evaluate_bpb(UniformModel(V), toks, lut,
                       Scoring(seq_len=16, batch_tokens=32, device="meta"))
    assert devs and set(devs) == {"meta"} and res.tokens == 99


@pytest.mark.parametrize("rows", [1, 2, 3, 7])
def test_batches_group_consecutive_equal_windows_up_to_rows(rows):
    """_batches: the plan in order, at most `rows` windows of one length per batch, and a batch
    is only closed when full or when the next window's length differs."""
    from golf.eval.score import _batches
    for n, L, s in [(100, 16, 0), (100, 16, 5), (37, 8, 3), (64, 16, 16), (5, 8, 2), (90, 10, 1)]:
        plan = window_plan(n, L, s)
        out = _batches(plan, rows)
        assert [w for b in out for w in b] == plan
        for b in out:
            assert 1 <= len(b) <= rows and len({e - st for st, _, e in b}) == 1
        for b, nxt in zip(out, out[1:]):
            assert len(b) == rows or (b[0][2] - b[0][0]) != (nxt[0][2] - nxt[0][0])


@pytest.mark.parametrize("seq_len,batch_tokens,world", [(16, 100, 1), (16, 10, 1), (16, 100, 2),
                                                         (8, 64, 1)])
def test_each_forward_holds_at_most_batch_tokens_per_rank_and_as_many_as_fit(seq_len, batch_tokens,
                                                                              world):
    """A forward holds whole windows, at most batch_tokens / world tokens (but at least one
    window); it holds fewer only when the plan runs out of windows of that length."""
    V = 16
    toks, lut = _stream(300, V), _toy_lut(V)
    spy = _DeviceSpy(V)
    evaluate_bpb(spy, toks, lut,
                 Scoring(seq_len=seq_len, batch_tokens=batch_tokens, rank=0, world_size=world))
    fit = max(1, (batch_tokens // world) // seq_len)
    assert all(r * t <= batch_tokens / world or r == 1 for r, t in spy.shapes)
    full = [r for r, t in spy.shapes if t == seq_len]
    assert all(r == fit for r in full[:-1]) and 1 <= full[-1] <= fit


def test_default_forward_is_65536_tokens():
    """The default batch_tokens (65,536, as documented) at seq_len 1: 65,536 windows, then 1."""
    V = 8
    toks, lut = _stream(65_538, V), _toy_lut(V)
    spy = _DeviceSpy(V)
    evaluate_bpb(spy, toks, lut, Scoring(seq_len=1))
    assert spy.shapes == [(65_536, 1), (1, 1)]


def test_result_records_what_ran_and_how_long_it_took():
    """seq_len, stride and mode as asked (stride defaults to chunked); seconds within the
    wall time the caller measured, tokens_per_s = tokens / seconds."""
    import time
    from golf.run.rules import eval_mode
    V = 16
    toks, lut = _stream(120, V), _toy_lut(V)
    m = BigramModel(V)
    for stride in (0, 5):
        t0 = time.perf_counter()
        r = evaluate_bpb(m, toks, lut, Scoring(seq_len=16, stride=stride))
        wall = time.perf_counter() - t0
        assert (r.seq_len, r.stride, r.mode) == (16, stride, eval_mode(stride))
        assert 0 < r.seconds <= wall
        assert r.tokens_per_s == pytest.approx(r.tokens / r.seconds, rel=1e-9)
    default = evaluate_bpb(m, toks, lut, Scoring(seq_len=16))
    assert default.stride == 0 and default.mode == eval_mode(0)
    assert default.val_bpb == evaluate_bpb(m, toks, lut, Scoring(seq_len=16, stride=0)).val_bpb


def test_stream_edges_one_target_and_none():
    """One token: nothing to score (one error naming the fix); two tokens: the one target,
    here 1 byte, is scored exactly; a table that gives the targets 0 bytes is refused."""
    V = 16
    lut = _toy_lut(V)
    with pytest.raises(EvalError, match="no validation targets"):
        evaluate_bpb(UniformModel(V), np.array([0], dtype=np.uint16), lut, Scoring(seq_len=8))
    one_byte = int(np.flatnonzero((lut.base_bytes == 1) & ~lut.has_leading_space)[0])
    r = evaluate_bpb(UniformModel(V), np.array([0, one_byte], dtype=np.uint16), lut,
                     Scoring(seq_len=8))
    assert (r.tokens, r.bytes) == (1, 1)
    assert r.val_bpb == pytest.approx(math.log(V) / math.log(2), rel=1e-6)
    zero = bpb.ByteLUT(np.zeros(V, dtype=np.int16), np.zeros(V, dtype=bool), np.zeros(V, dtype=bool))
    with pytest.raises(EvalError, match="0 bytes"):
        evaluate_bpb(UniformModel(V), _stream(30, V), zero, Scoring(seq_len=8))


def test_a_plan_that_misses_a_target_is_refused(monkeypatch):
    import golf.eval.score as ev
    real = ev.window_plan
    monkeypatch.setattr(ev, "window_plan", lambda *a: real(*a)[:-1])
    with pytest.raises(EvalError, match="window plan bug"):
        evaluate_bpb(UniformModel(16), _stream(50, 16), _toy_lut(16), Scoring(seq_len=8))


def test_simulated_rank_shares_empty_one_target_and_zero_byte():
    """Without a process group each rank returns its own share: an empty share is 0 tokens,
    0 bytes and NaN scores; a one-target share is scored (here 1 byte); a share whose targets
    have no bytes is NaN bpb, not an error (the bytes are elsewhere); the shares add up."""
    V, L = 16, 8
    lut = _toy_lut(V)
    m = BigramModel(V)
    one_byte = int(np.flatnonzero((lut.base_bytes == 1) & ~lut.has_leading_space)[0])
    for last, last_bytes in ((one_byte, 1), (0, 0)):
        toks = _stream(L + 1, V, seed=7)
        toks = np.append(toks, last).astype(np.uint16)          # 9 targets: windows of 8 and 1
        whole = evaluate_bpb(m, toks, lut, Scoring(seq_len=L))
        parts = [evaluate_bpb(m, toks, lut, Scoring(seq_len=L, rank=r, world_size=4)) for r in range(4)]
        assert [p.tokens for p in parts] == [0, 8, 0, 1]
        for p in (parts[0], parts[2]):
            assert p.bytes == 0 and math.isnan(p.val_loss) and math.isnan(p.val_bpb)
        assert parts[3].bytes == last_bytes == _rule_bytes(toks, 9, lut) - _rule_bytes(toks, 8, lut)
        assert sum(p.bytes for p in parts) == whole.bytes
        if last_bytes:
            nll = parts[1].val_loss * 8 + parts[3].val_loss
            assert nll == pytest.approx(whole.val_loss * 9, rel=1e-9)
        else:
            assert math.isnan(parts[3].val_bpb)
        two = [evaluate_bpb(m, toks, lut, Scoring(seq_len=L, rank=r, world_size=2)) for r in range(2)]
        assert [p.tokens for p in two] == [8, 1]
