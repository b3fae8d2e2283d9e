"""What a submission says about itself: submission.json (results, bytes, compliance) and the
generated README.md, both built from the runs' files, never from hand-typed numbers."""
from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from golf.run import rundir as rd
from golf.run import settings
from golf.run.errors import PackError
from golf.run.rules import TRAIN_LIMIT_S
from golf.submission.budget import CAP_BYTES, BudgetTable, format_budget_table
from golf.submission.checks import Check, format_checks
from golf.submission.evaltime import eval_cost, format_eval_cost
from golf.submission.run import RunInfo, headline, score_env, tilt_in_score, ttt_env
from golf.submission.stats import mean_std, welch_one_sided


# ----------------------------------------------------------------------------- submission.json
def _seed_result(run: RunInfo, code: int) -> dict[str, Any]:
    post, pre = run.eval["post"], run.eval.get("pre") or {}
    head, _method = headline(run.eval)
    ttt, tilt = run.eval.get("post_ttt") or {}, run.eval.get("post_tilt") or {}
    model = (run.run_dir / rd.ARTIFACT).stat().st_size
    cost = eval_cost(run.eval, run.eval.get("hardware") or run.hardware)
    return {"val_bpb": head["val_bpb"], "val_loss": head["val_loss"],
            "pre_quant_val_bpb": pre.get("val_bpb"), "post_quant_val_bpb": post.get("val_bpb"),
            "post_ttt_val_bpb": ttt.get("val_bpb") if ttt.get("weights") == "post" else None,
            "post_tilt_val_bpb": tilt.get("val_bpb") if tilt.get("weights") == "post" else None,
            "eval_record": run.eval_file, "eval_time_s": cost.measured,
            "eval_time_parts": {p.name: p.seconds for p in cost.counted},
            "eval_time_hardware": cost.hardware, "bytes_total": code + model,
            "bytes_model": model, "steps": run.steps, "train_time_ms": run.train_time_ms}


def _significance(losses: list[float], baseline: Any) -> dict[str, Any] | None:
    if baseline is None or len(losses) < 2:
        return None
    if isinstance(baseline, Mapping):
        bm, bs, bn = float(baseline["mean"]), float(baseline.get("std", 0.0)), int(baseline.get("n", 1))
    else:
        bm, bs = mean_std([float(x) for x in baseline])
        bn = len(baseline)
    m, s = mean_std(losses)
    res = welch_one_sided(m, s, len(losses), bm, bs, bn)
    return {**res.to_dict(), "baseline_mean": bm, "baseline_std": bs, "baseline_n": bn,
            "metric": "val_loss (nats/token)"}


def _scoring_method(runs: Sequence[RunInfo]) -> str:
    """The one eval_method every seed shares (seeds scored differently cannot be averaged)."""
    methods = sorted({headline(r.eval)[1] for r in runs})
    if len(methods) > 1:
        raise PackError(f"runs were scored differently ({'; '.join(methods)}); evaluate every "
                        "seed the same way (same mode, same TTT) before packing them together")
    envs = {json.dumps(score_env(r.eval), sort_keys=True, default=str): r for r in runs}
    if len(envs) > 1:
        raise PackError("runs were scored with different TTT/tilt settings ("
                        + "; ".join(f"{r.run_dir / r.eval_file}: {e}" for e, r in envs.items())
                        + "); evaluate every seed with the same variables before packing them")
    return methods[0]


def _auto_name_and_blurb(c: Mapping[str, Any]) -> tuple[str, str]:
    """Defaults for --name/--blurb, read from the primary run's config."""
    name = f"golfkit {c.get('num_layers')}L d{c.get('model_dim')} {c.get('quant_method', 'gptq')}"
    blurb = (f"{c.get('num_layers')}-layer d{c.get('model_dim')} GQA {c.get('num_heads')}/"
             f"{c.get('num_kv_heads')} XSA (last {c.get('xsa_last_n')}) QK-gain "
             f"{c.get('qk_gain_init')}, Muon+Adam, EMA {c.get('ema_decay')}; "
             f"{c.get('quant_method', 'gptq')} quantization fitted to the byte budget "
             f"(golfkit).")
    return name, blurb


def _ttt_block(head: Mapping[str, Any]) -> dict[str, Any]:
    """The TTT that made the score: its mode, knobs and (env) the variables that re-create it."""
    return {"mode": head.get("ttt"), "weights": head.get("weights"), "knobs": head.get("knobs"),
            "env": ttt_env(head),
            "window": head.get("mode"), "stride": head.get("stride"), "seq_len": head.get("seq_len")}


def _tilt_block(ev: Mapping[str, Any]) -> dict[str, Any]:
    """The n-gram tilt in the score: its variables (env name -> value) and what it did."""
    hints = ev.get("post_tilt") or {}
    return {"env": dict(tilt_in_score(ev) or {}), "gated": hints.get("gated"),
            "hint_seconds": hints.get("hint_seconds")}


def _env_value(v: Any) -> str:
    return str(int(v)) if isinstance(v, bool) else str(v)


def _last_train_read_ms(run: RunInfo) -> float:
    """When the run last read training data, on the training clock: the loop's stop, or the end
    of the Hessian / Fisher calibration on training batches when that came after it."""
    calib = (run.hessians or {}).get("elapsed_ms")
    return max(run.train_time_ms, calib) if calib is not None else run.train_time_ms


def _compliance(runs: Sequence[RunInfo], sub: Mapping[str, Any], table: BudgetTable,
                heads: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The rule flags; roundtrip_exact and eval_under_600s are filled in by the pack once known."""
    ev = runs[0].eval
    # the rule bounds every read of training data, so the calibration after the loop counts too
    train_ok = all(r.train_time_ms is not None and _last_train_read_ms(r) <= TRAIN_LIMIT_S * 1000
                   for r in runs)
    calib_ok = all(r.hessians is not None and r.hessians.get("train_budget_ms") is not None
                   and r.hessians.get("elapsed_ms", 0) <= r.hessians["train_budget_ms"] for r in runs)
    return {"artifact_under_16mb": sub["bytes_total"] <= min(table.cap, CAP_BYTES),
            "training_under_600s": train_ok,
            "calibration_on_train_data_in_budget": calib_ok,
            "roundtrip_exact": None, "three_seeds": len(runs) >= 3,
            "full_val_split": not bool(ev.get("partial")),
            # what ran: True = the score is score-first TTT (both golfkit modes are,
            # by construction and tests/test_ttt.py); None = no TTT in the score
            "score_first_ttt": (all(bool(h.get("score_first")) for h in heads)
                                if "ttt" in sub else None),
            "no_pre_quant_ttt": True,   # TTT on full-precision weights never scores
            # True = the score is tilted by the token-only n-gram hint (strict prefix, the only
            # form golf.eval.tilt runs: C1/C2 by construction and test); None = no tilt in the score
            "ngram_tilt_token_only": True if "tilt" in sub else None,
            "eval_under_600s": None}    # set from the eval-time check in pack_run


@dataclass(frozen=True)
class Claim:
    """What a submission says about itself: its name, the author's GitHub id, the blurb (each
    "" = generated from the run), and the baseline it claims to beat ({"mean", "std", "n"} or
    a list of val_loss values in nats, for the Welch test; None = no significance block)."""
    name: str = ""
    github_id: str = ""
    blurb: str = ""
    baseline: Any = None


def build_submission_json(runs: Sequence[RunInfo], table: BudgetTable, claim: Claim = Claim(), *,
                          track: str = "10min_16mb", date: str | None = None) -> dict[str, Any]:
    """submission.json; with several seeds val_bpb/val_loss are means and std is reported."""
    name, blurb = claim.name, claim.blurb
    results = {str(r.seed): _seed_result(r, table.code_bytes) for r in runs}
    method = _scoring_method(runs)
    heads = [headline(r.eval)[0] for r in runs]
    bpbs = [h["val_bpb"] for h in heads]
    losses = [h["val_loss"] for h in heads]
    pres = [r.eval.get("pre", {}).get("val_bpb") for r in runs]
    primary = runs[0]
    auto_name, auto_blurb = _auto_name_and_blurb(primary.config)
    sub: dict[str, Any] = {
        "author": settings.read("GOLF_AUTHOR", os.environ) or name, "name": name or auto_name,
        "github_id": claim.github_id, "blurb": blurb or auto_blurb,
        "date": date or _dt.date.today().isoformat(), "track": track,
        "val_bpb": mean_std(bpbs)[0], "val_loss": mean_std(losses)[0],
        "pre_quant_val_bpb": mean_std(pres)[0] if None not in pres else None,
        "bytes_total": max(v["bytes_total"] for v in results.values()),
        "bytes_code": table.code_bytes, "bytes_model": table.model_bytes,
        "seeds": [r.seed for r in runs], "seed_results": results,
        "hardware": primary.hardware, "eval_method": method,
        "eval_seq_len": primary.eval.get("seq_len"), "eval_partial": bool(primary.eval.get("partial")),
        "post_quant_val_bpb": mean_std([r.eval["post"]["val_bpb"] for r in runs])[0],
    }
    sub["eval_record"] = primary.eval_file
    if method.startswith("ttt("):
        sub["ttt"] = _ttt_block(heads[0])
    if tilt_in_score(primary.eval):
        sub["tilt"] = _tilt_block(primary.eval)
    if score_env(primary.eval):
        sub["eval_env"] = score_env(primary.eval)
    if len(runs) > 1:
        sub["val_bpb_std"] = mean_std(bpbs)[1]
        sub["val_loss_std"] = mean_std(losses)[1]
    sig = _significance(losses, claim.baseline)
    if sig:
        sub["significance"] = sig
    sub["compliance"] = _compliance(runs, sub, table, heads)
    return sub


# ----------------------------------------------------------------------------- README
def _f6(v: Any) -> str:
    return f"{v:.6f}" if v is not None else "-"


def _results_section(sub: Mapping[str, Any]) -> list[str]:
    """Per-seed table, then the mean/std and the Welch test when there are several seeds."""
    lines = ["## Results", "", "| seed | val_bpb | val_loss | pre-quant val_bpb | post-quant val_bpb | "
             "post-TTT val_bpb | bytes_total | steps | train time (s) | eval time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for seed, r in sub["seed_results"].items():
        tt = f"{r['train_time_ms'] / 1000:.1f}" if r["train_time_ms"] is not None else "-"
        et = f"{r['eval_time_s']:.1f}" if r.get("eval_time_s") is not None else "-"
        lines.append(f"| {seed} | {r['val_bpb']:.6f} | {r['val_loss']:.6f} | {_f6(r['pre_quant_val_bpb'])} | "
                     f"{_f6(r.get('post_quant_val_bpb'))} | {_f6(r.get('post_ttt_val_bpb'))} | "
                     f"{r['bytes_total']:,} | {r['steps'] if r['steps'] is not None else '-'} | {tt} | {et} |")
    if "val_bpb_std" in sub:
        lines += ["", f"Mean val_bpb {sub['val_bpb']:.6f} (std {sub['val_bpb_std']:.6f}), "
                  f"mean val_loss {sub['val_loss']:.6f} (std {sub['val_loss_std']:.6f})."]
    if "significance" in sub:
        s = sub["significance"]
        lines.append(f"One-sided Welch t-test vs baseline mean {s['baseline_mean']:.5f}: "
                     f"delta {s['delta_nats']:.5f} nats, t={s['t']:.3f}, df={s['df']:.1f}, "
                     f"p={s['p_value']:.4g}.")
    return lines


def _eval_section(sub: Mapping[str, Any], runs: Sequence[RunInfo]) -> list[str]:
    """The settings that produced the score and what its evaluation cost, part by part."""
    lines = ["## Evaluation", "", f"Score read from `{sub['eval_record']}`."]
    env = sub.get("eval_env")
    if env:
        lines += ["The TTT and n-gram tilt settings that produced it:", "", "```bash",
                  " \\\n".join(f"{k}={_env_value(v)}" for k, v in env.items()), "```"]
    lines += [""]
    for r in runs:
        cost = eval_cost(r.eval, r.eval.get("hardware") or r.hardware)
        lines += ["```", format_eval_cost(cost, sub.get("eval_speed_ratio"),
                                          f"eval time, seed {r.seed}"), "```", ""]
    return lines


def render_readme(sub: Mapping[str, Any], runs: Sequence[RunInfo], table: BudgetTable,
                  forms: Mapping[str, int], shipped: str, checks: Sequence[Check]) -> str:
    """The submission's README, generated from the run's files (no hand-typed numbers)."""
    lines = [f"# {sub['name']}: val_bpb {sub['val_bpb']:.5f}", "", sub["blurb"] or "", ""]
    lines += _results_section(sub)
    lines += ["", f"Evaluation: {sub['eval_method']}, seq_len {sub['eval_seq_len']}"
              + (" (PARTIAL val split)" if sub["eval_partial"] else " (full val split)")
              + f"; hardware {sub['hardware']}.", ""]
    lines += _eval_section(sub, runs)
    timings = runs[0].summary.get("phase_seconds") or {}
    if timings:
        lines += ["## Timings", "", "| phase | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in timings.items()] + [""]
    lines += ["## Byte budget", "", "```", format_budget_table(table), "```", "",
              "train_gpt.py forms: " + ", ".join(f"{k} {v:,} B" for k, v in forms.items())
              + f"; shipped: {shipped}.", "",
              "## Checks", "", "```", format_checks(checks), "```", "",
              "## Configuration", "", "```json", json.dumps(runs[0].config, indent=2, sort_keys=True),
              "```", "",
              "## Reproduce", "", "```bash", "pip install -r requirements.txt",
              f"SEED={runs[0].seed} torchrun --standalone --nproc_per_node=8 train_gpt.py",
              "# evaluate the shipped artifact only:",
              "EVAL_ONLY=1 ARTIFACT=final_model.gkq DATA_PATH=... TOKENIZER_PATH=... python train_gpt.py",
              "```", "", "train_gpt.py is a single file: golfkit's modules are embedded and served "
              "by an import hook; it imports only the packages in requirements.txt.", ""]
    return "\n".join(lines)
