"""Paths no test reached before (issue 18): Config.from_env parsing, the pack.py CLI
(--code-bytes, --budget-only, total == cap, swapping over a good folder), the FAIL branches of the
pre-submit checks, `python -m quant info --json`, and run_eval's mode selection."""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from golf.run.errors import ConfigError
from golf.submission.evaltime import EvalCost, EvalPart
import torch

import pack
from golf import submission
from golf.run.config import PRESETS, Config
from golf.submission import checks as C
from golf.submission.budget import BudgetTable
from golf.run.errors import OverCapError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_pack import _make_run, standin  # noqa: E402,F401  (fixture re-used)

CAP = 16_000_000  # the challenge's cap, decimal bytes


# ----------------------------------------------------------------------------- Config.from_env
@pytest.mark.parametrize("raw,want", [("1", True), ("true", True), ("YES", True), (" on ", True),
                                      ("0", False), ("False", False), ("no", False), ("OFF", False)])
def test_from_env_bools(raw, want):
    assert Config.from_env({"OVERWRITE": raw, "COMPILE": raw}, cpu_preset=False).overwrite is want
    assert Config.from_env({"COMPILE": raw}, cpu_preset=False).compile is want


def test_from_env_numbers_and_empty_values():
    c = Config.from_env({"MAX_WALLCLOCK_SECONDS": "1e-3", "ITERATIONS": "1e3", "SEED": "42",
                         "GPTQ_RESERVE_SECONDS": "7.25", "TRAIN_LOG_EVERY": ""}, cpu_preset=False)
    assert c.max_wallclock_seconds == 0.001 and isinstance(c.max_wallclock_seconds, float)
    assert (c.iterations, c.seed, c.gptq_reserve_seconds) == (1000, 42, 7.25)
    assert c.train_log_every == Config().train_log_every  # "" means unset


@pytest.mark.parametrize("name,raw,kind", [("OVERWRITE", "maybe", "bool"), ("ITERATIONS", "1.5", "int"),
                                           ("ITERATIONS", "ten", "int"),
                                           ("MAX_WALLCLOCK_SECONDS", "fast", "float")])
def test_from_env_invalid_value_is_one_line_naming_the_variable(name, raw, kind):
    with pytest.raises(ConfigError) as ei:
        Config.from_env({name: raw}, cpu_preset=False)
    assert len(ei.value.problems) == 1
    msg = ei.value.problems[0]
    assert msg.startswith(f"{name}={raw!r}") and f"valid {kind}" in msg and "\n" not in msg


def test_from_env_lists_every_unparsable_value_at_once():
    with pytest.raises(ConfigError) as ei:
        Config.from_env({"ITERATIONS": "ten", "OVERWRITE": "maybe", "SEED": "7"}, cpu_preset=False)
    assert sorted(p.split("=")[0] for p in ei.value.problems) == ["ITERATIONS", "OVERWRITE"]


def test_preset_choice_alias_override_and_unknown():
    p = Config.from_env({"PRESET": "p1125"}, cpu_preset=None)
    assert p.preset == "p1125" and all(getattr(p, k) == v for k, v in PRESETS["p1125"].items())
    assert Config.from_env({"PRESET": "11l"}).preset == "p1125"  # the old name
    # cpu_preset forces the CPU form of the chosen stack; explicit variables beat the preset
    cpu = Config.from_env({"PRESET": "p1125", "ITERATIONS": "7"}, cpu_preset=True)
    assert cpu.preset == "cpu_p1125" and cpu.iterations == 7
    assert cpu.num_layers == PRESETS["cpu_p1125"]["num_layers"]
    with pytest.raises(ConfigError) as ei:
        Config.from_env({"PRESET": "huge"})
    assert "PRESET='huge'" in str(ei.value) and "r29" in str(ei.value)


# ----------------------------------------------------------------------------- pack.py CLI
def _fake_run(tmp_path: Path, model_bytes: int) -> Path:
    """A finished-looking run whose artifact is a sparse file of the given size."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"seed": 1}))
    (run / "eval.json").write_text(json.dumps({"post": {"val_bpb": 1.2}}))
    (run / "train.log").write_text("x\n")
    with open(run / "final_model.gkq", "wb") as f:
        f.truncate(model_bytes)
    return run


@pytest.fixture(scope="module")
def shipped_code_bytes(tmp_path_factory) -> int:
    """Bytes of the train_gpt.py pack_run really ships for the real entry (from disk)."""
    import quant
    tmp = tmp_path_factory.mktemp("ship")
    run = tmp / "run"
    run.mkdir()
    model = torch.nn.Linear(8, 8, bias=False)
    quant.save_artifact(run / "final_model.gkq", quant.quantize_model(model, method="int8", meta={"config": {}}))
    (tmp / "tok.model").write_bytes(b"x")
    (run / "config.json").write_text(json.dumps({"seed": 3, "world_size": 1, "data_path": str(tmp),
                                                 "tokenizer_path": str(tmp / "tok.model")}))
    (run / "eval.json").write_text(json.dumps({"post": {"val_bpb": 1.0, "val_loss": 1.0}, "mode": "chunked"}))
    (run / "train.log").write_text("x\n")
    submission.pack_run(run, tmp / "sub", submission.PackRequest(roundtrip=False),
                        log=lambda _m: None)
    return (tmp / "sub" / "train_gpt.py").stat().st_size


def test_cli_code_bytes_is_the_shipped_file_size(capsys, shipped_code_bytes):
    assert pack.main(["--code-bytes"]) == 0
    assert int(capsys.readouterr().out.strip()) == shipped_code_bytes


@pytest.mark.parametrize("over", [0, 1])
def test_cli_budget_only_at_and_over_the_cap_writes_nothing(tmp_path, capsys, shipped_code_bytes, over):
    """Total == 16,000,000 passes (exit 0, headroom 0); one byte more fails (exit 1, by 1 byte)."""
    run = _fake_run(tmp_path, CAP - shipped_code_bytes + over)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert pack.main([str(run), "--budget-only"]) == over
    out = capsys.readouterr().out
    assert f"{CAP:,}" in out and f"{shipped_code_bytes:,}" in out
    assert ("OVER THE CAP by 1 bytes" in out) == bool(over)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_pack_run_total_exactly_at_cap_ships_and_one_byte_less_cap_refuses(standin, tmp_path):
    entry, roots = standin
    run = _make_run(tmp_path, standin)
    trial = submission.pack_run(run, tmp_path / "probe",
                                submission.PackRequest(roundtrip=False, entry=entry, src_roots=roots),
                                log=lambda _m: None)
    exact = trial.budget.total
    res = submission.pack_run(run, tmp_path / "at",
                              submission.PackRequest(roundtrip=False, cap=exact, entry=entry,
                                                     src_roots=roots),
                              log=lambda _m: None)
    assert res.budget.headroom == 0 and (tmp_path / "at" / "submission.json").is_file()
    with pytest.raises(OverCapError, match="by 1 bytes"):
        submission.pack_run(run, tmp_path / "under",
                            submission.PackRequest(roundtrip=False, cap=exact - 1, entry=entry,
                                                   src_roots=roots),
                            log=lambda _m: None)
    assert not (tmp_path / "under").exists()


def test_repack_swaps_over_the_good_folder_and_a_failed_swap_restores_it(standin, tmp_path, monkeypatch):
    entry, roots = standin
    run = _make_run(tmp_path, standin)
    out = tmp_path / "sub"
    def pack(blurb: str) -> None:
        request = submission.PackRequest(claim=submission.Claim(blurb=blurb), entry=entry,
                                         src_roots=roots, roundtrip=False)
        submission.pack_run(run, out, request, log=lambda _m: None)
    pack("first")
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    pack("second")
    assert json.loads((out / "submission.json").read_text())["blurb"] == "second"
    second = {p.name: p.read_bytes() for p in out.iterdir()}
    assert second.keys() == first.keys() and second != first
    real_replace = os.replace

    def replace(src, dst):  # the new folder cannot be moved in (after the old was moved out)
        if Path(dst) == out and ".tmp-" in Path(src).name:
            raise OSError(5, "I/O error")
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="I/O error"):
        pack("third")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == second
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ----------------------------------------------------------------------------- pre-submit FAILs
def _table(total: int) -> BudgetTable:
    return BudgetTable(70_000, total - 70_000, total, CAP, CAP - total)


def test_budget_check_fails_over_and_warns_near_the_cap():
    assert C.check_budget([_table(CAP - 20_000), _table(CAP + 1)]).status == "FAIL"
    assert C.check_budget([_table(CAP)]).status == "WARN"          # headroom 0 < 10,000
    assert C.check_budget([_table(CAP - 10_000)]).status == "PASS"


def test_calibration_check_fails_on_val_data_or_over_the_training_budget():
    ok = {"elapsed_ms": 600_000.0, "train_budget_ms": 600_000.0, "source": "train"}
    assert C.check_calibration(ok, 1).status == "PASS"
    assert C.check_calibration({**ok, "elapsed_ms": 600_000.5}, 1).status == "FAIL"
    assert C.check_calibration({**ok, "source": "val"}, 1).status == "FAIL"
    assert C.check_calibration(None, 1).status == "WARN"


def test_wallclock_and_eval_time_fail_over_600_s_on_8xh100():
    assert C.check_wallclock(600_000.0, "8xH100 SXM", 1).status == "PASS"
    assert C.check_wallclock(600_001.0, "8xH100 SXM", 1).status == "FAIL"
    assert C.check_wallclock(900_000.0, "1xH100", 1).status == "WARN"  # not the scored hardware
    def cost(secs, hw):
        return EvalCost((EvalPart("scoring", secs, "device", True),), hw)
    assert C.check_eval_time(cost(600.0, "8xH100"), 1)[0].status == "PASS"
    assert C.check_eval_time(cost(600.5, "8xH100"), 1)[0].status == "FAIL"
    # one H100: estimated as measured / 8; over 600 s after that is a FAIL, under only a WARN
    fail, est = C.check_eval_time(cost(4801.0, "1xH100"), 1)
    assert fail.status == "FAIL" and est == pytest.approx(4801.0 / 8)
    assert C.check_eval_time(cost(4799.0, "1xH100"), 1)[0].status == "WARN"


def test_fields_and_record_checks_fail():
    full = {k: 1 for k in C.REQUIRED_FIELDS}
    assert C.check_fields(full).status == "PASS"
    assert C.check_fields({**full, "val_bpb": None}).status == "FAIL"
    assert C.check_fields({**full, "github_id": ""}).status == "WARN"
    assert C.check_fields({**full, "github_id": ""}, record=True).status == "FAIL"
    two = C.check_record({"seeds": [1, 2], "significance": {"p_value": 0.001, "delta_nats": 0.02,
                                                            "t": 9.0, "df": 3.0}})
    assert [c.status for c in two] == ["FAIL", "PASS"]
    assert [c.status for c in C.check_record({"seeds": [1, 2, 3]})] == ["PASS", "FAIL"]
    weak = {"seeds": [1, 2, 3], "significance": {"p_value": 0.02, "delta_nats": 0.02, "t": 2.0, "df": 3.0}}
    small = {"seeds": [1, 2, 3], "significance": {"p_value": 0.001, "delta_nats": 0.0049, "t": 9.0, "df": 3.0}}
    assert C.check_record(weak)[1].status == "FAIL" and C.check_record(small)[1].status == "FAIL"
    assert "=> FAIL (1 fail" in C.format_checks([C.Check("a", "FAIL", ""), C.Check("b", "PASS", "")])


# ----------------------------------------------------------------------------- quant info --json
def test_quant_info_json_describes_the_file(tmp_path, capsys):
    import quant
    from quant.__main__ import main
    g = torch.Generator().manual_seed(0)
    sd = {"a.weight": torch.randn(64, 96, generator=g), "b.scale": torch.rand(64, generator=g)}
    p = tmp_path / "m.gkq"
    quant.save_artifact(p, quant.quantize_model(sd, method="int8", meta={"config": {"x": 1}}))
    assert main(["info", str(p), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    blob = p.read_bytes()
    hlen = int.from_bytes(blob[6:10], "little")
    payload = blob[42 + hlen:]
    assert info["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert info["payload_len"] == len(payload) == sum(s["length"] for s in info["streams"])
    assert {t["name"] for t in info["tensors"]} == set(sd)
    assert {tuple(t["shape"]) for t in info["tensors"]} == {(64, 96), (64,)}
    assert info["meta"]["config"] == {"x": 1}
    p.write_bytes(blob[:-1])
    assert main(["info", str(p), "--json"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


# ----------------------------------------------------------------------------- run_eval modes
@pytest.fixture(scope="module")
def eval_run(tmp_path_factory, embedded_data):
    from conftest import tiny_pipeline_config, untrained_run
    cfg = tiny_pipeline_config(embedded_data, eval_stride=16, max_eval_tokens=256, val_batch_size=2048)
    run = tmp_path_factory.mktemp("evalmodes") / "run"
    model = untrained_run(run, cfg)
    return run, cfg, model


def _direct(model, cfg, stride: int) -> float:
    from golf.eval.bpb import build_byte_lut
    from golf.data.shards import load_val_tokens
    from golf.eval.score import Scoring, evaluate_bpb
    toks = load_val_tokens(cfg.data_path, cfg.vocab_size)
    lut = build_byte_lut(cfg.tokenizer_path, cfg.vocab_size)
    return evaluate_bpb(model.eval(), toks, lut, Scoring(seq_len=cfg.eval_seq_len, stride=stride),
                        max_tokens=256).val_bpb


@pytest.mark.parametrize("mode,stride,want_mode,want_stride", [
    (None, None, "sliding", 16),     # EVAL_STRIDE=16 in the run's config: sliding by default
    (None, 0, "chunked", 0),         # stride 0: chunked
    ("chunked", None, "chunked", 0),
    ("sliding", 0, "sliding", 32),   # sliding without a stride: seq_len // 2 at seq_len 64
    ("both", 8, "sliding", 8)])      # both: sliding is the headline, chunked beside it
def test_run_eval_mode_selection(eval_run, tmp_path, mode, stride, want_mode, want_stride):
    from golf.eval.score import EvalRequest, run_eval
    run, cfg, model = eval_run
    rep = run_eval(run, EvalRequest(mode=mode, stride=stride, device="cpu"),
                   out=tmp_path / "e.json", log=None)
    assert (rep["mode"], rep["stride"]) == (want_mode, want_stride)
    assert rep["pre"]["val_bpb"] == pytest.approx(_direct(model, cfg, want_stride), rel=1e-9)
    assert ("modes" in rep) == (mode == "both")
    if mode == "both":
        assert rep["modes"]["chunked"]["pre"]["val_bpb"] == pytest.approx(_direct(model, cfg, 0), rel=1e-9)
    assert json.loads((tmp_path / "e.json").read_text())["mode"] == want_mode


def test_run_eval_unknown_mode_is_an_eval_error(eval_run):
    from golf.eval.score import EvalError, EvalRequest, run_eval
    with pytest.raises(EvalError, match="unknown mode 'fast'"):
        run_eval(eval_run[0], EvalRequest(mode="fast", device="cpu"), log=None)


# ----------------------------------------------------------------------------- atomic writes
def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    """A writer that fails half way (here: an object json cannot encode, after part of the text
    was written) leaves the previous file byte for byte and no temp file beside it."""
    from golf.run.atomic import atomic_file, atomic_write_json
    p = tmp_path / "eval.json"
    atomic_write_json(p, {"post": 1.0})
    good = p.read_bytes()
    with pytest.raises(TypeError):
        atomic_write_json(p, {"a": 1, "z": object()})
    assert p.read_bytes() == good and [f.name for f in tmp_path.iterdir()] == ["eval.json"]
    with pytest.raises(KeyboardInterrupt):  # even an interrupt mid-write
        with atomic_file(p, "w") as fh:
            fh.write("partial")
            raise KeyboardInterrupt
    assert p.read_bytes() == good and [f.name for f in tmp_path.iterdir()] == ["eval.json"]
    with atomic_file(tmp_path / "new" / "x.txt", "w") as fh:  # the folder is created
        fh.write("ok")
    assert (tmp_path / "new" / "x.txt").read_text() == "ok"


def test_atomic_file_check_failure_keeps_the_old_file_and_no_temp(tmp_path):
    """A download is validated on its temp file: a failed check leaves the good file as it was
    and no temp file behind; a passing check sees the complete bytes."""
    from golf.run.atomic import atomic_file
    dest = tmp_path / "shard.bin"
    dest.write_bytes(b"good")
    seen = []

    def bad(p):
        seen.append(p.read_bytes())
        raise ValueError("not a shard")
    with pytest.raises(ValueError, match="not a shard"):
        with atomic_file(dest, "wb", bad) as f:
            f.write(b"new bytes")
    assert seen == [b"new bytes"] and dest.read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard.bin"]
    with atomic_file(dest, "wb", lambda p: seen.append(p.read_bytes())) as f:
        f.write(b"newer")
    assert seen[-1] == b"newer" and dest.read_bytes() == b"newer"
