"""The records' quantizers (record_1060, record_1855, record_2135) on tiny tensors, and the scaled-cap rule of
the CPU presets. Each property is recomputed here from the records' published formulas."""
from __future__ import annotations

import shutil

import torch
import numpy as np
import pytest

import quant
from conftest import needs_lrzip
from quant.gptq import GptqSolve, gptq_quantize
from quant.records import PERCENTILES
from golf.run.config import Config
from golf.run.rules import R29_CODE_BYTES, R29_PARAMS, RECORD_BITS_PER_PARAM, scaled_cap_bytes

POLICY = quant.QuantPolicy(small_numel=1000)


def _model():
    g = torch.Generator().manual_seed(0)

    def w(r, c, s):
        return torch.randn(r, c, generator=g) * s * torch.exp(0.3 * torch.randn(r, 1, generator=g))
    sd = {"tok_emb.weight": w(96, 48, 0.05), "blocks.0.attn.c_q.weight": w(48, 48, 0.03),
          "blocks.0.mlp.fc.weight": w(96, 48, 0.02), "blocks.0.mlp.proj.weight": w(48, 96, 0.02),
          "blocks.0.attn_scale": torch.rand(48, generator=g)}
    hs = {}
    for name, t in sd.items():
        if t.ndim == 2:
            x = torch.randn(400, t.shape[1], generator=g) * torch.linspace(0.3, 2.0, t.shape[1])
            hs[name] = (x.T @ x) / 400
    return sd, hs


@pytest.fixture(scope="module")
def quantized():
    sd, hs = _model()
    lrzip = shutil.which("lrzip") is not None  # the per-group records' tests skip without it
    return sd, hs, {m: quant.quantize_model(sd, hessians=hs, method=m, policy=POLICY)
                    for m in ("record_1060", "record_1855", "record_2135")
                    if lrzip or m == "record_1060"}


@pytest.mark.parametrize("method,codecs", [
    ("record_1060", {"lzma"}),
    pytest.param("record_1855", {"brotli", "pergroup_v1"}, marks=needs_lrzip),
    pytest.param("record_2135", {"brotli", "pergroup_v2"}, marks=needs_lrzip)])
def test_record_bytes_and_round_trip(quantized, tmp_path, method, codecs):
    sd, _hs, qs = quantized
    q = qs[method]
    p = tmp_path / f"{method}.gkq"
    assert quant.save_artifact(p, q) == q.total_bytes == p.stat().st_size == len(q.to_bytes())
    payload = sum(s["length"] for s in q.streams)
    assert q.total_bytes > payload
    assert {s["codec"] for s in q.streams} <= codecs | {"raw"}  # the record's coders only
    framed = [s for s in q.streams if s["codec"].startswith("pergroup")]
    if method != "record_1060":  # every matrix here is in a role group: all codes in the frame
        assert len(framed) == 1 and {p["name"] for p in framed[0]["parts"]} == {
            f"codes/{qt.name}" for qt in q.tensors if qt.kind == "quant"}
    loaded, meta = quant.load_artifact(p)
    assert meta["quant_method"] == method
    ref = q.state_dict()
    assert list(loaded) == list(sd)
    for k in sd:
        assert torch.equal(loaded[k], ref[k])
    assert loaded["blocks.0.attn_scale"].dtype == torch.float32  # control tensor passthrough


def test_record_1060_grids_and_percentile_sweep(quantized):
    sd, hs, qs = quantized
    rows = {qt.name: qt for qt in qs["record_1060"].tensors}
    emb = rows["tok_emb.weight"]
    w = sd["tok_emb.weight"]
    want_scale = (torch.quantile(w.abs(), 0.9999984, dim=1) / 127).to(torch.float16)
    assert emb.bits == 8 and np.array_equal(emb.scales, want_scale.numpy())
    assert np.array_equal(emb.codes, torch.clamp(torch.round(w / want_scale.float()[:, None]),
                                                 -127, 127).to(torch.int8).numpy())
    name = "blocks.0.mlp.fc.weight"
    qt = rows[name]
    assert qt.bits == 6 and np.abs(qt.codes).max() <= 31
    # the kept clip is the lowest plain MSE of the five GPTQ passes
    w = sd[name]
    mses = {}
    for p in PERCENTILES:
        step = (torch.quantile(w.abs(), p, dim=1) / 31).to(torch.float16).float()
        codes = gptq_quantize(w, hs[name], step, 31, GptqSolve(damp=0.02))
        mses[p] = float(((w - codes.float() * step[:, None]) ** 2).sum())
    best = min(mses, key=mses.get)
    best_step = (torch.quantile(w.abs(), best, dim=1) / 31).to(torch.float16).numpy()
    assert np.array_equal(qt.scales, best_step)


@needs_lrzip
@pytest.mark.parametrize("method,b_group", [("record_1855", 64), ("record_2135", 32)])
def test_sdclip_records_steps_and_top3_lqer(quantized, method, b_group):
    sd, _hs, qs = quantized
    q = qs[method]
    rows = {qt.name: qt for qt in q.tensors}
    for name, bits, k in (("blocks.0.attn.c_q.weight", 6, 13.0), ("blocks.0.mlp.fc.weight", 6, 11.5),
                          ("tok_emb.weight", 7, 14.0)):
        qmax = 2 ** (bits - 1) - 1
        step = (k * sd[name].std(dim=1, unbiased=False) / qmax).to(torch.float16)
        assert rows[name].bits == bits and np.array_equal(rows[name].scales, step.numpy())
        assert np.abs(rows[name].codes).max() <= qmax
    errs = {n: float((sd[n] - torch.from_numpy(qt.codes).float()
                      * torch.from_numpy(qt.scales).float()[:, None]).norm())
            for n, qt in rows.items() if qt.kind == "quant"}
    top3 = sorted(errs, key=errs.get, reverse=True)[:3]
    assert sorted(n for n, qt in rows.items() if qt.lqer is not None) == sorted(top3)
    for n in top3:
        lq = rows[n].lqer
        assert lq.rank == 4 and lq.sa.size == 1 and lq.sb.size == -(-4 * sd[n].shape[1] // b_group)
        assert lq.qa.min() >= -2 and lq.qa.max() <= 1 and lq.qb.min() >= -8 and lq.qb.max() <= 7
        # the correction lowers the tensor's error
        w_hat = torch.from_numpy(rows[n].codes).float() * torch.from_numpy(rows[n].scales).float()[:, None]
        assert float((sd[n] - w_hat - lq.correction()).norm()) < errs[n]


@needs_lrzip
def test_records_ignore_a_budget_they_fit_and_refuse_one_they_do_not(quantized):
    sd, hs, qs = quantized
    size = qs["record_1855"].total_bytes
    q = quant.quantize_model(sd, hessians=hs, method="record_1855", policy=POLICY,
                             fit=quant.BudgetFit(size + 10_000))
    assert q.total_bytes == size  # not fitted: the record sets its size by its k
    with pytest.raises(quant.BudgetError, match="record_1855"):
        quant.quantize_model(sd, hessians=hs, method="record_1855", policy=POLICY,
                             fit=quant.BudgetFit(size - 1))


def test_record_bits_offset_moves_every_class_and_keeps_the_sdclip_rule():
    """record_1060 at offset -1 / +1 (no lrzip needed): int5 / int7 GPTQ grids, the embedding
    int7 / int8 (capped at 8); SDClip's step k*std/qmax follows the new qmax (record_policy)."""
    from quant.records import record_policy
    p = record_policy("record_1855", POLICY, -2)
    assert (p.attention.bits, p.mlp.bits, p.embedding.bits, p.other.bits) == (4, 4, 5, 4)
    assert (p.attention.clip, p.embedding.clip) == (record_policy("record_1855", POLICY).attention.clip,
                                                    record_policy("record_1855", POLICY).embedding.clip)
    assert record_policy("record_1855", POLICY, 2).embedding.bits == 8  # 7 + 2 capped
    sd, hs = _model()
    sizes, errs = {}, {}
    for off in (-1, 0, 1):
        q = quant.quantize_model(sd, hessians=hs, method="record_1060", policy=POLICY,
                                 run=quant.QuantRun(record_bits_offset=off))
        rows = {qt.name: qt for qt in q.tensors}
        assert rows["blocks.0.attn.c_q.weight"].bits == 6 + off
        assert rows["tok_emb.weight"].bits == min(8, 8 + off)
        assert np.abs(rows["blocks.0.mlp.fc.weight"].codes).max() <= 2 ** (5 + off) - 1
        assert q.meta.get("record_bits_offset", 0) == off
        sizes[off] = q.total_bytes
        errs[off] = sum(float((sd[n] - torch.from_numpy(qt.codes).float()
                               * torch.from_numpy(qt.scales).float()[:, None]).norm())
                        for n, qt in rows.items() if qt.kind == "quant")
    assert sizes[-1] < sizes[0] < sizes[1] and errs[-1] > errs[0] > errs[1]
    with pytest.raises(quant.QuantError, match="record_bits_offset"):
        quant.quantize_model(sd, hessians=hs, method="gptq", policy=POLICY,
                             run=quant.QuantRun(record_bits_offset=1))


def test_scaled_cap_rule_gives_the_record_bits_per_param():
    from golf.model.gpt import GPT
    assert RECORD_BITS_PER_PARAM == pytest.approx((16_000_000 - 96_398) * 8 / 27_038_812)
    assert 4.70 < RECORD_BITS_PER_PARAM < 4.71
    assert sum(p.numel() for p in GPT(Config.from_preset("r29")).parameters()) == R29_PARAMS
    assert scaled_cap_bytes(R29_PARAMS) == pytest.approx(16_000_000, abs=1)
    # the cap follows the model actually configured, counted on a real (not meta) GPT here
    for preset, env in (("cpu", {}), ("cpu_p1125", {}), ("cpu", {"NUM_LAYERS": "6", "MODEL_DIM": "256"})):
        cfg = Config.from_env({"PRESET": preset, **env})
        n = sum(p.numel() for p in GPT(cfg).parameters())
        assert cfg.budget_bytes == scaled_cap_bytes(n)
        model_bits = (cfg.budget_bytes - R29_CODE_BYTES) * 8 / n
        assert model_bits == pytest.approx(RECORD_BITS_PER_PARAM, abs=1e-4)
    assert Config.from_preset("cpu").budget_bytes == Config.from_env({"PRESET": "cpu"}).budget_bytes
    assert Config.from_env({"PRESET": "cpu", "NUM_LAYERS": "6"}).budget_bytes > \
        Config.from_preset("cpu").budget_bytes
    # a saved config (RESUME, QUANT_ONLY) keeps its cap: no preset is re-applied to it
    saved = Config.from_preset("cpu").replace(budget_bytes=123_456)
    assert Config.from_env({"NUM_LAYERS": "6"}, base=saved, cpu_preset=False).budget_bytes == 123_456
    # an explicit BUDGET_BYTES still wins over the preset's scaled cap
    assert Config.from_env({"PRESET": "cpu", "BUDGET_BYTES": "16000000"}).budget_bytes == 16_000_000
