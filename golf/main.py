"""The engine behind train_gpt.py: one command trains, calibrates, quantizes, evaluates and packs.

Phases (each writes files into the run directory that the next one reads):
  prepare  -> builds the embedded corpus when the default data is missing (CPU preset)
  train    -> config.json, train.log, metrics.jsonl, model.pt, ema.pt, hessians.pt
  quantize -> final_model.gkq (fitted to the byte budget), quant_report.{json,png}
  evaluate -> eval.json (pre- vs post-quant val_bpb, same tokens, same mode)
  pack     -> submission/ (repo checkout only: the packed file carries no packer)

TTT=... and NGRAM_TILT_ENABLED=1 add post+TTT / post+tilt (post+TTT+tilt with both) to the
evaluation, and the packed script then carries those parts (golf/ship.py) and re-runs them.

`EVAL_ONLY=1 ARTIFACT=path` instead evaluates an artifact and prints the
`final_roundtrip_exact` line that pack.py's round-trip proof compares bit for bit.
`QUANT_ONLY=runs/ID` re-runs quantize -> evaluate -> pack on a finished run (new budget or
quantizer settings without training again).
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import quant
from golf.run import distributed, settings
from golf.eval import score as evaluate
from golf import ship
from golf.run import rundir as rd
from golf.run.atomic import atomic_write_json, file_sha256
from golf.run.checkpoint import CheckpointError, load_torch_file
from golf.run.config import Config, lqer_ranks, preset_columns
from golf.data import EMBEDDED_DATASET
from golf.run.errors import ConfigError, user_errors
from golf.model.gpt import GPT, quant_roles
from golf.run.plots import plot_loss_curves
from golf.run.rules import CAP_BYTES, eval_mode, run_eval_mode
from golf.train.loop import make_logger, train
from quant.codec import FRAMED, compress_workers, framed_problems
from quant.methods import METHODS as QUANT_METHODS, describe as describe_methods
from quant.records import RECORD_METHODS, record_policy


USAGE = """usage: python train_gpt.py [--help]
       torchrun --standalone --nproc_per_node=8 train_gpt.py

Trains, quantizes to the byte budget, evaluates and packs. Every setting is an environment
variable (e.g. ITERATIONS=200 python train_gpt.py); each is checked before any work starts.
Defaults: the cpu column without CUDA, the gpu column with it (PRESET picks another stack).
"""


@dataclass(frozen=True)
class Finish:
    """What the phases after training need from it and from the caller: the steps taken, the
    training time and the world size (summary.json), and whether and where to pack (do_pack
    None = the PACK setting; out_dir None = SUBMISSION_DIR/<RUN_ID>, see submission_folder)."""
    steps: int = 0
    train_time_ms: float = 0.0
    world_size: int = 1
    do_pack: bool | None = None
    out_dir: str | None = None


@dataclass
class PhaseTimer:
    """Wall time per pipeline phase, in the order they ran."""
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str, log: Callable[[str], None]) -> Iterator[None]:
        log(f"phase:{name} start")
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - t0
            log(f"phase:{name} done seconds:{self.seconds[name]:.1f}")


# ----------------------------------------------------------------------------- helpers
def ensure_embedded_data(cfg: Config, log: Callable[[str], None]) -> None:
    """Build the embedded corpus when the configured data is the embedded default and absent."""
    data_path = Path(cfg.data_path)
    if data_path.name != EMBEDDED_DATASET:
        return
    if data_path.is_dir() and any(data_path.glob("fineweb_val_*.bin")) and Path(cfg.tokenizer_path).is_file():
        return
    sources = ship.optional("data_prep")  # never in the packed script: it trains on given shards
    if sources is None:
        raise FileNotFoundError(f"DATA_PATH={cfg.data_path}: no embedded corpus there, and this "
                                "packed script cannot build one; run `python -m golf.data.prepare "
                                "embedded` from a golfkit checkout or set DATA_PATH")
    root = data_path.parent.parent  # <root>/datasets/embedded_sp1024
    log(f"prepare:embedded building corpus under {root} (first run only)")
    paths = sources.prepare_embedded(root)
    log(f"prepare:embedded dataset:{paths.dataset_dir} tokenizer:{paths.tokenizer_path}")


def shipped_code_bytes() -> int:
    """Exact bytes of the train_gpt.py that ships carrying the parts this run needs (run_parts):
    from the packer in a checkout, or the running file itself in the packed script."""
    return _code_bytes_carrying(run_parts())


@functools.lru_cache(maxsize=8)
def _code_bytes_carrying(parts: tuple[str, ...]) -> int:
    packer = ship.optional("packer")
    if packer is None:
        return len(Path(sys.argv[0]).read_bytes())
    return packer.code_bytes(parts=parts)


def run_parts() -> tuple[str, ...]:
    """The optional parts this run's settings need in its packed script (TTT, the tilt)."""
    return ship.parts_for(os.environ)


def quantize_run(cfg: Config, run_dir: Path, log: Callable[[str], None], code_bytes: int,
                 out_dir: Path | None = None) -> Path:
    """EMA weights + training-data Hessians -> artifact fitted to the budget left by `code_bytes`,
    written with its report into `out_dir` (default the run dir; finish_run stages it)."""
    fix = "re-run training to export it"
    ckpt = load_torch_file(run_dir / rd.EMA, fix, keys=("config", "state_dict"), tensors=("state_dict",))
    wcfg = Config.from_dict(ckpt["config"])
    if wcfg.model_problems():
        raise CheckpointError(f"{run_dir / rd.EMA}: its config is not a valid model "
                              f"({'; '.join(wcfg.model_problems())}); {fix}")
    model = GPT(wcfg)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{run_dir / rd.EMA}: its weights do not fit the model of its config "
                              f"({str(exc).splitlines()[0][:160]}); {fix}") from None
    model.eval()
    method = QUANT_METHODS[cfg.quant_method]
    hessians = omega = None
    calib = run_dir / rd.HESSIANS
    if calib.is_file():
        saved = load_torch_file(calib, "delete it to quantize without Hessians, or re-run "
                                "training", keys=("hessians",), tensors=("hessians", "error_weights"))
        hessians = saved["hessians"]
        omega = saved.get("error_weights") if cfg.quant_fisher else None
        if cfg.quant_fisher and omega is None and method.needs_fisher:
            log("quant:note hessians.pt has no error_weights (an older run): the fitter prices "
                "errors by diag(H)")
    elif method.needs_hessians:
        log(f"quant:warning no hessians.pt in the run; GPTQ (QUANT_METHOD={cfg.quant_method}) "
            "falls back to identity Hessians")
    slopes = measured_slopes(cfg.quant_sensitivity, model, hessians, log) if cfg.quant_sensitivity else None
    budget = None  # int8 and the records' methods set their own size; only the fitter fits
    if method.fits_budget:
        budget = cfg.budget_bytes - code_bytes - cfg.budget_margin_bytes
    log(f"quant:start method:{cfg.quant_method} code_bytes:{code_bytes} "
        f"model_budget_bytes:{budget if budget is not None else 'none'}")
    policy = quant_policy(cfg, model, cfg.quant_method)
    fit = None if budget is None else quant.BudgetFit(
        budget, loss_slopes=slopes, lqer_ranks=lqer_ranks(cfg.quant_lqer_ranks),
        error_norm=cfg.quant_error_norm, error_weights=omega)
    qmodel = quant.quantize_model(model, hessians=hessians, method=cfg.quant_method, policy=policy,
                                  meta=artifact_meta(cfg, code_bytes), fit=fit,
                                  run=quant.QuantRun(seed=cfg.seed, scales=cfg.quant_scales,
                                                     device=distributed.default_device(), log=log))
    out = out_dir or run_dir
    path = out / rd.ARTIFACT
    nbytes = quant.save_artifact(path, qmodel)
    quant.write_report(qmodel, out / rd.QUANT_REPORT_JSON, out / rd.QUANT_REPORT_PNG)
    log(quant.format_report(qmodel))
    log(f"quant:done artifact:{path} bytes:{nbytes}")
    return path


def quant_policy(cfg: Config, model: GPT, method: str) -> quant.QuantPolicy:
    """The policy `method` quantizes `model` with: the model's parameter roles (which tensors are
    control, which the embedding: golf.model.gpt), and but for the int8 baseline (its own
    passthrough threshold, untouched) the run's QUANT_SMALL_NUMEL and QUANT_ROW_STEPS."""
    roles = quant_roles(model)
    if method == "int8":
        return quant.QuantPolicy(**roles)
    return quant.QuantPolicy(small_numel=cfg.quant_small_numel, row_steps=cfg.quant_row_steps,
                             **roles)


def artifact_meta(cfg: Config, code_bytes: int) -> dict:
    """What the artifact records besides its tensors: only what defines the model and its size,
    so equal weights and settings give byte-identical artifacts whatever RUN_ID, RUNS_DIR,
    RESUME or world size produced them (the run's full config stays in config.json)."""
    return {"config": cfg.model_dict(), "code_bytes": code_bytes}


def measured_slopes(path: str, model, hessians, log: Callable[[str], None]) -> dict[str, float]:
    """Per-tensor loss slopes from a sensitivity.json (eval_bpb.py --sensitivity-by tensor),
    checked against the artifact it was measured on (which must be unchanged since)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"QUANT_SENSITIVITY={path}: file not found; write it with "
                                "`python eval_bpb.py runs/<RUN_ID> --sensitivity` first")
    rep = json.loads(p.read_text())
    if rep.get("by") != "tensor":
        raise ValueError(f"QUANT_SENSITIVITY={path}: measured by {rep.get('by')!r}; the fitter needs "
                         "one row per tensor: re-run eval_bpb.py with --sensitivity-by tensor")
    art = rep.get("artifact") or ""
    if not Path(art).is_file() or file_sha256(art) != rep.get("artifact_sha256"):
        raise ValueError(f"QUANT_SENSITIVITY={path}: the artifact it was measured on ({art}) is "
                         "missing or has changed since; re-run `python eval_bpb.py runs/<RUN_ID> "
                         "--sensitivity` on the current artifact")
    if rep.get("split") != "train":
        log(f"quant:WARNING {path} was measured on the validation split: an artifact fitted to "
            "it has seen validation text, which a record submission may not; measure with "
            "`eval_bpb.py ... --sensitivity --split train`")
    deq, _meta = evaluate.load_artifact(art)
    slopes = quant.loss_slopes(model.state_dict(), deq, hessians,
                               {r["name"]: r["delta_bpb"] for r in rep["rows"]})
    log(f"quant:sensitivity {path} tensors:{len(slopes)} measured_on:{art}")
    return slopes


def evaluate_run(cfg: Config, run_dir: Path, log: Callable[[str], None],
                 out_dir: Path | None = None) -> dict:
    """Pre- (EMA, full precision) vs post-quant (artifact) val_bpb on the same tokens; with
    `out_dir` the artifact is read from there and eval.json written there (the staged pair).
    Every eval setting is passed from `cfg`: under QUANT_ONLY it holds the variables set now
    over the saved config.json, which run_eval alone would read back."""
    request = evaluate.EvalRequest(mode=run_eval_mode(cfg.eval_stride),
                                   seq_len=cfg.effective_eval_seq_len, stride=cfg.eval_stride,
                                   max_tokens=cfg.max_eval_tokens, batch_tokens=cfg.val_batch_size,
                                   ttt=ttt_settings(), tilt=tilt_settings())
    if out_dir is None:
        return evaluate.run_eval(run_dir, request, log=log)
    staged = replace(request, artifact=str(out_dir / rd.ARTIFACT))
    return evaluate.run_eval(run_dir, staged, out=out_dir / rd.EVAL, log=log)


def ttt_settings():
    """TTT=chunk|lora|lora_golf adds post_ttt to eval.json (default off); None where this
    packed script does not carry TTT (env_problems refuses TTT=... there)."""
    ttt = ship.optional("ttt")
    return ttt.TTTSettings.from_env() if ttt is not None else None


def tilt_settings():
    """NGRAM_TILT_ENABLED=1 adds post_tilt and tilts post_ttt (default off); None where this
    packed script does not carry the tilt (env_problems refuses the switch there)."""
    tilt = ship.optional("tilt")
    return tilt.TiltSettings.from_env() if tilt is not None else None


def print_summary(summary: dict, log: Callable[[str], None]) -> None:
    rows = [
        ("pre-quant val_bpb", f"{summary['pre_val_bpb']:.6f}"),
        ("post-quant val_bpb", f"{summary['post_val_bpb']:.6f}"),
        ("gap (post - pre)", f"{summary['gap']:+.6f}"),
    ] + ([
        ("post+tilt val_bpb", f"{summary['post_tilt_val_bpb']:.6f}"),
        ("tilt gain (post+tilt - post)", f"{summary['tilt_gain']:+.6f}"),
    ] if "post_tilt_val_bpb" in summary else []) + ([
        (f"{summary['ttt_label']} val_bpb ({summary['ttt_mode']})", f"{summary['post_ttt_val_bpb']:.6f}"),
        (f"TTT gain ({summary['ttt_label']} - post)", f"{summary['ttt_gain']:+.6f}"),
    ] if "post_ttt_val_bpb" in summary else []) + [
        ("eval mode", summary["eval_mode"] + (" (partial)" if summary.get("partial") else "")),
        ("code bytes", f"{summary['code_bytes']:,}"),
        ("model bytes", f"{summary['model_bytes']:,}"),
        ("total bytes", f"{summary['total_bytes']:,}"),
        (f"headroom to {summary.get('cap_bytes', CAP_BYTES):,}", f"{summary['headroom_bytes']:,}"),
    ] + [(f"time {k}", f"{v:.1f} s") for k, v in summary["phase_seconds"].items()]
    width = max(len(k) for k, _ in rows)
    log("=" * (width + 24))
    log("golfkit summary")
    for k, v in rows:
        log(f"  {k:<{width}}  {v}")
    log("=" * (width + 24))


def budget_problems(cfg: Config) -> list[str]:
    """BUDGET_BYTES must leave room for a model after the shipped code and the margin; checked
    before training (config.py cannot measure the code: it must not import pack)."""
    code = shipped_code_bytes()
    floor = code + cfg.budget_margin_bytes
    if cfg.budget_bytes > floor:
        return []
    return [f"BUDGET_BYTES={cfg.budget_bytes}: leaves no bytes for the model; the code alone is "
            f"{code:,} bytes + BUDGET_MARGIN_BYTES={cfg.budget_margin_bytes:,}; set BUDGET_BYTES "
            f"above {floor:,} (the challenge cap is {CAP_BYTES:,})"]


def env_problems(cfg: Config | None = None) -> list[str]:
    """Every variable set now, against the settings table (type, range, choices, unknown
    look-alikes such as NUM_LAYER), the TTT settings, and what QUANT_METHOD needs from the
    machine (the records' container needs lrzip): all before any work. quant/ parses
    GOLF_COMPRESS_THREADS itself (it imports nothing from golf)."""
    ship.load_switchable()  # their settings join the table where this program carries them
    found = settings.environment_problems(os.environ) + ship.missing_problems(os.environ)
    if not found:  # the table found them all; the readers below would repeat the first
        try:
            compress_workers()
            ttt_settings()
            tilt_settings()
        except ValueError as exc:  # EvalError is a ValueError
            found.append(str(exc))
    if cfg is not None and cfg.quant_method in RECORD_METHODS:
        found += framed_problems(record_policy(cfg.quant_method, quant.QuantPolicy()).compressors)
    return found


def preflight(cfg: Config) -> Config:
    """Every setting checked before any data is read or anything is written: one ConfigError
    lists the config's own problems, the byte budget and the environment's together."""
    return cfg.validate(extra=budget_problems(cfg) + env_problems(cfg))


def submission_folder(run_dir: Path, out_dir: str | None) -> str | None:
    """Where the pack goes: `out_dir` is the record folder itself (as `pack.py --out`);
    SUBMISSION_DIR is the parent of every run's record folder (default ./submission), so the
    pack writes SUBMISSION_DIR/<RUN_ID> and never replaces the parent or its other records."""
    if out_dir:
        return out_dir
    parent = settings.read("SUBMISSION_DIR", os.environ)
    return str(Path(parent) / run_dir.name) if parent else None


def config_from_env(env: "os._Environ | dict[str, str]") -> Config:
    """The run's config: the environment's, or with RESUME the resumed run's own (config.json,
    else the checkpoint's copy) with the variables set now on top (train() refuses those that
    may not change)."""
    if not env.get("RESUME"):
        return Config.from_env(env)
    return rd.resume_config(rd.saved_config(rd.resolve_resume(env["RESUME"])), env)


# ----------------------------------------------------------------------------- modes
def run_pipeline(cfg: Config, *, do_pack: bool | None = None, out_dir: str | None = None) -> dict:
    """Train -> quantize -> evaluate (-> pack) and return the summary dict (rank 0).

    `out_dir` is the record folder itself; without it SUBMISSION_DIR/<RUN_ID> (see
    submission_folder). Every setting is checked first (preflight), so a bad one stops the job
    before the corpus is built or the run directory touched."""
    preflight(cfg)
    dist_info = distributed.init_distributed()
    is_main = dist_info.rank == 0
    timer = PhaseTimer()
    boot_log = print if is_main else (lambda _msg: None)

    with timer.phase("prepare", boot_log):
        distributed.on_rank0("prepare", lambda: ensure_embedded_data(cfg, boot_log))
    with timer.phase("train", boot_log):
        result = train(cfg)
    run_dir = Path(result.run_dir)
    log = make_logger(run_dir, dist_info.rank)
    if result.interrupted:  # SIGINT/SIGTERM on every rank: checkpoint written, nothing exported
        log(f"train:interrupted step:{result.steps} checkpoint:{run_dir / rd.CHECKPOINT} "
            f"-- continue with RESUME={run_dir} python train_gpt.py")
        raise SystemExit(130)

    return finish_run(cfg, run_dir, log, timer, Finish(
        steps=result.steps, train_time_ms=result.train_time_ms, world_size=dist_info.world_size,
        do_pack=do_pack, out_dir=out_dir))


def finish_run(cfg: Config, run_dir: Path, log: Callable[[str], None], timer: "PhaseTimer",
               finish: Finish) -> dict:
    """Quantize -> evaluate -> plots -> summary (-> pack) for a trained run directory.

    The artifact and eval.json are written into the staging folder and moved in together, the
    previous pair first going to previous/<n>/ (golf.run.rundir rule 4)."""
    staged = rd.staging_dir(run_dir)
    kept = (f"{run_dir / rd.EMA} and {rd.HESSIANS} (training), and the previous "
            f"{rd.ARTIFACT}/{rd.EVAL} pair if any; free space and re-quantize with "
            f"QUANT_ONLY={run_dir} python train_gpt.py")

    def quantize() -> int:
        code_bytes = shipped_code_bytes()  # built once: the fitter and the summary share it
        with rd.io_guard("writing the artifact", kept):
            rd.clear_staging(run_dir)
            quantize_run(cfg, run_dir, log, code_bytes, out_dir=staged)
        return code_bytes

    with timer.phase("quantize", log):  # rank 0 alone; the others wait for its outcome
        code_bytes = distributed.on_rank0("quantize", quantize)
    with timer.phase("evaluate", log), rd.io_guard("writing eval.json", kept):
        report = evaluate_run(cfg, run_dir, log, out_dir=staged)

    def publish_and_pack() -> dict:
        with rd.io_guard("moving the new artifact/eval pair in", kept):
            rd.publish_pair(run_dir, log)
        return summarize_and_pack(cfg, run_dir, log, timer, report, code_bytes, finish)
    # plots, summary and pack are rank 0's; the others wait for them on the store, so every
    # rank leaves the process group together (and learns if rank 0 failed)
    return distributed.on_rank0("pack", publish_and_pack)


def summarize_and_pack(cfg: Config, run_dir: Path, log: Callable[[str], None], timer: "PhaseTimer",
                       report: dict, code_bytes: int, finish: Finish) -> dict:
    """Loss plot, summary.json, the pack (unless PACK=0) and the summary table."""
    plot_loss_curves(run_dir / rd.METRICS, run_dir / rd.LOSS_PNG, title=f"run {run_dir.name}")

    model_bytes = (run_dir / rd.ARTIFACT).stat().st_size
    summary = {
        "run_dir": str(run_dir),
        "pre_val_bpb": report["pre"]["val_bpb"], "post_val_bpb": report["post"]["val_bpb"],
        "pre_val_loss": report["pre"]["val_loss"], "post_val_loss": report["post"]["val_loss"],
        "gap": report["gap"], "eval_mode": report["mode"], "partial": report.get("partial", False),
        "code_bytes": code_bytes, "model_bytes": model_bytes,
        "total_bytes": code_bytes + model_bytes,
        "cap_bytes": cfg.budget_bytes, "headroom_bytes": cfg.budget_bytes - code_bytes - model_bytes,
        "steps": finish.steps, "train_time_ms": finish.train_time_ms,
        "phase_seconds": timer.seconds, "hardware": evaluate.eval_hardware(finish.world_size),
    }
    summary.update(after_quant_numbers(report))
    atomic_write_json(run_dir / rd.SUMMARY, summary)

    do_pack = finish.do_pack
    if do_pack is None:
        do_pack = settings.read("PACK", os.environ)
    if do_pack and unpackable_method(cfg.quant_method):
        log(f"pack:skipped (QUANT_METHOD={cfg.quant_method} stores its codes in the records' "
            "lrzip container, which the packed script does not carry: a baseline to measure, "
            "not a submission)")
        do_pack = False
    packer = ship.optional("packer") if do_pack else None
    if do_pack and packer is None:
        log("pack:skipped (this is already a packed submission script)")
    elif do_pack:
        with timer.phase("pack", log):  # the run's cap (the scaled one on CPU), never above 16 MB
            claim = packer.Claim(name=settings.read("GOLF_NAME", os.environ),
                                 github_id=settings.read("GOLF_GITHUB_ID", os.environ))
            packed = packer.pack_run(run_dir, submission_folder(run_dir, finish.out_dir),
                                     packer.PackRequest(claim=claim, cap=cfg.budget_bytes), log=log)
        summary["code_bytes"] = packed.budget.code_bytes
        summary["model_bytes"] = packed.budget.model_bytes
        summary["total_bytes"] = packed.budget.total
        summary["headroom_bytes"] = packed.budget.headroom
        summary["cap_bytes"] = packed.budget.cap
        summary["submission_dir"] = str(packed.out_dir)
        summary["phase_seconds"] = timer.seconds
        atomic_write_json(run_dir / rd.SUMMARY, summary)
    if summary["headroom_bytes"] < 0:
        log(over_cap_warning(cfg.quant_method, summary))
    print_summary(summary, log)
    return summary


def after_quant_numbers(report: dict) -> dict:
    """The summary's numbers past post-quant: post+tilt (NGRAM_TILT_ENABLED=1) and post+TTT,
    labelled post+TTT+tilt when the tilt ran inside it (each on the artifact)."""
    out: dict = {}
    post = report["post"]["val_bpb"]
    tilt = report.get("post_tilt")
    if tilt and tilt.get("weights") == "post":
        out.update(post_tilt_val_bpb=tilt["val_bpb"], post_tilt_val_loss=tilt["val_loss"],
                   tilt_gain=tilt["val_bpb"] - post)
    ttt = report.get("post_ttt")
    if ttt:  # the third number (TTT=chunk|lora), beside the two it builds on
        out.update(post_ttt_val_bpb=ttt["val_bpb"], post_ttt_val_loss=ttt["val_loss"],
                   ttt_mode=ttt.get("ttt", ""), ttt_gain=ttt["val_bpb"] - post,
                   ttt_label="post+TTT+tilt" if ttt.get("tilt") else "post+TTT")
    return out


def unpackable_method(method: str) -> bool:
    """Whether QUANT_METHOD's artifacts use a framed coder the packed script leaves out."""
    return method in RECORD_METHODS and any(
        c in FRAMED for c in record_policy(method, quant.QuantPolicy()).compressors)


def over_cap_warning(method: str, summary: dict) -> str:
    """Only gptq/rtn fit BUDGET_BYTES; int8 and the records' methods set their own size, so an
    unpacked run (PACK=0, where no size check refuses it) must say when it is over the cap."""
    return (f"budget:WARNING code + model = {summary['total_bytes']:,} bytes is over BUDGET_BYTES="
            f"{summary['cap_bytes']:,} by {-summary['headroom_bytes']:,}: QUANT_METHOD={method} "
            "sets its own size (only gptq and rtn fit the budget), so this artifact would not "
            "pack; use QUANT_METHOD=gptq or raise BUDGET_BYTES")


def quant_only(run: str) -> int:
    """QUANT_ONLY=runs/ID: re-quantize, evaluate and pack a finished run without training
    again, under the run's saved config with any variable set now overriding it (BUDGET_BYTES,
    QUANT_METHOD, QUANT_SMALL_NUMEL, EVAL_STRIDE, ...). The new artifact/eval pair replaces the
    old one only once complete; the old one moves to previous/<n>/ (golf.run.rundir rule 4)."""
    run_dir = Path(run)
    for name in (rd.CONFIG, rd.EMA):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"QUANT_ONLY={run}: no {name} in {run_dir}; point QUANT_ONLY at "
                                    "the folder of a finished run (runs/<RUN_ID>)")
    cfg = Config.from_env(base=rd.load_config(run_dir, "QUANT_ONLY"), cpu_preset=False)
    cfg = preflight(cfg.replace(run_id=run_dir.name))
    why = rd.unwritable_reason(run_dir)
    if why:
        raise rd.RunIOError(f"QUANT_ONLY={run}: {why}; nothing was written")
    with rd.run_lock(run_dir, f"QUANT_ONLY={run} train_gpt.py"):
        old = run_dir / rd.SUMMARY
        prev = json.loads(old.read_text()) if old.is_file() else {}
        log = make_logger(run_dir, 0)
        log(f"quant_only:{run_dir} method:{cfg.quant_method} budget_bytes:{cfg.budget_bytes}")
        finish_run(cfg, run_dir, log, PhaseTimer(), Finish(
            steps=int(prev.get("steps", 0)), train_time_ms=float(prev.get("train_time_ms", 0.0))))
    return 0


def eval_only() -> int:
    """Evaluate ARTIFACT (the round-trip proof's mode) and print the exact-result line: of the
    plain post-quant pass, or with TTT / NGRAM_TILT_ENABLED set of the pass they make the score
    (post+TTT, tilted when both; else post+tilt), as eval.json's score record holds it."""
    artifact = settings.read("ARTIFACT", os.environ) or rd.ARTIFACT
    cfg = Config.from_env()
    seq_len = cfg.effective_eval_seq_len
    ttt, tilt = ttt_settings(), tilt_settings()
    request = evaluate.EvalRequest(data=cfg.data_path, tokenizer=cfg.tokenizer_path,
                                   seq_len=seq_len, stride=cfg.eval_stride,
                                   max_tokens=cfg.max_eval_tokens or None,
                                   batch_tokens=cfg.val_batch_size,
                                   device=distributed.default_device())
    if (ttt is None or not ttt.active) and (tilt is None or not tilt.enabled):
        res = evaluate.evaluate_source(artifact, request).to_dict()
        score = "post"
    else:  # the pass the score came from, with the same windows as the run's own evaluation
        report = evaluate.run_eval(None, replace(request, artifact=artifact, ttt=ttt, tilt=tilt,
                                                 mode=run_eval_mode(cfg.eval_stride)), log=None)
        score = "post_ttt" if "post_ttt" in report else "post_tilt"
        res = report[score]
    print(f"eval_mode:{eval_mode(cfg.eval_stride)} seq_len:{seq_len} stride:{cfg.eval_stride} "
          f"tokens:{res['tokens']} bytes:{res['bytes']} partial:{int(res['partial'])} "
          f"eval_time:{res['seconds'] * 1000:.0f}ms score:{score}")
    print(f"final_roundtrip_exact val_loss:{res['val_loss']:.8f} val_bpb:{res['val_bpb']:.8f} "
          f"val_bpb_hex:{float(res['val_bpb']).hex()} score:{score}")
    return 0


def config_problems_beside(found: list[str]) -> list[str]:
    """The run config's own problems (cross-field ones, the byte budget) to report together
    with the environment's, so one error lists them all; none when no config can be built."""
    try:
        cfg = config_from_env(os.environ)
    except (ValueError, OSError):  # a value that does not parse: `found` names it already
        return []
    return [p for p in cfg.problems() + budget_problems(cfg) if p not in found]


def settings_help() -> str:
    """--help: the settings table with the defaults without and with CUDA."""
    ship.load_switchable()
    methods = "\n".join("  " + line for line in describe_methods())
    return (USAGE + "\n" + settings.render_help(settings.catalogue(), preset_columns())
            + "\n\nQUANT_METHOD values:\n" + methods)


def main(argv: list[str] | None = None) -> int:
    """`argv` (train_gpt.py passes sys.argv[1:]): only --help/-h; anything else is exit 2.
    The environment is checked against the settings table before any mode starts."""
    args = list(argv or [])
    if args and args[0] in ("-h", "--help") and len(args) == 1:
        print(settings_help())
        return 0
    if args:
        print(f"train_gpt.py: unknown argument {args[0]!r}; settings are environment variables "
              "(python train_gpt.py --help lists them)", file=sys.stderr)
        return 2
    with user_errors(), distributed.session(), rd.held_locks():
        found = env_problems()
        if found:
            raise ConfigError(found + config_problems_beside(found))
        if settings.read("EVAL_ONLY", os.environ):
            return eval_only()
        if settings.read("QUANT_ONLY", os.environ):
            return quant_only(settings.read("QUANT_ONLY", os.environ))
        run_pipeline(config_from_env(os.environ))
    return 0
