"""Per-tensor (or per-class) quantization sensitivity: the val_bpb cost of quantizing ONE
tensor at a time, full precision elsewhere.

Why: it shows where the artifact's bytes buy the most, and, measured on training text
(split="train"), it is what the budget fitter can be steered by (QUANT_SENSITIVITY).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

import quant
from golf.run import rundir
from golf.run.atomic import atomic_write_json, file_sha256
from golf.eval.score import (EvalError, EvalRequest, Scoring, default_device, evaluate_bpb,
                           load_artifact, load_eval_data, load_eval_model, resolve_run_files,
                           window_bos)
from golf.run.plots import plot_sensitivity


def tensor_class(name: str) -> str:
    """attention | mlp | embedding | other, by quant's own rule (the one the fitter uses)."""
    return quant.classify(name, 2, 2, True, quant.QuantPolicy(small_numel=0, keep_float=()))


def tied_names(state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """name -> every name sharing its storage (tied weights, e.g. tok_emb / lm_head)."""
    by_ptr: dict[int, list[str]] = {}
    for k, v in state.items():
        by_ptr.setdefault(v.data_ptr(), []).append(k)
    return {k: names for names in by_ptr.values() for k in names}


def _quantized_groups(full: dict[str, torch.Tensor], deq: dict[str, torch.Tensor],
                      aliases: dict[str, list[str]], by: str) -> tuple[list[str], dict[str, list[str]]]:
    """The tensors the artifact changed (one name per tied group), and their grouping: one
    group per tensor, or one per quant class."""
    changed = [k for k in full if k in deq and deq[k].shape == full[k].shape
               and aliases.get(k, [k])[0] == k
               and not torch.equal(deq[k].float().cpu(), full[k].float().cpu())]
    if by == "tensor":
        return changed, {k: [k] for k in changed}
    groups: dict[str, list[str]] = {}
    for k in changed:
        groups.setdefault(tensor_class(k), []).append(k)
    return changed, groups


def run_sensitivity(run_dir: str | None, request: EvalRequest, *, by: str = "tensor",
                    split: str = "val", out_dir: str | None = None,
                    log: Callable[[str], None] = print) -> dict:
    """Δval_bpb from quantizing ONE tensor (or one class) at a time, full precision elsewhere.

    `request` names the weights, data and windows (stride None = chunked, max_tokens None =
    every target; its mode, TTT and tilt do not apply; windows stay inside documents as
    eval.json's do, golf.eval.score.window_bos). split="train" measures on the last
    training shard instead: the form to feed the budget fitter (QUANT_SENSITIVITY), since an
    artifact tuned on validation text is not a fair score."""
    if by not in ("tensor", "class"):
        raise EvalError(f"--sensitivity-by must be tensor or class, got {by!r}")
    exp_cfg, checkpoint, artifact = resolve_run_files(run_dir, request.checkpoint, request.artifact)
    if checkpoint is None or artifact is None:
        raise EvalError("sensitivity needs both full-precision weights (ema.pt/model.pt or "
                        "--checkpoint) and an artifact (final_model.gkq or --artifact)")
    device = request.device or default_device()
    model, cfg, _ = load_eval_model(checkpoint, cfg_override=exp_cfg, device=device)
    load_eval_model(artifact, cfg_override=cfg, device="cpu")  # config check, clear error
    deq, _meta = load_artifact(artifact)
    live = model.state_dict()
    full = {k: v.detach().clone() for k, v in live.items()}
    aliases = tied_names(live)
    ed = load_eval_data(request.data or cfg.data_path, request.tokenizer or cfg.tokenizer_path,
                        cfg.vocab_size, max_tokens=request.max_tokens,
                        byte_check=request.byte_check, log=log, split=split)
    scoring = Scoring(seq_len=request.seq_len or cfg.effective_eval_seq_len,
                      stride=request.stride or 0,
                      batch_tokens=request.batch_tokens or cfg.val_batch_size, device=device,
                      doc_bos=window_bos(cfg, request.doc_windows))

    def score(replaced: Sequence[str]) -> float:
        sd = dict(full)
        for name in replaced:
            for alias in aliases.get(name, [name]):
                sd[alias] = deq[name].to(full[alias].dtype)
        model.load_state_dict(sd)
        return evaluate_bpb(model, ed.tokens, ed.lut, scoring, max_tokens=ed.n_targets).val_bpb

    changed, groups = _quantized_groups(full, deq, aliases, by)
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
              "artifact_sha256": file_sha256(artifact), "split": split,
              "doc_windows": scoring.doc_bos is not None, "rows": rows}
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
