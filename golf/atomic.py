"""Atomic file writes (a temp file in the destination folder, then os.replace) and file hashes.

A reader never sees a half-written shard, checkpoint or JSON, and a failed write leaves the
previous good file in place (the temp file is removed). Every writer in golf/ goes through
`atomic_file`; quant/ keeps its own because it must not import golf.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import torch


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb",
                check: Callable[[Path], Any] | None = None) -> Iterator[IO]:
    """Open a temp file beside `path`; on success it replaces `path`, on error it is removed.
    `check(temp path)` runs on the complete file first: raising there keeps `path` as it was
    (a download validated before it takes a good file's name)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        if check is not None:
            check(Path(tmp))
        os.replace(tmp, p)
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
