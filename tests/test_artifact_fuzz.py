"""A .gkq file from anyone: byte flips, truncations, forged headers (checksums recomputed, so
the schema checks are what stands) and decompression bombs end in a correct load or the one
ArtifactError line, never a traceback, and the reader's peak memory stays bounded (issue 26)."""
from __future__ import annotations

import hashlib
import json
import lzma
import re
import struct
import zlib
from pathlib import Path

import brotli
import pytest
import torch
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quant
from golf.run.config import Config
from golf.eval.score import load_artifact
from golf.model.gpt import GPT
from quant import rans
from quant.artifact import FORMAT_VERSION, parse_artifact

PEAK_MB = 200  # over the resident set before the load
FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> tuple[bytes, dict]:
    """A small GPT's artifact with a joint rANS code stream, log-grid scales and passthroughs,
    and its decoded state dict."""
    cfg = Config.from_env({"PRESET": "cpu"}, cpu_preset=True).replace(num_layers=2, model_dim=64, num_heads=4,
                                                       num_kv_heads=2, mlp_mult=2.0, vocab_size=128)
    torch.manual_seed(0)
    q = quant.quantize_model(GPT(cfg), method="rtn", policy=quant.QuantPolicy(small_numel=256, row_steps="sdclip"),
                             meta={"config": cfg.to_dict()})
    blob = q.to_bytes()
    header, _ = parse_artifact(blob)
    assert {s["codec"] for s in header["streams"]} >= {"rans"}
    assert any("scale_log" in e for e in header["tensors"])
    path = tmp_path_factory.mktemp("good") / "m.gkq"
    path.write_bytes(blob)
    return blob, load_artifact(path)[0]


def split(blob: bytes) -> tuple[dict, bytes]:
    hlen = struct.unpack_from("<I", blob, 6)[0]
    return json.loads(brotli.decompress(blob[42:42 + hlen])), blob[42 + hlen:]


def seal(header: object, payload: bytes, header_bytes: bytes | None = None) -> bytes:
    """Bytes with valid magic and header checksum around any header (the payload checksum is
    recomputed when the header is a dict that has one): only the schema checks remain."""
    if isinstance(header, dict) and "payload_sha256" in header:
        header["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    hb = header_bytes if header_bytes is not None else brotli.compress(json.dumps(header).encode())
    return struct.pack("<4sHI32s", b"GKQF", FORMAT_VERSION, len(hb), hashlib.sha256(hb).digest()) + hb + payload


def _vm(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) // 1024


def load_outcome(path: Path, good_sd: dict | None = None) -> str:
    """'ok' (and equal to the good load when given) or 'error' (the one line); anything else
    raises. Asserts the peak resident set grew by less than PEAK_MB during the load."""
    before = _vm("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (Linux)
    try:
        sd, _meta = load_artifact(path)
        result = "ok"
        if good_sd is not None:
            assert sd.keys() == good_sd.keys() and all(torch.equal(sd[k], good_sd[k]) for k in sd)
    except quant.ArtifactError as exc:
        msg = str(exc)
        assert "\n" not in msg and msg.startswith(f"{path}: ") and "artifact" in msg, msg
        result = "error"
    assert _vm("VmHWM") - before < PEAK_MB, f"peak grew by {_vm('VmHWM') - before} MB"
    return result


@FUZZ
@given(data=st.data())
def test_byte_flips_and_truncations(good, tmp_path, data):
    blob, sd = good
    b = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(b)))
    p = tmp_path / "m.gkq"
    for variant in (bytes(b), blob[:cut]):
        p.write_bytes(variant)
        assert load_outcome(p, sd) == ("ok" if variant == blob else "error")


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False)
                    | st.text(max_size=8), lambda c: st.lists(c, max_size=3)
                    | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=6)


def _paths(obj, prefix=()):
    """Every (path, value) inside a JSON value."""
    yield prefix, obj
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield from _paths(v, prefix + (k,))


@FUZZ
@given(data=st.data())
def test_forged_header_fields(good, tmp_path, data):
    """Any field of the header replaced (or deleted) with any JSON value, checksums valid."""
    blob, sd = good
    header, payload = split(blob)
    paths = [p for p, _ in _paths(header) if p and p[0] != "payload_sha256"]
    where = data.draw(st.sampled_from(paths))
    parent = header
    for k in where[:-1]:
        parent = parent[k]
    if isinstance(parent, dict) and data.draw(st.booleans()):
        del parent[where[-1]]
    else:
        parent[where[-1]] = data.draw(JSON)
    p = tmp_path / "m.gkq"
    p.write_bytes(seal(header, payload))
    load_outcome(p, sd)


def _named_cases(header: dict) -> dict[str, dict]:
    """The issue's hand-made headers, each a copy of the good one with one thing wrong."""
    def edited(fn):
        h = json.loads(json.dumps(header))
        fn(h)
        return h
    quant_t = next(i for i, e in enumerate(header["tensors"]) if e["kind"] == "quant")
    pass_t = next(i for i, e in enumerate(header["tensors"]) if e["kind"] == "pass")
    return {
        "payload_len missing": edited(lambda h: h.pop("payload_len")),
        "payload_len a string": edited(lambda h: h.update(payload_len=str(h["payload_len"]))),
        "bad alias": edited(lambda h: h["tensors"][pass_t].update(kind="alias", alias_of="nope")),
        "wrong shape": edited(lambda h: h["tensors"][quant_t]["shape"].reverse()),
        "shape the model lacks": edited(lambda h: h["tensors"][pass_t].update(
            shape=[1] * len(h["tensors"][pass_t]["shape"]))),
        "num_heads=0": edited(lambda h: h["meta"]["config"].update(num_heads=0)),
        "num_layers=1e6": edited(lambda h: h["meta"]["config"].update(num_layers=10**6)),
        "raw_length 2 GiB": edited(lambda h: h["streams"][0].update(raw_length=2 << 30)),
        "stream past the payload": edited(lambda h: h["streams"][-1].update(length=1 << 40)),
    }


def test_named_forgeries_are_one_error(good, tmp_path):
    blob, _ = good
    header, payload = split(blob)
    p = tmp_path / "m.gkq"
    p.write_bytes(seal([header], payload))  # a JSON list as the header
    assert load_outcome(p) == "error"
    for name, h in _named_cases(header).items():
        p.write_bytes(seal(h, payload))
        with pytest.raises(quant.ArtifactError) as ei:
            load_artifact(p)
        assert "corrupt artifact" in str(ei.value) and "\n" not in str(ei.value), name
        assert load_outcome(p) == "error", name


def _bombs() -> dict[str, tuple[str, bytes]]:
    """(codec, bytes) that expand to 256 MiB of zeros (more than PEAK_MB), built in 1 MiB steps."""
    zero, n = bytes(1 << 20), 256
    z = zstandard.ZstdCompressor(level=1).compressobj()
    zs = b"".join(z.compress(zero) for _ in range(n)) + z.flush()
    br = brotli.Compressor(quality=1)
    bs = b"".join(br.process(zero) for _ in range(n)) + br.finish()
    lz = lzma.LZMACompressor(format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 1}])
    ls = b"".join(lz.compress(zero) for _ in range(n)) + lz.flush()
    zl = zlib.compressobj(9)
    zb = b"".join(zl.compress(zero) for _ in range(n)) + zl.flush()
    small = zstandard.ZstdCompressionParameters.from_level(1, window_log=16)  # within the window cap
    z = zstandard.ZstdCompressor(compression_params=small).compressobj()
    zw = b"".join(z.compress(zero) for _ in range(n)) + z.flush()
    return {"zstd": ("zstd", zs), "zstd small window": ("zstd", zw), "brotli": ("brotli", bs),
            "lzma": ("lzma", ls), "zlib": ("zlib", zb)}


def _rans_bomb(symbols: int) -> bytes:
    """A valid rANS blob of one symbol repeated, its header patched to declare `symbols`:
    a one-symbol table codes any count in no words, so only the declared count stops it."""
    blob = bytearray(rans.encode(bytes(64)))
    struct.pack_into("<Q", blob, 8, symbols)   # u32 lanes, then u64 symbols
    struct.pack_into("<I", blob, 20, symbols)  # the one segment's length
    return bytes(blob)


def _with_stream(header: dict, payload: bytes, idx: int, codec: str, data: bytes) -> bytes:
    """The artifact with stream `idx` replaced by `data` under `codec` (offsets moved)."""
    h = json.loads(json.dumps(header))
    st_ = h["streams"][idx]
    old = payload[st_["offset"]:st_["offset"] + st_["length"]]
    new_payload = payload[:st_["offset"]] + data + payload[st_["offset"] + len(old):]
    st_.update(codec=codec, length=len(data))
    for later in h["streams"][idx + 1:]:
        later["offset"] += len(data) - len(old)
    h["payload_len"] = len(new_payload)
    return seal(h, new_payload)


def test_decompression_bombs_stop_at_the_declared_length(good, tmp_path):
    blob, _ = good
    header, payload = split(blob)
    p = tmp_path / "m.gkq"
    joint = next(i for i, s in enumerate(header["streams"]) if s["codec"] == "rans")
    plain = next(i for i, s in enumerate(header["streams"]) if s["codec"] != "rans")
    cases = {**_bombs(), "rans 1e9 symbols": ("rans", _rans_bomb(10**9))}
    for name, (codec, data) in cases.items():
        assert len(data) < 1 << 20, name  # under a MiB on disk
        for idx in (joint, plain):
            p.write_bytes(_with_stream(header, payload, idx, codec, data))
            assert load_outcome(p) == "error", name
    # the header itself as a bomb: 256 MiB of JSON whitespace
    br = brotli.Compressor(quality=1)
    hb = b"".join(br.process(b" " * (1 << 20)) for _ in range(256)) + br.finish()
    p.write_bytes(seal(None, payload, header_bytes=hb))
    assert load_outcome(p) == "error"


def test_rans_refuses_a_declared_count_before_decoding():
    with pytest.raises(rans.RansError, match="declares 1000000000 symbols"):
        rans.decode(_rans_bomb(10**9))
    with pytest.raises(rans.RansError, match="more than the 64 expected"):
        rans.decode(_rans_bomb(65), limit=64)
    assert rans.decode(rans.encode(bytes(64)), limit=64) == bytes(64)


@pytest.mark.parametrize("codec", [c for c in quant.codec.CODECS if c not in quant.codec.FRAMED])
def test_every_codec_decodes_at_its_limit_and_refuses_one_byte_less_or_a_cut(codec):
    from quant.codec import StreamError, compress, decompress
    data = bytes(range(256)) * 40
    blob = compress(data, codec)
    assert decompress(blob, codec, len(data)) == data
    with pytest.raises(StreamError):
        decompress(blob, codec, len(data) - 1)
    if codec != "raw":
        with pytest.raises(StreamError):
            decompress(blob[: len(blob) // 2], codec, len(data))


@pytest.fixture(scope="module")
def good_ctx(tmp_path_factory) -> tuple[bytes, dict]:
    """A small GPT whose embedding rows cluster (a trained one's rare tokens), so the default
    coders keep a context-rANS frame; and its decoded state dict."""
    cfg = Config.from_env({"PRESET": "cpu"}, cpu_preset=True).replace(
        num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=2.0, vocab_size=128)
    torch.manual_seed(1)
    model = GPT(cfg)
    with torch.no_grad():
        w = model.tok_emb.weight
        w[64:] = w[0] + 0.02 * torch.randn(64, w.shape[1]) * w.std()
    q = quant.quantize_model(model, method="rtn", policy=quant.QuantPolicy(small_numel=256, row_steps="sdclip"),
                             meta={"config": cfg.to_dict()})
    blob = q.to_bytes()
    header, _ = parse_artifact(blob)
    assert "ctxrans" in {s["codec"] for s in header["streams"]}
    path = tmp_path_factory.mktemp("good_ctx") / "m.gkq"
    path.write_bytes(blob)
    return blob, load_artifact(path)[0]


@FUZZ
@given(data=st.data())
def test_context_rans_stream_flips_and_cuts_are_one_error(good_ctx, tmp_path, data):
    """Bytes of the ctxrans stream flipped, or the stream cut (lengths and checksums made
    consistent again, so its own decoder is what stands): a correct load or the one line."""
    blob, sd = good_ctx
    header, payload = split(blob)
    st_i = next(i for i, s in enumerate(header["streams"]) if s["codec"] == "ctxrans")
    s = header["streams"][st_i]
    body = bytearray(payload[s["offset"]:s["offset"] + s["length"]])
    if data.draw(st.booleans()):
        for _ in range(data.draw(st.integers(1, 3))):
            i = data.draw(st.integers(0, len(body) - 1))
            body[i] ^= data.draw(st.integers(1, 255))
    else:
        body = body[:data.draw(st.integers(0, len(body) - 1))]
    shift = len(body) - s["length"]
    new_payload = payload[:s["offset"]] + bytes(body) + payload[s["offset"] + s["length"]:]
    s["length"] = len(body)
    for other in header["streams"]:
        if other["offset"] > s["offset"]:
            other["offset"] += shift
    header["payload_len"] = len(new_payload)
    p = tmp_path / "m.gkq"
    p.write_bytes(seal(header, new_payload))
    load_outcome(p, sd)
