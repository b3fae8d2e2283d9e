"""Record checkpoint import (golf.interop): layouts, the records' forward pass, .ptz, errors, run dir.

The record-side pieces here (the records' forward pass, the banked writer, the int8+zlib and
int6 encoders) are written from the records' published layouts (per-layer, banked, int6/int8 exports),
independently of golf/interop.py.
"""
from __future__ import annotations

import dataclasses
import io
import json
import lzma
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from golf.run.config import Config

FEATURES = ("bigram_vocab_size", "bigram_dim", "smear_gate", "ve_dim", "ve_layers")


def _have_features() -> bool:
    return set(FEATURES) <= {f.name for f in dataclasses.fields(Config)}


@pytest.fixture()
def record_features():
    assert _have_features(), "golf.run.config lost record features: " + str(
        sorted(set(FEATURES) - {f.name for f in dataclasses.fields(Config)}))


# ----------------------------------------------------------------------------- record side
def record_state(*, L=3, d=32, H=4, Hkv=2, F=64, V=96, bigram=None, smear=False, ve=None,
                 tied=True, seed=0) -> dict[str, torch.Tensor]:
    """A random per-layer state dict in the records' names (random enough that every path matters)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, std=1.0: torch.randn(*s, generator=g) * std
    kv = Hkv * (d // H)
    sd = {"tok_emb.weight": r(V, d, std=0.5)}
    for i in range(L):
        p = f"blocks.{i}."
        sd.update({p + "attn.c_q.weight": r(d, d, std=d ** -0.5), p + "attn.c_k.weight": r(kv, d, std=d ** -0.5),
                   p + "attn.c_v.weight": r(kv, d, std=d ** -0.5), p + "attn.proj.weight": r(d, d, std=d ** -0.5),
                   p + "attn.q_gain": 1.5 + r(H, std=0.3), p + "mlp.fc.weight": r(F, d, std=d ** -0.5),
                   p + "mlp.proj.weight": r(d, F, std=F ** -0.5), p + "attn_scale": 1 + r(d, std=0.2),
                   p + "mlp_scale": 1 + r(d, std=0.2),
                   p + "resid_mix": torch.stack((1 + r(d, std=0.1), r(d, std=0.3)))})
    sd["skip_weights"] = 1 + r(min(L // 2, L - L // 2), d, std=0.2)
    if not tied:
        sd["lm_head.weight"] = r(V, d, std=d ** -0.5)
    if bigram:
        B, db = bigram
        sd.update({"bigram.embed.weight": r(B, db, std=0.5), "bigram.proj.weight": r(d, db, std=db ** -0.5),
                   "bigram.scale": torch.tensor(0.4)})
    if smear:
        sd["smear.gate"] = r(d)
    if ve:
        ve_dim, n = ve
        sd.update({"ve_shared.embed.weight": r(V, ve_dim, std=0.5),
                   "ve_shared.proj.weight": r(kv, ve_dim, std=ve_dim ** -0.5),
                   "ve_shared.scale": torch.tensor(0.3)})
        for k in range(n):
            sd[f"ve_layer_scales.{k}"] = 1 + r(1, std=0.2)
    return sd


def record_logits(sd, ids, *, heads, kv_heads, rope_dims, base, ntk, ln, slope, xsa, softcap=30.0,
                  ve_layers=()):
    """The records' forward pass (the records' published forward) in float64, from the tensors alone.

    rope: x' = [x1 cos + x2 sin, -x1 sin + x2 cos] on the first rope_dims dims, base rescaled by
    (T/1024)^(rd/(rd-2)) when ntk and T > 1024; ln: None, "input" (records) or "output" (P1125).
    """
    f = {k: v.double() for k, v in sd.items()}
    E = f["tok_emb.weight"]
    V, d = E.shape
    L = 1 + max(int(k.split(".")[1]) for k in f if k.startswith("blocks."))
    B, T = ids.shape
    H, Hkv, hd = heads, kv_heads, d // heads
    rms = lambda x: x / torch.sqrt((x * x).mean(-1, keepdim=True) + torch.finfo(torch.float32).eps)
    x = E[ids]
    if "bigram.embed.weight" in f:
        M = f["bigram.embed.weight"].shape[0] - 1
        t = ids.long()
        h = torch.full_like(t, M)
        h[:, 1:] = torch.bitwise_xor(36313 * t[:, 1:], 27191 * t[:, :-1]) % M
        x = x + f["bigram.scale"] * (f["bigram.embed.weight"][h] @ f["bigram.proj.weight"].T)
    x = rms(x)
    if "smear.gate" in f:
        gate = torch.sigmoid(f["smear.gate"])
        x = (1 - gate) * x + gate * torch.cat((torch.zeros_like(x[:, :1]), x[:, :-1]), 1)
    x0 = x
    ve_base = None
    if "ve_shared.embed.weight" in f:
        ve_base = f["ve_shared.scale"] * (f["ve_shared.embed.weight"][ids] @ f["ve_shared.proj.weight"].T)
    rd, half = rope_dims, rope_dims // 2
    b = base * (T / 1024) ** (rd / (rd - 2)) if ntk and T > 1024 else base
    ang = torch.arange(T, dtype=torch.float64)[:, None] * b ** (-torch.arange(0, rd, 2, dtype=torch.float64) / rd)
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]

    def rope(z):
        z1, z2 = z[..., :half], z[..., half:rd]
        return torch.cat((z1 * cos + z2 * sin, -z1 * sin + z2 * cos, z[..., rd:]), -1)

    causal = torch.ones(T, T, dtype=torch.bool).tril()

    def attn(i, u):
        p = f"blocks.{i}.attn."
        q = (u @ f[p + "c_q.weight"].T).view(B, T, H, hd)
        k = (u @ f[p + "c_k.weight"].T).view(B, T, Hkv, hd)
        v = u @ f[p + "c_v.weight"].T
        if i in ve_layers:
            v = v + f[f"ve_layer_scales.{list(ve_layers).index(i)}"] * ve_base
        v = v.view(B, T, Hkv, hd)
        q, k = rope(rms(q)), rope(rms(k))
        q = q * f[p + "q_gain"][None, None, :, None]
        kk, vv = k.repeat_interleave(H // Hkv, 2), v.repeat_interleave(H // Hkv, 2)  # head h -> kv h//group
        s = torch.einsum("bthd,bshd->bhts", q, kk) / math.sqrt(hd)
        a = s.masked_fill(~causal, float("-inf")).softmax(-1)
        y = torch.einsum("bhts,bshd->bthd", a, vv)
        if i in xsa:
            vn = vv / vv.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            y = y - (y * vn).sum(-1, keepdim=True) * vn
        return y.reshape(B, T, d) @ f[p + "proj.weight"].T

    def mlp(i, u):
        z = u @ f[f"blocks.{i}.mlp.fc.weight"].T
        z = torch.where(z > 0, z, slope * z)
        return (z * z) @ f[f"blocks.{i}.mlp.proj.weight"].T

    n_enc, skips = L // 2, []
    for i in range(L):
        p = f"blocks.{i}."
        if i >= n_enc and skips:
            x = x + f["skip_weights"][i - n_enc] * skips.pop()
        s = 1 / math.sqrt(i + 1) if ln else 1.0
        x = f[p + "resid_mix"][0] * x + f[p + "resid_mix"][1] * x0
        if ln == "output":
            x = x + s * f[p + "attn_scale"] * attn(i, rms(x))
            x = x + s * f[p + "mlp_scale"] * mlp(i, rms(x))
        else:
            x = x + f[p + "attn_scale"] * attn(i, rms(x) * s)
            x = x + f[p + "mlp_scale"] * mlp(i, rms(x) * s)
        if i < n_enc:
            skips.append(x)
    z = rms(x) @ f.get("lm_head.weight", E).T
    return softcap * torch.tanh(z / softcap)


def bank(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-layer -> R23+/R29 banks: qo = [Q_0..Q_{L-1}, O_0..O_{L-1}], kv = [K.., V..], up, down."""
    L = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    w = lambda i, n: sd[f"blocks.{i}.{n}.weight"]
    out = {k: v for k, v in sd.items() if not k.endswith(
        (".c_q.weight", ".c_k.weight", ".c_v.weight", ".attn.proj.weight", ".fc.weight", ".mlp.proj.weight"))}
    out["qo_bank"] = torch.stack([w(i, "attn.c_q") for i in range(L)] + [w(i, "attn.proj") for i in range(L)])
    out["kv_bank"] = torch.stack([w(i, "attn.c_k") for i in range(L)] + [w(i, "attn.c_v") for i in range(L)])
    out["mlp_up_bank"] = torch.stack([w(i, "mlp.fc") for i in range(L)])
    out["mlp_down_bank"] = torch.stack([w(i, "mlp.proj") for i in range(L)])
    return out


CONTROL = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight")


def encode_int8_ptz(sd: dict[str, torch.Tensor], keep_numel: int = 64) -> tuple[bytes, dict]:
    """int8_clean_per_row_v1 (the 2026-03 records' export): 2-D float > keep_numel -> per-row int8 with
    fp16 scale max(absmax/127, 1/127); other large floats per tensor; small ones passthrough
    (control names fp32, others fp16 with the original dtype recorded); then zlib level 9."""
    obj = {"__quant_format__": "int8_clean_per_row_v1", "quantized": {}, "scales": {}, "dtypes": {},
           "passthrough": {}, "qmeta": {}, "passthrough_orig_dtypes": {}}
    for name, t in sd.items():
        if t.numel() <= keep_numel:
            if any(c in name for c in CONTROL):
                obj["passthrough"][name] = t.float()
            else:
                obj["passthrough_orig_dtypes"][name] = str(t.dtype).removeprefix("torch.")
                obj["passthrough"][name] = t.half()
            continue
        a = t.float().numpy()
        if a.ndim == 2:
            scale = np.maximum(np.abs(a).max(1) / 127.0, 1 / 127.0).astype(np.float16)
            q = np.clip(np.round(a / scale.astype(np.float32)[:, None]), -127, 127).astype(np.int8)
            obj["qmeta"][name] = {"scheme": "per_row", "axis": 0}
        else:
            scale = np.array(np.abs(a).max() / 127.0, dtype=np.float32)
            q = np.clip(np.round(a / scale), -127, 127).astype(np.int8)
        obj["quantized"][name] = torch.from_numpy(q)
        obj["scales"][name] = torch.from_numpy(np.asarray(scale))
        obj["dtypes"][name] = str(t.dtype).removeprefix("torch.")
    buf = io.BytesIO()
    torch.save(obj, buf)
    return zlib.compress(buf.getvalue(), 9), obj


def np_dequant(obj: dict, name: str) -> np.ndarray:
    q = obj["quantized"][name].numpy().astype(np.float32)
    s = obj["scales"][name].numpy().astype(np.float32)
    return q * (s[:, None] if s.ndim else s)


# ----------------------------------------------------------------------------- helpers
def imported(out: Path):
    from golf.model.gpt import GPT
    ck = torch.load(out / "ema.pt", weights_only=True)
    cfg = Config.from_dict(ck["config"])
    model = GPT(cfg)
    model.load_state_dict(ck["state_dict"], strict=True)
    return model.eval(), cfg, ck


def save(sd, path: Path) -> Path:
    torch.save(sd, path)
    return path


def golf_to_record(sd: dict[str, torch.Tensor], cfg: Config) -> dict[str, torch.Tensor]:
    """A golfkit state dict as the records would hold the same network: names are shared; only
    the RoPE direction may differ (negate each head's rows [rd/2, rd) of W_q and W_k if so)."""
    from golf.interop import golf_rope_sign
    out = {k: v.clone() for k, v in sd.items()}
    if golf_rope_sign() != -1:
        hd, half, rd = cfg.head_dim, cfg.rope_dims // 2, cfg.rope_dims
        for i in range(cfg.num_layers):
            for p in ("c_q", "c_k"):
                out[f"blocks.{i}.attn.{p}.weight"].view(-1, hd, cfg.model_dim)[:, half:rd].neg_()
    return out


def golf_env(cfg: Config) -> dict[str, str]:
    keys = ("rope_dims", "rope_base", "xsa_last_n", "ln_scale", "leaky_relu_slope", "logit_softcap",
            "qk_gain_init") + (("ve_layers",) if _have_features() and cfg.ve_dim else ())
    return {k.upper(): (str(int(getattr(cfg, k))) if isinstance(getattr(cfg, k), bool)
                        else ",".join(map(str, cfg.ve_layer_indices())) if k == "ve_layers"
                        else repr(getattr(cfg, k))) for k in keys}


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("layout", ["per_layer", "banked"])
def test_golf_model_round_trips_through_record_layouts(layout, tiny_config, tmp_path, one_thread):
    from golf.interop import import_checkpoint
    from golf.model.gpt import GPT
    cfg = tiny_config.replace(num_layers=3)
    if _have_features():
        cfg = cfg.replace(bigram_vocab_size=64, bigram_dim=16, smear_gate=True, ve_dim=8,
                          ve_layers="1,2")
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        model.tok_emb.weight.copy_(model.tok_emb.weight.to(torch.bfloat16).float())
    rec = golf_to_record(model.state_dict(), cfg)
    rec["tok_emb.weight"] = rec["tok_emb.weight"].to(torch.bfloat16)  # bf16 as in the records
    if layout == "banked":
        rec = bank(rec)
        assert rec["qo_bank"].shape == (6, 64, 64) and rec["kv_bank"].shape == (6, 32, 64)
    src = save(rec, tmp_path / "final_model.pt")
    res = import_checkpoint(src, tmp_path / "runs" / "rt", stack="r29", env=golf_env(cfg), log=lambda m: None)
    assert res.layout == layout
    got, gcfg, _ = imported(tmp_path / "runs" / "rt")
    for k in ("vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads", "mlp_mult",
              "rope_dims", "rope_base", "xsa_last_n", "ln_scale", "leaky_relu_slope", "tie_embeddings"):
        assert getattr(gcfg, k) == getattr(cfg, k), k
    if _have_features():
        assert gcfg.ve_layer_indices() == cfg.ve_layer_indices() and gcfg.bigram_vocab_size == 64
    ids = torch.randint(0, cfg.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(got(ids), model(ids))
    assert sorted(got.state_dict()) == sorted(model.state_dict())


STACK_CASES = {
    # stack: (record forward kwargs, state kwargs, T)
    "baseline": (dict(rope_dims=8, base=10000.0, ntk=False, ln=None, slope=0.0, xsa=()),
                 dict(L=3, tied=False), 40),
    "p1125": (dict(rope_dims=4, base=10000.0, ntk=False, ln="output", slope=0.5, xsa=(0, 1, 2)),
              dict(L=3), 40),
}
FEATURE_CASES = {
    "r21": (dict(rope_dims=4, base=10000.0, ntk=True, ln="input", slope=0.0, xsa=(1, 2, 3)),
            dict(L=4, bigram=(50, 12), smear=True), 1040),
    "r29": (dict(rope_dims=4, base=10000.0, ntk=True, ln="input", slope=0.5, xsa=(0, 1, 2, 3),
                 ve_layers=(2, 3)), dict(L=4, bigram=(50, 12), smear=True, ve=(8, 2)), 1040),
}


def _check_against_record(stack, fwd, st, T, tmp_path, banked=False, env=None):
    from golf.interop import import_checkpoint
    sd = record_state(**st)
    if stack != "baseline":
        env = {**(env or {}), "ROPE_DIMS": str(fwd["rope_dims"])}
    env = {**(env or {}), "EVAL_SEQ_LEN": str(T)}
    src = save(bank(sd) if banked else sd, tmp_path / "final_model.pt")
    import_checkpoint(src, tmp_path / "runs" / stack, stack=stack, env=env, log=lambda m: None)
    model, cfg, _ = imported(tmp_path / "runs" / stack)
    ids = torch.randint(0, 96, (1, T), generator=torch.Generator().manual_seed(2))
    want = record_logits(sd, ids, heads=4, kv_heads=2, **fwd)
    with torch.no_grad():
        got = model(ids).double()
    err = (got - want).abs().max().item()
    assert err < 2e-4, f"{stack}: max |logit diff| {err}"
    return cfg


@pytest.mark.parametrize("stack", list(STACK_CASES))
def test_import_matches_the_records_forward_pass(stack, tmp_path, one_thread):
    fwd, st, T = STACK_CASES[stack]
    cfg = _check_against_record(stack, fwd, st, T, tmp_path)
    if stack == "baseline":
        assert cfg.rope_dims == 8 and cfg.leaky_relu_slope == 0 and cfg.xsa_last_n == 0
        assert not cfg.tie_embeddings
    else:  # P1125's output-side LN scale is folded into the branch scales
        assert cfg.ln_scale is False


@pytest.mark.parametrize("stack", list(FEATURE_CASES))
def test_import_matches_the_records_forward_pass_with_extras(stack, record_features, tmp_path, one_thread):
    fwd, st, T = FEATURE_CASES[stack]
    xsa = {"r21": "3", "r29": "-1"}[stack]  # r21 on 4 layers: the last 3 (XSA_LAST_N=4 would be all)
    cfg = _check_against_record(stack, fwd, st, T, tmp_path, banked=stack == "r29",
                                env={"XSA_LAST_N": xsa})
    assert cfg.rope_base == pytest.approx(10000 * (T / 1024) ** (4 / 2))
    if stack == "r29":
        assert cfg.ve_layer_indices() == [2, 3] and cfg.ve_dim == 8 and cfg.smear_gate


def test_rope_direction_is_converted_when_golfkit_turns_the_other_way(monkeypatch, tmp_path, one_thread):
    """If golf.model.gpt rotated by +pos*freq, the import must negate the pairs' second halves of
    W_q/W_k; with a +rotation patched in, the imported model still equals the records' forward."""
    import golf.model.gpt
    from golf.interop import golf_rope_sign

    def plus_rope(x, cos, sin, rope_dims):
        if rope_dims <= 0:
            return x
        h = rope_dims // 2
        x1, x2, rest = x[..., :h], x[..., h:rope_dims], x[..., rope_dims:]
        c, s = cos[None, :, None, :], sin[None, :, None, :]
        return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s, rest), dim=-1)

    monkeypatch.setattr(golf.model.gpt, "apply_rope", plus_rope)
    assert golf_rope_sign() == 1
    fwd, st, T = STACK_CASES["p1125"]
    _check_against_record("p1125", fwd, st, T, tmp_path)


# ----------------------------------------------------------------------------- .ptz
def test_int8_ptz_is_dequantized_like_the_baseline(tmp_path, one_thread):
    from golf.interop import import_checkpoint
    sd = record_state(L=2)
    sd["tok_emb.weight"] = sd["tok_emb.weight"].to(torch.bfloat16)
    blob, obj = encode_int8_ptz(sd, keep_numel=512)
    assert obj["quantized"] and obj["passthrough_orig_dtypes"]
    src = tmp_path / "final_model.int8.ptz"
    src.write_bytes(blob)
    res = import_checkpoint(src, tmp_path / "runs" / "q", stack="p1125", env={"LN_SCALE": "0", "ROPE_DIMS": "4"},
                            log=lambda m: None)
    assert res.source_format == "int8_clean_per_row_v1"
    _, _, ck = imported(tmp_path / "runs" / "q")
    got = ck["state_dict"]
    for name in ("blocks.0.mlp.fc.weight", "blocks.1.mlp.proj.weight", "blocks.1.attn.proj.weight"):
        want = np_dequant(obj, name)
        assert np.array_equal(got[name].numpy(), want), name
        step = obj["scales"][name].float().numpy()[:, None]
        assert np.all(np.abs(want - sd[name].numpy()) <= step / 2 + 1e-6), name
    # bf16 original: dequantized in fp32, cast back to bf16, then widened by the import
    emb = torch.from_numpy(np_dequant(obj, "tok_emb.weight")).to(torch.bfloat16).float()
    assert torch.equal(got["tok_emb.weight"], emb)
    assert torch.equal(got["blocks.1.attn.c_v.weight"], sd["blocks.1.attn.c_v.weight"].half().float())
    assert obj["passthrough_orig_dtypes"]["blocks.1.attn.c_v.weight"] == "float32"
    assert torch.equal(got["blocks.0.resid_mix"], sd["blocks.0.resid_mix"])          # fp32 control
    assert torch.equal(got["blocks.0.attn.q_gain"], sd["blocks.0.attn.q_gain"])
    assert "blocks.0.attn.q_gain" in obj["passthrough"]


def test_dequantize_int8_per_tensor_scale():
    from golf.interop import dequantize_int8
    q = torch.tensor([-127, 0, 5, 127], dtype=torch.int8)
    obj = {"quantized": {"v": q}, "scales": {"v": torch.tensor(0.5)}, "dtypes": {"v": "float32"},
           "passthrough": {"p": torch.tensor([1.5], dtype=torch.float16)},
           "passthrough_orig_dtypes": {"p": "bfloat16"}}
    out = dequantize_int8(obj, Path("x.ptz"))
    assert out["v"].tolist() == [-63.5, 0.0, 2.5, 63.5]
    assert out["p"].dtype == torch.bfloat16 and out["p"].item() == 1.5


def test_int6_mixed_ptz_from_the_records(record_features, tmp_path, one_thread):
    """R23-R29 export: {"w": {name.q, name.scale, passthrough}, "m": meta}, lzma (the records' export)."""
    from golf.interop import import_checkpoint
    sd = record_state(L=2, bigram=(40, 8), smear=True, ve=(8, 1))
    w, m, want = {}, {}, {}
    for name, t in sd.items():
        if t.ndim == 2 and t.numel() > 600 and (".attn." in name or ".mlp." in name):
            s = (t.abs().amax(1) / 31).clamp_min(1 / 31).half()
            q = torch.clamp(torch.round(t / s.float()[:, None]), -31, 31).to(torch.int8)
            w[name + ".q"], w[name + ".scale"], m[name] = q, s, {"type": "int6"}
            want[name] = q.float() * s.float()[:, None]
        else:
            w[name], m[name] = t.half(), "passthrough"
            want[name] = t.half().float()
    buf = io.BytesIO()
    torch.save({"w": w, "m": m}, buf)
    src = tmp_path / "final_model.int6.ptz"
    src.write_bytes(lzma.compress(buf.getvalue(), preset=6))
    res = import_checkpoint(src, tmp_path / "runs" / "q6", stack="r29", env="ROPE_DIMS=4",
                            log=lambda m: None)
    assert res.source_format == "int6_mixed" and res.layout == "per_layer"
    got = imported(tmp_path / "runs" / "q6")[2]["state_dict"]
    assert any(isinstance(v, dict) for v in m.values())
    for name in want:
        assert torch.equal(got[name], want[name]), name


# ----------------------------------------------------------------------------- errors
def _import(src, tmp_path, **kw):
    from golf.interop import import_checkpoint
    kw.setdefault("stack", "baseline")
    return import_checkpoint(src, tmp_path / "runs" / "e", log=lambda m: None, **kw)


def test_unknown_tensor_is_named(tmp_path):
    from golf.interop import InteropError
    sd = record_state(L=2)
    sd["blocks.1.attn.mystery"] = torch.zeros(3)
    with pytest.raises(InteropError, match=r"blocks\.1\.attn\.mystery: unknown tensor \(3,\)"):
        _import(save(sd, tmp_path / "a.pt"), tmp_path)
    assert not (tmp_path / "runs" / "e").exists()


def test_bad_shape_is_named(tmp_path):
    from golf.interop import InteropError
    sd = record_state(L=2)
    sd["blocks.1.mlp.proj.weight"] = torch.zeros(32, 48)
    with pytest.raises(InteropError, match=r"blocks\.1\.mlp\.proj\.weight: shape \(32, 48\).*expected \(32, 64\)"):
        _import(save(sd, tmp_path / "a.pt"), tmp_path)
    banked = bank(record_state(L=2))
    banked["kv_bank"] = banked["kv_bank"][:3]
    with pytest.raises(InteropError, match=r"kv_bank: shape \(3, 16, 32\)"):
        _import(save(banked, tmp_path / "b.pt"), tmp_path)


def test_unsupported_record_option_and_env_contradiction(tmp_path):
    from golf.interop import InteropError
    sd = record_state(L=2)
    sd["blocks.0.attn.attn_gate.weight"] = torch.zeros(4, 32)
    with pytest.raises(InteropError, match=r"attn_gate\.weight: .*GATED_ATTENTION=1"):
        _import(save(sd, tmp_path / "a.pt"), tmp_path)
    with pytest.raises(InteropError, match=r"NUM_HEADS=2 contradicts the checkpoint.*NUM_HEADS=4"):
        _import(save(record_state(L=2), tmp_path / "b.pt"), tmp_path, env="NUM_HEADS=2")
    with pytest.raises(InteropError, match="per-layer checkpoint .* pass --stack"):
        _import(save(record_state(L=2), tmp_path / "b.pt"), tmp_path, stack=None)


def test_known_buffers_are_ignored_by_name(tmp_path):
    sd = record_state(L=2)
    sd["blocks.0.attn.rotary.inv_freq"] = torch.ones(4)
    sd = {"_orig_mod." + k: v for k, v in sd.items()}  # a torch.compile'd module's state dict
    res = _import(save(sd, tmp_path / "a.pt"), tmp_path)
    info = json.loads((res.out_dir / "import.json").read_text())
    assert info["ignored"] and info["ignored"][0].startswith("blocks.0.attn.rotary.inv_freq")


def test_refuses_an_existing_non_empty_out(tmp_path):
    from golf.interop import InteropError
    out = tmp_path / "runs" / "e"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    src = save(record_state(L=2), tmp_path / "a.pt")
    with pytest.raises(InteropError, match=rf"{out}: already exists and is not empty"):
        _import(src, tmp_path)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()  # an empty folder is fine
    _import(src, tmp_path)
    assert {p.name for p in out.iterdir()} == {"config.json", "ema.pt", "import.json", "train.log"}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_cli_one_line_error_and_success(tmp_path, capsys):
    from golf.interop import main
    src = save(record_state(L=2), tmp_path / "a.pt")
    out = tmp_path / "runs" / "cli"
    assert main(["import", str(src), "--out", str(out), "--stack", "baseline",
                 "--env", "QK_GAIN_INIT=1.5 EVAL_STRIDE=0"]) == 0
    assert "next: QUANT_ONLY=" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["world_size"] == 1
    with pytest.raises(SystemExit) as exc:
        main(["import", str(src), "--out", str(out), "--stack", "baseline"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not empty" in err[0]


# ----------------------------------------------------------------------------- end to end
def test_imported_run_evaluates_quantizes_and_is_complete(embedded_data, tmp_path, monkeypatch, one_thread):
    """import (+ --calibrate) -> pre-quant eval of ema.pt -> QUANT_ONLY (PACK=0): a complete run."""
    from golf.eval.score import EvalRequest, run_eval
    from golf.interop import import_checkpoint
    from golf.main import quant_only
    sd = record_state(L=2, d=32, V=1024, F=64, seed=3)
    sd["tok_emb.weight"] *= 0.2
    src = save(sd, tmp_path / "final_model.pt")
    out = tmp_path / "runs" / "imp"
    env = (f"DATA_PATH={embedded_data.dataset_dir} TOKENIZER_PATH={embedded_data.tokenizer_path} "
           "TRAIN_SEQ_LEN=64 TRAIN_BATCH_TOKENS=512 GRAD_ACCUM_STEPS=1 EVAL_SEQ_LEN=64 EVAL_STRIDE=0 "
           "MAX_EVAL_TOKENS=2048 VAL_BATCH_SIZE=4096 QUANT_SMALL_NUMEL=1024 COMPILE=0")
    import_checkpoint(src, out, stack="baseline", env=env, calibrate_batches=2, log=lambda m: None)
    hs = torch.load(out / "hessians.pt", weights_only=True)
    assert hs["source"] == "train" and hs["tokens"] == 2 * 512 and "blocks.0.attn.c_q.weight" in hs["hessians"]
    pre = run_eval(None, EvalRequest(checkpoint=str(out / "ema.pt"), device="cpu"), log=None)
    assert pre["pre"]["partial"] and 0 < pre["pre"]["val_bpb"] < 20
    for var in ("QUANT_ONLY", "PRESET", "DATA_PATH", "MAX_EVAL_TOKENS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PACK", "0")
    assert quant_only(str(out)) == 0
    for name in ("final_model.gkq", "eval.json", "summary.json", "quant_report.json", "train.log"):
        assert (out / name).is_file(), name
    ev = json.loads((out / "eval.json").read_text())
    assert ev["pre"]["val_bpb"] == pytest.approx(pre["pre"]["val_bpb"], abs=1e-9)
    assert ev["post"]["val_bpb"] > 0
    log = (out / "train.log").read_text()
    assert log.startswith("import:source") and "quant:done" in log
    assert "no hessians.pt" not in log.split("quant_only:")[1]  # GPTQ used the imported Hessians
