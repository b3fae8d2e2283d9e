"""Pack a run into a challenge submission folder: one self-contained train_gpt.py, the
artifact, submission.json, a generated README, logs, requirements, and a proof that it works.

Why every step reads files on disk: the numbers recorded are those of what ships. The folder is
built in a temp dir beside the destination and swapped in only when every step passed, so a
failed pack never leaves a partial folder nor destroys a previous good one.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from golf import rundir as rd
from golf.packing.amalgamate import (PIP_NAMES, compressed_forms, module_closure, render_plain,
                                     smallest_compressed)
from golf.packing.budget import (CAP_BYTES, BudgetTable, budget_table, enforce_budget,
                                 format_budget_table)
from golf.packing.checks import (Check, check_budget, check_calibration, check_eval_time,
                                 check_fields, check_record, check_wallclock, format_checks)
from golf.packing.errors import BudgetError, PackError, RoundTripError
from golf.packing.roundtrip import RoundTripResult, run_roundtrip
from golf.packing.stats import mean_std, welch_one_sided
from golf.rules import TRAIN_LIMIT_S

__all__ = ["build_train_script", "code_bytes", "budget_table", "format_budget_table",
           "enforce_budget", "BudgetTable", "pack_run", "PackResult", "PackError", "BudgetError",
           "RoundTripError", "load_run", "main"]

ENTRY = "golf.main"
ARTIFACT = rd.ARTIFACT
REQUIRED_RUN_FILES = (rd.CONFIG, rd.EVAL, ARTIFACT, rd.TRAIN_LOG)


# ----------------------------------------------------------------------------- the script
def build_forms(entry: str = ENTRY, src_roots: Sequence[Path] | None = None) -> dict[str, bytes]:
    """Every form of train_gpt.py: "plain" plus one self-extracting form per codec."""
    closure = module_closure(entry, list(src_roots) if src_roots else None)
    plain = render_plain(closure, entry)
    return {"plain": plain, **compressed_forms(plain)}


def build_train_script(compress: bool, entry: str = ENTRY,
                       src_roots: Sequence[Path] | None = None) -> bytes:
    """The single-file train_gpt.py (deterministic bytes); compressed = smallest codec."""
    closure = module_closure(entry, list(src_roots) if src_roots else None)
    plain = render_plain(closure, entry)
    return smallest_compressed(plain)[1] if compress else plain


def code_bytes(entry: str = ENTRY, src_roots: Sequence[Path] | None = None) -> int:
    """Bytes of the form pack ships by default (the smaller of plain and compressed)."""
    forms = build_forms(entry, src_roots)
    return min(len(b) for b in forms.values())


def requirements_for(entry: str = ENTRY, src_roots: Sequence[Path] | None = None,
                     codec: str = "") -> str:
    """requirements.txt: the third-party packages the packed file imports (versions pinned)."""
    from importlib import metadata
    names = set(module_closure(entry, list(src_roots) if src_roots else None).third_party)
    if codec == "brotli":
        names.add("brotli")
    lines, optional = [], []
    for n in sorted(names):
        dist = PIP_NAMES.get(n, n)
        try:
            lines.append(f"{dist}>={metadata.version(dist).split('+')[0]}")
        except metadata.PackageNotFoundError:
            # the round trip ran without it, so the packed code imports it optionally (e.g. FA3)
            optional.append(f"# optional, used when installed: {dist}")
    return "\n".join(lines + optional) + "\n"


# ----------------------------------------------------------------------------- run files
@dataclass
class RunInfo:
    run_dir: Path
    config: dict[str, Any]
    eval: dict[str, Any]
    summary: dict[str, Any]
    hessians: dict[str, Any] | None
    seed: int
    hardware: str
    train_time_ms: float | None
    steps: int | None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PackError(f"{path}: not valid JSON ({exc}); re-run the step that writes it") from None


def _hardware(config: Mapping, summary: Mapping, log_text: str) -> str:
    for src in (summary, config):
        if src.get("hardware"):
            return str(src["hardware"])
    m = re.search(r"hardware:\s*(.+)", log_text)
    if m:
        return m.group(1).strip()
    m = re.search(r"gpu:\s*(.+)", log_text)
    ws = config.get("world_size", 1)
    if m:
        return f"{ws}x{m.group(1).strip()}"
    return f"{ws}xCPU" if "cuda" not in log_text.lower() else f"{ws}xGPU(unknown)"


def _last_metric(path: Path, key: str) -> Any:
    if not path.is_file():
        return None
    val = None
    for line in path.read_text().splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        val = obj.get(key, val)
    return val


def load_run(run_dir: str | os.PathLike) -> RunInfo:
    """Read a run directory; missing files raise one PackError naming them and the fix."""
    d = Path(run_dir)
    if not d.is_dir():
        raise PackError(f"{d}: run directory not found; pass the RUNS_DIR/RUN_ID of a finished run")
    missing = [f for f in REQUIRED_RUN_FILES if not (d / f).is_file()]
    if missing:
        raise PackError(f"{d}: missing {', '.join(missing)}; finish the run (train -> quantize -> "
                        "eval) before packing")
    config = _read_json(d / rd.CONFIG)
    ev = _read_json(d / rd.EVAL)
    if not (ev.get("post") or {}).get("val_bpb"):
        raise PackError(f"{d / rd.EVAL}: no post-quant result; run eval_bpb.py on the artifact")
    summary = _read_json(d / rd.SUMMARY) if (d / rd.SUMMARY).is_file() else {}
    hess = None
    if (d / rd.HESSIANS).is_file():
        from golf.checkpoint import load_torch_file
        raw = load_torch_file(d / rd.HESSIANS, "re-run training to recollect it")
        hess = {k: v for k, v in raw.items() if k != "hessians"}
    log_text = (d / rd.TRAIN_LOG).read_text(errors="replace")
    train_ms = summary.get("train_time_ms") or _last_metric(d / rd.METRICS, "train_time_ms")
    steps = summary.get("steps") or _last_metric(d / rd.METRICS, "step")
    return RunInfo(d, config, ev, summary, hess, int(config.get("seed", 0)),
                   _hardware(config, summary, log_text),
                   float(train_ms) if train_ms is not None else None,
                   int(steps) if steps is not None else None)


def roundtrip_settings(run: RunInfo, data_path: str | None = None,
                       tokenizer_path: str | None = None) -> dict[str, str]:
    """The env that re-creates the run's headline (post-quant) evaluation exactly."""
    ev, cfg = run.eval, run.config
    post = ev.get("post") or {}
    if not (data_path and tokenizer_path):  # recorded absolute (or resolved for an older run)
        saved = rd.load_config(run.run_dir)
        data_path, tokenizer_path = data_path or saved.data_path, tokenizer_path or saved.tokenizer_path
    data, tok = data_path, tokenizer_path
    stride = post.get("stride", ev.get("stride", 0)) if post.get("mode", ev.get("mode")) == "sliding" else 0
    return {"DATA_PATH": str(Path(data).resolve()), "TOKENIZER_PATH": str(Path(tok).resolve()),
            "VOCAB_SIZE": str(cfg.get("vocab_size", 1024)),
            "EVAL_SEQ_LEN": str(post.get("seq_len", ev.get("seq_len"))),
            "EVAL_STRIDE": str(stride),
            "MAX_EVAL_TOKENS": str(cfg.get("max_eval_tokens", 0) or 0),
            "VAL_BATCH_SIZE": str(cfg.get("val_batch_size", 524_288))}


# ----------------------------------------------------------------------------- submission.json
def headline(ev: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """(the scored block, eval_method) from what actually ran: post+TTT when eval.json has a
    post_ttt on the artifact (TTT on full-precision weights is a diagnostic, never a score)."""
    base = f"sliding(stride={ev.get('stride')})" if ev.get("mode") == "sliding" else "roundtrip"
    t = ev.get("post_ttt") or {}
    if t.get("weights") == "post" and t.get("val_bpb") is not None:
        return dict(t), f"ttt({t.get('ttt')}, score-first)+{base}"
    return dict(ev["post"]), base


def eval_seconds(ev: Mapping[str, Any]) -> float | None:
    """Measured seconds of what the submission runs at eval: every post-quant scoring pass
    (chunked and sliding when both ran) plus the TTT pass; pre-quant passes are diagnostics."""
    posts = [m["post"] for m in (ev.get("modes") or {}).values() if m.get("post")] or [ev.get("post") or {}]
    secs = [b.get("seconds") for b in posts]
    t = ev.get("post_ttt") or {}
    if t.get("weights") == "post":
        secs.append(t.get("seconds"))
    return None if any(x is None for x in secs) else float(sum(secs))


def _seed_result(run: RunInfo, code: int) -> dict[str, Any]:
    post, pre = run.eval["post"], run.eval.get("pre") or {}
    head, _method = headline(run.eval)
    ttt = run.eval.get("post_ttt") or {}
    model = (run.run_dir / ARTIFACT).stat().st_size
    return {"val_bpb": head["val_bpb"], "val_loss": head["val_loss"],
            "pre_quant_val_bpb": pre.get("val_bpb"), "post_quant_val_bpb": post.get("val_bpb"),
            "post_ttt_val_bpb": ttt.get("val_bpb") if ttt.get("weights") == "post" else None,
            "eval_time_s": eval_seconds(run.eval), "bytes_total": code + model,
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


def build_submission_json(runs: Sequence[RunInfo], table: BudgetTable, *, name: str,
                          github_id: str, blurb: str, baseline: Any = None,
                          track: str = "10min_16mb", date: str | None = None) -> dict[str, Any]:
    """submission.json; with several seeds val_bpb/val_loss are means and std is reported."""
    results = {str(r.seed): _seed_result(r, table.code_bytes) for r in runs}
    heads = [headline(r.eval) for r in runs]
    methods = sorted({m for _, m in heads})
    if len(methods) > 1:
        raise PackError(f"runs were scored differently ({'; '.join(methods)}); evaluate every "
                        "seed the same way (same mode, same TTT) before packing them together")
    bpbs = [h["val_bpb"] for h, _ in heads]
    losses = [h["val_loss"] for h, _ in heads]
    pres = [r.eval.get("pre", {}).get("val_bpb") for r in runs]
    primary = runs[0]
    ev = primary.eval
    c = primary.config
    auto_name = (f"golfkit {c.get('num_layers')}L d{c.get('model_dim')} "
                 f"{c.get('quant_method', 'gptq')}")
    auto_blurb = (f"{c.get('num_layers')}-layer d{c.get('model_dim')} GQA {c.get('num_heads')}/"
                  f"{c.get('num_kv_heads')} XSA (last {c.get('xsa_last_n')}) QK-gain "
                  f"{c.get('qk_gain_init')}, Muon+Adam, EMA {c.get('ema_decay')}; "
                  f"{c.get('quant_method', 'gptq')} quantization fitted to the byte budget "
                  f"(golfkit).")
    sub: dict[str, Any] = {
        "author": os.environ.get("GOLF_AUTHOR", "") or name, "name": name or auto_name,
        "github_id": github_id, "blurb": blurb or auto_blurb,
        "date": date or _dt.date.today().isoformat(), "track": track,
        "val_bpb": mean_std(bpbs)[0], "val_loss": mean_std(losses)[0],
        "pre_quant_val_bpb": mean_std(pres)[0] if None not in pres else None,
        "bytes_total": max(v["bytes_total"] for v in results.values()),
        "bytes_code": table.code_bytes, "bytes_model": table.model_bytes,
        "seeds": [r.seed for r in runs], "seed_results": results,
        "hardware": primary.hardware,
        "eval_method": methods[0],
        "eval_seq_len": ev.get("seq_len"), "eval_partial": bool(ev.get("partial")),
    }
    sub["post_quant_val_bpb"] = mean_std([r.eval["post"]["val_bpb"] for r in runs])[0]
    ttt = heads[0][0] if heads[0][1].startswith("ttt(") else None
    if ttt:
        sub["ttt"] = {"mode": ttt.get("ttt"), "weights": ttt.get("weights"),
                      "knobs": ttt.get("knobs"), "window": ttt.get("mode"),
                      "stride": ttt.get("stride"), "seq_len": ttt.get("seq_len")}
    if len(runs) > 1:
        sub["val_bpb_std"] = mean_std(bpbs)[1]
        sub["val_loss_std"] = mean_std(losses)[1]
    sig = _significance(losses, baseline)
    if sig:
        sub["significance"] = sig
    train_ok = all(r.train_time_ms is not None and r.train_time_ms <= TRAIN_LIMIT_S * 1000 for r in runs)
    sub["compliance"] = {"artifact_under_16mb": sub["bytes_total"] <= min(table.cap, CAP_BYTES),
                         "training_under_600s": train_ok,
                         "calibration_on_train_data_in_budget": all(
                             r.hessians is not None and r.hessians.get("train_budget_ms") is not None
                             and r.hessians.get("elapsed_ms", 0) <= r.hessians["train_budget_ms"]
                             for r in runs),
                         "roundtrip_exact": None, "three_seeds": len(runs) >= 3,
                         "full_val_split": not bool(ev.get("partial")),
                         # what ran: True = the score is score-first TTT (both golfkit modes are,
                         # by construction and tests/test_ttt.py); None = no TTT in the score
                         "score_first_ttt": (all(bool(h.get("score_first")) for h, _ in heads)
                                             if ttt else None),
                         "no_pre_quant_ttt": True,   # TTT on full-precision weights never scores
                         "eval_under_600s": None}    # set from the eval-time check in pack_run
    return sub


# ----------------------------------------------------------------------------- README
def render_readme(sub: Mapping[str, Any], runs: Sequence[RunInfo], table: BudgetTable,
                  forms: Mapping[str, int], shipped: str, checks: Sequence[Check]) -> str:
    """The submission's README, generated from the run's files (no hand-typed numbers)."""
    cfg = runs[0].config
    lines = [f"# {sub['name']}: val_bpb {sub['val_bpb']:.5f}", "", sub["blurb"] or "", "",
             "## Results", "", "| seed | val_bpb | val_loss | pre-quant val_bpb | post-quant val_bpb | "
             "post-TTT val_bpb | bytes_total | steps | train time (s) | eval time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def f6(v: Any) -> str:
        return f"{v:.6f}" if v is not None else "-"
    for seed, r in sub["seed_results"].items():
        tt = f"{r['train_time_ms'] / 1000:.1f}" if r["train_time_ms"] is not None else "-"
        et = f"{r['eval_time_s']:.1f}" if r.get("eval_time_s") is not None else "-"
        lines.append(f"| {seed} | {r['val_bpb']:.6f} | {r['val_loss']:.6f} | {f6(r['pre_quant_val_bpb'])} | "
                     f"{f6(r.get('post_quant_val_bpb'))} | {f6(r.get('post_ttt_val_bpb'))} | "
                     f"{r['bytes_total']:,} | {r['steps'] if r['steps'] is not None else '-'} | {tt} | {et} |")
    if "val_bpb_std" in sub:
        lines += ["", f"Mean val_bpb {sub['val_bpb']:.6f} (std {sub['val_bpb_std']:.6f}), "
                  f"mean val_loss {sub['val_loss']:.6f} (std {sub['val_loss_std']:.6f})."]
    if "significance" in sub:
        s = sub["significance"]
        lines.append(f"One-sided Welch t-test vs baseline mean {s['baseline_mean']:.5f}: "
                     f"delta {s['delta_nats']:.5f} nats, t={s['t']:.3f}, df={s['df']:.1f}, "
                     f"p={s['p_value']:.4g}.")
    lines += ["", f"Evaluation: {sub['eval_method']}, seq_len {sub['eval_seq_len']}"
              + (" (PARTIAL val split)" if sub["eval_partial"] else " (full val split)")
              + f"; hardware {sub['hardware']}.", ""]
    timings = runs[0].summary.get("phase_seconds") or {}
    if timings:
        lines += ["## Timings", "", "| phase | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in timings.items()] + [""]
    lines += ["## Byte budget", "", "```", format_budget_table(table), "```", "",
              "train_gpt.py forms: " + ", ".join(f"{k} {v:,} B" for k, v in forms.items())
              + f"; shipped: {shipped}.", "",
              "## Checks", "", "```", format_checks(checks), "```", "",
              "## Configuration", "", "```json", json.dumps(cfg, indent=2, sort_keys=True), "```", "",
              "## Reproduce", "", "```bash", "pip install -r requirements.txt",
              f"SEED={runs[0].seed} torchrun --standalone --nproc_per_node=8 train_gpt.py",
              "# evaluate the shipped artifact only:",
              "EVAL_ONLY=1 ARTIFACT=final_model.gkq DATA_PATH=... TOKENIZER_PATH=... python train_gpt.py",
              "```", "", "train_gpt.py is a single file: golfkit's modules are embedded and served "
              "by an import hook; it imports only the packages in requirements.txt.", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- pack_run
def _ttt_check(run: RunInfo) -> Check:
    """The post-TTT score must come from this very artifact; the round trip re-runs only the
    post-quant eval, so say where the TTT number comes from."""
    from golf.atomic import file_sha256
    want = run.eval.get("artifact_sha256")
    if want and want != file_sha256(run.run_dir / ARTIFACT):
        return Check("post-TTT score", "FAIL", "eval.json was measured on another artifact "
                     "(sha256 differs); re-run eval_bpb.py --ttt on this one")
    t = run.eval["post_ttt"]
    return Check("post-TTT score", "WARN", f"{t['val_bpb']:.6f} ({t['ttt']}, score-first) from "
                 "eval.json on this artifact; the round trip does not re-run TTT")


@dataclass
class PackResult:
    out_dir: Path
    budget: BudgetTable
    forms: dict[str, int]
    shipped: str
    submission: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    roundtrip: RoundTripResult | None = None

    @property
    def ok(self) -> bool:
        return not any(c.status == "FAIL" for c in self.checks)


def _write(path: Path, data: bytes | str) -> None:
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace `out` with `tmp` (the old folder is removed only after the new one is in place)."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


PACK_FILES = frozenset({"train_gpt.py", ARTIFACT, "submission.json", "README.md", rd.TRAIN_LOG,
                        "requirements.txt"})


def _is_earlier_pack(folder: Path) -> bool:
    """True when `folder` holds nothing but a previous pack's files (submission.json among
    them): only such a folder, or an empty one, may be replaced by a new pack."""
    names = {p.name for p in folder.iterdir()}
    extra = {n for n in names - PACK_FILES if not re.fullmatch(r"train_seed\d+\.log", n)}
    return not names or ("submission.json" in names and not extra)


def verify_artifact(run: RunInfo) -> None:
    """Once, before any round trip: the artifact's header and checksums are intact, and it is the
    file eval.json measured (sha256), so a corrupt or swapped artifact fails in well under 1 s."""
    from quant.artifact import parse_artifact
    from quant.errors import ArtifactError
    from golf.atomic import file_sha256
    path = run.run_dir / ARTIFACT
    try:
        parse_artifact(path.read_bytes(), str(path))
    except ArtifactError as exc:  # it cannot round trip: say so before trying any form
        raise RoundTripError(f"{exc} (checked before any round trip)") from None
    want = run.eval.get("artifact_sha256")
    if want and file_sha256(path) != want:
        raise PackError(f"{path}: not the artifact {run.run_dir / rd.EVAL} was measured on (sha256 "
                        f"differs); re-run eval_bpb.py {run.run_dir} (or QUANT_ONLY={run.run_dir})")


def check_out_dir(out: Path) -> None:
    """Refuse, before any work, to replace a folder the pack did not write: a parent such as
    submission/ (its README.md and other records), a file, or a record folder someone added to;
    or to write where nothing can be created."""
    why = rd.unwritable_reason(out.parent)
    if why:
        raise PackError(f"{out}: {why}; pack into a writable folder (--out DIR or SUBMISSION_DIR)"
                        "; nothing was written")
    if not out.exists():
        return
    if not out.is_dir() or not _is_earlier_pack(out):
        raise PackError(f"{out}: exists and is not an earlier pack's record folder (it holds "
                        "other files); pack into a new folder (--out DIR, or SUBMISSION_DIR as "
                        "the parent of submission/<RUN_ID>) or move it away first")


def default_out_dir(run_dir: str | os.PathLike) -> Path:
    """submission/<RUN_ID>: one record folder per run, beside the tracked submission/README.md."""
    return Path("submission") / Path(run_dir).resolve().name


def pack_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
             name: str = "", github_id: str = "", blurb: str = "",
             extra_runs: Sequence[str | os.PathLike] = (), baseline: Any = None,
             compress: str | bool = "auto", roundtrip: bool = True, record: bool = False,
             cap: int = CAP_BYTES, entry: str = ENTRY, src_roots: Sequence[Path] | None = None,
             tolerance: float = 0.0, data_path: str | None = None,
             tokenizer_path: str | None = None, eval_speed_ratio: float | None = None,
             log=print) -> PackResult:
    """Write the submission folder atomically; raise PackError (and leave nothing) on failure.

    `out_dir` is the record folder itself (default submission/<RUN_ID>). If it already exists it
    must be an earlier pack (only pack's own files; see check_out_dir): that folder alone is
    then replaced atomically, as a re-pack of the same RUN_ID (QUANT_ONLY) expects. Anything
    else there (a parent folder, extra files) is refused before any work, never deleted.

    compress: "auto" ships the smallest form that passes the round trip; True/False force it.
    baseline: {"mean", "std", "n"} or a list of val_loss values (nats) for the Welch test.
    eval_speed_ratio: 8xH100 speed over the eval's hardware, for the eval-time estimate
    (default GOLF_EVAL_SPEED_RATIO, else 8/k for k H100/H200, else none: see checks.py).
    """
    runs = [load_run(run_dir)] + [load_run(r) for r in extra_runs]
    seeds = [r.seed for r in runs]
    if len(set(seeds)) != len(seeds):
        raise PackError(f"runs {', '.join(str(r.run_dir) for r in runs)} repeat a seed ({seeds}); "
                        "pass one run per seed")
    primary = runs[0]
    for r in runs:
        verify_artifact(r)
    out = Path(out_dir if out_dir is not None else default_out_dir(run_dir)).resolve()
    check_out_dir(out)
    forms = build_forms(entry, src_roots)
    sizes = {k: len(v) for k, v in forms.items()}
    log("train_gpt.py forms: " + ", ".join(f"{k}={v:,}B" for k, v in sizes.items()))
    if compress == "auto":
        order = sorted(forms, key=lambda k: (len(forms[k]), k))
    elif compress:
        order = sorted((k for k in forms if k != "plain"), key=lambda k: (len(forms[k]), k))[:1]
    else:
        order = ["plain"]

    with rd.io_guard(f"packing into {out.parent}", "the run directory and any earlier pack"):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        with rd.io_guard(f"writing the pack in {out.parent}", "the run directory and any earlier "
                         "pack (the partial folder was removed)"):
            shutil.copyfile(primary.run_dir / ARTIFACT, tmp / ARTIFACT)
            settings = roundtrip_settings(primary, data_path, tokenizer_path)
            rt: RoundTripResult | None = None
            errors: list[str] = []
            shipped = ""
            for form in order:
                _write(tmp / "train_gpt.py", forms[form])
                table = budget_table(tmp / "train_gpt.py", tmp / ARTIFACT, cap)
                log(f"[{form}]\n" + format_budget_table(table))
                enforce_budget(table, str(out))
                if not roundtrip:
                    shipped = form
                    break
                try:
                    rt = run_roundtrip(tmp / "train_gpt.py", tmp / ARTIFACT, settings=settings,
                                       expected_bpb=primary.eval["post"]["val_bpb"], tolerance=tolerance,
                                       label=str(primary.run_dir / ARTIFACT))
                except RoundTripError as exc:
                    errors.append(f"[{form}] {exc}")
                    log(f"round trip FAILED for form {form}")
                    continue
                log(f"round trip ok [{form}]: val_bpb {rt.val_bpb!r} == eval.json "
                    f"{rt.expected_bpb!r} ({'bit-exact' if rt.exact else f'within {tolerance}'})")
                shipped = form
                break
            if not shipped:
                raise RoundTripError(errors[0].split("] ", 1)[1] if len(errors) == 1 else "\n".join(errors))
            table = budget_table(tmp / "train_gpt.py", tmp / ARTIFACT, cap)
            _write(tmp / rd.TRAIN_LOG, (primary.run_dir / rd.TRAIN_LOG).read_bytes())
            for r in runs[1:]:
                _write(tmp / f"train_seed{r.seed}.log", (r.run_dir / rd.TRAIN_LOG).read_bytes())
            codec = shipped if shipped != "plain" else ""
            _write(tmp / "requirements.txt", requirements_for(entry, src_roots, codec))
            sub = build_submission_json(runs, table, name=name, github_id=github_id, blurb=blurb,
                                        baseline=baseline)
            sub["compliance"]["roundtrip_exact"] = bool(rt.exact) if rt else None
            sub["code_form"] = shipped
            for r in runs:  # every seed's artifact + the shipped code must fit
                r_total = sub["seed_results"][str(r.seed)]["bytes_total"]
                if r_total > cap:
                    raise BudgetError(f"{r.run_dir / ARTIFACT}: seed {r.seed} totals {r_total:,} bytes, "
                                      f"over the cap of {cap:,} by {r_total - cap:,}; refit its model")
            checks = [check_budget([table]), check_fields(sub, record=record)]
            under: list[bool | None] = []
            for r in runs:
                checks.append(check_calibration(r.hessians, r.seed))
                checks.append(check_wallclock(r.train_time_ms, r.hardware, r.seed))
                ev_check, est = check_eval_time(eval_seconds(r.eval), r.eval.get("hardware") or r.hardware,
                                                r.seed, eval_speed_ratio)
                checks.append(ev_check)
                sub["seed_results"][str(r.seed)]["eval_time_8xh100_s"] = est
                under.append({"PASS": True, "FAIL": False}.get(ev_check.status))
            sub["compliance"]["eval_under_600s"] = (None if None in under else all(under))
            checks.append(Check("round trip", "PASS" if rt else "WARN",
                                "bit-exact" if rt and rt.exact else
                                ("within tolerance" if rt else "skipped (--no-roundtrip)")))
            if sub.get("ttt"):
                checks.append(_ttt_check(primary))
            if record:
                checks += check_record(sub)
            sub["checks"] = {c.name: c.status for c in checks}
            _write(tmp / "submission.json", json.dumps(sub, indent=2, sort_keys=True) + "\n")
            _write(tmp / "README.md", render_readme(sub, runs, table, sizes, shipped, checks))
            log(format_checks(checks))
            final = budget_table(tmp / "train_gpt.py", tmp / ARTIFACT, cap)  # what ships
            check_out_dir(out)  # again: the round trip took a while
            _swap_in(tmp, out)
            log(format_budget_table(final))
            log(f"pack: wrote {out}")
            return PackResult(out, final, sizes, shipped, sub, checks, rt)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- CLI
def _parse_args(argv: Sequence[str] | None):
    import argparse
    ap = argparse.ArgumentParser(prog="pack.py", description="Pack run(s) into a submission folder.")
    ap.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="first = shipped artifact")
    ap.add_argument("--out", default=None,
                    help="the record folder itself (default: submission/<RUN_ID>); an existing "
                         "one must be an earlier pack, which is then replaced")
    ap.add_argument("--name", default=os.environ.get("GOLF_NAME", ""))
    ap.add_argument("--github-id", default=os.environ.get("GOLF_GITHUB_ID", ""))
    ap.add_argument("--blurb", default="")
    ap.add_argument("--no-roundtrip", action="store_true")
    ap.add_argument("--compress", choices=("auto", "yes", "no"), default="auto")
    ap.add_argument("--tolerance", type=float, default=0.0, help="round-trip tolerance (GPU)")
    ap.add_argument("--data-path", default=None)
    ap.add_argument("--tokenizer-path", default=None)
    ap.add_argument("--eval-speed-ratio", type=float, default=None,
                    help="8xH100 speed over the eval's hardware (eval-time estimate; "
                         "default GOLF_EVAL_SPEED_RATIO, else 8/k for k H100/H200)")
    ap.add_argument("--record", action="store_true", help="check a record claim")
    ap.add_argument("--baseline-mean", type=float)
    ap.add_argument("--baseline-std", type=float, default=0.0)
    ap.add_argument("--baseline-n", type=int, default=1)
    ap.add_argument("--baseline-losses", type=float, nargs="+", help="baseline val_loss per seed")
    ap.add_argument("--budget-bytes", type=int, default=None,
                    help="the cap on code + model bytes (default: BUDGET_BYTES, else 16,000,000)")
    ap.add_argument("--budget-only", action="store_true", help="print the budget table, write nothing")
    ap.add_argument("--code-bytes", action="store_true", help="print exact code bytes, write nothing")
    return ap.parse_args(argv)


def budget_cap(given: int | None, env: Mapping[str, str] = os.environ) -> int:
    """The cap pack enforces: --budget-bytes, else BUDGET_BYTES, else the challenge's cap."""
    raw = str(given) if given is not None else (env.get("BUDGET_BYTES") or "").strip()
    if not raw:
        return CAP_BYTES
    try:
        cap = int(raw)
    except ValueError:
        cap = 0
    if cap < 1:
        raise PackError(f"BUDGET_BYTES={raw!r}: not a positive number of bytes; set e.g. "
                        f"{CAP_BYTES} (the challenge cap) or unset it")
    return cap


def _cli(argv: Sequence[str] | None) -> int:
    a = _parse_args(argv)
    cap = budget_cap(a.budget_bytes)
    if a.code_bytes:
        print(code_bytes())
        return 0
    if not a.run_dirs:
        raise PackError("pack.py: no RUN_DIR given; pass e.g. runs/<RUN_ID>")
    if a.budget_only:
        run = load_run(a.run_dirs[0])
        with tempfile.TemporaryDirectory() as td:
            p = Path(td) / "train_gpt.py"
            p.write_bytes(min(build_forms().values(), key=len))
            t = budget_table(p, run.run_dir / ARTIFACT, cap)
        print(format_budget_table(t))
        return 1 if t.over else 0
    baseline: Any = None
    if a.baseline_losses:
        baseline = list(a.baseline_losses)
    elif a.baseline_mean is not None:
        baseline = {"mean": a.baseline_mean, "std": a.baseline_std, "n": a.baseline_n}
    compress = {"auto": "auto", "yes": True, "no": False}[a.compress]
    res = pack_run(a.run_dirs[0], a.out, name=a.name, github_id=a.github_id, blurb=a.blurb,
                   extra_runs=a.run_dirs[1:], baseline=baseline, compress=compress,
                   roundtrip=not a.no_roundtrip, record=a.record, tolerance=a.tolerance,
                   data_path=a.data_path, tokenizer_path=a.tokenizer_path,
                   eval_speed_ratio=a.eval_speed_ratio, cap=cap)
    return 0 if res.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: one clear line on bad input (GOLF_DEBUG=1 for a traceback)."""
    from golf.errors import user_errors
    with user_errors():
        return _cli(argv)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
