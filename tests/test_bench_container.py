"""bench/container.py on tiny code matrices: the order-0 bound against an independent count, and
every coder's row (each checked bit-exact inside the bench) in the table."""
from __future__ import annotations

import math

import numpy as np

from bench import container
from conftest import needs_lrzip


def _mats():
    g = np.random.default_rng(0)
    return [("tok_emb.weight", np.clip(np.rint(g.normal(0, 4, (64, 16))), -63, 63).astype(np.int8)),
            ("blocks.0.attn.c_q.weight", g.integers(-3, 4, (16, 16)).astype(np.int8)),
            ("bigram.embed.weight", np.full((8, 16), 5, np.int8))]


def test_order0_bits_is_the_sum_of_each_tensors_n_log_n_minus_counts():
    want = 0.0
    for _n, m in _mats():
        _vals, counts = np.unique(m, return_counts=True)
        want += m.size * math.log2(m.size) - sum(c * math.log2(c) for c in counts)
    assert abs(container.order0_bits(_mats()) - want) < 1e-6


@needs_lrzip
def test_every_coder_round_trips_and_is_in_the_table():
    mats = _mats()
    res = {"codes": sum(m.size for _n, m in mats), "order0_bytes": container.order0_bits(mats) / 8,
           "coders": container.coders(mats), "artifacts": {}}
    assert set(res["coders"]) == {"golfkit joint rANS (today's code stream)",
                                  "brotli-11 per tensor (record_1855 before)",
                                  "lrzip per-group v1 (+ brotli rest)", "lrzip per-group v2",
                                  "golfkit context rANS (new)"}
    text = container.table(res)
    for label, row in res["coders"].items():
        assert row["bytes"] > 0 and f"| {label} | {row['bytes']:,} |" in text
