"""One writer per run directory (golf.run.rundir rule 8): an OS lock on RUN/.lock held for a
command's life; a second writer is refused with one line naming the holder; the lock dies
with its process."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from golf.run import rundir as rd
from golf.run.errors import RunLockError


@pytest.fixture()
def holder(tmp_path):
    """Start a process that holds the lock of tmp_path/run until killed, as lock_run leaves
    it (flock + 'pid N: command'; without importing torch, for speed): (run, process)."""
    run = tmp_path / "run"
    run.mkdir()
    code = textwrap.dedent(f"""
        import fcntl, os, time
        fd = os.open({str(run / rd.LOCK)!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {{os.getpid()}}: QUANT_ONLY=runs/x train_gpt.py\\n".encode())
        print("locked", flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    yield run, p
    p.kill()
    p.wait()


def test_second_writer_is_refused_naming_the_holder(holder):
    run, p = holder
    with pytest.raises(RunLockError) as ei:
        rd.lock_run(run, "eval_bpb.py")
    msg = str(ei.value)
    assert f"pid {p.pid}" in msg and "QUANT_ONLY=runs/x train_gpt.py" in msg
    assert str(run) in msg and "\n" not in msg


def test_the_lock_dies_with_its_process(holder):
    run, p = holder
    p.kill()
    p.wait()
    with rd.run_lock(run, "after"):  # no stale lock to clean
        assert (run / rd.LOCK).read_text().startswith(f"pid {os.getpid()}: after")


def test_released_at_the_end_of_the_outermost_scope(tmp_path):
    run = tmp_path / "run"
    with rd.held_locks():
        with rd.held_locks():
            rd.lock_run(run, "inner")
            rd.lock_run(run, "again")  # this process holds it: re-entered, not refused
        assert _locked_elsewhere(run)  # the inner scope does not release the outer's lock
    assert not _locked_elsewhere(run)


def _locked_elsewhere(run: Path) -> bool:
    """Whether another writer would be refused: flock on a second open file conflicts with
    the first even within one process."""
    fd = os.open(run / rd.LOCK, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_a_folder_holding_only_the_lock_file_is_free(tmp_path, tiny_config):
    run = tmp_path / "run"
    run.mkdir()
    (run / rd.LOCK).write_text("pid 1: old\n")
    assert rd.run_dir_problem(run, tiny_config, resuming=False) is None


def test_quant_only_and_eval_are_refused_while_another_writes(holder, tiny_config, capsys):
    """The issue's case: two QUANT_ONLY on one run lost one result. The second is refused
    before it writes anything."""
    import eval_bpb
    from conftest import untrained_run
    from golf.main import main as train_gpt
    run, p = holder
    untrained_run(run, tiny_config)
    before = {q.name: q.read_bytes() for q in run.iterdir()}
    old = dict(os.environ)
    os.environ.update({"QUANT_ONLY": str(run), "PACK": "0"})
    try:
        with pytest.raises(SystemExit) as ei:
            train_gpt()
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert ei.value.code == 2
    assert f"pid {p.pid}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_bpb.main([str(run)])
    assert f"pid {p.pid}" in capsys.readouterr().err
    assert {q.name: q.read_bytes() for q in run.iterdir()} == before


def test_a_killed_writes_temp_files_are_removed_under_the_lock(tmp_path):
    """A checkpoint write killed mid-way left .checkpoint.pt.<x>.tmp; the next command that
    locks the run removes such files of the run's own names, and nothing else."""
    run = tmp_path / "run"
    run.mkdir()
    names = [".checkpoint.pt.k3j.tmp", "final_model.gkq.a1.tmp", "notes.tmp", ".mine.x.tmp",
             "checkpoint.pt"]
    for n in names:
        (run / n).write_text("x")
    with rd.run_lock(run, "next"):
        pass
    assert sorted(p.name for p in run.iterdir()) == sorted(
        {rd.LOCK, "notes.tmp", ".mine.x.tmp", "checkpoint.pt"})
