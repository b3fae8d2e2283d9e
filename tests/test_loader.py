"""Loader contract: global batch independent of world_size/grad_accum split; exact resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from golf.data.loader import DistributedTokenLoader
from golf.data.shards import ShardError, write_shard


@pytest.fixture()
def shards(tmp_path):
    rng = np.random.default_rng(0)
    for i, n in enumerate([700, 1300, 450]):
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", rng.integers(0, 1024, n).astype(np.uint16))
    return tmp_path


def _global_batches(path, world_size, accum, steps, seed=7, G=256, L=16):
    loaders = [DistributedTokenLoader(str(path), rank=r, world_size=world_size, seed=seed, vocab_size=1024)
               for r in range(world_size)]
    out = []
    for _ in range(steps):
        xs, ys = [], []
        for _m in range(accum):
            for ld in loaders:
                x, y = ld.next_batch(G, L, accum)
                assert x.dtype == torch.int64 and x.shape == (G // (world_size * accum * L), L)
                xs.append(x); ys.append(y)
        x, y = torch.cat(xs), torch.cat(ys)
        out.append((x, y))
    return out


def test_union_independent_of_split(shards):
    ref = _global_batches(shards, 1, 1, 12)  # 12 steps * 256 tokens crosses shards and epochs
    for ws, acc in [(2, 1), (1, 4), (2, 2), (4, 4)]:
        got = _global_batches(shards, ws, acc, 12)
        for (x0, y0), (x1, y1) in zip(ref, got):
            assert sorted(map(tuple, x0.tolist())) == sorted(map(tuple, x1.tolist()))
            assert sorted(map(tuple, y0.tolist())) == sorted(map(tuple, y1.tolist()))
    x, y = ref[0]
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are inputs shifted by one
    assert not torch.equal(ref[0][0], ref[1][0])


def test_seed_changes_order_path_spelling_does_not(shards):
    a = _global_batches(shards, 1, 1, 3, seed=1)
    b = _global_batches(str(shards) + "/./", 1, 1, 3, seed=1)
    c = _global_batches(shards, 1, 1, 3, seed=2)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(a, c))


def test_exact_resume_mid_step(shards):
    ld = DistributedTokenLoader(str(shards), rank=1, world_size=2, seed=3, vocab_size=1024)
    for _ in range(5):
        ld.next_batch(256, 16, 2)  # ends in the middle of a step (micro 1 of 2)
    state = ld.state_dict()
    expect = [ld.next_batch(256, 16, 2) for _ in range(9)]
    fresh = DistributedTokenLoader(str(shards), rank=1, world_size=2, seed=3, vocab_size=1024)
    fresh.load_state_dict(state)
    for (x0, y0), (x1, y1) in zip(expect, (fresh.next_batch(256, 16, 2) for _ in range(9))):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_bad_inputs(tmp_path, shards):
    with pytest.raises(ShardError, match="no shard files match"):
        DistributedTokenLoader(str(tmp_path / "none"), rank=0, world_size=1, seed=0, vocab_size=1024)
    ld = DistributedTokenLoader(str(shards), rank=0, world_size=1, seed=0, vocab_size=512)
    with pytest.raises(ShardError, match=r"fineweb_train_\d+\.bin.*>= vocab size 512"):
        ld.next_batch(256, 16, 1)
    ok = DistributedTokenLoader(str(shards), rank=0, world_size=3, seed=0, vocab_size=1024)
    with pytest.raises(ValueError, match="multiple of"):
        ok.next_batch(256, 16, 1)


def test_embedded_train_split(embedded_data):
    ld = DistributedTokenLoader(str(embedded_data.dataset_dir), rank=0, world_size=1, seed=1337,
                                vocab_size=1024)
    x, y = ld.next_batch(8192, 256, 8)
    assert x.shape == (4, 256) and int(x.max()) < 1024
