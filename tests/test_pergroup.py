"""The records' per-group container (quant/pergroup.py): bit-exact round trips of v1 and v2, the
L1 nearest-neighbour row order against a brute-force recomputation, the frame layout the
reference gives, and the one-line error when lrzip is missing."""
from __future__ import annotations

import itertools
import struct

import numpy as np
import pytest

import quant
from conftest import needs_lrzip
from quant import pergroup


def _codes(rows: int, cols: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    return np.clip(np.rint(g.normal(0, 3, (rows, cols))), -31, 31).astype(np.int8)


TENSORS = [("tok_emb.weight", _codes(40, 12, 0)), ("blocks.0.attn.c_q.weight", _codes(12, 12, 1)),
           ("blocks.0.attn.c_k.weight", _codes(6, 12, 2)), ("blocks.1.attn.c_q.weight", _codes(12, 12, 3)),
           ("blocks.0.mlp.fc.weight", _codes(24, 12, 4)), ("blocks.0.mlp.proj.weight", _codes(12, 24, 5))]


def test_l1_chain_order_is_the_greedy_nearest_neighbour_chain():
    """Recomputed by brute force: from row 0, every next row is an unused row at the smallest L1
    distance, the lowest index among ties; and on a matrix whose rows are a shuffled ladder the
    chain walks the ladder."""
    g = np.random.default_rng(7)
    x = g.integers(-2, 3, (9, 4)).astype(np.int8)  # small range: many distance ties
    order = list(pergroup.l1_chain_order(x))
    assert order[0] == 0 and sorted(order) == list(range(9))
    for a, b in itertools.pairwise(order):
        rest = [r for r in range(9) if r not in order[:order.index(a) + 1]]
        dists = {r: int(np.abs(x[r].astype(int) - x[a].astype(int)).sum()) for r in rest}
        best = min(dists.values())
        assert b == min(r for r in rest if dists[r] == best)
    ladder = np.arange(6)[:, None].repeat(3, 1) * 5
    shuffled = ladder[[0, 4, 2, 5, 1, 3]].astype(np.int8)
    assert shuffled[pergroup.l1_chain_order(shuffled)].tolist() == ladder.tolist()


def test_group_routing_follows_the_records_seven_role_groups():
    assert [pergroup.group_of(n) for n, _c in TENSORS] == [
        "tok_emb", "c_q", "c_k", "c_q", "mlp.fc", "mlp.proj"]
    assert pergroup.group_of("blocks.3.attn.proj.weight") == "attn.proj"
    assert pergroup.group_of("bigram.proj.weight") is None
    assert pergroup.group_of("lm_head.weight") is None


@needs_lrzip
@pytest.mark.parametrize("encode", [pergroup.encode_v1, pergroup.encode_v2])
def test_frames_round_trip_codes_bit_exactly(encode):
    frame = encode(TENSORS)
    assert pergroup.decode(frame) == b"".join(c.tobytes() for _n, c in TENSORS)


@needs_lrzip
def test_v2_frame_layout_holds_raw_permutations_and_a_name_sorted_transposed_blob():
    frame = pergroup.encode_v2(TENSORS)
    assert frame[:4] == b"PGRP" and struct.unpack_from("<II", frame, 4) == (2, len(TENSORS))
    pos, blob_order = 12, []
    for name, codes in TENSORS:
        (k,) = struct.unpack_from("<H", frame, pos)
        assert frame[pos + 2:pos + 2 + k].decode() == name
        pos += 2 + k
        assert struct.unpack_from("<II", frame, pos) == codes.shape
        pos += 8
        perm = np.frombuffer(frame, "<u2", codes.shape[0], pos)
        assert perm.tolist() == pergroup.l1_chain_order(codes).tolist()  # every tensor sorted
        pos += 2 * codes.shape[0]
        blob_order.append((name, codes[perm].T.tobytes()))
    method, size = struct.unpack_from("<BI", frame, pos)
    assert method == pergroup.METHOD_LRZIP and frame[pos + 5 + size:] == struct.pack("<I", 0)
    want = b"".join(b for _n, b in sorted(blob_order))
    assert pergroup.lrzip_decompress(frame[pos + 5:pos + 5 + size], len(want)) == want


@needs_lrzip
def test_v1_sorts_only_the_hot_groups_and_rejects_codes_outside_the_groups():
    frame = pergroup.encode_v1(TENSORS)
    n = struct.unpack_from("<I", frame, 8)[0]
    lengths = struct.unpack_from(f"<{n}I", frame, 12)
    import brotli
    perms = np.frombuffer(brotli.decompress(frame[12 + 4 * n + sum(lengths[:-1]):]), "<u2")
    sorted_rows = sum(c.shape[0] for nm, c in TENSORS
                      if pergroup.group_of(nm) in pergroup.SORTED_GROUPS)
    assert n == 9 and perms.size == sorted_rows
    with pytest.raises(quant.QuantError, match="bigram.proj.weight"):
        pergroup.encode_v1([("bigram.proj.weight", _codes(4, 4, 0))])


@needs_lrzip
def test_corrupt_frames_give_a_pergroup_error():
    frame = pergroup.encode_v2(TENSORS[:2])
    for bad in (frame[:-9], frame[:30], b"PGRP" + struct.pack("<I", 3), frame + b"x"):
        with pytest.raises(pergroup.PergroupError):
            pergroup.decode(bad)
    perm_at = 12 + 2 + len(TENSORS[0][0]) + 8  # tok_emb's permutation: make it repeat a row
    broken = frame[:perm_at] + frame[perm_at + 2:perm_at + 4] + frame[perm_at + 2:]
    with pytest.raises(pergroup.PergroupError, match="not a permutation"):
        pergroup.decode(broken)


def test_missing_lrzip_is_one_line_naming_the_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no lrzip on PATH
    for call in (lambda: pergroup.encode_v1(TENSORS[:1]), lambda: pergroup.encode_v2(TENSORS[:1]),
                 lambda: pergroup.lrzip_compress(b"abc")):
        with pytest.raises(pergroup.LrzipMissing) as exc:
            call()
        msg = str(exc.value)
        assert "\n" not in msg and "apt-get install lrzip" in msg


def test_record_method_without_lrzip_stops_instead_of_falling_back(monkeypatch, tmp_path):
    import torch
    monkeypatch.setenv("PATH", str(tmp_path))
    sd = {"blocks.0.mlp.fc.weight": torch.randn(64, 32) * 0.02}
    for method in ("record_1855", "record_2135"):
        with pytest.raises(pergroup.LrzipMissing, match="apt-get install lrzip"):
            quant.quantize_model(sd, method=method, policy=quant.QuantPolicy(small_numel=100))


def test_the_records_container_stays_out_of_the_packed_script():
    """The records' lrzip container costs a submission code bytes and its artifacts never use
    it: quant.codec imports it only where it uses it. The context rANS, a default coder whose
    frames the packed script must decode, ships (without pulling the container in)."""
    from golf.submission.amalgamate import module_closure
    mods = module_closure("golf.main").modules
    assert "quant.codec" in mods and "quant.artifact" in mods and "quant.ctxrans" in mods
    assert "quant.pergroup" not in mods


def test_a_record_method_without_lrzip_is_refused_before_training(monkeypatch, tmp_path):
    """The main job's preflight names the install for QUANT_METHOD=record_1855 / record_2135,
    so the baseline does not stop after training; other methods need nothing."""
    from golf.run.config import Config
    from golf.main import env_problems
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("GOLF_COMPRESS_THREADS", raising=False)
    for method in ("record_1855", "record_2135"):
        problems = env_problems(Config().replace(quant_method=method))
        assert len(problems) == 1 and "apt-get install lrzip" in problems[0]
    assert env_problems(Config().replace(quant_method="gptq")) == []
    assert env_problems(Config().replace(quant_method="record_1060")) == []


def test_the_main_job_does_not_pack_a_record_container_artifact():
    """The packed script leaves the lrzip container out, so its round trip could only fail:
    the main job says why and skips pack for those methods alone."""
    from golf.main import unpackable_method
    assert [m for m in ("gptq", "rtn", "int8", "record_1060", "record_1855", "record_2135")
            if unpackable_method(m)] == ["record_1855", "record_2135"]


@needs_lrzip
def test_a_v2_frame_declaring_more_codes_than_its_stream_is_refused_before_lrzip(monkeypatch):
    """The artifact stream's declared length bounds the frame: lrzip never runs on a frame whose
    tensor headers declare more codes than that."""
    frame = pergroup.encode_v2(TENSORS[:2])
    n = sum(c.size for _n, c in TENSORS[:2])
    monkeypatch.setattr(pergroup, "lrzip_decompress", lambda *a: pytest.fail("lrzip ran"))
    with pytest.raises(pergroup.PergroupError, match="more codes than its stream"):
        pergroup.decode(frame, n - 1)
