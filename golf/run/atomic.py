"""Atomic file writes (a temp file in the destination folder, then os.replace) and file hashes.

A reader never sees a half-written shard, checkpoint or JSON, and a failed write leaves the
previous good file in place (the temp file is removed). The temp file is fsynced before the
rename and the folder after it, so a power loss leaves the old file or the new one, never an
empty one under the new name. A writer killed outright (SIGKILL, OOM) cannot remove its temp
file, so the temp name carries the writer's pid and the next write of the same target removes
the ones whose writer is gone. Every writer in golf/ goes through `atomic_file`; quant/ keeps
its own because it must not import golf.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import torch


def _running(pid: int) -> bool:
    """Whether process `pid` exists (on this machine); unknown counts as running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists under another user, or no way to ask: keep its file
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove `.<name>.<pid>.<random>.tmp` files beside `path` whose writer no longer runs (a
    killed write of the same target); only names of exactly that form, never anything else."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[A-Za-z0-9_]+\.tmp")
    removed = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    for name in names:
        m = pattern.fullmatch(name)
        if m and int(m.group(1)) != os.getpid() and not _running(int(m.group(1))):
            (path.parent / name).unlink(missing_ok=True)
            removed.append(path.parent / name)
    return removed


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable, where the platform can open a folder (not Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb",
                check: Callable[[Path], Any] | None = None) -> Iterator[IO]:
    """Open a temp file beside `path`; on success it replaces `path`, on error it is removed.
    `check(temp path)` runs on the complete file first: raising there keeps `path` as it was
    (a download validated before it takes a good file's name)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(p)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.{os.getpid()}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if check is not None:
            check(Path(tmp))
        os.replace(tmp, p)
        fsync_dir(p.parent)
    except OSError as exc:  # name the destination: a failed fh.write carries no file name
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None or str(exc.filename) == tmp:
            raise OSError(exc.errno, exc.strerror, str(p)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_file(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_file(path, "w") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    with atomic_file(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")
    return Path(path)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save through a temp file (checkpoints, EMA weights, Hessians). Serialized in memory
    first, so a full disk is an OSError from our write (naming the file), not torch's
    "unexpected pos" RuntimeError from inside its zip writer."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_file(path, "wb") as fh:
        fh.write(buf.getbuffer())
    return Path(path)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (artifacts, shards, tokenizers)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
