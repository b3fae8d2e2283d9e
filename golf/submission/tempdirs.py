"""The packer's temp folders: named with the owning process id, removed by the next pack once
that process is gone; and its round-trip child, which dies with the packer.

Why: a pack killed mid-way (SIGTERM, SIGKILL, a closed terminal) runs no cleanup. Its folders
are recognised later by name (golfkit's own prefix + a pid no longer alive), so nothing
another program wrote is ever removed; and the child is told by the kernel to die with it.
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Callable

ROUNDTRIP_PREFIX = "golf_roundtrip_"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def owned_name(prefix: str) -> str:
    """`prefix` + this process's pid + '-': the start of a temp folder this process owns."""
    return f"{prefix}{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale(parent: str | os.PathLike, prefix: str) -> list[Path]:
    """Remove parent/<prefix><pid>-* folders whose process is gone (a killed pack's); returns
    them. Anything not matching that exact name, or owned by a live process, is left alone."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)-")
    gone = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return gone
    for p in entries:
        m = pattern.match(p.name)
        if m and p.is_dir() and not p.is_symlink() and not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
    return gone


def roundtrip_dir() -> Path:
    """A fresh round-trip folder in TMPDIR, after removing those of killed packs."""
    remove_stale(tempfile.gettempdir(), ROUNDTRIP_PREFIX)
    return Path(tempfile.mkdtemp(prefix=owned_name(ROUNDTRIP_PREFIX)))


def die_with_parent() -> Callable[[], None] | None:
    """A Popen preexec_fn that makes the child receive SIGKILL when the packer dies (Linux);
    None elsewhere (the packer's own cleanup then kills it on SIGINT/SIGTERM)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    return preexec
