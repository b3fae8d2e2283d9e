"""A torch file golfkit did not write is data: a pickle that would run code is refused, with one
line, at every entry point that reads one (issue 26), and a module placed beside the packed
train_gpt.py is never imported in place of the real one."""
from __future__ import annotations

import builtins
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.faults import tiny_env
from golf.run import rundir as rd
from golf.run.checkpoint import CheckpointError, load_torch_file
from conftest import untrained_run


class _Payload:
    """Unpickling this calls exec, which writes `marker`: proof that the file ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def plant(path: Path, marker: Path, **plain) -> Path:
    """A torch file shaped like golfkit's (`plain` keys beside a state_dict) whose pickle runs code."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**plain, "state_dict": {"w": _Payload(marker)}, "hessians": _Payload(marker)}, path)
    return path


@pytest.fixture()
def marker(tmp_path) -> Path:
    m = tmp_path / "MARKER"
    yield m
    assert not m.exists(), "the pickle's payload ran"


def one_line_refusal(capsys, path: Path, code: int | None = None) -> str:
    """stderr is exactly one line: the refusal naming `path` (no traceback)."""
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert str(path) in err and "refused" in err, err
    return err


def test_the_payload_is_live_and_load_torch_file_refuses_it(tmp_path):
    """Control: torch's full unpickler runs the payload, so its absence elsewhere means something."""
    live = tmp_path / "live"
    p = plant(tmp_path / "ema.pt", live, config={})
    torch.load(p, weights_only=False)
    assert live.read_text() == "ran"
    live.unlink()
    with pytest.raises(CheckpointError, match=r"ema\.pt: refused: .*\(it names exec\).*never runs code.*; do X"):
        load_torch_file(p, "do X")
    assert not live.exists()


def test_everything_golfkit_saves_loads_as_data(tmp_path):
    """What a checkpoint holds (config dict, RNG state, optimizer and loader state, Hessians)
    passes the weights-only loader unchanged."""
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(m.parameters())
    m(torch.randn(4, 3)).sum().backward()
    opt.step()
    obj = {"model": m.state_dict(), "optimizers": [opt.state_dict()], "step": 7,
           "loader": [{"shard": 1, "pos": 5, "order": [2, 0, 1]}], "rng": {"cpu": torch.get_rng_state()},
           "config": {"num_layers": 2, "data_path": "/x", "qk_gain_init": 1.5, "xsa": None},
           "hessians": {"blocks.0.w": torch.eye(2)}, "elapsed_ms": 1.0}
    torch.save(obj, tmp_path / "checkpoint.pt")
    back = load_torch_file(tmp_path / "checkpoint.pt", "x")
    assert back["step"] == 7 and back["config"] == obj["config"] and back["loader"] == obj["loader"]
    assert torch.equal(back["rng"]["cpu"], obj["rng"]["cpu"])
    assert back["optimizers"][0]["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


@pytest.fixture()
def run(tiny_config, tmp_path) -> Path:
    """A finished-looking run (config.json, ema.pt, artifact) over the embedded corpus."""
    r = tmp_path / "runs" / "r"
    untrained_run(r, tiny_config)
    return r


@pytest.mark.parametrize("name", [rd.EMA, "model.pt"])
def test_eval_bpb_run_dir(run, marker, capsys, name):
    import eval_bpb
    if name != rd.EMA:
        (run / rd.EMA).unlink()  # eval falls back to model.pt
    plant(run / name, marker, config=json.loads((run / rd.CONFIG).read_text()))
    with pytest.raises(SystemExit) as ex:
        eval_bpb.main([str(run), "--max-tokens", "256", "--device", "cpu"])
    assert ex.value.code == 2
    one_line_refusal(capsys, run / name)


def test_eval_bpb_checkpoint_and_compare(run, marker, capsys, tmp_path, embedded_data):
    import eval_bpb
    evil = plant(tmp_path / "F.pt", marker, config={})
    with pytest.raises(SystemExit):
        eval_bpb.main(["--checkpoint", str(evil), "--data", str(embedded_data.dataset_dir),
                       "--tokenizer", str(embedded_data.tokenizer_path), "--device", "cpu"])
    one_line_refusal(capsys, evil)
    other = tmp_path / "runs" / "b"
    shutil.copytree(run, other)
    for r in (run, other):
        plant(r / rd.EMA, marker, config={})
    with pytest.raises(SystemExit):
        eval_bpb.main(["--compare", str(run), str(other), "--evaluate", "--device", "cpu"])
    one_line_refusal(capsys, run / rd.EMA)


@pytest.mark.parametrize("roundtrip", [True, False])
def test_pack_reads_hessians_as_data(run, marker, capsys, roundtrip):
    import pack
    (run / rd.EVAL).write_text(json.dumps({"post": {"val_bpb": 3.0}, "pre": {"val_bpb": 3.0}}))
    (run / rd.TRAIN_LOG).write_text("")
    plant(run / rd.HESSIANS, marker)
    with pytest.raises(SystemExit):
        pack.main([str(run), "--out", str(run.parent / "sub")] + ([] if roundtrip else ["--no-roundtrip"]))
    one_line_refusal(capsys, run / rd.HESSIANS)
    assert not (run.parent / "sub").exists()


@pytest.mark.parametrize("name", [rd.EMA, rd.HESSIANS])
def test_quant_only(run, marker, capsys, monkeypatch, name):
    from golf.main import main
    plant(run / name, marker, config=json.loads((run / rd.CONFIG).read_text()))
    monkeypatch.setenv("QUANT_ONLY", str(run))
    monkeypatch.setenv("PACK", "0")
    with pytest.raises(SystemExit):
        main()
    one_line_refusal(capsys, run / name)


def test_resume_an_interrupted_run_and_a_fork_from_a_file(run, marker, capsys, monkeypatch, tmp_path):
    from golf.main import main
    (run / rd.EMA).unlink()  # interrupted: no final weights yet
    (run / rd.ARTIFACT).unlink()
    plant(run / rd.CHECKPOINT, marker, config=json.loads((run / rd.CONFIG).read_text()), step=3)
    monkeypatch.setenv("RESUME", str(run))
    monkeypatch.setenv("PACK", "0")
    with pytest.raises(SystemExit):
        main()
    one_line_refusal(capsys, run / rd.CHECKPOINT)
    lone = plant(tmp_path / "elsewhere" / "file.pt", marker, config={}, step=3)  # no config.json beside it
    monkeypatch.setenv("RESUME", str(lone))
    monkeypatch.setenv("RUN_ID", "new")
    with pytest.raises(SystemExit):
        main()
    one_line_refusal(capsys, lone)


def test_eval_only_artifact_pt(marker, capsys, monkeypatch, tmp_path, embedded_data):
    from golf.main import main
    evil = plant(tmp_path / "F.pt", marker, config={})
    for k, v in tiny_env(embedded_data.dataset_dir, embedded_data.tokenizer_path,
                         EVAL_ONLY="1", ARTIFACT=evil).items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit):
        main()
    one_line_refusal(capsys, evil)


SHADOWED = ("numpy", "torch", "brotli", "lzma", "base64", "sentencepiece", "zstandard", "json")


@pytest.mark.parametrize("form", ["plain", "lzma-raw"])
def test_packed_script_refuses_the_pickle_and_never_imports_beside_itself(
        form, tmp_path, embedded_data):
    """The packed script run as users run it (`python train_gpt.py`, no -I): modules named like
    its imports sit beside it and write a marker if imported; ARTIFACT is the planted pickle."""
    from golf.submission.script import build_forms
    work = tmp_path / "record"
    work.mkdir()
    (work / "train_gpt.py").write_bytes(build_forms()[form])
    markers = tmp_path / "markers"
    for mod in SHADOWED:
        (work / f"{mod}.py").write_text(f"open({str(markers / mod)!r}, 'w').write('ran')\n")
    marker = tmp_path / "MARKER"
    evil = plant(work / "F.pt", marker, config={})
    markers.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOLF_", "PYTHON"))}
    env.update(tiny_env(embedded_data.dataset_dir, embedded_data.tokenizer_path,
                        EVAL_ONLY="1", ARTIFACT=evil))
    proc = subprocess.run([sys.executable, "train_gpt.py"], cwd=work, env=env, text=True,
                          capture_output=True, timeout=300)
    assert sorted(p.name for p in markers.iterdir()) == [], proc.stderr[-2000:]
    assert not marker.exists()
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and "refused" in err and "F.pt" in err, err[-2000:]


def test_a_safe_but_foreign_file_is_one_line_too(run, capsys, monkeypatch, tmp_path):
    """Plain types pass the unpickler, so the shape of what golfkit reads is checked as well:
    a state_dict that is not {name: tensor}, a config of an invalid model, weights of another."""
    from golf.main import main
    cfg = json.loads((run / rd.CONFIG).read_text())
    with pytest.raises(CheckpointError, match=r"ema\.pt: state_dict is not what golfkit writes"):
        torch.save({"config": cfg, "state_dict": "weights"}, run / rd.EMA)
        load_torch_file(run / rd.EMA, "x", keys=("config", "state_dict"), tensors=("state_dict",))
    monkeypatch.setenv("QUANT_ONLY", str(run))
    monkeypatch.setenv("PACK", "0")
    for obj, says in [({"config": {**cfg, "num_heads": 0}, "state_dict": {}}, "not a valid model"),
                      ({"config": cfg, "state_dict": {"w": torch.ones(2)}}, "do not fit the model")]:
        torch.save(obj, run / rd.EMA)
        with pytest.raises(SystemExit):
            main()
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and says in err and str(run / rd.EMA) in err, err
