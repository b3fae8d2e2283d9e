"""The run-directory rules of golf/run/rundir.py (issue 13, nothing lost): resume under the run's own
config, trained runs fork instead of being trained into, the artifact/eval pair replaced only
whole, I/O failures as one message with the work kept, absolute paths, pack's budget and its
one artifact check. Each test reproduces the action that used to lose work."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from bench.faults import failing_replace, sigterm_after_first_step, tiny_env, unwritable
from golf.run import rundir as rd
from golf.run.atomic import file_sha256
from golf.run.config import Config, ConfigError
from golf.run.rules import CAP_BYTES

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]
SMALL = dict(iterations=6, grad_accum_steps=1, max_eval_tokens=4096, gptq_calib_batches=2,
             quant_small_numel=1024, warmdown_iters=3, train_log_every=2)


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): file_sha256(p) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, embedded_data):
    """A finished tiny run (train -> quantize -> eval, unpacked) started with RELATIVE data
    paths from the corpus' own folder, as a user in a checkout would."""
    import torch
    from conftest import tiny_pipeline_config
    from golf.main import run_pipeline
    tmp = tmp_path_factory.mktemp("rundir")
    root = embedded_data.dataset_dir.parent.parent
    cfg = tiny_pipeline_config(embedded_data, **SMALL, runs_dir=str(tmp / "runs"),
                               run_id="finished",
                               data_path=os.path.relpath(embedded_data.dataset_dir, root),
                               tokenizer_path=os.path.relpath(embedded_data.tokenizer_path, root))
    here, n = os.getcwd(), torch.get_num_threads()
    os.chdir(root)
    torch.set_num_threads(1)
    try:
        summary = run_pipeline(cfg, do_pack=False)
    finally:
        os.chdir(here)
        torch.set_num_threads(n)
    return cfg, Path(summary["run_dir"]), tmp


def _abs(cfg: Config, data) -> Config:
    return cfg.replace(data_path=str(data.dataset_dir), tokenizer_path=str(data.tokenizer_path))


# ----------------------------------------------------------------------------- rule 1: one owner
def test_run_dir_file_names_are_spelled_only_in_rundir():
    names = [f'"{n}"' for n in rd.RUN_FILES]
    files = [p for p in (REPO / "golf").rglob("*.py") if p.name != "rundir.py"] + \
        [REPO / "eval_bpb.py", REPO / "pack.py"] + list((REPO / "bench").rglob("*.py"))
    found = [f"{p.relative_to(REPO)}: {n}" for p in files for n in names if n in p.read_text()]
    assert found == []


# ----------------------------------------------------------------------------- rule 6: paths
def test_run_records_absolute_paths_and_the_users_spelling(finished, embedded_data, tmp_path,
                                                           monkeypatch):
    cfg, run, _ = finished
    saved = json.loads((run / rd.CONFIG).read_text())
    assert saved["data_path"] == str(embedded_data.dataset_dir.resolve())
    assert saved["data_path_given"] == cfg.data_path and not Path(cfg.data_path).is_absolute()
    assert saved["cwd"] == str(embedded_data.dataset_dir.parent.parent)
    monkeypatch.chdir(tmp_path)                                   # eval_bpb.py from elsewhere
    import eval_bpb
    assert eval_bpb.main([str(run), "--out", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["post"]["val_bpb"] == \
        json.loads((run / rd.EVAL).read_text())["post"]["val_bpb"]
    old = tmp_path / "old"                                        # written before this change
    old.mkdir()
    (old / rd.CONFIG).write_text(json.dumps({**saved, "data_path": cfg.data_path}))
    assert rd.load_config(old).data_path == saved["data_path"]   # via the recorded cwd
    del saved["cwd"]
    (old / rd.CONFIG).write_text(json.dumps({**saved, "data_path": cfg.data_path}))
    with pytest.raises(ConfigError, match=r"DATA_PATH=datasets/embedded_sp1024 is relative to "
                                          r"the folder that run was started from.*run from that folder"):
        rd.load_config(old)


# ----------------------------------------------------------------------------- rule 2: resume
def test_resume_refuses_changed_run_fields_and_takes_the_legit_ones(tiny_config, tmp_path):
    from golf.main import config_from_env
    from golf.train.loop import train
    cfg = tiny_config.replace(**{**SMALL, "iterations": 4, "gptq_calib_batches": 0},
                              runs_dir=str(tmp_path), run_id="r")
    part = train(cfg, stop_after_steps=2)
    before = (part.run_dir / rd.CONFIG).read_bytes()
    env = {"RESUME": str(part.run_dir), "SEED": "7", "NUM_LAYERS": "3",
           "DATA_PATH": str(tmp_path), "MAX_WALLCLOCK_SECONDS": "100"}
    with pytest.raises(ConfigError) as err:
        train(config_from_env(env))
    msg = str(err.value)
    assert len(err.value.problems) == 1
    for part_msg in ("SEED: 1337 -> 7", "NUM_LAYERS: 2 -> 3", "DATA_PATH: "):
        assert part_msg in msg
    assert "MAX_WALLCLOCK_SECONDS: " not in msg and "unset them" in msg
    assert (part.run_dir / rd.CONFIG).read_bytes() == before     # not rewritten before the checks
    done = train(config_from_env({"RESUME": str(part.run_dir), "ITERATIONS": "5"}))
    assert done.steps == 5 and not done.interrupted
    log = (part.run_dir / rd.TRAIN_LOG).read_text()
    assert "resume:change ITERATIONS: 4 -> 5" in log and "resume:change SEED" not in log


@pytest.mark.slow
def test_sigterm_hint_resumes_a_run_with_non_default_variables(embedded_data, tmp_path,
                                                               monkeypatch):
    """The hint used to fail with a traceback: the resume took the model from the environment."""
    from golf.main import main
    env = {**os.environ, **tiny_env(embedded_data.dataset_dir, embedded_data.tokenizer_path,
                                    RUNS_DIR=tmp_path / "runs", RUN_ID="sig", ITERATIONS="12",
                                    PACK="0")}
    code, lines = sigterm_after_first_step(tmp_path, env, timeout=120)
    assert code == 130, "".join(lines)
    hint = next(ln for ln in lines if "continue with RESUME=" in ln)
    assert hint.rstrip().endswith(f"RESUME={tmp_path / 'runs' / 'sig'} python train_gpt.py")
    monkeypatch.setenv("RESUME", str(tmp_path / "runs" / "sig"))  # and nothing else of the run
    monkeypatch.setenv("PACK", "0")
    assert main() == 0
    run = tmp_path / "runs" / "sig"
    assert json.loads((run / rd.CONFIG).read_text())["num_layers"] == 2
    assert json.loads((run / rd.SUMMARY).read_text())["steps"] == 12


def test_a_checkpoint_moved_out_of_its_run_folder_resumes_as_its_own_run(finished, tmp_path):
    """Without config.json beside it, RESUME takes the config every checkpoint holds (it used to
    fall back to the environment's: the CPU preset's model, refused or silently different)."""
    from golf.main import config_from_env
    _cfg, run, _ = finished
    moved = tmp_path / "elsewhere" / rd.CHECKPOINT
    moved.parent.mkdir()
    shutil.copy2(run / rd.CHECKPOINT, moved)
    saved = rd.load_config(run)
    cfg = config_from_env({"RESUME": str(moved), "ITERATIONS": str(saved.iterations + 4)})
    assert cfg.model_dict() == saved.model_dict() and cfg.seed == saved.seed
    assert cfg.iterations == saved.iterations + 4
    assert Path(cfg.data_path).is_absolute() and Path(cfg.data_path).is_dir()
    assert cfg.model_dict() != Config.from_env({}, cpu_preset=True).model_dict()  # not the env's model
    problems: list[str] = []
    with pytest.raises(ConfigError, match=rf"differ from {moved}: NUM_LAYERS: {saved.num_layers} -> 3;"):
        rd.check_resume(moved, cfg.replace(num_layers=3, resume=str(moved)), moved.parent, problems)


# ----------------------------------------------------------------------------- rule 3: trained runs
def test_trained_run_is_never_trained_into_and_forks_to_a_new_folder(finished, embedded_data):
    from golf.train.loop import train
    cfg, run, _ = finished
    cfg = _abs(cfg, embedded_data)
    before = _snapshot(run)
    with pytest.raises(ConfigError) as err:
        train(cfg.replace(resume=str(run), seed=7))
    assert "SEED: 1337 -> 7" in str(err.value) and "finished training" in str(err.value)
    with pytest.raises(ConfigError, match=r"finished training .*RUN_ID=<new name>.*QUANT_ONLY="):
        train(cfg.replace(resume=str(run), iterations=8))
    fork = train(cfg.replace(resume=str(run), run_id="more", iterations=8))
    assert fork.run_dir == run.parent / "more" and fork.steps == 8
    assert "fork:" in (fork.run_dir / rd.TRAIN_LOG).read_text()
    with pytest.raises(ConfigError, match="already holds an earlier run"):
        train(cfg.replace(resume=str(run), run_id="more", iterations=8))
    assert _snapshot(run) == before                                # the source untouched


# ----------------------------------------------------------------------------- rule 4: the pair
def test_quant_only_keeps_the_pair_whole_through_a_fault(finished, monkeypatch):
    import golf.eval.score
    from golf.main import quant_only
    _cfg, run, _ = finished
    monkeypatch.setenv("PACK", "0")
    monkeypatch.setenv("QUANT_METHOD", "int8")                     # a new artifact, quickly
    old_art, old_eval = file_sha256(run / rd.ARTIFACT), (run / rd.EVAL).read_bytes()

    def broken(*_a, **_k):                                         # after the artifact is staged
        raise RuntimeError("injected fault between the artifact and eval.json")
    with monkeypatch.context() as m:
        m.setattr(golf.eval.score, "run_eval", broken)
        with pytest.raises(RuntimeError, match="injected"):
            quant_only(str(run))
    assert (rd.staging_dir(run) / rd.ARTIFACT).is_file()           # the new one got that far
    assert file_sha256(run / rd.ARTIFACT) == old_art and (run / rd.EVAL).read_bytes() == old_eval
    assert quant_only(str(run)) == 0
    ev = json.loads((run / rd.EVAL).read_text())
    assert ev["artifact_sha256"] == file_sha256(run / rd.ARTIFACT) != old_art
    assert rd.resolve_artifact_ref(run / rd.EVAL) == run / rd.ARTIFACT
    assert not rd.staging_dir(run).exists()
    prev = run / rd.PREVIOUS / "1"
    assert file_sha256(prev / rd.ARTIFACT) == old_art and (prev / rd.EVAL).read_bytes() == old_eval
    moved = json.loads(old_eval)          # the moved report still names (and hashes) its artifact
    assert rd.resolve_artifact_ref(prev / rd.EVAL) == prev / rd.ARTIFACT
    assert moved["artifact_sha256"] == old_art


def test_quant_only_int8_over_the_cap_says_so(finished, monkeypatch):
    """int8 sets its own size; unpacked (PACK=0) nothing refused an artifact over BUDGET_BYTES,
    the summary only showed a negative headroom (-732,370 B under the CPU preset's scaled cap)."""
    from golf.main import quant_only, shipped_code_bytes
    cfg, run, _ = finished
    assert "budget:WARNING" not in (run / "train.log").read_text()  # earlier runs fit their cap
    budget = shipped_code_bytes() + cfg.budget_margin_bytes + 1      # room for a 1-byte model
    monkeypatch.setenv("PACK", "0")
    monkeypatch.setenv("QUANT_METHOD", "int8")
    monkeypatch.setenv("BUDGET_BYTES", str(budget))
    assert quant_only(str(run)) == 0
    summary = json.loads((run / rd.SUMMARY).read_text())
    over = -summary["headroom_bytes"]
    assert over == summary["total_bytes"] - budget > 0
    warned = [ln for ln in (run / "train.log").read_text().splitlines() if "budget:WARNING" in ln]
    assert len(warned) == 1 and f"by {over:,}" in warned[0]
    assert f"BUDGET_BYTES={budget:,}" in warned[0] and "QUANT_METHOD=int8" in warned[0]


# ----------------------------------------------------------------------------- rules 5, 7: I/O
@pytest.mark.slow
def test_full_disk_after_training_keeps_a_resumable_checkpoint(embedded_data, tmp_path,
                                                               monkeypatch, capsys):
    """A full disk used to lose the whole run ('unexpected pos 4288 vs 4240')."""
    import torch
    from golf.main import main
    for k, v in tiny_env(embedded_data.dataset_dir, embedded_data.tokenizer_path,
                         RUNS_DIR=tmp_path, RUN_ID="disk", PACK="0").items():
        monkeypatch.setenv(k, v)
    with failing_replace(rd.EMA), pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err.strip()
    run = tmp_path / "disk"
    assert exc.value.code == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert err.startswith(f"error: {run / rd.EMA}: the disk is full (ENOSPC) while writing")
    assert f"kept: {run / rd.CHECKPOINT} at step 6" in err and f"RESUME={run}" in err
    assert torch.load(run / rd.CHECKPOINT, weights_only=True)["step"] == 6
    monkeypatch.setenv("RESUME", str(run))                          # as the message says
    assert main() == 0 and (run / rd.EMA).is_file() and (run / rd.EVAL).is_file()


def test_unwritable_runs_dir_and_pack_out_are_one_message_each(finished, embedded_data, tmp_path):
    from golf.submission import PackError, PackRequest, pack_run
    from golf.train.loop import train
    cfg, run, _ = finished
    ro = tmp_path / "ro"
    ro.mkdir()
    quiet = dict(request=PackRequest(roundtrip=False), log=lambda _m: None)
    if os.geteuid() != 0:
        ro.chmod(0o555)
        guard = None
    else:                                                           # chmod does not bind root
        guard = unwritable(ro)
        guard.__enter__()
    try:
        with pytest.raises(ConfigError, match=rf"RUNS_DIR={ro / 'runs'}: {ro} is not writable"):
            train(_abs(cfg, embedded_data).replace(runs_dir=str(ro / "runs"), run_id="x"))
        with pytest.raises(PackError, match=rf"{ro / 'out'}: {ro} is not writable"):
            pack_run(run, ro / "out", **quiet)
    finally:
        if guard:
            guard.__exit__(None, None, None)
        ro.chmod(0o755)
    assert list(ro.iterdir()) == []
    with failing_replace("out", errno.EROFS), pytest.raises(rd.RunIOError,
                                                            match="read-only .EROFS."):
        pack_run(run, tmp_path / "out", **quiet)                  # the final move fails
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro"]    # no partial folder


# ----------------------------------------------------------------------------- pack
def test_pack_honours_budget_bytes_and_checks_the_artifact_once(finished, tmp_path, monkeypatch,
                                                                capsys):
    from golf.submission import RoundTripError, budget_cap, pack_run
    from pack import main
    _cfg, run, _ = finished
    assert budget_cap(None, {}) == CAP_BYTES == Config().budget_bytes
    assert budget_cap(None, {"BUDGET_BYTES": "100000"}) == 100000 == budget_cap(100000, {})
    with pytest.raises(ConfigError, match="BUDGET_BYTES='abc'"):
        budget_cap(None, {"BUDGET_BYTES": "abc"})
    with pytest.raises(ConfigError, match="BUDGET_BYTES=0: must be >= 1"):
        budget_cap(0, {})
    # one parser with the main job: what Config accepts, pack accepts
    assert budget_cap(None, {"BUDGET_BYTES": "1.6e7"}) == Config.from_env(
        {"BUDGET_BYTES": "1.6e7"}, cpu_preset=False).budget_bytes == 16_000_000
    monkeypatch.setenv("BUDGET_BYTES", "100000")
    assert main([str(run), "--budget-only"]) == 1                  # over a 100 kB cap
    assert re.search(r"cap \(decimal bytes\) +100,000", capsys.readouterr().out)
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    blob = bytearray((bad / rd.ARTIFACT).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (bad / rd.ARTIFACT).write_bytes(bytes(blob))
    t0 = time.perf_counter()
    with pytest.raises(RoundTripError, match="checksum mismatch.*before any round trip"):
        pack_run(bad, tmp_path / "sub", log=lambda _m: None)
    assert time.perf_counter() - t0 < 1.0 and not (tmp_path / "sub").exists()
