"""Run-directory and record-folder ownership, function by function and without training: a
folder that holds another run's (or anyone's) files is refused with the fix; OVERWRITE removes
only the run's own files; a re-pack replaces only a folder that pack itself wrote."""
from __future__ import annotations

import json

import pytest

from golf.config import Config, ConfigError

from golf.submission.assemble import _is_earlier_pack, _swap_in, check_out_dir
from golf.rundir import RUN_FILES, check_run_dir, run_dir_problem, start_run_dir
from golf.errors import PackError

CFG = Config()


def test_rundir_free_when_missing_empty_resumed_or_overwritten(tmp_path):
    run = tmp_path / "r1"
    assert run_dir_problem(run, CFG, resuming=False) is None          # missing
    run.mkdir()
    assert run_dir_problem(run, CFG, resuming=False) is None          # empty
    (run / "train.log").write_text("old\n")
    assert run_dir_problem(run, CFG, resuming=True) is None           # RESUME continues it
    assert run_dir_problem(run, CFG.replace(overwrite=True), resuming=False) is None


def test_rundir_held_by_another_run_names_files_and_the_three_fixes(tmp_path):
    run = tmp_path / "r2"
    run.mkdir()
    for n in ("a.txt", "b.txt", "c.txt", "d.txt", "e.txt", "f.txt"):
        (run / n).write_text("x")
    msg = run_dir_problem(run, CFG, resuming=False)
    assert msg.startswith(f"RUN_ID=r2: {run} already holds an earlier run (a.txt, b.txt, c.txt, "
                          "d.txt, e.txt, ...)")
    assert "choose another RUN_ID" in msg and f"RESUME={run}" in msg and "OVERWRITE=1" in msg
    (run / "f.txt").unlink()
    assert "(a.txt, b.txt, c.txt, d.txt, e.txt);" in run_dir_problem(run, CFG, resuming=False)
    with pytest.raises(ConfigError, match="already holds an earlier run"):
        check_run_dir(run, CFG, resuming=False)
    check_run_dir(run, CFG, resuming=True)  # no error


def test_rundir_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "r3"
    f.write_text("not a folder")
    msg = run_dir_problem(f, CFG, resuming=False)
    assert msg == f"RUN_ID=r3: {f} exists and is not a folder; choose another RUN_ID"
    with pytest.raises(ConfigError, match="is not a folder"):
        check_run_dir(f, CFG, resuming=False)


def test_rundir_start_overwrite_removes_only_the_runs_own_files(tmp_path):
    run = tmp_path / "r4"
    run.mkdir()
    for n in RUN_FILES:
        (run / n).write_text("old")
    (run / "notes.md").write_text("mine")
    (run / "extra").mkdir()
    cleared = start_run_dir(run, CFG.replace(overwrite=True), 2, resuming=False)
    assert sorted(cleared) == sorted(RUN_FILES)
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "extra", "notes.md"]
    import os
    assert json.loads((run / "config.json").read_text()) == {**CFG.replace(overwrite=True).to_dict(),
                                                            "world_size": 2, "cwd": os.getcwd()}


def test_rundir_start_without_overwrite_or_when_resuming_keeps_everything(tmp_path):
    for i, (overwrite, resuming) in enumerate([(False, False), (True, True), (False, True)]):
        run = tmp_path / f"keep{i}"
        run.mkdir()
        (run / "train.log").write_text("old")
        (run / "checkpoint.pt").write_text("ck")
        assert start_run_dir(run, CFG.replace(overwrite=overwrite), 1, resuming=resuming) == []
        assert (run / "train.log").read_text() == "old" and (run / "checkpoint.pt").is_file()
        assert json.loads((run / "config.json").read_text())["world_size"] == 1
    fresh = tmp_path / "new" / "deeper"
    assert start_run_dir(fresh, CFG, 8, resuming=False) == []
    assert json.loads((fresh / "config.json").read_text())["world_size"] == 8


def test_out_dir_only_an_earlier_pack_or_empty_folder_is_replaceable(tmp_path):
    out = tmp_path / "sub"
    check_out_dir(out)                   # missing: fine
    out.mkdir()
    assert _is_earlier_pack(out)         # empty
    check_out_dir(out)
    for n in ("train_gpt.py", "final_model.gkq", "submission.json", "README.md", "train.log",
              "requirements.txt", "train_seed42.log"):
        (out / n).write_text("x")
    assert _is_earlier_pack(out)
    check_out_dir(out)
    (out / "submission.json").unlink()   # pack files but no submission.json: not a pack
    assert not _is_earlier_pack(out)
    with pytest.raises(PackError, match="is not an earlier pack's record folder"):
        check_out_dir(out)
    (out / "submission.json").write_text("{}")
    (out / "notes.md").write_text("someone's")
    assert not _is_earlier_pack(out)
    with pytest.raises(PackError, match=str(out)):
        check_out_dir(out)
    (out / "notes.md").unlink()
    (out / "train_seedX.log").write_text("x")
    assert not _is_earlier_pack(out)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(PackError, match="exists and is not"):
        check_out_dir(f)


def test_out_dir_swap_in_replaces_and_removes_the_old_copy(tmp_path):
    new, out = tmp_path / ".new", tmp_path / "sub"
    new.mkdir()
    (new / "a").write_text("new")
    _swap_in(new, out)                   # nothing there yet
    assert (out / "a").read_text() == "new" and not new.exists()
    new.mkdir()
    (new / "b").write_text("newer")
    _swap_in(new, out)
    assert sorted(p.name for p in out.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]  # no .old copy left


def test_out_dir_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    import os
    new, out = tmp_path / ".new", tmp_path / "sub"
    out.mkdir()
    (out / "submission.json").write_text("old")
    new.mkdir()
    (new / "submission.json").write_text("new")
    real = os.replace

    def replace(src, dst):
        if str(src) == str(new):
            raise OSError(28, "No space left on device")
        return real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space"):
        _swap_in(new, out)
    assert (out / "submission.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".new", "sub"]  # no .old copy left
