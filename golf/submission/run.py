"""A finished run as the packer reads it: its files on disk, checked once, and what they say
was scored (the headline result, its eval seconds, the env that re-creates its evaluation).

Why read back from disk: the numbers a submission records are those of the files that ship.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from quant.artifact import check_artifact_config, parse_artifact
from quant.errors import ArtifactError, ConfigMismatchError

from golf.run import rundir as rd
from golf.run.checkpoint import load_torch_file
from golf.run.config import Config
from golf.run.errors import PackError, RoundTripError

REQUIRED_RUN_FILES = (rd.CONFIG, rd.EVAL, rd.ARTIFACT, rd.TRAIN_LOG)


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
    eval_file: str = rd.EVAL      # the eval record the score is read from (pack.py --score)


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


def score_path(run_dir: Path, score: str | None) -> Path:
    """The eval record a run's score is read from: eval.json, or `score`, the name of a
    diagnostic record beside it (eval.<label>.json, e.g. written by `eval_bpb.py RUN --ttt lora`
    with NGRAM_TILT_ENABLED=1). Only a file in the run directory: it belongs to this run."""
    if not score:
        return run_dir / rd.EVAL
    p = Path(score)
    if p.parent != Path(".") and p.resolve().parent != run_dir.resolve():
        raise PackError(f"--score {score}: not in the run directory {run_dir}; pass the name of an "
                        f"eval record beside its {rd.EVAL} (e.g. eval.ttt-lora-post-tilt.json)")
    return run_dir / p.name


def check_score_record(path: Path, ev: Mapping[str, Any], run_dir: Path) -> None:
    """A diagnostic record may carry the score only if it is a full, byte-checked evaluation
    of this run's artifact on this run's data and tokenizer (one PackError naming the fix)."""
    fix = f"re-run eval_bpb.py {run_dir} with the same TTT/tilt settings on the full split"
    if ev.get("partial"):
        raise PackError(f"{path}: a partial evaluation ({(ev.get('post') or {}).get('tokens')} "
                        f"targets, not the whole val split) cannot be the score; {fix}")
    if ev.get("byte_check") is False or not ev.get("artifact_sha256"):
        raise PackError(f"{path}: evaluated without the byte check or without hashing the "
                        f"artifact, so it cannot be the score; {fix}")
    saved = rd.load_config(run_dir)
    for key, own in (("data", saved.data_path), ("tokenizer", saved.tokenizer_path)):
        if ev.get(key) and own and Path(ev[key]).resolve() != Path(own).resolve():
            raise PackError(f"{path}: scored with {key} {ev[key]}, not the run's {own}; {fix}")


def load_run(run_dir: str | os.PathLike, score: str | None = None) -> RunInfo:
    """Read a run directory; missing files raise one PackError naming them and the fix.
    `score`: the eval record to read the score from (see score_path); default eval.json."""
    d = Path(run_dir)
    if not d.is_dir():
        raise PackError(f"{d}: run directory not found; pass the RUNS_DIR/RUN_ID of a finished run")
    missing = [f for f in REQUIRED_RUN_FILES if not (d / f).is_file()]
    if missing:
        raise PackError(f"{d}: missing {', '.join(missing)}; finish the run (train -> quantize -> "
                        "eval) before packing")
    config = _read_json(d / rd.CONFIG)
    ev_path = score_path(d, score)
    if not ev_path.is_file():
        raise PackError(f"{ev_path}: eval record not found; write it with eval_bpb.py {d} "
                        "(a TTT or tilted evaluation goes to eval.<label>.json beside eval.json)")
    ev = _read_json(ev_path)
    if not (ev.get("post") or {}).get("val_bpb"):
        raise PackError(f"{ev_path}: no post-quant result; run eval_bpb.py on the artifact")
    if score:
        check_score_record(ev_path, ev, d)
    summary = _read_json(d / rd.SUMMARY) if (d / rd.SUMMARY).is_file() else {}
    hess = None
    if (d / rd.HESSIANS).is_file():
        raw = load_torch_file(d / rd.HESSIANS, "re-run training to recollect it")
        hess = {k: v for k, v in raw.items() if k != "hessians"}
    log_text = (d / rd.TRAIN_LOG).read_text(errors="replace")
    train_ms = summary.get("train_time_ms") or _last_metric(d / rd.METRICS, "train_time_ms")
    steps = summary.get("steps") or _last_metric(d / rd.METRICS, "step")
    return RunInfo(d, config, ev, summary, hess, int(config.get("seed", 0)),
                   _hardware(config, summary, log_text),
                   float(train_ms) if train_ms is not None else None,
                   int(steps) if steps is not None else None, ev_path.name)


def verify_artifact(run: RunInfo) -> None:
    """Once, before any round trip: the artifact's header and checksums are intact, it was made
    for this run's model (meta.config against config.json) and it is the file eval.json
    measured (sha256), so a corrupt, foreign or swapped artifact fails in well under 1 s."""
    path = run.run_dir / rd.ARTIFACT
    blob = path.read_bytes()
    try:
        header, _ = parse_artifact(blob, str(path))
    except ArtifactError as exc:  # it cannot round trip: say so before trying any form
        raise RoundTripError(f"{exc} (checked before any round trip)") from None
    meta = header.get("meta") or {}
    try:  # an artifact recording no config cannot be compared (its round trip refuses it)
        if meta.get("config"):
            check_artifact_config(meta, Config.from_dict(run.config).model_dict(), str(path))
    except ConfigMismatchError as exc:
        raise PackError(f"{exc.args[0].split('; set these')[0]}; it is not this run's artifact "
                        f"({run.run_dir / rd.CONFIG}): pack the run that made it, or re-quantize "
                        f"this one with QUANT_ONLY={run.run_dir}") from None
    want = run.eval.get("artifact_sha256")
    if want and hashlib.sha256(blob).hexdigest() != want:
        raise PackError(f"{path}: not the artifact {run.run_dir / rd.EVAL} was measured on (sha256 "
                        f"differs); re-run eval_bpb.py {run.run_dir} (or QUANT_ONLY={run.run_dir})")


def roundtrip_settings(run: RunInfo, data_path: str | None = None,
                       tokenizer_path: str | None = None) -> dict[str, str]:
    """The env that re-creates the run's scored evaluation exactly: its windows and data, and
    the TTT and tilt variables of the score (score_env), which the packed script then re-runs."""
    ev, cfg = run.eval, run.config
    post = ev.get("post") or {}
    if not (data_path and tokenizer_path):  # recorded absolute (or resolved for an older run)
        saved = rd.load_config(run.run_dir)
        data_path, tokenizer_path = data_path or saved.data_path, tokenizer_path or saved.tokenizer_path
    data, tok = data_path, tokenizer_path
    stride = post.get("stride", ev.get("stride", 0)) if post.get("mode", ev.get("mode")) == "sliding" else 0
    return {**env_strings(score_env(ev)),
            "DATA_PATH": str(Path(data).resolve()), "TOKENIZER_PATH": str(Path(tok).resolve()),
            "VOCAB_SIZE": str(cfg.get("vocab_size", 1024)),
            "EVAL_SEQ_LEN": str(post.get("seq_len", ev.get("seq_len"))),
            "EVAL_STRIDE": str(stride),
            "MAX_EVAL_TOKENS": str(cfg.get("max_eval_tokens", 0) or 0),
            "VAL_BATCH_SIZE": str(cfg.get("val_batch_size", 524_288))}


def score_key(ev: Mapping[str, Any]) -> str:
    """Which block of an eval record is the score: post_ttt (score-first TTT of the artifact,
    tilted when a tilt ran), else post_tilt (the artifact's tilted scoring), else post.
    TTT or tilt on full-precision weights is a diagnostic, never a score."""
    for key in ("post_ttt", "post_tilt"):
        b = ev.get(key) or {}
        if b.get("weights") == "post" and b.get("val_bpb") is not None:
            return key
    return "post"


def tilt_in_score(ev: Mapping[str, Any]) -> dict[str, Any] | None:
    """The tilt settings (env name -> value) of the score, None when the score is untilted."""
    key = score_key(ev)
    return (ev.get(key) or {}).get("tilt") if key != "post" else None


def score_env(ev: Mapping[str, Any]) -> dict[str, Any]:
    """The TTT and tilt variables (env name -> value) that produced a record's score."""
    env = ttt_env(ev["post_ttt"]) if score_key(ev) == "post_ttt" else {}
    return {**env, **(tilt_in_score(ev) or {})}


def ttt_env(block: Mapping[str, Any]) -> dict[str, Any]:
    """A TTT block's variables (a record written before they were kept: TTT alone)."""
    return dict(block.get("env") or {"TTT": block.get("ttt")})


def env_strings(values: Mapping[str, Any]) -> dict[str, str]:
    """Recorded values as environment strings that parse back to the same values (booleans as
    1/0, floats by repr, so a learning rate returns bit for bit)."""
    def text(v: Any) -> str:
        if isinstance(v, bool):
            return "1" if v else "0"
        return repr(v) if isinstance(v, float) else str(v)
    return {k: text(v) for k, v in values.items()}


def headline(ev: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """(the scored block, eval_method) from what actually ran (score_key)."""
    base = f"sliding(stride={ev.get('stride')})" if ev.get("mode") == "sliding" else "roundtrip"
    key = score_key(ev)
    tilt = "ngram_tilt+" if tilt_in_score(ev) else ""
    if key == "post_ttt":
        return dict(ev[key]), f"ttt({ev[key].get('ttt')}, score-first)+{tilt}{base}"
    return dict(ev[key]), tilt + base
