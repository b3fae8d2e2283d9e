"""The .gkq artifact: bit-identical round trip, byte determinism, corrupt-file rejection,
config checks and the per-tensor report."""
from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
import torch

import quant
import quant.artifact


def _model_sd(seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {
        "tok_emb.weight": torch.randn(300, 256, generator=g) * 0.05,
        "blocks.0.attn.c_q.weight": torch.randn(256, 300, generator=g) * 0.03,
        "blocks.0.mlp.fc.weight": torch.randn(400, 200, generator=g) * 0.02,
        "blocks.0.attn_scale": torch.rand(256, generator=g),
        "final_norm.weight": torch.rand(256, generator=g).bfloat16(),
        "step": torch.tensor(7),
    }
    sd["lm_head.weight"] = sd["tok_emb.weight"]  # tied: stored once
    return sd


def _hessians(sd):
    out = {}
    for name, t in sd.items():
        if t.ndim == 2 and t.numel() > 65_536:
            x = torch.randn(512, t.shape[1], generator=torch.Generator().manual_seed(1))
            out[name] = x.T @ x / 512
    return out


@pytest.fixture(scope="module")
def qmodel():
    sd = _model_sd()
    return quant.quantize_model(sd, hessians=_hessians(sd), method="gptq",
                                meta={"config": {"num_layers": 1, "model_dim": 256}})


def test_parallel_compression_writes_the_same_bytes_as_serial(qmodel):
    """The thread pool only changes when streams are compressed, never what is written."""
    from quant.artifact import build_artifact
    from quant.codec import StreamCache
    serial, s_streams = build_artifact(qmodel.tensors, qmodel.meta, qmodel.policy.compressors,
                                       StreamCache(workers=1))
    parallel, p_streams = build_artifact(qmodel.tensors, qmodel.meta, qmodel.policy.compressors,
                                         StreamCache(workers=4))
    assert serial == parallel == qmodel.to_bytes()
    assert [s["codec"] for s in s_streams] == [s["codec"] for s in p_streams]
    # the stream table describes the payload exactly: back to back, and each stream decodes
    # (with its own codec) to its raw length, whichever worker compressed it
    from quant.artifact import parse_artifact
    from quant.codec import decompress
    header, payload = parse_artifact(parallel)
    streams = header["streams"]
    assert [s["offset"] for s in streams] == [sum(x["length"] for x in streams[:i]) for i in range(len(streams))]
    assert sum(s["length"] for s in streams) == len(payload) and len(streams) >= 3
    for s in streams:
        raw = decompress(payload[s["offset"]:s["offset"] + s["length"]], s["codec"], s["raw_length"])
        assert len(raw) == s["raw_length"], s["name"]


def test_round_trip_is_bit_identical_and_save_is_byte_deterministic(qmodel, tmp_path):
    p1, p2 = tmp_path / "a.gkq", tmp_path / "b.gkq"
    n = quant.save_artifact(p1, qmodel)
    assert n == qmodel.total_bytes == p1.stat().st_size
    sd = _model_sd()
    again = quant.quantize_model(sd, hessians=_hessians(sd), method="gptq",
                                 meta={"config": {"num_layers": 1, "model_dim": 256}})
    quant.save_artifact(p2, again)
    assert p1.read_bytes() == p2.read_bytes()
    loaded, meta = quant.load_artifact(p1)
    loaded2, _ = quant.load_artifact(p1)
    expected = qmodel.state_dict()
    assert list(loaded) == list(sd)
    for name in sd:
        assert loaded[name].dtype == expected[name].dtype
        assert torch.equal(loaded[name], expected[name]) and torch.equal(loaded[name], loaded2[name])
    assert meta["config"]["num_layers"] == 1
    assert loaded["final_norm.weight"].dtype == torch.bfloat16
    assert loaded["blocks.0.attn_scale"].dtype == torch.float32
    assert torch.equal(loaded["blocks.0.attn_scale"], sd["blocks.0.attn_scale"])  # fp32 kept exact
    assert int(loaded["step"]) == 7
    assert torch.equal(loaded["lm_head.weight"], loaded["tok_emb.weight"])
    err = (loaded["blocks.0.mlp.fc.weight"] - sd["blocks.0.mlp.fc.weight"]).pow(2).mean().sqrt()
    assert float(err) < 0.2 * float(sd["blocks.0.mlp.fc.weight"].std())
    # the records themselves come back too (quant info and the reports read them)
    from quant.artifact import decode_tensors, parse_artifact
    back = decode_tensors(*parse_artifact(p1.read_bytes()))
    def record(t):  # a passthrough tensor's method label is not stored
        fields = ("name", "shape", "dtype", "cls", "kind", "alias_of") + \
            (("bits", "method", "k") if t.kind == "quant" else ())
        return [getattr(t, f) for f in fields]
    assert [record(t) for t in back] == [record(t) for t in qmodel.tensors]


def test_failed_save_leaves_the_good_artifact(qmodel, tmp_path, monkeypatch):
    p = tmp_path / "m.gkq"
    quant.save_artifact(p, qmodel)
    good = p.read_bytes()

    class Broken:
        def to_bytes(self):
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        quant.save_artifact(p, Broken())
    assert p.read_bytes() == good
    assert [f.name for f in tmp_path.iterdir()] == ["m.gkq"]
    # a failure after the new bytes were written (the final rename fails, as on a full disk):
    # a writer that wrote in place would have replaced the good file already
    other = quant.quantize_model(_model_sd(seed=1), method="int8", meta={"config": {}})
    assert other.to_bytes() != good

    def no_rename(*_a, **_k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="No space"):
        quant.save_artifact(p, other)
    assert p.read_bytes() == good
    assert [f.name for f in tmp_path.iterdir()] == ["m.gkq"]  # the temp file is gone too


@pytest.mark.parametrize("damage,pattern", [
    ("truncate_payload", "truncated"),
    ("truncate_header", "truncated"),
    ("flip_payload", "corrupt"),
    ("flip_header", "corrupt"),
    ("magic", "bad magic"),
    ("version", "unsupported artifact format version 9"),
])
def test_damaged_files_are_rejected_naming_the_file(qmodel, tmp_path, damage, pattern):
    blob = bytearray(qmodel.to_bytes())
    hlen = struct.unpack_from("<I", blob, 6)[0]
    if damage == "truncate_payload":
        blob = blob[:-100]
    elif damage == "truncate_header":
        blob = blob[:42 + hlen // 2]
    elif damage == "flip_payload":
        blob[42 + hlen + 500] ^= 0x40
    elif damage == "flip_header":
        blob[42 + 10] ^= 0x01
    elif damage == "magic":
        blob[:4] = b"PK\x03\x04"
    elif damage == "version":
        struct.pack_into("<H", blob, 4, 9)
    p = tmp_path / f"bad_{damage}.gkq"
    p.write_bytes(bytes(blob))
    with pytest.raises(quant.ArtifactError) as ei:
        quant.load_artifact(p)
    msg = str(ei.value)
    assert str(p) in msg and pattern in msg
    if damage == "version":
        assert str(list(quant.SUPPORTED_VERSIONS)) in msg


def test_version1_plain_json_header_still_loads_bit_identical(qmodel, tmp_path):
    """v2 compresses the header; a v1 file (same content, plain JSON header) loads the same."""
    import brotli
    import hashlib
    blob = qmodel.to_bytes()
    hlen = struct.unpack_from("<I", blob, 6)[0]
    hjson = brotli.decompress(blob[42:42 + hlen])
    assert hlen < len(hjson) / 2  # the compressed header really is smaller
    v1 = struct.pack("<4sHI32s", b"GKQF", 1, len(hjson), hashlib.sha256(hjson).digest()) + hjson \
        + blob[42 + hlen:]
    (tmp_path / "v1.gkq").write_bytes(v1)
    (tmp_path / "v2.gkq").write_bytes(blob)
    sd1, _ = quant.load_artifact(tmp_path / "v1.gkq")
    sd2, _ = quant.load_artifact(tmp_path / "v2.gkq")
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def test_check_artifact_config_lists_differing_keys(qmodel):
    quant.check_artifact_config(qmodel.meta, {"num_layers": 1, "model_dim": 256})
    with pytest.raises(quant.ConfigMismatchError) as ei:
        quant.check_artifact_config(qmodel.meta, {"num_layers": 11, "model_dim": 256,
                                                  "vocab_size": 1024}, path="x.gkq")
    msg = str(ei.value)
    assert "x.gkq" in msg and "num_layers" in msg and "vocab_size" in msg and "model_dim" not in msg


def test_codes_are_byte_streams_compressed_near_entropy(qmodel):
    rows = {r["name"]: r for r in qmodel.report}
    for name in ("blocks.0.attn.c_q.weight", "blocks.0.mlp.fc.weight", "tok_emb.weight"):
        r = rows[name]
        assert set(r["codec_sizes"]) == {"zstd", "brotli", "lzma", "zlib", "rans"}
        assert r["codec"] == "rans" and r["code_bytes"] == min(r["codec_sizes"].values())
        assert 0.0 <= r["overhead_vs_entropy"] < 0.02, r  # order-0 coder: just above entropy
    assert sum(r["bytes"] for r in qmodel.report) <= qmodel.total_bytes
    assert abs(sum(r["share"] for r in qmodel.report) - 1) < 0.05


def test_joint_rans_stream_beats_the_best_general_codec(qmodel):
    """All codes share one rANS stream; without rANS the same tensors cost more bytes."""
    from dataclasses import replace
    names = [s["name"] for s in qmodel.streams]
    assert "codes" in names and not any(n.startswith("codes/") for n in names)
    joint = qmodel.streams[names.index("codes")]
    tensor_names = ("tok_emb.weight", "blocks.0.attn.c_q.weight", "blocks.0.mlp.fc.weight")
    parts = [p["name"] for p in joint["parts"]]
    assert joint["codec"] == "rans" and parts[:3] == [f"codes/{n}" for n in tensor_names]
    # the log-grid row scales follow in the same stream when that is smaller, else scales/log
    assert parts[3:] in ([], [f"rowscales/{n}" for n in tensor_names])
    sd = _model_sd()
    plain = quant.quantize_model(sd, hessians=_hessians(sd), method="gptq",
                                 policy=replace(quant.QuantPolicy(), compressors=("zstd", "brotli", "lzma", "zlib")),
                                 meta={"config": {"num_layers": 1, "model_dim": 256}})
    assert any(s["name"].startswith("codes/") for s in plain.streams)
    assert qmodel.total_bytes < plain.total_bytes
    a, b = qmodel.state_dict(), plain.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # same codes, only the coder differs


def test_report_json_png_and_table(qmodel, tmp_path):
    quant.write_report(qmodel, tmp_path / "r.json", tmp_path / "r.png")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["summary"]["total_bytes"] == qmodel.total_bytes
    assert {r["name"] for r in doc["tensors"]} == set(_model_sd())
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = quant.format_report(qmodel)
    assert "blocks.0.mlp.fc.weight" in table and f"{qmodel.total_bytes:,}" in table
    hrow = next(r for r in doc["tensors"] if r["name"] == "blocks.0.attn.c_q.weight")
    assert hrow["error_kind"] == "hessian" and 0 < hrow["weighted_error"] < 0.05


def test_info_cli_verifies_and_reports_bad_files_without_traceback(qmodel, tmp_path, capsys):
    from quant.__main__ import main
    good = tmp_path / "ok.gkq"
    quant.save_artifact(good, qmodel)
    assert main(["info", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "cut.gkq"
    bad.write_bytes(good.read_bytes()[:60])
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "truncated" in err and "Traceback" not in err


def test_report_with_nothing_quantized_says_so_instead_of_empty_axes(qmodel, tmp_path, monkeypatch):
    """A model kept wholly in floating point draws the words panel; a quantized one the bars."""
    import quant.report as report
    from dataclasses import replace
    drawn: list[str] = []
    real_bars, real_words = report._bars, report._nothing_quantized
    monkeypatch.setattr(report, "_bars", lambda *a: drawn.append("bars") or real_bars(*a))
    monkeypatch.setattr(report, "_nothing_quantized", lambda *a: drawn.append("words") or real_words(*a))
    quant.write_report(qmodel, tmp_path / "q.json", tmp_path / "q.png")
    sd = _model_sd()
    floats = quant.quantize_model(sd, method="rtn", meta={"config": {}},
                                  policy=replace(quant.QuantPolicy(), small_numel=10**9))
    assert not any(r["kind"] == "quant" for r in floats.report)
    quant.write_report(floats, tmp_path / "f.json", tmp_path / "f.png")
    assert drawn == ["bars", "words"]
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_versions_2_to_5_read_a_brotli_header(qmodel, tmp_path):
    """From version 2 on the header is brotli-compressed (version 1 above is plain JSON)."""
    blob = qmodel.to_bytes()
    for v in (2, 3, 4, 5):
        f = tmp_path / f"v{v}.gkq"
        f.write_bytes(blob[:4] + struct.pack("<H", v) + blob[6:])
        sd, _ = quant.load_artifact(f)
        assert sd.keys() == qmodel.state_dict().keys()


def test_header_is_sorted_compact_json_that_decoding_needs_only():
    """The module's format: a sorted-keys, compact UTF-8 JSON header (so equal content gives
    equal bytes) naming its format; stream entries carry no fitter bookkeeping (sizes, parts).
    Built here, not from the module fixture, so bench.mutation sees this test reach _seal."""
    import brotli
    sd = _model_sd(1)
    blob = quant.quantize_model(sd, method="rtn", meta={"config": {"d": 1}}).to_bytes()
    hlen = struct.unpack_from("<I", blob, 6)[0]
    raw = brotli.decompress(blob[42:42 + hlen])
    header = json.loads(raw)
    assert raw == json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    assert header["format"] == "golfkit-quant" and header["version"] == 5
    assert all(not {"sizes", "parts"} & set(st) for st in header["streams"])
    assert len(header["streams"]) >= 2


def test_meta_values_json_cannot_hold_are_written_as_strings(tmp_path):
    from pathlib import PurePosixPath
    sd = {"blocks.0.attn_scale": torch.rand(64)}
    q = quant.quantize_model(sd, method="rtn", meta={"data": PurePosixPath("/d/x")})
    quant.save_artifact(tmp_path / "m.gkq", q)
    _sd, meta = quant.load_artifact(tmp_path / "m.gkq")
    assert meta["data"] == "/d/x"


def test_an_artifact_with_no_payload_loads(tmp_path):
    """A model of aliases only has an empty payload: header end == file end is complete."""
    blob, _streams = quant.artifact.build_artifact([], {"config": {}}, ("zlib",))
    header, payload = quant.artifact.parse_artifact(blob)
    assert payload == b"" and header["payload_len"] == 0 and header["tensors"] == []


def test_write_atomic_writes_beside_the_target_under_a_temp_name(tmp_path, monkeypatch):
    """The temp file sits in the target's folder (os.replace is atomic only within one file
    system) and is named <name>.<random>.tmp; missing parent folders are created."""
    from quant import artifact
    seen = []
    real = os.replace
    monkeypatch.setattr(artifact.os, "replace", lambda a, b: (seen.append((a, b)), real(a, b)))
    target = tmp_path / "a" / "b" / "final.gkq"
    assert artifact.write_atomic(target, b"xyz") == 3 and target.read_bytes() == b"xyz"
    (tmp, dst), = seen
    tmp = os.path.basename(tmp), os.path.dirname(tmp)
    assert dst == target and tmp[1] == str(target.parent)
    assert tmp[0].startswith("final.gkq.") and tmp[0].endswith(".tmp") and tmp[0] != "final.gkq..tmp"
    assert sorted(p.name for p in target.parent.iterdir()) == ["final.gkq"]


def test_passthrough_streams_small_tensors_share_one_a_kept_matrix_has_its_own():
    """A large tensor the fitter kept in fp16 (a quantizable class) gets pass/<name>/float16;
    small tensors share pass/<dtype> (quant/artifact.py's layout)."""
    from quant.artifact import pass_stream_name
    from quant.tensors import QTensor
    big = QTensor(name="blocks.0.mlp.fc.weight", shape=(4, 4), dtype="float32", cls="mlp",
                  kind="pass", data=np.zeros(16, np.float16))
    small = QTensor(name="blocks.0.attn_scale", shape=(4,), dtype="float32", cls="small",
                    kind="pass", data=np.zeros(4, np.float32))
    assert pass_stream_name(big) == "pass/blocks.0.mlp.fc.weight/float16"
    assert pass_stream_name(small) == "pass/float32"


def test_every_logical_stream_reads_like_a_stream(qmodel):
    """Parts of shared streams (joint rANS codes, scale streams) look like standalone streams
    to the report and the fitter: the same keys, their own name, their bytes."""
    from quant.artifact import logical_streams
    out = logical_streams(qmodel.streams)
    keys = {"name", "codec", "length", "raw_length", "shuffle", "standalone_codec"}
    assert len(out) > len(qmodel.streams)                   # shared streams were split
    for name, st in out.items():
        assert keys <= set(st) and st["name"] == name and st["length"] > 0
