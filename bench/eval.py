"""Eval throughput: tokens/s of the CPU-preset model, chunked vs sliding (stride 64).

    python -m bench.eval [--quick]

Sliding eval runs ~seq_len/stride forward passes over the stream, so its cost ratio to
chunked eval is what users pay for the better context; this measures it. Weights are random
(throughput does not depend on them) and tokens are random ids with a 1-byte-per-token LUT.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run(quick: bool = False) -> dict:
    import numpy as np
    import torch
    from golf.eval.bpb import ByteLUT
    from golf.run.config import Config
    from golf.eval.score import Scoring, evaluate_bpb
    from golf.model.gpt import GPT

    cfg = Config.from_env({}, cpu_preset=True)
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    seq_len, stride = cfg.effective_eval_seq_len, 64
    n_tokens = 8_192 if quick else 65_536
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, cfg.vocab_size, size=n_tokens + 1).astype(np.uint16)
    V = cfg.vocab_size
    lut = ByteLUT(base_bytes=np.ones(V, dtype=np.int16), has_leading_space=np.zeros(V, dtype=bool),
                  is_boundary=np.zeros(V, dtype=bool))
    out: dict = {"device": "cpu", "threads": torch.get_num_threads(), "model": {
        "num_layers": cfg.num_layers, "model_dim": cfg.model_dim, "vocab_size": V},
        "seq_len": seq_len, "stride": stride, "tokens": n_tokens, "quick": quick}
    evaluate_bpb(model, tokens[:seq_len + 1], lut, Scoring(seq_len))  # warm-up
    for name, s in (("chunked", 0), ("sliding", stride)):
        res = evaluate_bpb(model, tokens, lut,
                           Scoring(seq_len, stride=s, batch_tokens=cfg.val_batch_size))
        out[name] = {"seconds": round(res.seconds, 3), "tokens_per_s": round(res.tokens_per_s, 1),
                     "tokens": res.tokens}
    out["sliding_cost_ratio"] = round(out["sliding"]["seconds"] / out["chunked"]["seconds"], 2)
    out["ideal_ratio"] = seq_len / stride
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    res = run(quick=ap.parse_args(argv).quick)
    print(json.dumps(res, indent=2))
    print(f"{'mode':<9} {'tokens/s':>10} {'seconds':>8}")
    for m in ("chunked", "sliding"):
        print(f"{m:<9} {res[m]['tokens_per_s']:>10,.0f} {res[m]['seconds']:>8.2f}")
    print(f"sliding(stride {res['stride']}) / chunked cost: {res['sliding_cost_ratio']}x "
          f"(ideal seq_len/stride = {res['ideal_ratio']:.0f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
