"""The small ones of issue 26: every write failure names its path, a full TMPDIR is named as
TMPDIR, a killed pack's temp folders and round-trip child do not outlive it, and a symlink
loop in DATA_PATH is one line."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from golf.run import rundir as rd
from golf.run.errors import ConfigError, RunIOError
from golf.submission import tempdirs


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a failed write: no file name


def test_a_full_disk_writing_the_artifact_names_it(tmp_path, monkeypatch):
    from quant.artifact import write_atomic
    monkeypatch.setattr(os, "fsync", _enospc)
    target = tmp_path / "final_model.gkq"
    with pytest.raises(RunIOError) as ei, rd.io_guard("writing the artifact", "the old pair"):
        write_atomic(target, b"x" * 10)
    assert str(ei.value).startswith(f"{target}: the disk is full (ENOSPC)")
    assert list(tmp_path.iterdir()) == []  # no temp file left


def test_a_full_disk_writing_a_pack_file_names_it(tmp_path, monkeypatch):
    from golf.submission.assemble import _write
    monkeypatch.setattr(Path, "write_bytes", _enospc)
    with pytest.raises(RunIOError) as ei, rd.io_guard("writing the pack", "the run"):
        _write(tmp_path / "submission.json", "{}")
    assert str(ei.value).startswith(f"{tmp_path / 'submission.json'}: the disk is full")
    assert "unknown path" not in str(ei.value)


def test_a_full_tmpdir_is_named_as_tmpdir(tmp_path, monkeypatch):
    """The round trip's copies go to TMPDIR; its full disk was blamed on SUBMISSION_DIR."""
    from golf.submission import roundtrip
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setattr(roundtrip.tempfile, "tempdir", str(tmp))
    monkeypatch.setattr(roundtrip.shutil, "copyfile", _enospc)
    script, art = tmp_path / "train_gpt.py", tmp_path / "final_model.gkq"
    script.write_text("")
    art.write_bytes(b"")
    with pytest.raises(RunIOError) as ei:
        roundtrip.run_roundtrip(script, art, {}, roundtrip.RoundTripTarget(1.0))
    msg = str(ei.value)
    assert msg.startswith(f"{tmp}/{tempdirs.ROUNDTRIP_PREFIX}") and f"TMPDIR={tmp}" in msg
    assert "SUBMISSION_DIR" not in msg and list(tmp.iterdir()) == []


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", ""])
    p.wait()
    return p.pid


def test_only_golfkit_temp_folders_of_dead_processes_are_removed(tmp_path):
    dead, me = _dead_pid(), os.getpid()
    names = [f"golf_roundtrip_{dead}-abc", f"golf_roundtrip_{me}-abc", "golf_roundtrip_notapid",
             f"golf_roundtrip_{dead}", f"other_{dead}-abc"]
    for n in names:
        (tmp_path / n).mkdir()
    (tmp_path / f"golf_roundtrip_{dead}-file").write_text("a file, not ours")
    gone = tempdirs.remove_stale(tmp_path, tempdirs.ROUNDTRIP_PREFIX)
    assert gone == [tmp_path / f"golf_roundtrip_{dead}-abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        set(names) - {f"golf_roundtrip_{dead}-abc"} | {f"golf_roundtrip_{dead}-file"})


def test_the_round_trip_child_dies_with_a_killed_packer(tmp_path):
    """SIGKILL the process that started the child (as a killed pack): the child goes too."""
    code = textwrap.dedent(f"""
        import importlib.util, subprocess, sys, time
        spec = importlib.util.spec_from_file_location("tempdirs", {str(Path(tempdirs.__file__))!r})
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)  # stdlib only: no torch import to wait for
        die_with_parent = mod.die_with_parent
        c = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             preexec_fn=die_with_parent())
        print(c.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _running(child):
        time.sleep(0.05)
    assert not _running(child)


def _running(pid: int) -> bool:
    """Alive and not a zombie awaiting its (gone) parent's reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_symlink_loop_in_data_path_is_one_line(tmp_path, tiny_config):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(ConfigError) as ei:
        rd.absolute_paths(tiny_config.replace(data_path=str(loop)))
    msg = str(ei.value)
    assert f"DATA_PATH={loop}" in msg and "points back into itself" in msg


def test_stale_pack_folders_are_cleaned_by_the_next_pack(tmp_path):
    """A killed pack left .<name>.tmp-<pid>-* beside its destination; the next pack of that
    destination removes it, and leaves a folder of the same shape owned by a live process."""
    dead = _dead_pid()
    stale = tmp_path / f".rec.tmp-{dead}-x"
    live = tmp_path / f".rec.tmp-{os.getpid()}-x"
    for d in (stale, live):
        d.mkdir()
        (d / "train_gpt.py").write_text("")
    assert tempdirs.remove_stale(tmp_path, ".rec.tmp-") == [stale]
    assert live.is_dir() and not stale.exists()
    shutil.rmtree(live)


def test_a_full_disk_appending_to_the_log_names_it(tmp_path, monkeypatch):
    class Full:
        def __enter__(self):
            return self

        def __exit__(self, *_a):
            return False

        def write(self, _text):
            _enospc()
    monkeypatch.setattr("builtins.open", lambda *_a, **_k: Full())
    with pytest.raises(RunIOError) as ei, rd.io_guard("training", "checkpoint.pt"):
        rd.append_line(tmp_path / rd.TRAIN_LOG, "step:1")
    assert str(ei.value).startswith(f"{tmp_path / rd.TRAIN_LOG}: the disk is full")
