"""golfkit's context-modelled rANS (quant/ctxrans.py): bit-exact round trips in every mode, the
mode each kind of matrix gets, its gain on clustered rows, its use in the artifact, and corrupt
blobs. No external binary: none of these need lrzip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import quant
from hypothesis import given, settings
from hypothesis import strategies as st

from quant import artifact, ctxrans, rans
from quant.codec import StreamCache
from quant.roworder import OrderMemo


def _gauss(rows: int, cols: int, seed: int, sd: float = 3.0) -> np.ndarray:
    g = np.random.default_rng(seed)
    return np.clip(np.rint(g.normal(0, sd, (rows, cols))), -31, 31).astype(np.int8)


def _clustered(rows: int, cols: int, seed: int) -> np.ndarray:
    """A third of the rows near one shared vector (a trained embedding's rare tokens), shuffled
    among independent rows."""
    g = np.random.default_rng(seed)
    x = _gauss(rows, cols, seed)
    centre = np.rint(g.normal(0, 6, cols))
    near = g.choice(rows, rows // 3, replace=False)
    x[near] = np.clip(centre + np.rint(g.normal(0, 0.4, (near.size, cols))), -63, 63)
    return x


def _quiet_columns(rows: int, cols: int, seed: int) -> np.ndarray:
    """Columns at four very different spreads (hidden units of different strength)."""
    sd = np.array([0.3, 1.0, 3.0, 9.0])[np.arange(cols) * 4 // cols]
    g = np.random.default_rng(seed)
    return np.clip(np.rint(g.normal(0, 1, (rows, cols)) * sd), -63, 63).astype(np.int8)


def test_round_trips_every_mode_bit_exactly_and_picks_the_mode_that_fits():
    mats = [("a", _gauss(64, 32, 0)), ("b", _clustered(256, 64, 1)),
            ("c", _quiet_columns(128, 128, 2)),
            ("d", np.full((5, 7), -128, np.int8)), ("e", _gauss(3, 1, 4))]
    assert [ctxrans.choose_mode(m) for _n, m in mats[:3]] == [0, 2, 1]
    blob = ctxrans.encode(mats)
    assert ctxrans.decode(blob) == b"".join(m.tobytes() for _n, m in mats)


def _correlated_rows(rows: int, cols: int, seed: int) -> np.ndarray:
    """Each row 0.8 x the row before plus noise: too far apart to code as differences, but the
    code above predicts the sign and size of the code below."""
    g = np.random.default_rng(seed)
    x = np.zeros((rows, cols))
    for r in range(1, rows):
        x[r] = 0.8 * x[r - 1] + g.normal(0, 3, cols)
    return np.clip(np.rint(x), -31, 31).astype(np.int8)


def test_context_of_the_code_above_round_trips_beside_a_long_tensor():
    """Mode 3 reads each raw row's contexts from the row decoded before it, so the lanes are
    capped at its width even when another tensor would want more lanes."""
    x = _correlated_rows(256, 96, 3)
    assert ctxrans.choose_mode(x) == 3
    mats = [("a", x), ("b", _gauss(80, 7000, 10))]
    blob = ctxrans.encode(mats)
    lanes = int.from_bytes(blob[blob.index(b"gkC1") + 4 + 4 + 2 * 9 + 4 + int.from_bytes(
        blob[26:30], "little"):][:4], "little")
    assert lanes <= 96 < rans.lanes_for(x.size + 80 * 7000)
    assert ctxrans.decode(blob) == b"".join(m.tobytes() for _n, m in mats)
    assert len(ctxrans.encode([("a", x)])) < 0.95 * len(rans.encode(x.tobytes()))


def test_row_differences_wrap_modulo_256():
    x = np.array([[127, -128, 0], [-128, 127, 1], [127, -128, 0], [126, -127, 1]], np.int8)
    sym, _cls, _side = ctxrans._transform(x, 2)
    order = ctxrans.l1_chain_order(x)
    xs = x[order].astype(np.int64)
    rowc = np.frombuffer(_side, np.uint8, x.shape[0], 2 * x.shape[0])
    for r in range(1, 4):
        want = (xs[r] - xs[r - 1]) % 256 if rowc[r] < ctxrans.RAW else xs[r] % 256
        assert sym[r].tolist() == want.tolist()
    assert ctxrans.decode(ctxrans.encode([("x", x)])) == x.tobytes()


def test_beats_order0_rans_on_clustered_rows_and_quiet_columns():
    for m in (_clustered(256, 64, 5), _quiet_columns(128, 128, 6)):
        assert len(ctxrans.encode([("m", m)])) < 0.97 * len(rans.encode(m.tobytes()))


def test_plain_mode_costs_about_what_order0_rans_costs():
    m = _gauss(256, 128, 7)
    assert ctxrans.choose_mode(m) == 0
    assert abs(len(ctxrans.encode([("m", m)])) - len(rans.encode(m.tobytes()))) < 64


def _build_without(q, codec: str) -> bytes:
    """q's tensors built with the default coders less `codec`."""
    codecs = tuple(c for c in q.policy.compressors if c != codec)
    return artifact.build_artifact(q.tensors, q.meta, codecs, None, q.policy.shuffle_fp16)[0]


def _build_all_framed(q) -> bytes:
    """q's tensors with every code matrix in the context-rANS frame (smaller scale option)."""
    names = [qt.name for qt in q.tensors if qt.kind == "quant"]
    coding = artifact._Coding(q.policy.compressors, StreamCache(), True, None)
    return min((artifact._build_once(q.tensors, q.meta, coding, log, "ctxrans", names)[0]
                for log in (False, True)), key=len)


def test_the_default_coders_keep_context_rans_where_it_is_smaller(tmp_path):
    """A clustered embedding: the default artifact holds a ctxrans frame, is no larger than
    the same tensors without it or with every matrix framed, and loads bit-exactly."""
    g = np.random.default_rng(0)
    emb = _clustered(256, 64, 11).astype(np.float32) * 0.01 + g.normal(0, 1e-4, (256, 64))
    sd = {"tok_emb.weight": torch.tensor(emb, dtype=torch.float32),
          "blocks.0.mlp.fc.weight": torch.randn(96, 64, generator=torch.Generator().manual_seed(1)),
          "blocks.0.attn_scale": torch.rand(64)}
    q = quant.quantize_model(sd, method="rtn", policy=quant.QuantPolicy(small_numel=1000))
    assert "ctxrans" in q.policy.compressors  # a default coder, by its registry entry
    assert [s["codec"] for s in q.streams].count("ctxrans") == 1
    blob = q.to_bytes()
    assert len(blob) <= min(len(_build_without(q, "ctxrans")), len(_build_all_framed(q)))
    assert len(blob) < len(_build_without(q, "ctxrans"))
    p = tmp_path / "m.gkq"
    quant.save_artifact(p, q)
    loaded, _meta = quant.load_artifact(p)
    for name, t in q.state_dict().items():
        assert torch.equal(loaded[name], t)


def test_the_default_coders_leave_context_rans_out_where_an_lz_coder_wins():
    """Rows that repeat a 16-code pattern: an LZ coder stores them almost free, an order-0 or
    context table cannot, so the builder keeps today's streams and no frame."""
    g = torch.Generator().manual_seed(2)
    w = torch.randn(128, 16, generator=g).repeat(1, 8)
    q = quant.quantize_model({"blocks.0.mlp.fc.weight": w}, method="rtn",
                             policy=quant.QuantPolicy(small_numel=100))
    assert "ctxrans" not in {s["codec"] for s in q.streams}
    assert len(q.to_bytes()) < len(_build_all_framed(q))
    assert len(q.to_bytes()) == len(_build_without(q, "ctxrans"))


def test_the_frame_takes_only_the_matrices_it_codes_smaller():
    """A clustered embedding beside rows that repeat a pattern: the frame holds the embedding
    alone, the LZ-friendly matrix keeps its own stream, and that artifact is smaller than both
    no frame and every matrix framed (the choice is per tensor, not all or nothing)."""
    g = np.random.default_rng(4)
    emb = _clustered(256, 64, 18).astype(np.float32) * 0.01 + g.normal(0, 1e-4, (256, 64))
    rep = torch.randn(128, 16, generator=torch.Generator().manual_seed(5)).repeat(1, 8)
    sd = {"tok_emb.weight": torch.tensor(emb, dtype=torch.float32), "blocks.0.mlp.fc.weight": rep}
    q = quant.quantize_model(sd, method="rtn", policy=quant.QuantPolicy(small_numel=1000))
    header, _payload = artifact.parse_artifact(q.to_bytes())
    framed = next(i for i, s in enumerate(header["streams"]) if s["codec"] == "ctxrans")
    where = {e["name"]: header["streams"][e["codes"][0]]["codec"] for e in header["tensors"]
             if e["kind"] == "quant"}
    assert where["tok_emb.weight"] == "ctxrans" and where["blocks.0.mlp.fc.weight"] != "ctxrans"
    assert header["streams"][framed]["raw_length"] == 256 * 64
    assert len(q.to_bytes()) < min(len(_build_without(q, "ctxrans")), len(_build_all_framed(q)))


@settings(max_examples=12, deadline=None, derandomize=True)
@given(shapes=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 80), st.sampled_from(
    ["gauss", "clustered", "columns", "correlated", "constant"])), min_size=1, max_size=4),
       seed=st.integers(0, 1000))
def test_round_trip_is_exact_for_any_shapes_and_mixes(shapes, seed):
    make = {"gauss": _gauss, "clustered": _clustered, "columns": _quiet_columns,
            "correlated": _correlated_rows,
            "constant": lambda r, c, s: np.full((r, c), s % 256 - 128, np.int8)}
    mats = [(f"t{i}", make[kind](r, c, seed + i)) for i, (r, c, kind) in enumerate(shapes)]
    blob = ctxrans.encode(mats)
    assert ctxrans.decode(blob, sum(m.size for _n, m in mats)) == b"".join(
        m.tobytes() for _n, m in mats)


def test_row_orders_are_memoised_by_content():
    """The fitter rebuilds with most tensors unchanged: each distinct matrix is sorted once,
    and the frame's bytes do not depend on the memo."""
    a, b = _clustered(200, 64, 12), _correlated_rows(150, 80, 13)
    memo = OrderMemo()
    first = ctxrans.encode([("a", a), ("b", b)], memo)
    assert memo.sorts == 2
    assert ctxrans.encode([("a", a.copy()), ("b", b)], memo) == first
    assert memo.sorts == 2
    b2 = b.copy()
    b2[0, 0] ^= 1
    ctxrans.encode([("a", a), ("b", b2)], memo)
    assert memo.sorts == 3
    assert ctxrans.encode([("a", a), ("b", b)]) == first


def test_a_framed_artifact_uses_the_fitters_cache_for_row_orders():
    g = torch.Generator().manual_seed(3)
    sd = {"tok_emb.weight": torch.tensor(_clustered(128, 64, 14).astype(np.float32)),
          "blocks.0.mlp.fc.weight": torch.randn(96, 64, generator=g)}
    q = quant.quantize_model(sd, method="rtn", policy=quant.QuantPolicy(small_numel=1000))
    cache = StreamCache()
    one = artifact.build_artifact(q.tensors, q.meta, q.policy.compressors, cache)[0]
    sorts = cache.orders.sorts
    assert sorts >= 1
    assert artifact.build_artifact(q.tensors, q.meta, q.policy.compressors, cache)[0] == one
    assert cache.orders.sorts == sorts


@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data())
def test_flipped_or_cut_frames_decode_exactly_or_raise_one_error(data):
    """Any byte flipped, or any cut: the original codes back, or a CtxRansError (never another
    exception, a hang, or more than the declared symbols)."""
    mats = [("b", _clustered(48, 64, 15)), ("c", _correlated_rows(40, 64, 16)),
            ("a", _quiet_columns(16, 16, 17))]
    blob = bytearray(ctxrans.encode(mats))
    want = b"".join(m.tobytes() for _n, m in mats)
    if data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] ^= data.draw(st.integers(1, 255))
    else:
        blob = blob[:data.draw(st.integers(0, len(blob) - 1))]
    try:
        out = ctxrans.decode(bytes(blob), len(want))
    except ctxrans.CtxRansError as exc:
        assert "\n" not in str(exc)
        return
    assert len(out) == len(want)


def test_corrupt_blobs_raise_a_ctxrans_error():
    blob = ctxrans.encode([("b", _clustered(40, 16, 8)), ("a", _gauss(16, 16, 9))])
    bad = [blob[:-3], blob[:20], b"gkC2" + blob[4:], blob + b"\0"]
    bad.append(blob[:8] + b"\xff\xff\xff\x7f" + blob[12:])  # rows far beyond any real tensor
    for b in bad:
        with pytest.raises(ctxrans.CtxRansError):
            ctxrans.decode(b)


def test_a_blob_declaring_more_symbols_than_its_stream_is_refused_before_decoding(monkeypatch):
    """The artifact stream's declared length bounds the frame: one symbol fewer is refused at
    the header, before the side information or any table is decompressed."""
    mats = [("a", _gauss(64, 32, 0)), ("b", _clustered(256, 64, 1))]
    blob = ctxrans.encode(mats)
    n = sum(m.size for _n, m in mats)
    assert ctxrans.decode(blob, n) == b"".join(m.tobytes() for _n, m in mats)
    touched = []
    monkeypatch.setattr(ctxrans, "brotli_d", lambda *a: touched.append(a) or b"")
    with pytest.raises(ctxrans.CtxRansError, match="declares"):
        ctxrans.decode(blob, n - 1)
    assert touched == []


def test_a_side_information_bomb_stops_at_its_declared_size():
    """A side block that expands far beyond what the tensor headers need is refused without
    being decompressed whole."""
    import struct

    import brotli
    bomb = brotli.compress(b"\0" * (64 << 20), quality=1)
    head = ctxrans.MAGIC + struct.pack("<I", 1) + struct.pack("<IIB", 4, 4, 1)
    blob = head + struct.pack("<I", len(bomb)) + bomb
    with pytest.raises(ctxrans.CtxRansError, match="side information"):
        ctxrans.decode(blob)
