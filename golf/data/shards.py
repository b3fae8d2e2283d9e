"""Challenge shard format: 256 little-endian int32 header (magic, version, count), then uint16 tokens.

Every reader validates the header against the file size so a truncated download or a
foreign file fails loudly instead of silently training on garbage.
"""
from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import numpy as np

from golf.run.atomic import atomic_file
from golf.run.errors import ShardError

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MANIFEST = "manifest.json"


def read_header(path: str | os.PathLike) -> int:
    """Validate a shard's header and size; return its token count."""
    p = Path(path)
    if not p.is_file():
        raise ShardError(f"{p}: shard file not found; run `python -m golf.data.prepare` or fix DATA_PATH")
    size = p.stat().st_size
    if size < HEADER_BYTES:
        raise ShardError(f"{p}: {size} bytes is shorter than the {HEADER_BYTES}-byte header; "
                         "the file is truncated, delete it and prepare the data again")
    header = np.fromfile(p, dtype="<i4", count=HEADER_INTS)
    if int(header[0]) != MAGIC:
        raise ShardError(f"{p}: bad magic {int(header[0])} (expected {MAGIC}); not a challenge "
                         "shard, delete it and prepare the data again")
    if int(header[1]) != VERSION:
        raise ShardError(f"{p}: unsupported shard version {int(header[1])} (expected {VERSION}); "
                         "re-create the shard with `python -m golf.data.prepare`")
    count = int(header[2])
    if count < 0 or size != HEADER_BYTES + 2 * count:
        raise ShardError(f"{p}: header says {count} tokens ({HEADER_BYTES + 2 * count} bytes) but "
                         f"the file has {size} bytes; it is truncated or corrupt, delete it and "
                         "prepare the data again")
    return count


def read_shard(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a shard's tokens (uint16) after validating header and size."""
    count = read_header(path)
    if count == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(count,))


def write_shard(path: str | os.PathLike, tokens: np.ndarray) -> None:
    """Write tokens as a shard atomically, so a crash never leaves a half-written good name."""
    p = Path(path)
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ShardError(f"{p}: tokens must be 1-D, got shape {arr.shape}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 65535):
        raise ShardError(f"{p}: token ids must fit in uint16 (0..65535); use a smaller vocabulary")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, arr.size
    with atomic_file(p, "wb") as f:
        f.write(header.tobytes())
        f.write(arr.astype("<u2", copy=False).tobytes())


def find_shards(pattern: str) -> list[Path]:
    """Sorted shard paths matching a glob (byte-sidecar files `*_bytes_*` excluded)."""
    paths = sorted(Path(m) for m in glob.glob(str(pattern)) if "_bytes_" not in Path(m).name)
    if not paths:
        raise ShardError(f"{pattern}: no shard files match; run `python -m golf.data.prepare "
                         "embedded` (or fineweb) or fix DATA_PATH")
    return paths


def check_token_range(tokens: np.ndarray, vocab_size: int, path: str | os.PathLike) -> None:
    """Reject shards whose ids do not fit the model's vocabulary (wrong tokenizer/VOCAB_SIZE)."""
    if len(tokens) and int(np.max(tokens)) >= vocab_size:
        raise ShardError(f"{path}: token id {int(np.max(tokens))} >= vocab size {vocab_size}; the "
                         "shard was made with a different tokenizer, fix VOCAB_SIZE or DATA_PATH")


def max_token_id(paths: list[Path]) -> int:
    """The largest token id in these shards (recorded in a dataset's manifest at preparation,
    so a VOCAB_SIZE too small for the shards is refused before training without reading them)."""
    return max((int(np.max(t)) for t in map(read_shard, paths) if len(t)), default=-1)


def train_pattern(data_path: str | os.PathLike) -> str:
    return str(Path(data_path) / "fineweb_train_*.bin")


def val_pattern(data_path: str | os.PathLike) -> str:
    return str(Path(data_path) / "fineweb_val_*.bin")


def load_val_tokens(data_path: str, vocab_size: int) -> np.ndarray:
    """All validation shards concatenated (validated), in name order."""
    parts = []
    for p in find_shards(val_pattern(data_path)):
        toks = read_shard(p)
        check_token_range(toks, vocab_size, p)
        parts.append(np.asarray(toks))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def val_bytes_pattern(data_path: str | os.PathLike) -> str:
    return str(Path(data_path) / "fineweb_val_bytes_*.bin")


def load_val_bytes(data_path: str | os.PathLike) -> np.ndarray | None:
    """The val byte sidecar (per val token, its original-text UTF-8 bytes; the shard format),
    all fineweb_val_bytes_*.bin concatenated in name order; None when the dataset has none."""
    paths = sorted(Path(m) for m in glob.glob(val_bytes_pattern(data_path)))
    if not paths:
        return None
    return np.concatenate([np.asarray(read_shard(p)) for p in paths])


def read_manifest(data_path: str | os.PathLike) -> dict:
    """The dataset folder's manifest.json ({} when it has none: a hand-made folder)."""
    p = Path(data_path) / MANIFEST
    if not p.is_file():
        return {}
    try:
        man = json.loads(p.read_text(encoding="utf-8"))
    except ValueError:
        raise ShardError(f"{p}: not JSON; re-create the dataset with `python -m "
                         "golf.data.prepare`") from None
    return man if isinstance(man, dict) else {}


def dataset_text_transform(data_path: str | os.PathLike) -> str | None:
    """The text transform the dataset folder's manifest.json declares (e.g. CaseOps), if any:
    such a dataset's tokens spell transformed text, so it is scored from its byte sidecar."""
    value = read_manifest(data_path).get("text_transform")
    return str(value) if value else None
