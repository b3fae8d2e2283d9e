"""The frontier stack's model features (PR #1855 / #2135), each against
an independent computation written from the formulas on small tensors: the depth loop's layer
plan and skip pairing before and after the switch, gated skips, the two-lane block, the new
SmearGate with its BOS fix, the sparse attention gate, AsymLogit, per-document attention, and
the loop switch at a training fraction with a fake clock."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from conftest import randomize as randomize_params
from golf.run.config import Config
from golf.run.errors import ConfigError
from golf.model.layers import (asym_softcap, cu_seqlens, doc_attention, input_smear, segment_ids,
                         skip_merge, virtual_layers)
from golf.model.gpt import GPT, rms
from golf.train.optim import build_optimizers, training_fraction
from golf.train.loop import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
BOS = 1


def tiny(**kw) -> Config:
    """Every frontier feature on: 5 layers, layers 1..2 looped once (7 virtual), lanes from 3."""
    base = dict(vocab_size=64, num_layers=5, model_dim=32, num_heads=4, num_kv_heads=2,
                rope_dims=4, mlp_mult=2.0, num_loops=1, loop_start=1, loop_end=2,
                skip_gates_enabled=True, parallel_start_layer=3, smear_gate_enabled=True,
                smear_gate_bos_fix=True, gate_window=6, sparse_attn_gate_enabled=True,
                doc_attention=True)
    base.update(kw)
    return Config().replace(**base)


def randomize(m: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial values everywhere (zero-initialised gates, lambdas and projections too)."""
    return randomize_params(m, seed, std=0.3)


# --- the depth loop's layer plan ------------------------------------------------------------

def test_records_virtual_layers_encoder_decoder_and_skip_slots():
    cfg = Config().replace(num_loops=2, loop_start=3, loop_end=5)   # the records' (2, 3, 5)
    assert virtual_layers(11, 2, 3, 5, True) == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]
    assert cfg.layer_plan(True) == ([0, 1, 2, 3, 4, 5, 3, 4], [5, 3, 4, 5, 6, 7, 8, 9, 10])
    assert cfg.layer_plan(False) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10])
    with torch.device("meta"):
        m = GPT(cfg)
    assert m.skip_weights.shape == (8, 512) and m.looping      # min(8, 9) slots; fresh = loop on
    with torch.device("meta"):
        assert GPT(Config()).skip_weights.shape == (5, 512) and not GPT(Config()).looping


def lifo_pairs(enc: list[int], dec: list[int]) -> list[tuple[int, int]]:
    """(decoder physical layer, encoder physical layer) per skip, written as slot i <- enc[-1-i]."""
    n = min(len(enc), len(dec))
    return [(dec[i], enc[len(enc) - 1 - i]) for i in range(n)]


def test_skip_pairing_changes_at_the_switch_as_the_records_do():
    cfg = Config().replace(num_loops=2, loop_start=3, loop_end=5)
    assert lifo_pairs(*cfg.layer_plan(True)) == [(5, 4), (3, 3), (4, 5), (5, 4), (6, 3), (7, 2),
                                                 (8, 1), (9, 0)]
    assert lifo_pairs(*cfg.layer_plan(False)) == [(5, 4), (6, 3), (7, 2), (8, 1), (9, 0)]


def ref_hidden(m: GPT, idx: torch.Tensor, looping: bool) -> torch.Tensor:
    """tiny()'s forward written out with literal plans: looped 0,1,2,1,2,3,4 (enc 0,1,2; dec
    1,2,3,4), unlooped enc 0,1, dec 2,3,4; slot i <- the i-th last encoder output; lanes from
    physical 3 (lane0 = lane1 = x, the skip into lane0), final = mean of the lanes."""
    enc, dec = ([0, 1, 2], [1, 2, 3, 4]) if looping else ([0, 1], [2, 3, 4])
    e = m.tok_emb.weight[idx]
    lam, w = m.smear_lambda, m.smear_gate.weight[0]
    prev = torch.cat((torch.zeros_like(e[:, :1]), e[:, :-1]), 1) * (idx != BOS).unsqueeze(-1)
    g = lam * torch.sigmoid(e[..., :6] @ w)
    e = e + torch.cat((torch.zeros_like(g[:, :1]), g[:, 1:]), 1).unsqueeze(-1) * prev
    x = x0 = rms(e)
    seg = segment_ids(idx, BOS)
    outs = []
    for layer in enc:
        x = m.blocks[layer](x, x0, None, seg)
        outs.append(x)
    lane0 = lane1 = None
    for i, layer in enumerate(dec):
        if layer >= 3 and lane0 is None:
            lane0 = lane1 = x
        if i < len(outs):
            s = m.skip_weights[i] * outs[len(outs) - 1 - i]
            gs = torch.sigmoid(m.skip_gates[i])
            if lane0 is None:
                x = gs * x + (1 - gs) * s
            else:
                lane0 = gs * lane0 + (1 - gs) * s
        if lane0 is None:
            x = m.blocks[layer](x, x0, None, seg)
        else:
            lane0, lane1 = ref_two_lane(m, layer, lane0, lane1, x0, seg)
    return rms((lane0 + lane1) / 2)


def ref_two_lane(m: GPT, layer: int, lane0, lane1, x0, seg):
    b, R, P = m.blocks[layer], m.parallel_resid_lambdas[layer], m.parallel_post_lambdas[layer]
    s = 1 / math.sqrt(layer + 1)
    a = b.attn_scale * b.attn(rms(b.resid_mix[0] * lane0 + b.resid_mix[1] * x0) * s, None, seg)
    f = b.mlp_scale * b.mlp(rms(lane1) * s)
    return (R[0] * lane0 + P[0, 0] * a + P[1, 0] * f, R[1] * lane1 + P[0, 1] * a + P[1, 1] * f)


@pytest.mark.parametrize("looping", [False, True])
def test_forward_matches_the_written_out_loop_skips_and_lanes(looping):
    torch.manual_seed(0)
    m = randomize(GPT(tiny()))
    m.looping = looping
    idx = torch.randint(2, 64, (2, 11))
    idx[0, 4] = idx[1, 8] = BOS
    with torch.no_grad():
        assert torch.allclose(m.hidden(idx), ref_hidden(m, idx, looping), atol=1e-5)
        other = m.hidden(idx) if looping else None
    if looping:  # the switch changes the function: both plans are really taken
        m.looping = False
        with torch.no_grad():
            assert not torch.allclose(m.hidden(idx), other, atol=1e-3)


def test_per_layer_tensors_are_physical_one_block_per_layer():
    with torch.device("meta"):
        m = GPT(Config().replace(num_loops=2, loop_start=3, loop_end=5, parallel_start_layer=8))
    assert len(m.blocks) == 11 and m.parallel_resid_lambdas.shape == (11, 2)
    assert m.parallel_post_lambdas.shape == (11, 2, 2)
    with torch.device("cpu"):
        m = GPT(Config().replace(vocab_size=64, num_layers=3, model_dim=32, num_heads=4,
                                 rope_dims=4, parallel_start_layer=2, skip_gates_enabled=True))
    assert torch.equal(m.parallel_resid_lambdas, torch.full((3, 2), 1.1))
    assert torch.equal(m.parallel_post_lambdas, torch.ones(3, 2, 2))
    assert torch.equal(m.skip_gates, torch.zeros(1, 32))


# --- gates ------------------------------------------------------------------------------------

def test_skip_merge_gated_and_plain():
    t, s, w, gate = torch.randn(3, 4), torch.randn(3, 4), torch.randn(4), torch.randn(4)
    g = 1 / (1 + torch.exp(-gate))
    assert torch.allclose(skip_merge(t, s, w, gate), g * t + (1 - g) * w * s, atol=1e-6)
    assert torch.allclose(skip_merge(t, s, w, None), t + w * s)
    assert torch.allclose(skip_merge(t, s, w, torch.zeros(4)), 0.5 * t + 0.5 * w * s)


def test_two_lane_block_against_hand_formula():
    torch.manual_seed(1)
    m = randomize(GPT(tiny()))
    x0, l0, l1 = torch.randn(3, 2, 7, 32).unbind(0)
    seg = torch.ones(2, 7, dtype=torch.long)
    with torch.no_grad():
        got = m.blocks[4].two_lane((l0, l1), x0, m.parallel_resid_lambdas[4],
                                   m.parallel_post_lambdas[4], None, seg)
        want = ref_two_lane(m, 4, l0, l1, x0, seg)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, want))


def test_sparse_attention_gate_scales_each_head_by_its_sigmoid():
    torch.manual_seed(2)
    gated = randomize(GPT(tiny(doc_attention=False)))
    plain = GPT(tiny(doc_attention=False, sparse_attn_gate_enabled=False))
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if "attn_gate_w" not in k})
    u = torch.randn(2, 9, 32)
    seen = []
    hooks = [m.blocks[1].attn.proj.register_forward_pre_hook(lambda mod, a: seen.append(a[0]))
             for m in (gated, plain)]
    with torch.no_grad():
        gated.blocks[1].attn(u), plain.blocks[1].attn(u)
    for h in hooks:
        h.remove()
    W = gated.blocks[1].attn.attn_gate_w                       # (H=4, window=6)
    g = torch.sigmoid(0.5 * torch.einsum("btw,hw->bth", u[..., :6], W))
    want = (seen[1].view(2, 9, 4, 8) * g[..., None]).reshape(2, 9, 32)
    assert torch.allclose(seen[0], want, atol=1e-6)


def test_smear_gate_formula_bos_fix_and_prenorm_placement():
    torch.manual_seed(3)
    e, w, lam = torch.randn(2, 6, 10), torch.randn(1, 4), torch.tensor([0.7])
    idx = torch.tensor([[5, 1, 7, 8, 1, 9], [1, 4, 4, 4, 4, 4]])
    for bos in (None, BOS):
        got = input_smear(e, idx, w, lam, bos)
        for b in range(2):
            assert torch.equal(got[b, 0], e[b, 0])                   # row start untouched
            for t in range(1, 6):
                gate = 0.7 / (1 + math.exp(-float(e[b, t, :4] @ w[0])))
                keep = 0.0 if (bos is not None and idx[b, t] == BOS) else 1.0
                assert torch.allclose(got[b, t], e[b, t] + gate * keep * e[b, t - 1], atol=1e-6)
    m = randomize(GPT(tiny(smear_gate_bos_fix=False)))
    i2 = torch.randint(0, 64, (2, 6))
    with torch.no_grad():
        want = rms(input_smear(m.tok_emb(i2), i2, m.smear_gate.weight, m.smear_lambda, None))
        assert torch.allclose(m.embed(i2), want, atol=1e-6)          # gate first, then the norm


def test_new_smear_gate_is_distinct_from_the_old_one():
    both = GPT(tiny(smear_gate=True))
    names = set(dict(both.named_parameters()))
    assert {"smear.gate", "smear_gate.weight", "smear_lambda"} <= names
    assert both.smear_gate.weight.shape == (1, 6) and not both.smear_gate.weight.any()
    assert "smear_gate.weight" not in both.hessian_modules()


def test_asym_softcap_piecewise_and_inert_at_init():
    z = torch.tensor([-50.0, -3.0, 0.0, 2.0, 40.0])
    sp, sn = torch.tensor(20.0), torch.tensor(35.0)
    want = [(20 * math.tanh(v / 20)) if v >= 0 else 35 * math.tanh(v / 35) for v in z.tolist()]
    assert torch.allclose(asym_softcap(z, sp, sn), torch.tensor(want), atol=1e-6)
    torch.manual_seed(4)
    asym = GPT(tiny(asym_logit_rescale=True))
    sym = GPT(tiny())
    sym.load_state_dict({k: v for k, v in asym.state_dict().items() if "softcap" not in k})
    idx = torch.randint(0, 64, (1, 8))
    with torch.no_grad():
        assert torch.allclose(asym(idx), sym(idx), atol=1e-6)        # both caps = 30 at init
        asym.softcap_neg.fill_(5.0)
        out = asym(idx)
    assert out.min() >= -5.0 and not torch.allclose(out, sym(idx).detach())


def test_asym_caps_inert_unless_trained_then_no_weight_decay():
    inert = GPT(tiny(asym_logit_rescale=True))
    assert not inert.softcap_pos.requires_grad
    assert all(p is not inert.softcap_pos for o in build_optimizers(inert, tiny())
               for g in o.param_groups for p in g["params"])
    cfg = tiny(asym_logit_rescale=True, asym_logit_train=True)
    m = GPT(cfg)
    groups = [g for o in build_optimizers(m, cfg) for g in o.param_groups
              if any(p is m.softcap_pos for p in g["params"])]
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0 and len(groups[0]["params"]) == 2
    assert groups[0]["lr"] == cfg.scalar_lr


# --- per-document attention -------------------------------------------------------------------

def test_segment_ids_bos_rule_and_cut():
    idx = torch.tensor([[7, 7, 1, 7, 7, 7, 7, 1, 7]])
    assert segment_ids(idx, BOS).tolist() == [[1, 1, 2, 2, 2, 2, 2, 3, 3]]
    cut = segment_ids(idx, BOS, max_len=3)[0].tolist()              # segments 2 and 5 long, cut at 3
    groups = [[i for i in range(9) if cut[i] == s] for s in dict.fromkeys(cut)]
    assert groups == [[0, 1], [2, 3, 4], [5, 6], [7, 8]]
    cu, longest = cu_seqlens(torch.tensor([[1, 1, 2], [1, 2, 2]]))
    assert cu.tolist() == [0, 2, 3, 4, 6] and longest == 2


def test_doc_attention_equals_each_segment_alone():
    torch.manual_seed(5)
    q, k, v = torch.randn(1, 9, 4, 8), torch.randn(1, 9, 2, 8), torch.randn(1, 9, 2, 8)
    idx = torch.tensor([[7, 7, 1, 7, 7, 7, 7, 1, 7]])
    got = doc_attention(q, k, v, segment_ids(idx, BOS, max_len=3))
    for lo, hi in ((0, 2), (2, 5), (5, 7), (7, 9)):
        alone = F.scaled_dot_product_attention(
            q[:, lo:hi].transpose(1, 2), k[:, lo:hi].repeat_interleave(2, 2).transpose(1, 2),
            v[:, lo:hi].repeat_interleave(2, 2).transpose(1, 2), is_causal=True).transpose(1, 2)
        assert torch.allclose(got[:, lo:hi], alone, atol=1e-6)


def test_model_logits_with_a_bos_inside_are_per_document():
    torch.manual_seed(6)
    m = randomize(GPT(tiny(asym_logit_rescale=True, smear_gate=True, smear_bos_fix=True)))
    doc_a, doc_b = torch.randint(2, 64, (1, 5)), torch.randint(2, 64, (1, 6))
    doc_a[0, 0] = doc_b[0, 0] = BOS
    row = torch.cat((doc_a, doc_b), 1)
    for looping in (False, True):
        m.looping = looping
        with torch.no_grad():
            packed, a, b = m(row), m(doc_a), m(doc_b)
        assert torch.allclose(packed[:, :5], a, atol=1e-4)
        assert torch.allclose(packed[:, 5:], b, atol=1e-4)
    off = GPT(tiny(doc_attention=False))
    off.load_state_dict(m.state_dict(), strict=False)
    with torch.no_grad():
        assert not torch.allclose(off(row)[:, 5:], off(doc_b), atol=1e-3)  # the leak it removes


# --- the switch, settings ---------------------------------------------------------------------

def test_loop_switch_at_the_training_fraction_with_a_fake_clock():
    cfg = tiny(enable_looping_at=0.35, iterations=1000)
    logs: list[str] = []
    t = SimpleNamespace(cfg=cfg, base=SimpleNamespace(looping=False), step=10, train_ms=0.0,
                        cap_ms=100_000.0, log=logs.append)
    for ms, on in ((34_000.0, False), (34_999.0, False), (35_000.0, True), (10.0, True)):
        t.train_ms = ms                         # the last: a clock going back never turns it off
        Trainer.switch_loop(t)
        assert t.base.looping is on, ms
    assert len(logs) == 1 and logs[0].startswith("loop:on step:10 frac:0.350")
    t = SimpleNamespace(cfg=cfg, base=SimpleNamespace(looping=False), step=349, train_ms=0.0,
                        cap_ms=0.0, log=logs.append)
    Trainer.switch_loop(t)
    assert not t.base.looping
    t.step = 350                                # no cap: the fraction is steps/ITERATIONS
    Trainer.switch_loop(t)
    assert t.base.looping
    assert training_fraction(5, 90.0, 100.0, 10) == 0.9 and training_fraction(9, 0, 0, 10) == 0.9


def test_bad_frontier_settings_are_one_readable_error_each():
    env = {"PRESET": "cpu", "NUM_LOOPS": "2", "LOOP_START": "3", "LOOP_END": "9",
           "PARALLEL_FINAL_LANE": "max", "ENABLE_LOOPING_AT": "1.5", "SMEAR_GATE_ENABLED": "1",
           "GATE_WINDOW": "0"}
    with pytest.raises(ConfigError) as exc:
        Config.from_env(env).validate()
    text = str(exc.value)
    for name in ("LOOP_START=3 / LOOP_END=9", "PARALLEL_FINAL_LANE='max'", "ENABLE_LOOPING_AT=1.5",
                 "GATE_WINDOW=0"):
        assert name in text, name
    bad = Config().replace(num_loops=2, parallel_start_layer=4).problems()
    assert len(bad) == 1 and bad[0].startswith("PARALLEL_START_LAYER=4: must be above LOOP_END=5")


def test_env_names_are_the_records():
    cfg = Config.from_env({"PRESET": "p1125", "NUM_LOOPS": "2", "SKIP_GATES_ENABLED": "1",
                           "PARALLEL_START_LAYER": "8", "SMEAR_GATE_ENABLED": "1",
                           "SMEAR_GATE_BOS_FIX": "1", "SPARSE_ATTN_GATE_ENABLED": "1",
                           "SPARSE_ATTN_GATE_SCALE": "0.5", "ASYM_LOGIT_RESCALE": "1",
                           "DOC_ATTENTION": "1", "GATE_WINDOW": "12", "ENABLE_LOOPING_AT": "0.35"})
    assert (cfg.num_loops, cfg.parallel_start_layer, cfg.enable_looping_at) == (2, 8, 0.35)
    assert cfg.skip_gates_enabled and cfg.smear_gate_enabled and cfg.smear_gate_bos_fix
    assert cfg.sparse_attn_gate_enabled and cfg.asym_logit_rescale and cfg.doc_attention
    assert not cfg.smear_gate and cfg.problems() == []


# --- a real training run on the fake clock ----------------------------------------------------

class TickClock:
    """`time` inside golf.train.loop with perf_counter advancing 1 s a call: 1 s per training step."""

    def __init__(self):
        self.t = 0.0

    def perf_counter(self) -> float:
        self.t += 1.0
        return self.t

    def __getattr__(self, name):
        import time
        return getattr(time, name)


def test_training_turns_the_loop_on_at_the_wallclock_fraction(tiny_config, tmp_path, monkeypatch):
    import golf.train.loop as golf_train
    monkeypatch.setattr(golf_train, "time", TickClock())
    cfg = tiny_config.replace(
        runs_dir=str(tmp_path), run_id="loop", num_layers=3, bigram_vocab_size=0, ve_dim=0,
        smear_gate=False, num_loops=1, loop_start=1, loop_end=1, parallel_start_layer=2,
        skip_gates_enabled=True, smear_gate_enabled=True, smear_gate_bos_fix=True,
        sparse_attn_gate_enabled=True, doc_attention=True, asym_logit_rescale=True,
        asym_logit_train=True, enable_looping_at=0.35, max_wallclock_seconds=10.0,
        gptq_reserve_seconds=0.0, iterations=20, gptq_calib_batches=1, max_eval_tokens=2048,
        warmup_steps=1)
    lines: list[str] = []
    res = golf_train.train(cfg, log=lines.append)
    on = [s for s in lines if s.startswith("loop:on")]
    # 1 s a step on a 10 s cap: 3 steps = 0.30 < 0.35, 4 steps = 0.40 -> on before step index 4
    assert len(on) == 1 and on[0].startswith("loop:on step:4 frac:0.400")
    assert "encoder:[0, 1] decoder:[1, 2]" in on[0]          # 0,1,1,2 split in half
    assert res.steps == 10 and math.isfinite(res.final_val_bpb)
    sd = torch.load(res.ema_path, weights_only=True)["state_dict"]
    assert float(sd["softcap_pos"]) != cfg.logit_softcap       # the caps trained


# --- presets ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,count", [("pr1855", 35_945_671), ("pr2135", 35_945_673),
                                        ("frontier", 35_945_673)])
def test_record_presets_have_the_records_parameter_counts(name, count):
    from golf.model.gpt import parameter_count
    cfg = Config.from_preset(name)
    assert cfg.problems() == [] and parameter_count(cfg) == count


def test_pr2135_and_frontier_differ_from_pr1855_as_the_records_do():
    a, b, f = (Config.from_preset(n) for n in ("pr1855", "pr2135", "frontier"))
    diff = {k for k, v in b.to_dict().items() if a.to_dict()[k] != v} - {"preset"}
    assert diff == {"matrix_lr", "gptq_calib_batches", "eval_seq_len", "val_loss_every",
                    "smear_gate_bos_fix", "asym_logit_rescale"}
    assert (b.matrix_lr, b.eval_seq_len, b.smear_gate_bos_fix, b.asym_logit_train) == (0.028, 2560, False, False)
    diff = {k for k, v in f.to_dict().items() if b.to_dict()[k] != v} - {"preset"}
    assert diff == {"smear_gate_bos_fix", "asym_logit_train"} and f.smear_gate_bos_fix and f.asym_logit_train


def test_cpu_frontier_is_the_frontier_features_shrunk_to_cpu_cost():
    """The CPU default: every frontier model feature, 3 x 128 with MLP 3x (cpu's data, row
    length, batch and steps), so a step costs about what `cpu`'s does (docs/frontier.md)."""
    from golf.model.gpt import parameter_count
    cpu, small = Config.from_preset("cpu"), Config.from_preset("cpu_frontier")
    shape = ("model_dim", "num_heads", "num_kv_heads", "vocab_size", "train_seq_len",
             "train_batch_tokens", "iterations", "data_path")
    assert all(getattr(cpu, k) == getattr(small, k) for k in shape)
    assert (small.num_layers, small.mlp_mult) == (3, 3.0)
    assert small.layer_plan(False) == ([0], [1, 2]) and small.layer_plan(True) == ([0, 1], [1, 2])
    assert small.parallel_start_layer == 2 and small.enable_looping_at == 0.35
    assert small.doc_attention and small.skip_gates_enabled and small.smear_gate_enabled
    assert small.sparse_attn_gate_enabled and small.smear_gate_bos_fix and not small.bigram_vocab_size
    assert not small.smear_gate and not small.ve_dim and not small.doc_packing and small.ema_warmup
    assert small.problems() == [] and small.budget_bytes < cpu.budget_bytes
    assert parameter_count(small) == 575_677 < parameter_count(cpu)
    assert Config.from_env({"PRESET": "frontier"}, cpu_preset=True).preset == "cpu_frontier"
