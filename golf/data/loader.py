"""Deterministic distributed token stream.

Each optimizer step reads one contiguous chunk of n_seq*seq_len+1 tokens from a cyclic
stream over the train shards (shard order and start offset derived from SEED only); the
chunk's sequences are split among (micro-step, rank) pairs, so the global batch is the
same whatever world_size / grad_accum split is used.
"""
from __future__ import annotations

import numpy as np
import torch

from golf.data.shards import check_token_range, find_shards, read_header, read_shard, train_pattern


class DistributedTokenLoader:
    def __init__(self, data_path: str, *, rank: int, world_size: int, seed: int, vocab_size: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}; fix RANK/WORLD_SIZE")
        self.rank, self.world_size, self.seed, self.vocab_size = rank, world_size, seed, vocab_size
        paths = find_shards(train_pattern(data_path))
        self.paths = sorted(paths, key=lambda p: p.name)  # order never depends on path spelling
        self.lengths = [read_header(p) for p in self.paths]
        if sum(self.lengths) < 2:
            raise ValueError(f"{data_path}: train shards hold {sum(self.lengths)} tokens; prepare more data")
        self._cache: dict[int, np.ndarray] = {}
        rng = np.random.default_rng(seed)
        first = self._order(0)[0]
        self.state = {"epoch": 0, "index": 0, "offset": int(rng.integers(0, max(1, self.lengths[first])))}
        self.micro = 0
        self._chunk_state = dict(self.state)
        self._chunk: np.ndarray | None = None
        self._chunk_len = 0

    def _order(self, epoch: int) -> list[int]:
        return [int(i) for i in np.random.default_rng([self.seed, epoch]).permutation(len(self.paths))]

    def _tokens(self, shard: int) -> np.ndarray:
        if shard not in self._cache:
            toks = read_shard(self.paths[shard])
            check_token_range(toks, self.vocab_size, self.paths[shard])
            self._cache = {shard: toks}  # keep one shard mapped at a time
        return self._cache[shard]

    def _read(self, state: dict, n: int) -> tuple[np.ndarray, dict]:
        """n tokens from `state` onward (crossing shards/epochs) and the state after them."""
        epoch, index, offset = state["epoch"], state["index"], state["offset"]
        out = []
        while n > 0:
            shard = self._order(epoch)[index]
            avail = self.lengths[shard] - offset
            take = min(n, avail)
            if take > 0:
                out.append(np.asarray(self._tokens(shard)[offset:offset + take]))
                offset += take
                n -= take
            if offset >= self.lengths[shard]:
                index, offset = index + 1, 0
                if index == len(self.paths):
                    epoch, index = epoch + 1, 0
        return np.concatenate(out), {"epoch": epoch, "index": index, "offset": offset}

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int):
        """This rank's (x, y) for its next micro-step; a new chunk starts every grad_accum_steps calls."""
        parts = self.world_size * grad_accum_steps
        n_seq = global_tokens // seq_len
        if n_seq == 0 or n_seq % parts:
            raise ValueError(f"TRAIN_BATCH_TOKENS={global_tokens} must be a multiple of "
                             f"TRAIN_SEQ_LEN*world_size*grad_accum = {seq_len * parts}; fix the batch size")
        if self.micro == 0 or self._chunk is None:
            self._chunk_state = dict(self.state)
            chunk, _ = self._read(self.state, n_seq * seq_len + 1)
            _, self.state = self._read(self.state, n_seq * seq_len)
            self._chunk = chunk
            self._chunk_len = n_seq * seq_len + 1
        per = n_seq // parts
        part = self.micro * self.world_size + self.rank
        lo = part * per * seq_len
        buf = torch.from_numpy(self._chunk[lo:lo + per * seq_len + 1].astype(np.int64))
        self.micro = (self.micro + 1) % grad_accum_steps
        if self.micro == 0:
            self._chunk = None
        return buf[:-1].view(per, seq_len), buf[1:].view(per, seq_len)

    def state_dict(self) -> dict:
        return {"state": dict(self.state), "chunk_state": dict(self._chunk_state), "micro": self.micro,
                "chunk_len": self._chunk_len,
                "seed": self.seed, "shards": [p.name for p in self.paths]}

    def load_state_dict(self, d: dict) -> None:
        if d.get("shards") is not None and list(d["shards"]) != [p.name for p in self.paths]:
            raise ValueError("loader state was saved over different train shards; resume with the "
                             "same DATA_PATH")
        self.state, self._chunk_state, self.micro = dict(d["state"]), dict(d["chunk_state"]), int(d["micro"])
        self._chunk_len = int(d.get("chunk_len", 0))
        self._chunk = None
        if self.micro:
            self._chunk, _ = self._read(self._chunk_state, self._chunk_len)
