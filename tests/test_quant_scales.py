"""Log-grid row scales (QUANT_SCALES=log): the quantizer's step is the decoder's bit for bit,
the rounding error bound, the artifact round trip, old versions, the builder's choice of the
smaller layout, and the fitter's budget with scales counted as stored."""
from __future__ import annotations

import decimal
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quant
from conftest import needs_lrzip
from quant.artifact import build_artifact, decode_tensors, logical_streams, parse_artifact
from quant.logscale import pack_scale_codes, packed_cost, unpack_scale_codes
from quant.scalar import LOG_SCALE_R, log_grid_table, log_scale_value, round_log_scale

DATA = Path(__file__).parent / "data"
FAST = quant.QuantPolicy(compressors=("zlib", "rans"), row_steps="sdclip")  # a scale per row


def _sd(seed: int = 0, cols: tuple[int, int] = (420, 170)) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    def w(r, c, s):  # rows of different scales, as trained matrices have
        return torch.randn(r, c, generator=g) * s * torch.exp(0.4 * torch.randn(r, 1, generator=g))
    return {"blocks.0.attn.c_q.weight": w(160, cols[0], 0.03),
            "blocks.0.mlp.fc.weight": w(400, cols[1], 0.02),
            "blocks.0.attn_scale": torch.rand(160, generator=g)}


def _hessians(sd):
    g = torch.Generator().manual_seed(1)
    return {n: (lambda x: x.T @ x / 300)(torch.randn(300, t.shape[1], generator=g))
            for n, t in sd.items() if t.ndim == 2}


@pytest.fixture(scope="module")
def qlog():
    sd = _sd()
    return quant.quantize_model(sd, hessians=_hessians(sd), method="gptq", policy=FAST)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float16).view(np.uint16)


def test_grid_table_is_2_to_the_k_over_r_correctly_rounded():
    """The integer-arithmetic table against 40-digit decimal exp: the nearest float32 to each
    2^(k/r) (no libm in the table, so every platform decodes the same steps)."""
    ctx = decimal.Context(prec=40)
    for r in (16, LOG_SCALE_R, 64):
        want = np.array([np.float32(float(ctx.exp(ctx.multiply(decimal.Decimal(k) / r,
                                                                   ctx.ln(decimal.Decimal(2))))))
                         for k in range(r)])
        assert np.array_equal(log_grid_table(r).view(np.uint32), want.view(np.uint32)), r


def test_quantizer_scale_is_the_decoders_bit_for_bit(qlog, tmp_path):
    """Every quantized tensor's step is log_scale_value(its codes); the loaded artifact gives
    back the same codes and steps, and the codes were computed against that step."""
    tensors = [qt for qt in qlog.tensors if qt.kind == "quant"]
    assert tensors and all(qt.scale_codes is not None and qt.scale_r == LOG_SCALE_R
                           for qt in tensors)
    for qt in tensors:
        assert np.array_equal(_bits(qt.scales), _bits(log_scale_value(qt.scale_codes, qt.scale_r)))
    quant.save_artifact(tmp_path / "m.gkq", qlog)
    header, payload = parse_artifact((tmp_path / "m.gkq").read_bytes())
    assert header["version"] == quant.FORMAT_VERSION == 5
    back = {qt.name: qt for qt in decode_tensors(header, payload)}
    for qt in tensors:
        b = back[qt.name]
        assert "scale_log" in next(e for e in header["tensors"] if e["name"] == qt.name)
        assert np.array_equal(b.scale_codes, qt.scale_codes) and b.scale_r == qt.scale_r
        assert np.array_equal(_bits(b.scales), _bits(qt.scales))
        assert np.array_equal(b.codes, qt.codes)
    loaded, _ = quant.load_artifact(tmp_path / "m.gkq")
    expect = qlog.state_dict()
    assert all(torch.equal(loaded[k], expect[k]) for k in expect)
    # RTN: codes are round(w / s) for the very step that loads
    sd = _sd()
    q = quant.quantize_model(sd, method="rtn", policy=FAST)
    for qt in (t for t in q.tensors if t.kind == "quant"):
        s = torch.from_numpy(log_scale_value(qt.scale_codes, qt.scale_r).astype(np.float32))
        w = sd[qt.name].float()
        want = torch.clamp(torch.round(w / s[:, None]), -(2 ** (qt.bits - 1) - 1), 2 ** (qt.bits - 1) - 1)
        assert torch.equal(torch.from_numpy(qt.codes).float(), want)


def test_rounding_error_is_within_half_a_grid_step():
    """Relative error <= 2^(1/(2R)) - 1 in log2 (plus fp16's 2^-11 on the value) over the fp16
    normal range, and each code is the nearest grid point."""
    g = torch.Generator().manual_seed(3)
    for r in (16, LOG_SCALE_R, 64):
        s = torch.exp2(torch.rand(20_000, generator=g, dtype=torch.float64) * 26 - 13).float()
        v, c = round_log_scale(s, r)
        rel = (v.double() / s.double() - 1).abs()
        assert float(rel.max()) <= 2 ** (1 / (2 * r)) * (1 + 2 ** -11) - 1
        assert float(rel.max()) > 0.5 * (2 ** (1 / (2 * r)) - 1)  # the bound is nearly reached
        assert np.abs(c - r * np.log2(s.double().numpy())).max() <= 0.5 + 1e-9


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(-24 * 32, 16 * 32 - 1), min_size=1, max_size=300))
def test_packed_codes_round_trip(codes):
    c = np.array(codes, dtype=np.int32)
    data, info = pack_scale_codes(c, 32)
    assert len(data) == info["width"] * c.size
    assert np.array_equal(unpack_scale_codes(data, info, c.size), c)


def _as_fp16(tensors):
    return [replace(qt, scale_codes=None, scale_r=0) if qt.kind == "quant" else qt for qt in tensors]


def _scale_bytes(streams) -> float:
    return sum(s["length"] for n, s in logical_streams(streams).items() if n.startswith("rowscales/"))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 120), st.floats(0.0, 6.0), st.integers(0, 2 ** 16),
       st.sampled_from([("zlib",), ("zlib", "rans"), ("brotli", "lzma", "rans")]))
def test_builder_never_stores_scales_larger_than_fp16(rows, spread, seed, codecs):
    """Whatever the steps, the artifact with log codes available is never larger than the same
    steps stored as fp16 under the best codec: the builder keeps the smaller layout."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.exp2(torch.randn(rows, generator=g) * spread - 8)
    v, c = round_log_scale(steps)
    codes = torch.randint(-31, 32, (rows, 16), generator=g).to(torch.int8).numpy()
    qt = quant.tensors.QTensor(name="blocks.0.attn.w", shape=(rows, 16), dtype="float32",
                               cls="attention", kind="quant", codes=codes,
                               scales=v.to(torch.float16).numpy(), bits=6, method="rtn",
                               scale_codes=c, scale_r=LOG_SCALE_R)
    blob, streams = build_artifact([qt], {}, codecs)
    blob16, streams16 = build_artifact(_as_fp16([qt]), {}, codecs)
    assert len(blob) <= len(blob16)
    back = decode_tensors(*parse_artifact(blob))[0]
    assert np.array_equal(_bits(back.scales), _bits(qt.scales))


def test_scale_codes_join_the_rans_stream_when_that_is_smaller():
    """Steps that mostly repeat (90 % of rows share one code, ~0.7 bits per row): order-0 rANS
    beats zlib by more than the extra segments cost, so the codes join the joint rANS stream
    after the int codes, and decode exactly."""
    g = torch.Generator().manual_seed(7)
    tensors = []
    for i, rows in enumerate((1500, 1200)):
        odd = torch.rand(rows, generator=g) < 0.1
        steps = 0.01 * torch.exp2(0.05 * torch.randn(rows, generator=g) * odd)
        v, c = round_log_scale(steps)
        tensors.append(quant.tensors.QTensor(
            name=f"blocks.{i}.mlp.w", shape=(rows, 8), dtype="float32", cls="mlp", kind="quant",
            codes=torch.randint(-20, 21, (rows, 8), generator=g).to(torch.int8).numpy(),
            scales=v.to(torch.float16).numpy(), bits=6, method="rtn", scale_codes=c,
            scale_r=LOG_SCALE_R))
    blob, streams = build_artifact(tensors, {}, ("zlib", "rans"))
    joint = next(s for s in streams if s["name"] == "codes")
    assert [p["name"] for p in joint["parts"]] == ["codes/blocks.0.mlp.w", "codes/blocks.1.mlp.w",
                                                   "rowscales/blocks.0.mlp.w",
                                                   "rowscales/blocks.1.mlp.w"]
    header, payload = parse_artifact(blob)
    assert all("scale_log" in e for e in header["tensors"])
    for qt, back in zip(tensors, decode_tensors(header, payload)):
        assert np.array_equal(back.scale_codes, qt.scale_codes)
        assert np.array_equal(_bits(back.scales), _bits(qt.scales))
        assert np.array_equal(back.codes, qt.codes)


def test_log_layout_wins_on_rows_of_similar_scale(qlog):
    """On matrix rows the log codes are smaller than fp16; they travel in the joint rANS stream
    or, here (560 rows: rANS tables cost more than they save), in scales/log."""
    blob16, streams16 = build_artifact(_as_fp16(qlog.tensors), qlog.meta, FAST.compressors)
    assert qlog.total_bytes < len(blob16)
    held = {p["name"]: s["name"] for s in qlog.streams for p in s.get("parts", [])}
    for n in ("blocks.0.attn.c_q.weight", "blocks.0.mlp.fc.weight"):
        assert held[f"rowscales/{n}"] in ("codes", "scales/log")
    rows = 160 + 400
    assert _scale_bytes(qlog.streams) < _scale_bytes(streams16)
    assert _scale_bytes(qlog.streams) <= rows  # at most a byte per row (fp16: two raw)
    report = {r["name"]: r for r in qlog.report}
    assert abs(sum(report[n]["scale_bytes"] for n in report if "scale_bytes" in report[n])
               - _scale_bytes(qlog.streams)) < 1


@needs_lrzip
def test_records_and_int8_keep_fp16_scales():
    sd = _sd(cols=(64, 48))
    for method in ("int8", "record_1060", "record_1855"):
        q = quant.quantize_model(sd, hessians=_hessians(sd), method=method,
                                 policy=quant.QuantPolicy(small_numel=4096, row_steps="sdclip"))
        assert all(qt.scale_codes is None for qt in q.tensors if qt.kind == "quant"), method
        assert not any(n.startswith("scales/log") for n in (s["name"] for s in q.streams))


def test_version4_artifact_loads_and_fp16_scales_reproduce_it():
    """A file written by the v4 writer (before log scales) loads to the tensors it loaded to
    then, and QUANT_SCALES=fp16 quantizes the same inputs to exactly those tensors."""
    import struct
    blob = (DATA / "artifact_v4.gkq").read_bytes()
    assert struct.unpack_from("<H", blob, 4)[0] == 4
    ref = torch.load(DATA / "artifact_v4_expected.pt", weights_only=True)
    loaded, meta = quant.load_artifact(DATA / "artifact_v4.gkq")
    assert meta["config"] == {"num_layers": 1} and list(loaded) == list(ref["dequantized"])
    assert all(torch.equal(loaded[k], ref["dequantized"][k]) for k in loaded)
    q = quant.quantize_model(ref["inputs"], hessians=ref["hessians"], method="gptq",
                             policy=quant.QuantPolicy(small_numel=512, row_steps="sdclip"),
                             run=quant.QuantRun(scales="fp16"))
    sd = q.state_dict()
    assert all(torch.equal(sd[k], ref["dequantized"][k]) for k in sd)


def test_unknown_scale_format_is_one_readable_error():
    with pytest.raises(quant.QuantError, match="QUANT_SCALES"):
        quant.quantize_model(_sd(), method="rtn", run=quant.QuantRun(scales="bf16"))
    from golf.run.config import QUANT_SCALES, Config
    assert QUANT_SCALES == quant.scalar.SCALE_FORMATS
    probs = Config().replace(quant_scales="log2").problems()
    assert len(probs) == 1 and probs[0].startswith("QUANT_SCALES='log2'")
    assert Config().replace(quant_scales="fp16").problems() == []
    assert Config.from_env({"QUANT_SCALES": "fp16"}, cpu_preset=False).quant_scales == "fp16"


def test_fitter_with_log_scales_lands_under_budget_within_slack():
    """Exact size <= budget at every budget, within 2,000 bytes of it (scales counted as they
    are stored: the fitter's per-tensor bytes add up to the artifact's streams)."""
    sd = _sd(5, cols=(64, 32))
    pol = quant.QuantPolicy(compressors=("zlib",), float_rung=False, small_numel=1024,
                            row_steps="sdclip")
    hi = quant.quantize_model(sd, method="rtn", policy=pol,
                              fit=quant.BudgetFit(10 ** 9)).total_bytes
    with pytest.raises(quant.BudgetError) as ei:
        quant.quantize_model(sd, method="rtn", policy=pol, fit=quant.BudgetFit(1_000))
    lo = int(re.search(r"can reach is ([\d,]+) bytes", str(ei.value)).group(1).replace(",", ""))
    logs: list[str] = []
    for budget in (int(lo + f * (hi - lo)) for f in (0.3, 0.7)):
        q = quant.quantize_model(sd, method="rtn", policy=pol, fit=quant.BudgetFit(budget),
                                 run=quant.QuantRun(log=logs.append))
        assert budget - 2_000 <= q.total_bytes <= budget, (budget, q.total_bytes)
        assert any(qt.scale_codes is not None for qt in q.tensors if qt.kind == "quant")
        assert _scale_bytes(q.streams) < 2 * (160 + 400)
    assert sum(line.startswith("quant:scales format:log stored:log bytes:") for line in logs) == 2


# ----------------------------------------------------------------------------- packing edges
def _plane_bytes(plane: np.ndarray) -> float:
    """Order-0 entropy bytes of one byte plane (computed here from counts) plus one table byte
    per symbol value in its range: the cost the packer's docstring states."""
    counts = np.bincount(plane, minlength=256)
    p = counts[counts > 0] / plane.size
    return float(-(p * np.log2(p)).sum()) * plane.size / 8 + int(plane.max()) - int(plane.min()) + 1


def test_slowly_varying_codes_take_the_delta_layout_and_round_trip():
    """Codes that climb and fall in small steps over a wide range: row differences (zigzag,
    both signs and zero) take one byte where offsets from the minimum would take two."""
    steps = np.tile([3, 3, 0, -2, 1, 3, -1, 2], 200)
    c = (-1500 + np.cumsum(steps)).astype(np.int32)
    assert c.max() - c.min() > 256
    data, info = pack_scale_codes(c, 64)
    assert (info["mode"], info["width"], len(data)) == ("delta", 1, c.size)
    out = unpack_scale_codes(data, info, c.size)
    assert out.dtype == np.int32 and np.array_equal(out, c)


def test_one_byte_per_row_below_256_and_two_from_256():
    for spread, width in ((255, 1), (256, 2), (65535, 2)):
        c = np.array([7, 7 + spread, 7], dtype=np.int32)
        data, info = pack_scale_codes(c, 64)
        assert info["width"] == width and len(data) == width * c.size
        assert np.array_equal(unpack_scale_codes(data, info, c.size), c)


def test_a_spread_beyond_two_bytes_takes_the_layout_that_holds_it_or_is_refused():
    c = np.array([0, 30000, 60000, 70000], dtype=np.int32)   # offsets to 70,000; steps 30,000
    data, info = pack_scale_codes(c, 64)
    assert info["mode"] == "delta" and np.array_equal(unpack_scale_codes(data, info, 4), c)
    c = np.array([0, 32768], dtype=np.int32)     # offset 32,768 fits; its zigzag step 65,536 not
    data, info = pack_scale_codes(c, 64)
    assert info["mode"] == "min" and np.array_equal(unpack_scale_codes(data, info, 2), c)
    for c in ([0, 65536], [0, 40000, 80000]):
        with pytest.raises(ValueError, match="two bytes per row"):
            pack_scale_codes(np.array(c, dtype=np.int32), 64)


def test_packed_cost_is_the_entropy_of_its_planes_plus_their_tables():
    """The fitter's first guess, against entropy computed here: balanced 2-symbol planes cost
    exactly rows/8 bytes each, constant codes one table byte and no bits."""
    c = np.tile([0, 1, 256, 257], 250).astype(np.int32) + 100      # offsets: both planes {0, 1}
    data, info = pack_scale_codes(c, 64)
    assert (info["mode"], info["width"]) == ("min", 2)
    planes = np.frombuffer(data, np.uint8).reshape(2, -1)
    want = sum(_plane_bytes(p) for p in planes)
    assert want == 2 * 1000 / 8 + 4 and packed_cost(c, 64) == pytest.approx(want, abs=1e-9)
    steps = np.tile([3, 3, 0, -2, 1, 3, -1, 2], 50)                 # width 1, delta: 5 symbols
    c = np.cumsum(steps).astype(np.int32)
    data, _info = pack_scale_codes(c, 64)
    assert packed_cost(c, 64) == pytest.approx(_plane_bytes(np.frombuffer(data, np.uint8)), rel=0.02)
    assert packed_cost(np.full(50, 300, np.int32), 64) == 1.0


def test_unpacking_refuses_a_stream_that_does_not_match_its_entry():
    c = np.array([5, 9, 5, 6], dtype=np.int32)
    data, info = pack_scale_codes(c, 64)
    for bad_data, bad_info in ((data + b"\0", info), (data[:-1], info),
                               (data, {**info, "mode": "ratio"}), (data * 3, {**info, "width": 3})):
        with pytest.raises(ValueError, match="log scales"):
            unpack_scale_codes(bad_data, bad_info, c.size)


def test_log_grid_ends_at_the_largest_finite_fp16_grid_value_and_at_tiny():
    """Steps beyond fp16's range take the top code 16R - 1 (a finite value); the smallest take
    -24R, i.e. 2^-24 (TINY); codes are int32, values float32."""
    r = 64
    v, c = round_log_scale(torch.tensor([1e6, 7e4, 0.0, 1e-30], dtype=torch.float32), r)
    assert c.dtype == np.int32 and v.dtype == torch.float32
    assert c.tolist() == [16 * r - 1, 16 * r - 1, -24 * r, -24 * r]
    top = float(np.float16(2.0 ** (16 - 1 / r)))
    assert v.tolist() == [top, top, 2.0 ** -24, 2.0 ** -24] and np.isfinite(top)


def test_log_codes_of_float32_steps_are_rounded_in_float64():
    """float32 steps just above a half-way point between two grid values: the code is the
    nearest one by log2 in float64 (float32's log2 is off by ~1e-4 codes at |c| ~ 1000 and
    rounds some of these the wrong way)."""
    r = 64
    k = np.arange(-1400, 1000, 3)
    s32 = (2.0 ** ((k + 0.5 + 2e-5) / r)).astype(np.float32)
    _v, c = round_log_scale(torch.from_numpy(s32), r)
    assert np.array_equal(c, np.round(r * np.log2(s32.astype(np.float64))).astype(np.int32))
