"""Run-directory and record-folder ownership, function by function and without training: a
folder that holds another run's (or anyone's) files is refused with the fix; OVERWRITE removes
only the run's own files; a re-pack replaces only a folder that pack itself wrote."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from golf.run.config import Config, ConfigError

from golf.submission.assemble import _is_earlier_pack, _swap_in, check_out_dir
from golf.run.rundir import RUN_FILES, check_run_dir, run_dir_problem, start_run_dir
from golf.run.errors import PackError

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


def test_out_dir_under_an_unwritable_parent_is_refused_before_any_work(tmp_path, monkeypatch):
    """os.access says the parent is read-only (chmod does not bind root): check_out_dir names
    it before anything is built, whether or not the record folder exists yet."""
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    for out in (ro / "sub", ro / "a" / "b"):
        with pytest.raises(PackError, match=f"{ro} is not writable.*nothing was written"):
            check_out_dir(out)
    check_out_dir(tmp_path / "sub")      # a writable parent is fine


def _read_only(monkeypatch, folder: Path) -> None:
    """os.access as on a folder without write permission (it exists and can be listed)."""
    import os
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: not mode & os.W_OK
                        if Path(p) == folder else real(p, mode, **kw))


def test_rundir_unwritable_names_the_nearest_existing_folder_and_why(tmp_path, monkeypatch):
    """A RUNS_DIR that cannot be written is refused naming the folder that exists (the run
    folder itself may not yet) and the cause: permission, or a read-only file system."""
    import os
    from golf.run.rundir import unwritable_reason
    ro = tmp_path / "runs"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    assert unwritable_reason(ro / "a" / "b") == f"{ro} is not writable (permission denied)"
    msg = run_dir_problem(ro / "r1", CFG.replace(runs_dir=str(ro)), resuming=True)
    assert msg == f"RUNS_DIR={ro}: {ro} is not writable (permission denied); choose a writable " \
                  "RUNS_DIR (nothing was written)"
    assert unwritable_reason(tmp_path / "free" / "x") is None

    class RO:
        f_flag = os.ST_RDONLY
    monkeypatch.setattr(os, "statvfs", lambda p: RO())
    assert unwritable_reason(ro) == f"{ro} is not writable (the file system is read-only)"


def test_rundir_full_disk_at_start_is_one_error_saying_nothing_was_written(tmp_path, monkeypatch):
    import errno
    import golf.run.rundir as rd
    from golf.run.errors import RunIOError
    run = tmp_path / "r6"

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(rd, "atomic_write_json", full)
    with pytest.raises(RunIOError) as ei:
        start_run_dir(run, CFG, 1, resuming=False)
    assert str(ei.value) == (f"{run / 'config.json'}: the disk is full (ENOSPC) while creating "
                             f"{run}; kept: nothing of this run was written yet")


def test_rundir_resume_keeps_the_first_starts_spelling_and_cwd(tmp_path, monkeypatch):
    """Rule 6: config.json records the user's spelling of the paths and the cwd of the first
    start; a resume from elsewhere keeps those, and adds only what the first start lacked."""
    run = tmp_path / "r7"
    first, later = tmp_path / "first", tmp_path / "later"
    first.mkdir()
    later.mkdir()
    monkeypatch.chdir(first)
    start_run_dir(run, CFG, 1, resuming=False, given={"data_path": "data/a"})
    monkeypatch.chdir(later)
    start_run_dir(run, CFG, 2, resuming=True, given={"data_path": "../b", "tokenizer_path": "t"})
    rec = json.loads((run / "config.json").read_text())
    assert (rec["data_path_given"], rec["tokenizer_path_given"], rec["cwd"], rec["world_size"]) \
        == ("data/a", "t", str(first), 2)


def test_out_dir_swap_in_succeeds_when_the_old_copy_cannot_be_removed(tmp_path, monkeypatch):
    """The new folder is in place before the old copy is removed: a failure removing that copy
    (a busy NFS file, say) must not turn a finished pack into an error."""
    import shutil
    new, out = tmp_path / ".new", tmp_path / "sub"
    out.mkdir()
    (out / "submission.json").write_text("old")
    new.mkdir()
    (new / "submission.json").write_text("new")

    def rmtree(path, ignore_errors=False, onerror=None, **kw):  # shutil's contract, always failing
        if not ignore_errors:
            raise OSError(16, "Device or resource busy", str(path))
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    _swap_in(new, out)
    assert (out / "submission.json").read_text() == "new" and not new.exists()


def test_pack_files_are_written_as_given_text_as_utf8(tmp_path):
    from golf.submission.assemble import _write
    _write(tmp_path / "a", "h\u00e9\n")
    _write(tmp_path / "b", b"\x00\xff")
    assert (tmp_path / "a").read_bytes() == "h\u00e9\n".encode() and \
        (tmp_path / "b").read_bytes() == b"\x00\xff"


def test_rundir_overwrite_empties_previous_pairs_but_keeps_what_else_is_there(tmp_path):
    """OVERWRITE=1 removes the earlier pairs in previous/<n>/ (any subset of the pair files) and
    the folders they leave empty; a folder holding anything else stays, and so does previous/."""
    from golf.run.rundir import PAIR_FILES, PREVIOUS
    run = tmp_path / "r5"
    for sub, names in (("1", PAIR_FILES), ("2", PAIR_FILES[:2]), ("3", PAIR_FILES[1:] + ("mine.txt",))):
        (run / PREVIOUS / sub).mkdir(parents=True)
        for n in names:
            (run / PREVIOUS / sub / n).write_text("x")
    cleared = start_run_dir(run, CFG.replace(overwrite=True), 1, resuming=False)
    assert PREVIOUS not in cleared
    assert [p.relative_to(run).as_posix() for p in sorted(run.rglob("*"))] == [
        "config.json", PREVIOUS, f"{PREVIOUS}/3", f"{PREVIOUS}/3/mine.txt"]
    (run / PREVIOUS / "3" / "mine.txt").unlink()
    for n in PAIR_FILES[:1]:
        (run / PREVIOUS / "3" / n).write_text("x")
    (run / "train.log").write_text("old")
    cleared = start_run_dir(run, CFG.replace(overwrite=True), 1, resuming=False)
    assert sorted(cleared) == sorted(["train.log", "config.json", PREVIOUS])
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


def test_trained_means_ema_pt_is_a_file(tmp_path):
    from golf.run.rundir import EMA, is_trained
    assert not is_trained(tmp_path)
    (tmp_path / EMA).mkdir()
    assert not is_trained(tmp_path)
    (tmp_path / EMA).rmdir()
    (tmp_path / EMA).write_bytes(b"")
    assert is_trained(tmp_path)


def _stage(run, eval_artifact=None, extra=("quant_report.json",)):
    from golf.run.rundir import ARTIFACT, EVAL, clear_staging
    st = clear_staging(run)
    (st / ARTIFACT).write_bytes(b"new-artifact")
    (st / EVAL).write_text(json.dumps({"artifact": eval_artifact or ARTIFACT, "bpb": 1}))
    for n in extra:
        (st / n).write_text("new")
    return st


def test_staging_starts_empty_and_a_leftover_attempt_is_cleared(tmp_path):
    from golf.run.rundir import STAGING, clear_staging
    run = tmp_path / "not" / "yet"
    st = clear_staging(run)                           # the run folder does not exist yet
    assert st == run / STAGING and st.is_dir() and not any(st.iterdir())
    (st / "final_model.gkq").write_bytes(b"half written")
    (st / "sub").mkdir()
    assert clear_staging(run) == st and not any(st.iterdir())


def test_publish_pair_moves_the_pair_in_and_the_old_pair_to_previous(tmp_path):
    """Rule 4: the staged pair moves in whole; the earlier pair (the pair files that exist)
    goes to previous/<n>/, n one more than the largest number there; eval.json is moved byte for
    byte (it names its artifact by the bare file name beside it); other files stay."""
    from golf.run.rundir import ARTIFACT, EVAL, PREVIOUS, STAGING, publish_pair
    run = tmp_path / "run"
    logs: list[str] = []
    _stage(run)
    (run / "train.log").write_text("log")
    assert publish_pair(run, logs.append) is None and logs == []
    assert json.loads((run / EVAL).read_text()) == {"artifact": ARTIFACT, "bpb": 1}
    assert sorted(p.name for p in run.iterdir()) == sorted([ARTIFACT, EVAL, "quant_report.json",
                                                            "train.log"])
    (run / PREVIOUS / "7").mkdir(parents=True)
    (run / PREVIOUS / "notes").mkdir()
    _stage(run, eval_artifact="/elsewhere/a.gkq", extra=())
    prev = publish_pair(run, logs.append)
    assert prev == run / PREVIOUS / "8"
    assert sorted(p.name for p in prev.iterdir()) == sorted([ARTIFACT, EVAL, "quant_report.json"])
    assert json.loads((prev / EVAL).read_text()) == {"artifact": ARTIFACT, "bpb": 1}
    assert (prev / ARTIFACT).read_bytes() == b"new-artifact"       # the one its eval.json scored
    assert json.loads((run / EVAL).read_text())["artifact"] == "/elsewhere/a.gkq"
    assert sorted(p.name for p in run.iterdir()) == sorted([ARTIFACT, EVAL, "train.log", PREVIOUS])
    assert not (run / STAGING).exists() and (run / "train.log").read_text() == "log"
    assert logs == [f"quant:previous pair kept in {prev} ({ARTIFACT}, {EVAL}, quant_report.json)"]
    _stage(run, extra=())
    assert publish_pair(run, logs.append) == run / PREVIOUS / "9"
    for k, folders in enumerate(((), ("notes",))):   # no previous/, or none numbered there
        other = tmp_path / f"other{k}"
        for f in folders:
            (other / PREVIOUS / f).mkdir(parents=True)
        _stage(other, extra=())
        publish_pair(other, print)
        _stage(other, extra=())
        assert publish_pair(other, print) == other / PREVIOUS / "1"
        assert sorted(p.name for p in (other / PREVIOUS / "1").iterdir()) == sorted([ARTIFACT, EVAL])


def test_publish_pair_refuses_an_incomplete_stage_and_moves_nothing(tmp_path):
    from golf.run.rundir import ARTIFACT, EVAL, publish_pair
    run = tmp_path / "run"
    st = _stage(run)
    (st / EVAL).unlink()
    (run / ARTIFACT).write_bytes(b"old")
    with pytest.raises(RuntimeError, match=f"missing {EVAL}"):
        publish_pair(run, print)
    (st / ARTIFACT).unlink()
    with pytest.raises(RuntimeError, match=f"missing {ARTIFACT}, {EVAL}"):
        publish_pair(run, print)
    assert (run / ARTIFACT).read_bytes() == b"old" and not (run / "previous").exists()


def test_an_eval_report_names_an_artifact_beside_it_by_file_name(tmp_path):
    """The reference survives the pair's move (staging -> run folder -> previous/<n>/); an
    artifact elsewhere keeps the path given, and both resolve back to the file."""
    from golf.run.rundir import artifact_ref, resolve_artifact_ref
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    art = tmp_path / "a" / "final_model.gkq"
    assert artifact_ref(art, tmp_path / "a" / "eval.json") == "final_model.gkq"
    assert artifact_ref(art, tmp_path / "b" / "eval.json") == str(art)
    assert artifact_ref(None, tmp_path / "a" / "eval.json") is None
    assert artifact_ref(art, None) == str(art)
    for where, ref in (("a", "final_model.gkq"), ("b", str(art))):
        report = tmp_path / where / "eval.json"
        report.write_text(json.dumps({"artifact": ref}))
        assert resolve_artifact_ref(report) == art
    (tmp_path / "b" / "eval.json").write_text(json.dumps({"artifact": "runs/x/final_model.gkq"}))
    assert resolve_artifact_ref(tmp_path / "b" / "eval.json") == Path("runs/x/final_model.gkq")
    moved = tmp_path / "b" / "previous" / "1"
    moved.mkdir(parents=True)
    (moved / "eval.json").write_text(json.dumps({"artifact": "final_model.gkq"}))
    assert resolve_artifact_ref(moved / "eval.json") == moved / "final_model.gkq"
