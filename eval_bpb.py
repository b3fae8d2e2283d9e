"""eval_bpb.py: pre- vs post-quant val_bpb, run comparison with a DIVERGENCE alarm, and
per-tensor quantization sensitivity.

    python eval_bpb.py RUN_DIR [--mode chunked|sliding|both] [--max-tokens N]
    python eval_bpb.py --checkpoint ema.pt --artifact final_model.gkq --data DIR --tokenizer M
    python eval_bpb.py --compare RUN_A RUN_B ... [--evaluate] [--strict] [--gap-threshold 0.005]
    python eval_bpb.py RUN_DIR --ttt lora|chunk|lora_golf [--ttt-on post|pre]   # post+TTT
    NGRAM_TILT_ENABLED=1 python eval_bpb.py RUN_DIR [--ttt lora]       # + post+tilt (TTT tilted)
    python eval_bpb.py --compare RUN_A RUN_B --rank-by post_ttt
    python eval_bpb.py RUN_DIR --sensitivity [--sensitivity-by class] --max-tokens 8192
    python eval_bpb.py RUN_DIR --sensitivity --split train   # to steer the fitter (QUANT_SENSITIVITY)

Why: a change that improves full-precision loss can make the quantized model worse, so pre
and post must be measured the same way, side by side, and disagreements flagged loudly.
Works under torchrun (rank 0 prints and writes). Set GOLF_DEBUG=1 for tracebacks.
"""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext
from typing import Any, Callable, Sequence

import torch.distributed as dist

from golf.run import distributed
from golf.run import rundir as rd
from golf.eval.compare import RANK_KEYS, compare_runs, divergence_box, format_compare
from golf.run.errors import user_errors
from golf.eval.destination import evaluate_run_dir
from golf.eval.score import EvalRequest, run_eval
from golf.eval.sensitivity import run_sensitivity
from golf.eval.tilt import TiltSettings
from golf.eval.ttt import TTT_MODES, TTTSettings


def _env_int(name: str) -> int | None:
    """An integer environment variable, None when unset (one clear line when not an integer)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"error: {name}={raw!r} is not an integer; unset it or pass "
                         "--max-tokens N") from None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="eval_bpb.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", nargs="?", help="run directory (config.json, ema.pt, final_model.gkq)")
    ap.add_argument("--checkpoint", help="full-precision .pt (default RUN_DIR/ema.pt, else model.pt)")
    ap.add_argument("--artifact", help="quantized artifact (default RUN_DIR/final_model.gkq)")
    ap.add_argument("--data", help="folder with fineweb_val_*.bin (default: config DATA_PATH)")
    ap.add_argument("--tokenizer", help="SentencePiece model (default: config TOKENIZER_PATH)")
    ap.add_argument("--seq-len", type=int, help="window length (default: config EVAL_SEQ_LEN)")
    ap.add_argument("--stride", type=int, help="sliding stride (default: config EVAL_STRIDE)")
    ap.add_argument("--mode", choices=("chunked", "sliding", "both"),
                    help="default: sliding when stride > 0, else chunked")
    ap.add_argument("--max-tokens", type=int, default=_env_int("MAX_EVAL_TOKENS"),
                    help="score only the first N targets (labelled partial; default env "
                         "MAX_EVAL_TOKENS, else the run's own); a RUN's diagnostic evals are "
                         "written beside eval.json as eval.<label>.json")
    ap.add_argument("--doc-windows", action="store_true", default=None,
                    help="no window crosses a BOS (default: on when the model has DOC_ATTENTION)")
    ap.add_argument("--batch-tokens", type=int, help="tokens per forward (default VAL_BATCH_SIZE)")
    ap.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    ap.add_argument("--out", help="eval.json path (default RUN_DIR/eval.json)")
    ap.add_argument("--skip-byte-check", action="store_true",
                    help="escape hatch: do not compare LUT bytes with the decoded text")
    ap.add_argument("--compare", nargs="+", metavar="RUN", help="compare runs' eval.json")
    ap.add_argument("--evaluate", action="store_true", help="with --compare: evaluate runs lacking eval.json")
    ap.add_argument("--gap-threshold", type=float, default=0.005)
    ap.add_argument("--strict", action="store_true", help="with --compare: exit 3 on DIVERGENCE")
    ap.add_argument("--sensitivity", action="store_true", help="per-tensor Δbpb from quantization")
    ap.add_argument("--sensitivity-by", choices=("tensor", "class"), help="implies --sensitivity")
    ap.add_argument("--split", choices=("val", "train"), default="val",
                    help="sensitivity data: val, or train (last training shard) for QUANT_SENSITIVITY")
    ap.add_argument("--rank-by", choices=RANK_KEYS, default="post",
                    help="with --compare: order runs by this val_bpb (default post)")
    t = ap.add_argument_group("test-time training (score-first; other knobs: TTT_* env vars)")
    t.add_argument("--ttt", choices=("off", *TTT_MODES),
                   help="add post_ttt: " + "; ".join(f"{k} = {m.about}" for k, m in TTT_MODES.items())
                        + " (default: env TTT, else off)")
    t.add_argument("--ttt-on", choices=("post", "pre"),
                   help="adapt the dequantized artifact (post, default) or full precision (pre)")
    t.add_argument("--ttt-chunk-tokens", type=int, help="TTT_CHUNK_TOKENS (32768)")
    t.add_argument("--ttt-lr", type=float, help="TTT_LR (0.002)")
    t.add_argument("--ttt-epochs", type=int, help="TTT_EPOCHS (3)")
    t.add_argument("--ttt-lora-rank", type=int, help="TTT_LORA_RANK (lora: 80)")
    t.add_argument("--ttt-lora-lr", type=float, help="TTT_LORA_LR (lora: 1e-4)")
    t.add_argument("--ttt-lora-chunk", type=int, help="TTT_LORA_CHUNK (lora_golf: 48)")
    return ap


def ttt_settings(args: argparse.Namespace) -> Any:
    """TTTSettings from TTT_* env vars with the --ttt* flags on top; None when off."""
    s = TTTSettings.from_env(mode=args.ttt, on=args.ttt_on, chunk_tokens=args.ttt_chunk_tokens,
                             lr=args.ttt_lr, epochs=args.ttt_epochs, lora_rank=args.ttt_lora_rank,
                             lora_lr=args.ttt_lora_lr, lora_chunk=args.ttt_lora_chunk)
    return s if s.active else None


def main(argv: Sequence[str] | None = None) -> int:
    """Under torchrun (WORLD_SIZE > 1) join the group for this command and leave it after;
    a group the caller already made is left to the caller."""
    args = build_parser().parse_args(argv)
    joins = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    if not joins:
        return _main(args)
    distributed.init_distributed()
    with distributed.session():
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    with user_errors():
        rank, _ = distributed.rank_world()
        say: Callable[[str], None] = print if rank == 0 else (lambda _m: None)
        common = dict(data=args.data, tokenizer=args.tokenizer, seq_len=args.seq_len,
                      max_tokens=args.max_tokens, batch_tokens=args.batch_tokens,
                      device=args.device, byte_check=not args.skip_byte_check)
        if args.compare:
            asked = EvalRequest(mode=args.mode, stride=args.stride, ttt=ttt_settings(args),
                                **common)
            rows, warns = compare_runs(args.compare, evaluate=args.evaluate,
                                       gap_threshold=args.gap_threshold, log=say,
                                       rank_by=args.rank_by, request=asked)
            say(format_compare(rows, args.rank_by))
            if warns:
                say(divergence_box(warns))
                return 3 if args.strict else 0
            say("no divergence: pre-, post-quant (and post-TTT) orderings agree and all gaps are "
                f"within {args.gap_threshold}")
            return 0
        if args.sensitivity or args.sensitivity_by:
            writes_run = args.run_dir and not args.out and rank == 0
            with rd.run_lock(args.run_dir, f"eval_bpb.py --sensitivity {args.run_dir}") \
                    if writes_run else nullcontext():
                asked = EvalRequest(checkpoint=args.checkpoint, artifact=args.artifact,
                                    stride=args.stride or 0, doc_windows=args.doc_windows,
                                    **common)
                run_sensitivity(args.run_dir, asked, by=args.sensitivity_by or "tensor",
                                split=args.split, out_dir=args.out, log=say)
            return 0
        request = EvalRequest(checkpoint=args.checkpoint, artifact=args.artifact, mode=args.mode,
                              stride=args.stride, ttt=ttt_settings(args),
                              tilt=TiltSettings.from_env(), doc_windows=args.doc_windows, **common)
        if args.run_dir:  # official pair, or a diagnostic beside eval.json (golf.eval.destination)
            evaluate_run_dir(args.run_dir, say, out=args.out, request=request)
        else:
            run_eval(None, request, out=args.out, log=say)
    return 0


if __name__ == "__main__":
    sys.exit(main())
