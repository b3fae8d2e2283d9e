"""The 1.1122 record stack (R29) and the P1125 stack: each feature's math against an independent
computation written from the records' published formulas, the records' parameter counts and names,
optimizer groups, presets, the model_dict check and a quantize -> artifact -> GPT round trip."""
from __future__ import annotations

import dataclasses
import inspect
import math
import re
from pathlib import Path

import pytest
import torch

from conftest import randomize
from golf.run import config as config_mod
from golf.run.config import PRESETS, R29_ROPE_BASE, Config
from golf.run.errors import ConfigError
from golf.model.gpt import (GPT, Attention, ModelConfig, SmearGate, apply_rope, bigram_hash,
                        count_parameters, quant_roles, rope_base_for, rope_tables)
from golf.train.optim import build_optimizers, split_params

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]


def tiny_cfg(**kw) -> Config:
    """Every record feature on, at sizes that run in milliseconds."""
    base = dict(vocab_size=128, num_layers=3, model_dim=64, num_heads=4, num_kv_heads=2,
                mlp_mult=2.0, qk_gain_init=1.5, bigram_vocab_size=61, bigram_dim=16,
                smear_gate=True, smear_bos_fix=False, ve_dim=16, ve_layers="-2,-1")
    base.update(kw)
    return Config().replace(**base)


def meta_model(cfg: Config) -> GPT:
    with torch.device("meta"):
        return GPT(cfg)


# --- BigramHash -----------------------------------------------------------------------------

def _i32(x: int) -> int:
    """Wrap a Python int to int32 (two's complement), as torch int32 arithmetic does."""
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >= 1 << 31 else x


def test_bigram_hash_matches_python_loop():
    g = torch.Generator().manual_seed(0)
    for vocab, buckets in ((1024, 2816), (1024, 61), (65535, 3072)):  # the last one wraps int32
        idx = torch.randint(0, vocab, (3, 40), generator=g)
        got = bigram_hash(idx, buckets)
        m = buckets - 1
        for r in range(idx.shape[0]):
            row = idx[r].tolist()
            want = [m] + [(_i32(36313 * row[j]) ^ _i32(27191 * row[j - 1])) % m
                          for j in range(1, len(row))]
            assert got[r].tolist() == want
        assert got.dtype == torch.int64 and int(got.min()) >= 0 and int(got.max()) <= m


def test_bigram_is_added_before_the_input_norm():
    torch.manual_seed(0)
    cfg = tiny_cfg(smear_gate=False)
    m = randomize(GPT(cfg))
    idx = torch.randint(0, cfg.vocab_size, (2, 12))
    h = bigram_hash(idx, cfg.bigram_vocab_size)
    b = m.bigram
    extra = b.scale * (b.embed.weight[h] @ b.proj.weight.T)     # scale * W_p * Emb_b[h]
    e = m.tok_emb.weight[idx] + extra
    want = e / torch.sqrt((e * e).mean(-1, keepdim=True) + torch.finfo(e.dtype).eps)
    assert torch.allclose(m.embed(idx), want, atol=1e-5)


# --- SmearGate ------------------------------------------------------------------------------

def smear_loop(x: torch.Tensor, gate: torch.Tensor, idx: torch.Tensor | None = None,
               bos: int | None = None) -> torch.Tensor:
    g = torch.sigmoid(gate)
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            cut = t == 0 or (bos is not None and int(idx[b, t]) == bos)
            prev = torch.zeros_like(x[b, t]) if cut else x[b, t - 1]
            out[b, t] = (1 - g) * x[b, t] + g * prev
    return out


def test_smear_matches_per_position_loop_with_and_without_bos_fix():
    torch.manual_seed(0)
    x, gate = torch.randn(2, 9, 8), torch.randn(8)
    idx = torch.randint(0, 5, (2, 9))
    idx[0, 4] = idx[1, 0] = idx[1, 7] = 1
    plain, fixed = SmearGate(8), SmearGate(8, bos_id=1)
    with torch.no_grad():
        plain.gate.copy_(gate)
        fixed.gate.copy_(gate)
    assert torch.allclose(plain(x, idx), smear_loop(x, gate), atol=1e-6)
    assert torch.allclose(fixed(x, idx), smear_loop(x, gate, idx, 1), atol=1e-6)
    assert torch.allclose(torch.sigmoid(SmearGate(8).gate), torch.full((8,), 0.5))  # init g = 0.5


def test_smear_bos_fix_cuts_the_previous_document():
    torch.manual_seed(0)
    bos_at = 6
    idx = torch.randint(2, 50, (1, 12))
    idx[0, bos_at] = 1
    x = torch.randn(1, 12, 8, requires_grad=True)
    fixed, plain = SmearGate(8, bos_id=1), SmearGate(8)
    # gradient: nothing at or after the BOS depends on anything before it
    fixed(x, idx)[:, bos_at:].sum().backward()
    assert x.grad[:, :bos_at].abs().max() == 0 and x.grad[:, bos_at:].abs().min() > 0
    # perturbation of the previous document's last position
    x2 = x.detach().clone()
    x2[:, bos_at - 1] += 1.0
    with torch.no_grad():
        assert torch.equal(fixed(x.detach(), idx)[:, bos_at:], fixed(x2, idx)[:, bos_at:])
        assert not torch.allclose(plain(x.detach(), idx)[:, bos_at], plain(x2, idx)[:, bos_at])


def test_model_embedding_with_bos_fix_ignores_tokens_before_bos():
    torch.manual_seed(0)
    cfg = tiny_cfg(bigram_vocab_size=0, smear_bos_fix=True)  # the bigram hash itself crosses BOS
    m = randomize(GPT(cfg))
    idx = torch.randint(2, cfg.vocab_size, (1, 16))
    idx[0, 9] = cfg.bos_id
    idx2 = idx.clone()
    idx2[0, :9] = (idx2[0, :9] + 7) % cfg.vocab_size
    with torch.no_grad():
        a, b = m.embed(idx), m.embed(idx2)
        assert torch.equal(a[:, 9:], b[:, 9:])
        off = GPT(cfg.replace(smear_bos_fix=False))
        off.load_state_dict(m.state_dict())
        assert not torch.allclose(off.embed(idx)[:, 9], off.embed(idx2)[:, 9])


# --- value embedding and the attention it feeds -------------------------------------------

def ref_rope(x: torch.Tensor, rd: int, base: float) -> torch.Tensor:
    """x (B,T,H,D): pairs (j, j+rd/2) turned as [x1 cos + x2 sin, -x1 sin + x2 cos]."""
    out = x.clone()
    half = rd // 2
    pos = torch.arange(x.shape[1], dtype=torch.float64)[None, :, None]
    for j in range(half):
        th = pos * base ** (-2.0 * j / rd)
        c, s = torch.cos(th).to(x.dtype), torch.sin(th).to(x.dtype)
        x1, x2 = x[..., j], x[..., j + half]
        out[..., j] = x1 * c + x2 * s
        out[..., j + half] = -x1 * s + x2 * c
    return out


def ref_attention(a: Attention, u: torch.Tensor, ve: torch.Tensor | None, base: float) -> torch.Tensor:
    """Attention written out: explicit q/k/v matmuls, QK-norm, RoPE, gain, causal softmax, XSA."""
    B, T, _ = u.shape
    H, G, D = a.h, a.hkv, a.hd
    eps = torch.finfo(u.dtype).eps
    norm = lambda t: t / torch.sqrt((t * t).mean(-1, keepdim=True) + eps)  # noqa: E731
    q = norm((u @ a.c_q.weight.T).view(B, T, H, D))
    k = norm((u @ a.c_k.weight.T).view(B, T, G, D))
    v = u @ a.c_v.weight.T
    v = (v if ve is None else v + ve).view(B, T, G, D)
    q, k = ref_rope(q, a.rope_dims, base), ref_rope(k, a.rope_dims, base)
    q = q * a.q_gain[None, None, :, None]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    ys = []
    for h in range(H):
        g = h // (H // G)
        s = (q[:, :, h] @ k[:, :, g].transpose(1, 2)) / math.sqrt(D)
        y = torch.softmax(s.masked_fill(~mask, float("-inf")), -1) @ v[:, :, g]
        if a.use_xsa:
            vh = v[:, :, g] / v[:, :, g].norm(dim=-1, keepdim=True)
            y = y - (y * vh).sum(-1, keepdim=True) * vh
        ys.append(y)
    return torch.stack(ys, 2).reshape(B, T, H * D) @ a.proj.weight.T


def test_value_embedding_terms_are_explicit_matmuls_and_reach_v():
    torch.manual_seed(0)
    cfg = tiny_cfg(num_layers=4, ve_layers="3,1")
    m = randomize(GPT(cfg))
    assert m.ve_layers == [3, 1]
    idx = torch.randint(0, cfg.vocab_size, (2, 10))
    vs = m.ve_shared
    shared = vs.scale * (vs.embed.weight[idx] @ vs.proj.weight.T)     # scale * W_ve * Emb_ve[t]
    seen: dict[int, torch.Tensor | None] = {}
    hooks = [b.attn.register_forward_pre_hook(lambda mod, args, i=i: seen.__setitem__(i, args[1]))
             for i, b in enumerate(m.blocks)]
    with torch.no_grad():
        m(idx)
    for h in hooks:
        h.remove()
    assert seen[0] is None and seen[2] is None
    assert torch.allclose(seen[3], m.ve_layer_scales[0] * shared, atol=1e-6)
    assert torch.allclose(seen[1], m.ve_layer_scales[1] * shared, atol=1e-6)


def test_attention_with_ve_and_xsa_matches_written_out_formula():
    torch.manual_seed(0)
    cfg = tiny_cfg(rope_dims=8, rope_base=R29_ROPE_BASE)
    m = randomize(GPT(cfg))
    a = m.blocks[2].attn
    u, ve = torch.randn(2, 11, 64), torch.randn(2, 11, 32)
    with torch.no_grad():
        for use_ve in (None, ve):
            assert torch.allclose(a(u, use_ve), ref_attention(a, u, use_ve, R29_ROPE_BASE), atol=1e-5)


# --- RoPE -----------------------------------------------------------------------------------

def test_rope_direction_matches_the_records_formula():
    torch.manual_seed(0)
    x = torch.randn(2, 7, 3, 32, dtype=torch.float64)
    cos, sin = rope_tables(7, 16, 10000.0, "cpu", torch.float64)
    got = apply_rope(x, cos, sin, 16)
    assert torch.allclose(got, ref_rope(x, 16, 10000.0), atol=1e-12)
    # as complex numbers z = x1 + i x2 the records turn by -pos*theta
    z = torch.complex(x[..., :8], x[..., 8:16])
    th = torch.arange(7, dtype=torch.float64)[None, :, None, None] * 10000.0 ** (-torch.arange(8) / 8)
    zr = z * torch.exp(-1j * th)
    assert torch.allclose(got[..., :8], zr.real, atol=1e-12)
    assert torch.allclose(got[..., 8:16], zr.imag, atol=1e-12)
    assert torch.equal(got[..., 16:], x[..., 16:])


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    T = 40
    cos, sin = rope_tables(T, 16, R29_ROPE_BASE, "cpu", torch.float64)
    rot = lambda v: apply_rope(v.expand(1, T, 1, 16), cos, sin, 16)[0, :, 0]  # noqa: E731
    qs, ks = rot(q), rot(k)
    scores = qs @ ks.T  # scores[m, n] = <R_m q, R_n k>
    for d in (-5, 0, 3, 17):
        diag = torch.diagonal(scores, offset=-d)  # all (m, m - d)
        assert torch.allclose(diag, diag[0].expand_as(diag), atol=1e-9)


def test_ntk_rescale_reproduces_the_records_effective_base():
    assert R29_ROPE_BASE == pytest.approx(22_082, abs=1)
    assert rope_base_for(2048, 16, 10000.0, 1024) == pytest.approx(R29_ROPE_BASE, rel=1e-12)
    assert rope_base_for(2048, 64, 10000.0, 1024) == pytest.approx(20_452, abs=1)
    assert rope_base_for(1024, 16, 10000.0, 1024) == 10000.0  # only above the reference length
    assert rope_base_for(4096, 16, 10000.0, 0) == 10000.0     # off by default
    torch.manual_seed(0)
    ntk = GPT(tiny_cfg(rope_dims=8, rope_base=10000.0, rope_ntk_ref_len=8))
    fixed = GPT(tiny_cfg(rope_dims=8, rope_base=10000.0 * 2 ** (8 / 6)))
    fixed.load_state_dict(randomize(ntk).state_dict())
    u = torch.randn(1, 16, 64)
    with torch.no_grad():
        assert torch.allclose(ntk.blocks[0].attn(u), fixed.blocks[0].attn(u), atol=1e-6)


# --- shapes, names, counts, init ---------------------------------------------------------------

R29_GLOBALS = {"tok_emb.weight": (1024, 512), "skip_weights": (5, 512), "smear.gate": (512,),
               "bigram.embed.weight": (2816, 112), "bigram.proj.weight": (512, 112),
               "bigram.scale": (), "ve_shared.embed.weight": (1024, 128),
               "ve_shared.proj.weight": (256, 128), "ve_shared.scale": (),
               "ve_layer_scales.0": (1,), "ve_layer_scales.1": (1,)}


@pytest.mark.parametrize("label,changes,count", [
    ("R29", {}, 27_038_812),
    ("R25", {"bigram_vocab_size": 3072}, 27_067_484),
    ("R23", {"bigram_vocab_size": 1536, "bigram_dim": 128}, 26_928_220),
    ("R20", {"bigram_vocab_size": 2048, "bigram_dim": 128, "ve_dim": 0}, 26_829_913),
])
def test_record_parameter_counts(label, changes, count):
    assert count_parameters(meta_model(Config.from_preset("r29").replace(**changes))) == count


def test_p1125_parameter_count_and_names():
    m = meta_model(Config.from_preset("p1125"))
    assert count_parameters(m) == 26_501_720
    assert not any(n.startswith(("bigram", "smear", "ve_")) for n, _ in m.named_parameters())


def test_r29_parameter_names_are_the_records():
    m = meta_model(Config.from_preset("r29"))
    glob = {n: tuple(p.shape) for n, p in m.named_parameters() if not n.startswith("blocks.")}
    assert glob == R29_GLOBALS
    assert m.ve_layers == [9, 10]
    assert m.state_dict()["bigram.scale"].ndim == 0


def test_record_inits():
    torch.manual_seed(0)
    m = GPT(Config.from_preset("cpu"))
    assert torch.equal(m.bigram.embed.weight, torch.zeros_like(m.bigram.embed.weight))
    assert m.bigram.scale.item() == pytest.approx(0.05) and m.ve_shared.scale.item() == pytest.approx(0.1)
    assert all(s.item() == 1.0 for s in m.ve_layer_scales)
    assert torch.equal(m.smear.gate, torch.zeros(128))
    assert 0.008 < m.ve_shared.embed.weight.detach().std().item() < 0.012
    for w in (m.bigram.proj.weight, m.ve_shared.proj.weight):  # orthogonal columns (tall) or rows
        small = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        assert torch.allclose(small, torch.eye(small.shape[0]), atol=1e-5)
    assert (m.blocks[0].attn.proj.weight == 0).all() and (m.blocks[0].mlp.proj.weight == 0).all()


def test_ve_layers_resolution_and_errors():
    c = Config().replace(ve_dim=8)
    assert c.ve_layer_indices() == [9, 10] and c.replace(ve_layers="9,10").ve_layer_indices() == [9, 10]
    assert c.replace(ve_dim=0).ve_layer_indices() == []
    for bad in ("11", "x", "3,3", ""):
        with pytest.raises(ValueError, match="VE_LAYERS"):
            c.replace(ve_layers=bad).ve_layer_indices()


# --- optimizer groups --------------------------------------------------------------------------

BLOCK_MATRIX = re.compile(r"blocks\.\d+\.(attn\.(c_q|c_k|c_v|proj)|mlp\.(fc|proj))\.weight")
TABLES = {"tok_emb.weight", "bigram.embed.weight", "ve_shared.embed.weight"}


def expected_group(name: str, shape: tuple, mode: str) -> str:
    if mode == "legacy":
        if name.startswith("blocks.") and len(shape) == 2:
            return "muon"
        return "emb" if name.startswith("tok_emb") else "scalar"
    if BLOCK_MATRIX.fullmatch(name):
        return "muon"
    return "emb" if name in TABLES else "scalar"


@pytest.mark.parametrize("mode", ["records", "legacy"])
def test_optimizer_groups_of_the_r29_model(mode):
    m = meta_model(Config.from_preset("r29").replace(xsa_gate=True))
    muon, emb, scal = split_params(m, mode)
    group = {id(p): g for g, ps in (("muon", muon), ("emb", emb), ("scalar", scal)) for p in ps}
    names = dict(m.named_parameters())
    assert len(group) == len(names)
    for name, p in names.items():
        assert group[id(p)] == expected_group(name, tuple(p.shape), mode), name
    res = group[id(names["blocks.0.resid_mix"])]
    assert res == ("muon" if mode == "legacy" else "scalar")
    if mode == "records":
        assert len(muon) == 11 * 6
        for n in ("bigram.proj.weight", "ve_shared.proj.weight", "smear.gate", "bigram.scale",
                  "ve_shared.scale", "ve_layer_scales.1", "skip_weights", "blocks.3.attn.q_gain",
                  "blocks.3.attn.xsa_gate", "blocks.3.attn_scale", "blocks.3.mlp_scale"):
            assert group[id(names[n])] == "scalar", n


def test_build_optimizers_uses_optim_groups_and_lrs():
    cfg = tiny_cfg(matrix_lr=0.011, tied_embed_lr=0.022, scalar_lr=0.033)
    m = GPT(cfg)
    names = {id(p): n for n, p in m.named_parameters()}
    for mode in ("records", "legacy"):
        lr = {}
        for o in build_optimizers(m, cfg.replace(optim_groups=mode)):
            for g in o.param_groups:
                lr.update({names[id(p)]: g["lr"] for p in g["params"]})
        assert lr["blocks.0.attn.c_q.weight"] == 0.011 and lr["tok_emb.weight"] == 0.022
        assert lr["bigram.proj.weight"] == 0.033
        assert lr["blocks.0.resid_mix"] == (0.033 if mode == "records" else 0.011)
        assert lr["bigram.embed.weight"] == (0.022 if mode == "records" else 0.033)


# --- presets and env -----------------------------------------------------------------------------

def test_presets_from_env(monkeypatch):
    monkeypatch.setattr(config_mod, "_cuda_available", lambda: True)
    assert Config.from_env({}).preset == "frontier"          # the CUDA default (issue 29)
    r29 = Config.from_env({"PRESET": "r29"})
    assert r29.preset == "r29" and r29.qk_gain_init == 1.5 and r29.bigram_vocab_size == 2816
    assert (r29.bigram_dim, r29.ve_dim, r29.smear_gate, r29.smear_bos_fix) == (112, 128, True, False)
    assert r29.rope_base == R29_ROPE_BASE and r29.rope_dims == 16 and r29.xsa_layers() == list(range(11))
    assert (r29.warmdown_iters, r29.gptq_reserve_seconds, r29.ema_decay) == (3500, 14.0, 0.997)
    assert r29.optim_groups == "records"
    p = Config.from_env({"PRESET": "p1125"})
    assert (p.qk_gain_init, p.rope_base, p.bigram_vocab_size, p.ve_dim, p.smear_gate) == (4.0, 10000.0, 0, 0, False)
    assert p.model_dict() == Config().model_dict()  # the field defaults are the P1125 stack
    assert Config.from_env({"PRESET": "11l"}).preset == "p1125"
    # explicit variables win over the preset
    e = Config.from_env({"PRESET": "r29", "QK_GAIN_INIT": "2.0", "BIGRAM_VOCAB_SIZE": "0",
                         "VE_LAYERS": "8,9,10", "OPTIM_GROUPS": "legacy"})
    assert (e.qk_gain_init, e.bigram_vocab_size, e.ve_layers, e.optim_groups) == (2.0, 0, "8,9,10", "legacy")
    assert e.ve_dim == 128 and e.preset == "r29"


def test_cpu_presets(monkeypatch):
    monkeypatch.setattr(config_mod, "_cuda_available", lambda: False)
    assert Config.from_env({}).preset == "cpu_frontier"      # the CPU default (issue 29)
    assert Config.from_env({}, cpu_preset=True).preset == "cpu_frontier"
    c = Config.from_env({"PRESET": "cpu"})
    assert c.preset == "cpu" and (c.num_layers, c.model_dim) == (4, 128)
    assert (c.bigram_vocab_size, c.bigram_dim, c.ve_dim, c.smear_gate) == (512, 32, 32, True)
    assert c.ve_layer_indices() == [2, 3] and c.qk_gain_init == 1.5 and c.rope_base == R29_ROPE_BASE
    cp = Config.from_env({"PRESET": "cpu_p1125"})
    assert (cp.num_layers, cp.bigram_vocab_size, cp.ve_dim, cp.smear_gate, cp.qk_gain_init) == (4, 0, 0, False, 4.0)
    assert Config.from_env({"PRESET": "p1125"}, cpu_preset=True).preset == "cpu_p1125"
    assert Config.from_env({"PRESET": "r29"}, cpu_preset=True).preset == "cpu"
    assert Config.from_env({"PRESET": "r29"}).preset == "r29"  # PRESET wins over the machine
    saved = Config().replace(num_layers=5)
    assert Config.from_env({"PRESET": "r29"}, base=saved, cpu_preset=False) == saved
    assert count_parameters(GPT(c)) > count_parameters(GPT(cp))


def test_unknown_preset_and_optim_groups_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"PRESET='r30'.*r29, p1125, cpu, cpu_p1125"):
        Config.from_env({"PRESET": "r30"})
    problems = Config.from_env({"PRESET": "cpu", "OPTIM_GROUPS": "banked"}).problems()
    assert len(problems) == 1 and problems[0].startswith("OPTIM_GROUPS='banked'")
    for name, preset in PRESETS.items():
        assert set(preset) <= {f.name for f in dataclasses.fields(Config)}, name


# --- model_dict completeness ---------------------------------------------------------------------

def test_model_dict_covers_every_field_the_model_reads():
    fields = {f.name for f in dataclasses.fields(Config)}
    assert set(Config().model_dict()) == {f.name for f in dataclasses.fields(ModelConfig)}
    src = (REPO / "golf" / "model" / "gpt.py").read_text()
    read = set(re.findall(r"\bcfg\.(\w+)", src))
    # properties and methods of Config that gpt.py calls read fields in turn
    for name in list(read):
        member = getattr(Config, name, None)
        fn = member.fget if isinstance(member, property) else member
        if name not in fields and callable(fn):
            read |= set(re.findall(r"\bself\.(\w+)", inspect.getsource(fn)))
    read &= fields
    assert {"bigram_vocab_size", "bigram_dim", "smear_gate", "smear_bos_fix", "bos_id", "ve_dim",
            "ve_layers", "rope_ntk_ref_len", "num_layers", "xsa_last_n"} <= read
    assert read <= set(Config().model_dict()), read - set(Config().model_dict())
    assert not {"optim_groups", "preset", "matrix_lr", "data_path"} & set(Config().model_dict())


def test_config_json_from_before_the_features_loads_as_that_model():
    old = {k: v for k, v in Config.from_preset("p1125").to_dict().items()
           if k not in ("bigram_vocab_size", "bigram_dim", "smear_gate", "smear_bos_fix", "bos_id",
                        "ve_dim", "ve_layers", "rope_ntk_ref_len", "optim_groups", "preset")}
    assert count_parameters(meta_model(Config.from_dict(old))) == 26_501_720


# --- quantization round trip ---------------------------------------------------------------------

def test_all_features_quantize_and_load_back(tmp_path):
    import quant
    torch.manual_seed(0)
    cfg = tiny_cfg(smear_bos_fix=True)
    model = randomize(GPT(cfg)).eval()
    with torch.no_grad():
        model.bigram.embed.weight[::2] = 0  # buckets never hit stay exactly zero in training
    mods = model.hessian_modules()
    assert "bigram.proj.weight" in mods and "ve_shared.proj.weight" in mods
    assert not {"bigram.embed.weight", "ve_shared.embed.weight"} & set(mods)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, cfg.vocab_size, (2, 16), generator=g) for _ in range(3)]
    hs = quant.collect_hessians(model, batches)
    assert set(hs) == set(mods)
    policy = quant.QuantPolicy(small_numel=256, compressors=("zstd",), **quant_roles(model))  # golf.model.gpt's roles
    q = quant.quantize_model(model, hessians=hs, method="gptq", meta={"config": cfg.to_dict()},
                             policy=policy)
    by = {t.name: t for t in q.tensors}
    assert by["bigram.embed.weight"].cls == "embedding" and by["bigram.embed.weight"].method == "rtn"
    assert by["ve_shared.embed.weight"].cls == "embedding" and by["ve_shared.embed.weight"].method == "rtn"
    assert by["bigram.proj.weight"].method == "gptq" and by["ve_shared.proj.weight"].method == "gptq"
    for n in ("smear.gate", "bigram.scale", "ve_shared.scale", "ve_layer_scales.0", "ve_layer_scales.1"):
        assert by[n].kind == "pass" and by[n].method == "fp32", n
    path = tmp_path / "m.gkq"
    quant.save_artifact(path, q)
    sd, meta = quant.load_artifact(path)
    quant.check_artifact_config(meta, cfg.model_dict())
    fresh = GPT(Config.from_dict(meta["config"]))
    assert set(sd) == set(fresh.state_dict()) == set(model.state_dict())
    fresh.load_state_dict(sd, strict=True)
    for n in ("smear.gate", "bigram.scale", "ve_layer_scales.1"):
        assert torch.equal(fresh.state_dict()[n], model.state_dict()[n])
    x = batches[0]
    with torch.no_grad():
        ref, out = model(x), fresh(x)
    assert float((out - ref).pow(2).mean() / ref.pow(2).mean()) < 0.05
