"""Small deliberate bugs that once passed the whole suite, each pinned by a test that fails for it
(issue 18). Every expectation comes from outside the code under test: the challenge's published
cap and margin, a tampered file built by hand, the decoded text's own bytes, or a fake clock."""
from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest
import torch

import quant
from quant import rans
from quant.artifact import _PREFIX
from quant.codec import compress, decompress


# ----------------------------------------------------------------------------- artifact checksums
@pytest.fixture(scope="module")
def artifact_blob() -> bytes:
    g = torch.Generator().manual_seed(0)
    sd = {"blocks.0.mlp.fc.weight": torch.randn(96, 80, generator=g) * 0.02,
          "blocks.0.attn_scale": torch.rand(96, generator=g)}
    return quant.quantize_model(sd, method="int8", meta={"config": {"num_layers": 1}}).to_bytes()


def _split(blob: bytes) -> tuple[int, bytes, bytes, bytes]:
    _magic, version, hlen, hsha = _PREFIX.unpack_from(blob)
    return version, hsha, blob[_PREFIX.size:_PREFIX.size + hlen], blob[_PREFIX.size + hlen:]


def test_header_edited_and_recompressed_is_rejected_by_its_checksum(artifact_blob, tmp_path):
    """A header that still decodes (valid brotli, valid JSON) but says something else must not load:
    only the header sha256 stands between such an edit and silently different meta."""
    version, hsha, hbytes, payload = _split(artifact_blob)
    header = json.loads(decompress(hbytes, "brotli", 1 << 24))
    header["meta"]["config"]["num_layers"] = 7
    forged = compress(json.dumps(header, sort_keys=True, separators=(",", ":")).encode(), "brotli")
    blob = _PREFIX.pack(b"GKQF", version, len(forged), hsha) + forged + payload
    p = tmp_path / "forged.gkq"
    p.write_bytes(blob)
    with pytest.raises(quant.ArtifactError, match="header checksum mismatch"):
        quant.load_artifact(p)
    # the same edit with an honest checksum loads, and carries the edit: the check is what refused it
    honest = _PREFIX.pack(b"GKQF", version, len(forged), hashlib.sha256(forged).digest()) + forged + payload
    p.write_bytes(honest)
    assert quant.load_artifact(p)[1]["config"]["num_layers"] == 7


def test_every_payload_byte_flip_is_a_checksum_error(artifact_blob, tmp_path):
    """Flipping any payload byte must be caught as corruption before decoding, whatever the codec
    of the stream it lands in (some flips would otherwise decode to different weights)."""
    _v, _h, hbytes, payload = _split(artifact_blob)
    start = _PREFIX.size + len(hbytes)
    p = tmp_path / "flip.gkq"
    for k in np.linspace(0, len(payload) - 1, 24).astype(int):
        blob = bytearray(artifact_blob)
        blob[start + int(k)] ^= 0x01
        p.write_bytes(bytes(blob))
        with pytest.raises(quant.ArtifactError, match="payload checksum mismatch"):
            quant.load_artifact(p)


# ----------------------------------------------------------------------------- rANS final state
def test_rans_every_changed_state_or_word_bit_is_an_error():
    """A decoder must end where the encoder started (LOW in every lane, every word used). The last
    words read only feed the final states, so a flipped low bit there reads the same number of
    words and often decodes the same (or silently other) bytes: only the final-state check can
    refuse it. Every flip, early or late, in states or words, must raise."""
    data = np.random.default_rng(5).normal(0, 6, 3000).astype(np.int8).tobytes()
    lanes = 8
    blob = rans.encode(data, lanes=lanes)
    i = 4 + struct.calcsize("<IQI") + 4  # one segment: one u32 length
    (tlen,) = struct.unpack_from("<I", blob, i)
    state_at = i + 4 + tlen
    words_at = state_at + 8 * lanes + 8
    assert rans.decode(blob) == data
    spots = ([state_at + 8 * k for k in range(lanes)] + list(range(words_at, len(blob), 97))
             + [len(blob) - 4 * k for k in range(1, 13)])  # low byte of each of the last 12 words
    for at in spots:
        bad = bytearray(blob)
        bad[at] ^= 0x01
        with pytest.raises(rans.RansError):
            rans.decode(bytes(bad))


# ----------------------------------------------------------------------------- the 16,000,000 cap
def _sized(tmp_path, code: int, model: int):
    c, m = tmp_path / "train_gpt.py", tmp_path / "m.gkq"
    for p, n in ((c, code), (m, model)):
        with open(p, "wb") as f:
            f.truncate(n)  # sparse: the size is what counts
    return c, m


@pytest.mark.parametrize("extra", [0, 1, 10, 11])
def test_cap_is_16_000_000_decimal_bytes_inclusive(tmp_path, extra):
    """The challenge cap: code + model <= 16,000,000 bytes (decimal, not MiB). Exactly at the cap
    passes; one byte over fails, in the table, the enforcer and the pre-submit check."""
    from golf.submission.budget import CAP_BYTES, budget_table, enforce_budget
    from golf.submission.checks import check_budget
    from golf.run.errors import OverCapError
    assert CAP_BYTES == 16 * 10 ** 6
    code, model = _sized(tmp_path, 70_000, 16_000_000 - 70_000 + extra)
    t = budget_table(code, model)
    assert (t.total, t.cap, t.headroom) == (16_000_000 + extra, 16_000_000, -extra)
    if extra == 0:
        assert not t.over and enforce_budget(t) is t
        assert check_budget([t]).status != "FAIL"
    else:
        assert t.over
        with pytest.raises(OverCapError, match=f"by {extra} bytes"):
            enforce_budget(t)
        assert check_budget([t]).status == "FAIL"


def test_each_seed_must_fit_the_cap_inclusive():
    """A multi-seed record: every seed's total is held to the cap (== passes, +1 fails, named)."""
    from pathlib import Path
    from golf.run.errors import OverCapError
    from golf.submission.budget import enforce_each_seed
    enforce_each_seed({1: (Path("a.gkq"), 1000), 2: (Path("b.gkq"), 999)}, 1000)
    with pytest.raises(OverCapError, match=r"b\.gkq: seed 2 totals 1,001 bytes.* by 1;"):
        enforce_each_seed({1: (Path("a.gkq"), 1000), 2: (Path("b.gkq"), 1001)}, 1000)


def test_budget_cap_is_the_flag_else_budget_bytes_else_the_challenge_cap():
    """pack's cap: --budget-bytes wins over BUDGET_BYTES (stripped), an unset or blank variable
    means 16,000,000; 1 byte is a valid cap, 0, negative and non-numbers are one ConfigError
    naming BUDGET_BYTES (the main job's parser and rule: Config's)."""
    from golf.run.errors import ConfigError
    from golf.submission.budget import budget_cap
    assert budget_cap(None, {}) == budget_cap(None, {"BUDGET_BYTES": "  "}) == 16_000_000
    assert budget_cap(None, {"BUDGET_BYTES": " 123 "}) == 123
    assert budget_cap(456, {"BUDGET_BYTES": "123"}) == 456 == budget_cap(456, {})
    assert budget_cap(1, {}) == 1 == budget_cap(None, {"BUDGET_BYTES": "1"})
    for bad, shown in (("0", "0:"), ("-5", "-5:"), ("abc", "'abc'"), ("1.5", "'1.5'")):
        with pytest.raises(ConfigError, match=f"BUDGET_BYTES={shown}"):
            budget_cap(None, {"BUDGET_BYTES": bad})
    with pytest.raises(ConfigError, match="BUDGET_BYTES=0:"):
        budget_cap(0, {"BUDGET_BYTES": "123"})


# ----------------------------------------------------------------------------- DIVERGENCE threshold
def _eval_json(run, pre: float, post: float) -> None:
    run.mkdir(parents=True)
    res = {"val_loss": 1.0, "tokens": 10, "bytes": 20, "mode": "chunked", "partial": False}
    (run / "eval.json").write_text(json.dumps({"pre": {**res, "val_bpb": pre},
                                               "post": {**res, "val_bpb": post},
                                               "gap": post - pre, "mode": "chunked"}))


@pytest.mark.parametrize("gap,alarm", [(0.0049, False), (0.0051, True), (0.0075, True)])
def test_divergence_alarm_default_is_a_0_005_bpb_gap(tmp_path, capsys, gap, alarm):
    """`eval_bpb.py --compare --strict` exits 3 when a run's quantization gap exceeds 0.005 bpb
    (the default docs/evaluation.md documents) and 0 below it; same orderings, so only the gap decides."""
    from eval_bpb import main
    from golf.eval.compare import compare_runs, find_divergences
    a, b = tmp_path / "a", tmp_path / "b"
    _eval_json(a, 1.20, 1.20 + gap)
    _eval_json(b, 1.30, 1.30 + 0.001)
    assert main(["--compare", str(a), str(b), "--strict"]) == (3 if alarm else 0)
    assert ("DIVERGENCE" in capsys.readouterr().out) == alarm
    rows, warns = compare_runs([str(a), str(b)], log=lambda _m: None)
    assert bool(warns) == alarm and bool(find_divergences(rows)) == alarm


# ----------------------------------------------------------------------------- byte LUT, torch branch
def test_torch_and_numpy_byte_counts_agree_with_decoded_text_after_boundaries(official_tokenizer):
    """Bytes of a document = len(sp.decode(its ids).encode()), and decoding drops the space of a
    "▁" piece at the document's start: so right after BOS that piece is one byte shorter, in the
    torch branch (used on the accelerator) exactly as in the numpy one."""
    import sentencepiece as spm
    from golf.eval.bpb import build_byte_lut, target_bytes
    sp = spm.SentencePieceProcessor(model_file=str(official_tokenizer))
    lut = build_byte_lut(sp, 1024)
    texts = ["Hello world, this is a test.", "x leading space", "déjà vu — ünïcode", "a\nb  c d"]
    docs = [sp.encode(t) for t in texts]
    docs = [d[next(i for i, t in enumerate(d) if sp.id_to_piece(t).startswith("▁")):] for d in docs]
    assert all(sp.id_to_piece(d[0]).startswith("▁") for d in docs)  # each starts with a "▁" piece
    ids: list[int] = []
    for d in docs:
        ids += [sp.bos_id()] + d
    want = sum(len(sp.decode(d).encode("utf-8")) for d in docs)
    arr = np.asarray(ids)
    got_np = target_bytes(arr[:-1], arr[1:], lut)
    t = torch.as_tensor(arr)
    got_t = target_bytes(t[:-1], t[1:], lut)
    assert isinstance(got_t, torch.Tensor)
    assert int(got_np.sum()) == want
    assert int(got_t.sum()) == want
    assert torch.equal(got_t.cpu(), torch.as_tensor(got_np))


# ----------------------------------------------------------------------------- GPTQ error feedback
def test_gptq_first_block_error_feedback_matches_a_column_by_column_solve():
    """GPTQ from the formula (one column at a time, error fed to every later column through the
    upper Cholesky factor of H^-1; no blocks, no lazy updates), computed here in fp64 on a tiny
    problem: the blocked solver must give the same codes, within one block and across blocks."""
    from quant.gptq import GptqSolve, gptq_quantize
    g = torch.Generator().manual_seed(3)
    rows, cols = 6, 12
    W = torch.randn(rows, cols, generator=g)
    X = torch.randn(64, cols, generator=g) * torch.linspace(0.5, 2.0, cols)
    H = (X.T @ X / 64).double()
    scale = torch.full((rows,), 0.15)
    qmax = 7
    damp = 0.01
    Hd = H + damp * float(torch.diagonal(H).mean()) * torch.eye(cols, dtype=torch.float64)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(Hd)), upper=True)
    w = W.double().clone()
    want = torch.zeros(rows, cols)
    s = scale.double()
    for i in range(cols):
        q = torch.clamp(torch.round(w[:, i] / s), -qmax, qmax)
        want[:, i] = q.float()
        err = (w[:, i] - q * s) / U[i, i]
        w[:, i:] -= err[:, None] * U[i, i:][None, :]
    for block in (cols, 5, 1):
        solve = GptqSolve(block_size=block, act_order=False, damp=damp)
        got = gptq_quantize(W, H.float(), scale, qmax, solve)
        assert torch.equal(got.float(), want), block
    rtn = torch.clamp(torch.round(W / scale[:, None]), -qmax, qmax)
    assert not torch.equal(rtn, want)  # the feedback changes codes here, so the test can tell


def test_budget_table_prints_and_records_the_numbers_submission_json_keeps(tmp_path):
    """The printed table (docs/packing.md) and to_dict (submission.json) carry the same five
    numbers under fixed names; over the cap it says by how much, near it it warns."""
    from golf.submission.budget import budget_table, format_budget_table
    code, model = _sized(tmp_path, 73_501, 15_900_000)
    t = budget_table(code, model)
    assert t.to_dict() == {"code_bytes": 73_501, "model_bytes": 15_900_000, "total": 15_973_501,
                           "cap": 16_000_000, "headroom": 26_499}
    assert format_budget_table(t).splitlines() == [
        "budget:",
        "  code bytes (train_gpt.py)          73,501",
        "  model bytes (artifact)         15,900,000",
        "  total bytes                    15,973,501",
        "  cap (decimal bytes)            16,000,000",
        "  headroom                           26,499"]
    near = budget_table(*_sized(tmp_path, 73_501, 15_920_000))
    assert format_budget_table(near).splitlines()[-1] == "  warning: headroom 6,499 bytes is under 10,000"
    over = budget_table(*_sized(tmp_path, 73_501, 15_930_000))
    assert format_budget_table(over).splitlines()[-1] == "  OVER THE CAP by 3,501 bytes"
    at = budget_table(*_sized(tmp_path, 73_501, 16_000_000 - 73_501))
    assert format_budget_table(at).splitlines()[-1] == "  warning: headroom 0 bytes is under 10,000"
    assert not budget_table(*_sized(tmp_path, 1, 16_000_000 - 10_001)).low_headroom


def test_budget_errors_name_the_missing_file_and_where(tmp_path):
    """A missing file is named with what it is; an over-cap error starts with where it happened."""
    from golf.submission.budget import budget_table, enforce_budget
    from golf.run.errors import OverCapError, PackError
    code, model = _sized(tmp_path, 10, 20)
    with pytest.raises(PackError, match=r"nope\.gkq: model artifact not found; build it first"):
        budget_table(code, tmp_path / "nope.gkq")
    with pytest.raises(PackError, match=r"nope\.py: code file not found; build it first"):
        budget_table(tmp_path / "nope.py", model)
    over = budget_table(code, model, cap=29)
    with pytest.raises(OverCapError, match=r"^submission: total 30 bytes exceeds the cap of 29 by 1 bytes"):
        enforce_budget(over)
    with pytest.raises(OverCapError, match=r"^sub/r1: total"):
        enforce_budget(over, "sub/r1")


def test_rans_segment_lengths_must_add_up_to_the_symbol_count():
    """A header whose segment lengths do not sum to its symbol count is refused as such (one
    length +1, another -1 keeps the sum: that one must decode to other bytes or fail too)."""
    rng = np.random.default_rng(9)
    parts = [rng.integers(0, 4, 500).astype(np.uint8).tobytes(),
             rng.integers(100, 200, 700).astype(np.uint8).tobytes()]
    data = b"".join(parts)
    blob = bytearray(rans.encode(data, [500, 700], lanes=4))
    at = 4 + struct.calcsize("<IQI")  # the first u32 segment length
    bad = bytearray(blob)
    struct.pack_into("<I", bad, at, 501)
    with pytest.raises(rans.RansError, match="length does not match its header"):
        rans.decode(bytes(bad))
    struct.pack_into("<II", bad, at, 501, 699)
    try:
        assert rans.decode(bytes(bad)) != data
    except rans.RansError:
        pass
    for lengths in ([500, 600], [1300, -100], [0, 1200, 0]):   # the encoder checks them too
        if sum(lengths) == len(data) and min(lengths) >= 0:
            assert rans.decode(rans.encode(data, lengths)) == data
        else:
            with pytest.raises(ValueError, match="segment lengths sum to"):
                rans.encode(data, lengths)


def test_artifact_errors_say_what_is_wrong_where_and_the_fix(artifact_blob):
    from quant.artifact import parse_artifact
    with pytest.raises(quant.ArtifactError, match=r"^<bytes>: not a golfkit artifact \(bad magic b'GKQ'"):
        parse_artifact(b"GKQ")
    with pytest.raises(quant.ArtifactError, match=r"^m\.gkq: truncated artifact \(4 bytes, header incomplete\); "
                       r"re-run quantization \(or re-copy the file\) to regenerate it$"):
        parse_artifact(b"GKQF", "m.gkq")
    bad = bytearray(artifact_blob)
    bad[-1] ^= 1
    with pytest.raises(quant.ArtifactError, match=r"payload checksum mismatch\); re-run quantization \(or "
                       r"re-copy the file\) to regenerate it$"):
        parse_artifact(bytes(bad))
