"""golf.run.atomic: the temp file reaches the disk before it takes the target's name, and a write
killed outright leaves a temp file that the next write of the same target removes (issue 26)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from golf.run import atomic
from golf.run.atomic import atomic_write_bytes, atomic_write_json

REPO = Path(__file__).resolve().parents[1]


def test_fsync_of_the_data_comes_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    target = tmp_path / "eval.json"
    atomic_write_json(target, {"a": 1})
    kinds = [k for k, _ in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    assert Path(events[0][1]).name.startswith(f".eval.json.{os.getpid()}.")  # the temp file's data
    assert events[1][1] == str(target) and events[2][1] == str(tmp_path)
    assert target.read_text().startswith("{")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_killed_write_leaves_a_temp_that_the_next_write_removes(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); from golf.run.atomic import atomic_file\n"
            "with atomic_file(sys.argv[2]) as fh:\n"
            "    fh.write(b'half'); fh.flush(); print('writing', flush=True); time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(REPO), str(target)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert left and left[0].startswith(f".checkpoint.pt.{proc.pid}."), left
    assert target.read_bytes() == b"old"
    # files the cleanup must never touch: other targets, other patterns, a live writer's temp
    keep = [f".checkpoint.pt.{os.getppid()}.abc123.tmp", f".other.pt.{_dead_pid()}.abc123.tmp",
            ".checkpoint.pt.tmp", f"checkpoint.pt.{_dead_pid()}.abc123.tmp", "notes.tmp",
            f".checkpoint.pt.{_dead_pid()}.abc123.tmp.bak"]
    for name in keep:
        (tmp_path / name).write_bytes(b"theirs")
    stale = tmp_path / f".checkpoint.pt.{_dead_pid()}.zz_9.tmp"
    stale.write_bytes(b"stale")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert not (tmp_path / left[0]).exists() and not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + ["checkpoint.pt"])
