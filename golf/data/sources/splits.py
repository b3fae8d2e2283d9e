"""Documents -> train/val shard files: the part every data source shares.

The hashed val split, the [BOS] + ids encoding and the shard naming are one rule each, so
the embedded corpus, `prepare text` and the proxy corpus lay out datasets the same way.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from golf.data.shards import write_shard

BOS_ID = 1
DEFAULT_SHARD_TOKENS = 10**8


@dataclass(frozen=True)
class DatasetPaths:
    """What a preparation made: the dataset folder (DATA_PATH) and its tokenizer."""
    dataset_dir: Path
    tokenizer_path: Path


def is_val_doc(text: str, val_percent: int = 10) -> bool:
    """Deterministic split by content hash: stable across runs and orderings."""
    h = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    return h % 100 < val_percent


def encode_docs(sp, docs: Iterable[str]) -> np.ndarray:
    """[BOS] + ids per document, concatenated."""
    parts = []
    for ids in sp.encode(list(docs)):
        parts.append(np.array([BOS_ID] + ids, dtype=np.uint16))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def write_split(out_dir: Path, split: str, tokens: np.ndarray, shard_tokens: int) -> list[Path]:
    """`tokens` as fineweb_<split>_XXXXXX.bin shards of at most `shard_tokens` each."""
    paths = []
    n = max(1, -(-len(tokens) // shard_tokens))
    for i in range(n):
        p = out_dir / f"fineweb_{split}_{i:06d}.bin"
        write_shard(p, tokens[i * shard_tokens:(i + 1) * shard_tokens])
        paths.append(p)
    return paths
