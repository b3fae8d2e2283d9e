"""eval_bpb.py: pre- vs post-quant val_bpb, run comparison with a DIVERGENCE alarm, and
per-tensor quantization sensitivity.

    python eval_bpb.py RUN_DIR [--mode chunked|sliding|both] [--max-tokens N]
    python eval_bpb.py --checkpoint ema.pt --artifact final_model.gkq --data DIR --tokenizer M
    python eval_bpb.py --compare RUN_A RUN_B ... [--evaluate] [--strict] [--gap-threshold 0.005]
    python eval_bpb.py RUN_DIR --ttt chunk|lora [--ttt-on post|pre]   # third number: post+TTT
    python eval_bpb.py --compare RUN_A RUN_B --rank-by post_ttt
    python eval_bpb.py RUN_DIR --sensitivity [--sensitivity-by class] --max-tokens 8192
    python eval_bpb.py RUN_DIR --sensitivity --split train   # to steer the fitter (QUANT_SENSITIVITY)

Why: a change that improves full-precision loss can make the quantized model worse, so pre
and post must be measured the same way, side by side, and disagreements flagged loudly.
Works under torchrun (rank 0 prints and writes). Set GOLF_DEBUG=1 for tracebacks.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from golf import rundir
from golf.atomic import atomic_write_json, file_sha256
from golf.evaluate import EvalError, run_eval

CLASSES = ("attention", "mlp", "embedding", "other")


# ----------------------------------------------------------------------------- comparison
RANK_KEYS = ("pre", "post", "post_ttt")


def find_divergences(rows: Sequence[dict], gap_threshold: float = 0.005) -> list[str]:
    """Warnings for run pairs whose pre- and post-quant orderings disagree, for pairs whose
    post-quant and post-TTT orderings disagree (both have a "post_ttt"), and for runs whose gap
    (post - pre) exceeds `gap_threshold`. rows: [{"run", "pre", "post", "post_ttt"?}] (val_bpb)."""
    out: list[str] = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if a.get("post_ttt") is None or b.get("post_ttt") is None:
                continue
            dpost, dttt = a["post"] - b["post"], a["post_ttt"] - b["post_ttt"]
            if dpost * dttt < 0:
                win, lose = (a, b) if dpost < 0 else (b, a)
                out.append(f"ordering flips after TTT: {win['run']} beats {lose['run']} post-quant "
                           f"({win['post']:.4f} < {lose['post']:.4f}) but loses post-TTT "
                           f"({win['post_ttt']:.4f} > {lose['post_ttt']:.4f})")
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            dpre = a["pre"] - b["pre"]
            dpost = a["post"] - b["post"]
            if dpre * dpost < 0:
                better_pre, worse_pre = (a, b) if dpre < 0 else (b, a)
                out.append(f"ordering flips: {better_pre['run']} beats {worse_pre['run']} pre-quant "
                           f"({better_pre['pre']:.4f} < {worse_pre['pre']:.4f}) but loses post-quant "
                           f"({better_pre['post']:.4f} > {worse_pre['post']:.4f})")
    for r in rows:
        gap = r["post"] - r["pre"]
        if gap > gap_threshold:
            out.append(f"{r['run']}: quantization gap {gap:+.4f} exceeds {gap_threshold:.4f}")
    return out


def divergence_box(warnings: Sequence[str]) -> str:
    """A boxed banner that cannot be missed in a log."""
    lines = [f"!!! DIVERGENCE: {w}" for w in warnings]
    width = max(len(s) for s in lines) + 4
    bar = "!" * width
    return "\n".join([bar] + [f"! {s:<{width - 4}} !" for s in lines] + [bar])


def compare_runs(run_dirs: Sequence[str], *, evaluate: bool = False, gap_threshold: float = 0.005,
                 log: Callable[[str], None] = print, rank_by: str = "post",
                 **eval_kwargs: Any) -> tuple[list[dict], list[str]]:
    """Rows {run, pre, post, gap, post_ttt, ttt_gain, mode, partial} from each RUN/eval.json,
    plus divergence warnings. `rank_by` must be a number every run has (checked here)."""
    if rank_by not in RANK_KEYS:
        raise EvalError(f"--rank-by {rank_by!r}: use one of {', '.join(RANK_KEYS)}")
    rows: list[dict] = []
    for rd in run_dirs:
        path = Path(rd) / rundir.EVAL
        if not path.is_file():
            if not evaluate:
                raise EvalError(f"{path}: missing; run `python eval_bpb.py {rd}` first or pass --evaluate")
            run_eval(run_dir=rd, log=log, **eval_kwargs)
        try:
            rep = json.loads(path.read_text())
            ttt = rep.get("post_ttt") or {}
            rows.append({"run": str(rd), "pre": rep["pre"]["val_bpb"], "post": rep["post"]["val_bpb"],
                         "gap": rep["gap"], "mode": rep.get("mode", "?"),
                         "partial": bool(rep.get("partial")), "post_ttt": ttt.get("val_bpb"),
                         "ttt_gain": ttt.get("ttt_gain"), "ttt": ttt.get("ttt")})
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise EvalError(f"{path}: not a complete eval.json ({exc!r}); re-run eval_bpb.py on it "
                            "with both a checkpoint and an artifact") from None
    lacking = [r["run"] for r in rows if r.get(rank_by) is None]
    if lacking:
        raise EvalError(f"--rank-by {rank_by}: {', '.join(lacking)} has no {rank_by} number; "
                        f"evaluate it with `python eval_bpb.py RUN --ttt chunk` (or lora) first")
    if len({r["ttt"] for r in rows}) > 1:
        log("warning: runs were adapted with different TTT modes (or some without TTT); "
            "post_ttt numbers are comparable only under the same settings")
    if len({(r["mode"], r["partial"]) for r in rows}) > 1:
        log("warning: runs were evaluated in different modes/partial settings; re-evaluate them "
            "the same way before trusting the ordering")
    return rows, find_divergences(rows, gap_threshold)


def format_compare(rows: Sequence[dict], rank_by: str = "post") -> str:
    """Runs best first by `rank_by`; quant gap and TTT gain side by side."""
    w = max([len("run")] + [len(r["run"]) for r in rows])
    lines = [f"ranked by {rank_by}",
             f"{'run':<{w}}  {'pre_bpb':>10} {'post_bpb':>10} {'gap':>10} {'ttt_bpb':>10} "
             f"{'ttt_gain':>10}  mode"]

    def num(v: Any, sign: bool = False) -> str:
        return "-".rjust(10) if v is None else (f"{v:>+10.6f}" if sign else f"{v:>10.6f}")
    for r in sorted(rows, key=lambda r: r[rank_by]):
        ttt = f" ttt:{r['ttt']}" if r.get("ttt") else ""
        lines.append(f"{r['run']:<{w}}  {num(r['pre'])} {num(r['post'])} {num(r['gap'], True)} "
                     f"{num(r.get('post_ttt'))} {num(r.get('ttt_gain'), True)}  "
                     f"{r['mode']}{ttt}{' (partial)' if r['partial'] else ''}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- sensitivity
def tensor_classes(names: Sequence[str]) -> dict[str, str]:
    """Map each state-dict name to attention | mlp | embedding | other."""
    out: dict[str, str] = {}
    for n in names:
        parts = n.lower().split(".")
        if any("emb" in p or p == "lm_head" for p in parts):
            out[n] = "embedding"
        elif any("attn" in p or p == "attention" for p in parts):
            out[n] = "attention"
        elif any("mlp" in p for p in parts):
            out[n] = "mlp"
        else:
            out[n] = "other"
    return out


def run_sensitivity(run_dir: str | None = None, *, checkpoint: str | None = None,
                    artifact: str | None = None, by: str = "tensor", data: str | None = None,
                    tokenizer: str | None = None, seq_len: int | None = None, stride: int = 0,
                    max_tokens: int | None = 8192, batch_tokens: int | None = None,
                    device: str | None = None, out_dir: str | None = None,
                    byte_check: bool = True, log: Callable[[str], None] = print,
                    split: str = "val") -> dict:
    """Δval_bpb from quantizing ONE tensor (or one class) at a time, full precision elsewhere.

    split="train" measures on the last training shard instead: the form to feed the budget
    fitter (QUANT_SENSITIVITY), since an artifact tuned on validation text is not a fair score."""
    import torch
    from golf.evaluate import (default_device, evaluate_bpb, load_eval_data, load_eval_model,
                               resolve_run_files)
    import quant

    if by not in ("tensor", "class"):
        raise EvalError(f"--sensitivity-by must be tensor or class, got {by!r}")
    exp_cfg, checkpoint, artifact = resolve_run_files(run_dir, checkpoint, artifact)
    if checkpoint is None or artifact is None:
        raise EvalError("sensitivity needs both full-precision weights (ema.pt/model.pt or "
                        "--checkpoint) and an artifact (final_model.gkq or --artifact)")
    device = device or default_device()
    model, cfg, _ = load_eval_model(checkpoint, cfg_override=exp_cfg, device=device)
    load_eval_model(artifact, cfg_override=cfg, device="cpu")  # config check, clear error
    deq, _meta = quant.load_artifact(artifact)
    live = model.state_dict()
    full = {k: v.detach().clone() for k, v in live.items()}
    ptr_names: dict[int, list[str]] = {}      # tied weights (e.g. tok_emb / lm_head) share storage
    for k, v in live.items():
        ptr_names.setdefault(v.data_ptr(), []).append(k)
    aliases = {k: names for names in ptr_names.values() for k in names}
    ed = load_eval_data(data or cfg.data_path, tokenizer or cfg.tokenizer_path, cfg.vocab_size,
                        max_tokens=max_tokens, byte_check=byte_check, log=log, split=split)
    kw = dict(seq_len=seq_len or cfg.effective_eval_seq_len, stride=stride,
              batch_tokens=batch_tokens or cfg.val_batch_size, device=device,
              max_tokens=ed.n_targets)

    def score(replaced: Sequence[str]) -> float:
        sd = dict(full)
        for name in replaced:
            for alias in aliases.get(name, [name]):
                sd[alias] = deq[name].to(full[alias].dtype)
        model.load_state_dict(sd)
        return evaluate_bpb(model, ed.tokens, ed.lut, **kw).val_bpb

    changed = [k for k in full if k in deq and deq[k].shape == full[k].shape
               and aliases.get(k, [k])[0] == k
               and not torch.equal(deq[k].float().cpu(), full[k].float().cpu())]
    groups: dict[str, list[str]] = {}
    if by == "tensor":
        groups = {k: [k] for k in changed}
    else:
        for k, c in tensor_classes(changed).items():
            groups.setdefault(c, []).append(k)
    base = score([])
    everything = score(changed)
    rows = []
    for gname, members in groups.items():
        rows.append({"name": gname, "delta_bpb": score(members) - base, "tensors": len(members),
                     "params": int(sum(full[m].numel() for m in members))})
    model.load_state_dict(full)
    rows.sort(key=lambda r: r["delta_bpb"], reverse=True)
    report = {"by": by, "base_val_bpb": base, "all_quantized_val_bpb": everything,
              "all_quantized_delta": everything - base, "partial": ed.n_targets < len(ed.tokens) - 1,
              "tokens": ed.n_targets, "checkpoint": checkpoint, "artifact": artifact,
              "artifact_sha256": file_sha256(artifact), "split": split, "rows": rows}
    log(format_sensitivity(report))
    dest = Path(out_dir or run_dir or Path(artifact).parent)
    atomic_write_json(dest / rundir.SENSITIVITY_JSON, report)
    plot_sensitivity(report, dest / rundir.SENSITIVITY_PNG)
    log(f"sensitivity:wrote {dest / rundir.SENSITIVITY_JSON} {dest / rundir.SENSITIVITY_PNG}")
    return report


def format_sensitivity(report: dict) -> str:
    rows = report["rows"]
    w = max([len("tensor")] + [len(r["name"]) for r in rows])
    lines = [f"sensitivity by {report['by']}{' (partial)' if report['partial'] else ''}: base val_bpb "
             f"{report['base_val_bpb']:.6f}, all quantized {report['all_quantized_delta']:+.6f}",
             f"{'tensor' if report['by'] == 'tensor' else 'class':<{w}}  {'d_bpb':>10} {'params':>10}"]
    lines += [f"{r['name']:<{w}}  {r['delta_bpb']:>+10.6f} {r['params']:>10,}" for r in rows]
    return "\n".join(lines)


def plot_sensitivity(report: dict, png_path: str | os.PathLike) -> Path:
    """Horizontal bar chart of Δbpb, largest at the top; written atomically."""
    import tempfile
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.28 * len(rows) + 1.2)), dpi=110)
    names = [r["name"] for r in rows][::-1]
    vals = [r["delta_bpb"] for r in rows][::-1]
    ax.barh(range(len(vals)), vals, color=["#c0392b" if v > 0 else "#2e86c1" for v in vals])
    ax.set_yticks(range(len(vals)), names, fontsize=7)
    ax.set_xlabel("Δ val_bpb when only this is quantized")
    ax.axvline(0, color="k", lw=0.6)
    ax.set_title(f"quantization sensitivity by {report['by']}"
                 f"{' (partial)' if report['partial'] else ''}", fontsize=9)
    fig.tight_layout()
    p = Path(png_path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".png", dir=p.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, p)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return p


# ----------------------------------------------------------------------------- CLI
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
    ap.add_argument("--max-tokens", type=int, help="score only the first N targets (labelled partial)")
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
    t.add_argument("--ttt", choices=("off", "chunk", "lora"),
                   help="add post_ttt: chunk = R23 per-chunk SGD, lora = per-document LoRA "
                        "(default: env TTT, else off)")
    t.add_argument("--ttt-on", choices=("post", "pre"),
                   help="adapt the dequantized artifact (post, default) or full precision (pre)")
    t.add_argument("--ttt-chunk-tokens", type=int, help="TTT_CHUNK_TOKENS (32768)")
    t.add_argument("--ttt-lr", type=float, help="TTT_LR (0.002)")
    t.add_argument("--ttt-epochs", type=int, help="TTT_EPOCHS (3)")
    t.add_argument("--ttt-lora-rank", type=int, help="TTT_LORA_RANK (8)")
    t.add_argument("--ttt-lora-lr", type=float, help="TTT_LORA_LR (0.01)")
    t.add_argument("--ttt-lora-chunk", type=int, help="TTT_LORA_CHUNK (48)")
    return ap


def ttt_settings(args: argparse.Namespace) -> Any:
    """TTTSettings from TTT_* env vars with the --ttt* flags on top; None when off."""
    from golf.ttt import TTTSettings
    s = TTTSettings.from_env(mode=args.ttt, on=args.ttt_on, chunk_tokens=args.ttt_chunk_tokens,
                             lr=args.ttt_lr, epochs=args.ttt_epochs, lora_rank=args.ttt_lora_rank,
                             lora_lr=args.ttt_lora_lr, lora_chunk=args.ttt_lora_chunk)
    return s if s.active else None


def main(argv: Sequence[str] | None = None) -> int:
    """Under torchrun (WORLD_SIZE > 1) join the group for this command and leave it after;
    a group the caller already made is left to the caller."""
    import torch.distributed as dist
    from golf import distributed
    args = build_parser().parse_args(argv)
    joins = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    if not joins:
        return _main(args)
    distributed.init_distributed()
    with distributed.session():
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    from golf.errors import user_errors
    with user_errors():
        from golf.evaluate import dist_info
        rank, _ = dist_info()
        say: Callable[[str], None] = print if rank == 0 else (lambda _m: None)
        common = dict(data=args.data, tokenizer=args.tokenizer, seq_len=args.seq_len,
                      max_tokens=args.max_tokens, batch_tokens=args.batch_tokens,
                      device=args.device, byte_check=not args.skip_byte_check)
        if args.compare:
            rows, warns = compare_runs(args.compare, evaluate=args.evaluate,
                                       gap_threshold=args.gap_threshold, log=say,
                                       rank_by=args.rank_by, mode=args.mode, stride=args.stride,
                                       ttt=ttt_settings(args), **common)
            say(format_compare(rows, args.rank_by))
            if warns:
                say(divergence_box(warns))
                return 3 if args.strict else 0
            say("no divergence: pre-, post-quant (and post-TTT) orderings agree and all gaps are "
                f"within {args.gap_threshold}")
            return 0
        if args.sensitivity or args.sensitivity_by:
            run_sensitivity(args.run_dir, checkpoint=args.checkpoint, artifact=args.artifact,
                            by=args.sensitivity_by or "tensor", stride=args.stride or 0,
                            out_dir=args.out, log=say, split=args.split, **common)
            return 0
        run_eval(run_dir=args.run_dir, checkpoint=args.checkpoint, artifact=args.artifact,
                 mode=args.mode, stride=args.stride, out=args.out, log=say,
                 ttt=ttt_settings(args), **common)
    return 0


if __name__ == "__main__":
    sys.exit(main())
