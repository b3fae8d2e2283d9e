"""The records' document-packing loader (PR #1855 / #2135, DOC_PACKING=1).

Why a second loader: the frontier records do not train on TRAIN_SEQ_LEN rows. Each rank gets
one packed row of TRAIN_BATCH_TOKENS / (world_size x grad_accum) tokens per micro-step, read
sequentially from the sorted train shards (no shuffling, SEED plays no part), and attention is
split at every BOS (golf.model.layers.segment_ids) with segments cut every TRAIN_SEQ_LEN tokens from
their document start. The stream starts at shard 0's first BOS; a micro-step takes one global
span of world_size x (local + 1) tokens and rank r reads the r-th slice; a span that does not
fit in the rest of the shard moves on to the next shard's first BOS (after the last shard:
shard 0 again).
"""
from __future__ import annotations

import numpy as np
import torch

from golf.data.shards import check_token_range, find_shards, read_header, read_shard, train_pattern


class DocumentPackingLoader:
    def __init__(self, data_path: str, *, rank: int, world_size: int, vocab_size: int, bos_id: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}; fix RANK/WORLD_SIZE")
        self.rank, self.world_size, self.vocab_size, self.bos_id = rank, world_size, vocab_size, bos_id
        self.paths = sorted(find_shards(train_pattern(data_path)), key=lambda p: p.name)
        self.lengths = [read_header(p) for p in self.paths]
        self.shard, self._tokens = -1, np.zeros(0, dtype=np.uint16)
        self.cursor = 0
        self._open(0)

    def _open(self, shard: int) -> None:
        """Map `shard` and put the cursor on its first BOS (position 0 when it has none)."""
        toks = read_shard(self.paths[shard])
        check_token_range(toks, self.vocab_size, self.paths[shard])
        self.shard, self._tokens = shard, toks
        bos = np.flatnonzero(toks == self.bos_id)
        self.cursor = int(bos[0]) if bos.size else 0

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int):
        """This rank's packed (x, y), each (1, local) int64, for its next micro-step.

        `seq_len` is not a row length here (the row is `local` tokens): the caller gives the
        model TRAIN_SEQ_LEN (or the TRAIN_SEQ_SCHEDULE stage) as its segment cut."""
        parts = self.world_size * grad_accum_steps
        local = global_tokens // parts
        if local < 1 or global_tokens % parts or local % seq_len:
            raise ValueError(f"TRAIN_BATCH_TOKENS={global_tokens} must be a multiple of world_size x "
                             f"grad_accum x TRAIN_SEQ_LEN = {parts * seq_len} under DOC_PACKING=1; fix "
                             "the batch size")
        span = self.world_size * (local + 1)
        if span > max(self.lengths):
            raise ValueError(f"TRAIN_BATCH_TOKENS={global_tokens} under DOC_PACKING=1: a micro-step's "
                             f"span of {span} tokens is longer than every train shard "
                             f"({max(self.lengths)} tokens at most); lower it or set DOC_PACKING=0")
        while self.cursor + span > self.lengths[self.shard]:
            self._open((self.shard + 1) % len(self.paths))
        lo = self.cursor + self.rank * (local + 1)
        buf = torch.from_numpy(self._tokens[lo:lo + local + 1].astype(np.int64))
        self.cursor += span
        return buf[:-1].view(1, local), buf[1:].view(1, local)

    def state_dict(self) -> dict:
        return {"packing": True, "shard": self.shard, "cursor": self.cursor,
                "shards": [p.name for p in self.paths]}

    def load_state_dict(self, d: dict) -> None:
        if not d.get("packing") or list(d.get("shards", [])) != [p.name for p in self.paths]:
            raise ValueError("loader state was saved by another loader (DOC_PACKING) or over other "
                             "train shards; resume with the same DOC_PACKING and DATA_PATH")
        self._open(int(d["shard"]))
        self.cursor = int(d["cursor"])
