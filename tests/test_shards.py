"""Shard format: round trip, atomic write, and one clear error naming the file per defect."""
from __future__ import annotations

import os

import numpy as np
import pytest

from golf.data.shards import (HEADER_BYTES, MAGIC, ShardError, check_token_range, find_shards,
                              load_val_tokens, read_shard, write_shard)
from golf.data.tokenizer import TokenizerError, load_tokenizer


def test_round_trip_and_layout(tmp_path):
    toks = np.array([1, 5, 1023, 0, 65535], dtype=np.uint16)
    p = tmp_path / "fineweb_train_000000.bin"
    write_shard(p, toks)
    raw = p.read_bytes()
    assert len(raw) == HEADER_BYTES + 2 * len(toks)
    header = np.frombuffer(raw[:HEADER_BYTES], dtype="<i4")
    assert (header[0], header[1], header[2]) == (MAGIC, 1, len(toks))
    np.testing.assert_array_equal(read_shard(p), toks)
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".")], "temp file left behind"


def _corrupt(path, index, value):
    raw = bytearray(path.read_bytes())
    raw[index * 4:(index + 1) * 4] = np.int32(value).tobytes()
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("index,value,needle", [(0, 123, "magic"), (1, 2, "version"), (2, 7, "bytes")])
def test_bad_header_names_file(tmp_path, index, value, needle):
    p = tmp_path / "fineweb_val_000000.bin"
    write_shard(p, np.arange(10, dtype=np.uint16))
    _corrupt(p, index, value)
    with pytest.raises(ShardError, match=needle) as exc:
        read_shard(p)
    assert str(p) in str(exc.value)


def test_truncated_file(tmp_path):
    p = tmp_path / "fineweb_val_000000.bin"
    write_shard(p, np.arange(10, dtype=np.uint16))
    p.write_bytes(p.read_bytes()[:-2])
    with pytest.raises(ShardError, match=str(p)):
        read_shard(p)


def test_token_range_and_val_loading(tmp_path):
    write_shard(tmp_path / "fineweb_val_000001.bin", np.array([3, 4], dtype=np.uint16))
    write_shard(tmp_path / "fineweb_val_000000.bin", np.array([1, 2], dtype=np.uint16))
    write_shard(tmp_path / "fineweb_val_bytes_000000.bin", np.array([9], dtype=np.uint16))
    np.testing.assert_array_equal(load_val_tokens(str(tmp_path), 1024), [1, 2, 3, 4])
    with pytest.raises(ShardError, match="fineweb_val_000001.bin.*>= vocab size 4"):
        load_val_tokens(str(tmp_path), 4)
    with pytest.raises(ShardError, match="x.bin"):
        check_token_range(np.array([1024]), 1024, "x.bin")


def test_glob_matching_nothing(tmp_path):
    with pytest.raises(ShardError, match="no shard files match"):
        find_shards(str(tmp_path / "fineweb_train_*.bin"))


def test_failed_write_keeps_good_shard(tmp_path, monkeypatch):
    p = tmp_path / "fineweb_train_000000.bin"
    write_shard(p, np.arange(4, dtype=np.uint16))
    before = p.read_bytes()
    with pytest.raises(ShardError):
        write_shard(p, np.array([70000]))
    assert p.read_bytes() == before
    # a failure after the new tokens were written (the final rename fails): still the old file,
    # and no temp file left beside it
    def no_rename(*_a, **_k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="No space"):
        write_shard(p, np.arange(9, dtype=np.uint16))
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == [p.name]


def test_tokenizer_errors(tmp_path, embedded_data):
    with pytest.raises(TokenizerError, match="not found") as exc:
        load_tokenizer(tmp_path / "missing.model")
    assert "missing.model" in str(exc.value)
    with pytest.raises(TokenizerError, match="vocab size 1024 != expected 8192"):
        load_tokenizer(embedded_data.tokenizer_path, expected_vocab=8192)
    assert load_tokenizer(embedded_data.tokenizer_path, expected_vocab=1024).vocab_size() == 1024
