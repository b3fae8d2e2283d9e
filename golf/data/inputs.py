"""The dataset, its tokenizer and VOCAB_SIZE checked against each other before any work.

Why: each file alone can be valid and the set still wrong. A tokenizer other than the one the
shards were made with scores a silently wrong val_bpb (its byte table counts other pieces,
and the decoded-text check decodes with the same wrong tokenizer); a VOCAB_SIZE larger than
the shards' vocabulary trains and reports a flattering score. The dataset's manifest.json
(written by `golf.data.prepare`) records the tokenizer's sha256, its vocabulary size and the
largest token id, so the three are compared in milliseconds.
"""
from __future__ import annotations

import os
from pathlib import Path

from golf.run.atomic import file_sha256
from golf.data.shards import (MANIFEST, check_token_range, find_shards, read_manifest, read_shard,
                              train_pattern)
from golf.run.errors import ShardError, TokenizerError

TRAIN_SAMPLE = 2  # train shards read when the manifest records no max_token_id: first and last


def check_dataset(data_path: str | os.PathLike, tokenizer_path: str | os.PathLike,
                  vocab_size: int) -> None:
    """Refuse a tokenizer the dataset was not made with, a VOCAB_SIZE other than its
    vocabulary's, and shards holding ids >= VOCAB_SIZE (one error naming file, variable, fix).
    A folder without a manifest (hand-made) gets only the token-range check."""
    man = read_manifest(data_path)
    where = Path(data_path) / MANIFEST
    want = man.get("tokenizer_sha256")
    have = file_sha256(tokenizer_path) if want else None
    if want and have != want:
        raise TokenizerError(
            f"TOKENIZER_PATH={tokenizer_path}: not the tokenizer DATA_PATH={data_path} was made "
            f"with ({where} records {man.get('tokenizer', 'its tokenizer')} with sha256 "
            f"{str(want)[:12]}..., this file has {str(have)[:12]}...); set "
            "TOKENIZER_PATH to the dataset's own tokenizer, or prepare the data again with this one")
    recorded = man.get("vocab_size")
    if recorded is not None and int(recorded) != vocab_size:
        raise TokenizerError(f"VOCAB_SIZE={vocab_size}: DATA_PATH={data_path} was made with a "
                             f"{recorded}-piece tokenizer ({where}); set VOCAB_SIZE={recorded}")
    top = man.get("max_token_id")
    if top is not None:
        if int(top) >= vocab_size:
            raise ShardError(f"VOCAB_SIZE={vocab_size}: the shards of DATA_PATH={data_path} hold "
                             f"token id {top} ({where}); set VOCAB_SIZE above it or fix DATA_PATH")
        return
    for p in sample_train_shards(data_path):
        check_token_range(read_shard(p), vocab_size, p)


def sample_train_shards(data_path: str | os.PathLike) -> list[Path]:
    """The first and last train shard by name (the loader checks every shard it opens later;
    these catch a wrong DATA_PATH before the run directory is written)."""
    try:
        paths = find_shards(train_pattern(data_path))
    except ShardError:
        return []  # eval-only folders hold val shards alone; training reports missing ones
    return sorted({paths[0], paths[-1]})[:TRAIN_SAMPLE]
