"""The run directory: every file name it holds and who may write what (nothing lost).

Rules (docs/nothing-lost.md states the same):
1. A run directory belongs to one run. A new run refuses a RUN_ID whose folder holds files;
   OVERWRITE=1 removes that earlier run's own files (RUN_FILES, previous/) and nothing else.
2. RESUME=runs/X continues X under X's own config.json, never the environment's. A variable
   set now that changes what defines the model, data or seed is refused (ConfigError naming
   each field, old -> new); the settings in RESUME_MAY_CHANGE (wallclock cap, ITERATIONS to
   extend, logging/eval/checkpoint cadence, quantizer and budget) are taken and logged.
   config.json is rewritten only after every check passed.
3. A trained run (ema.pt written) is never trained into again: RESUME on it is refused unless
   RUN_ID names a new folder, which forks: the checkpoint is read from X, everything is
   written to a new sibling folder <parent of X>/<RUN_ID>, and X is not touched.
4. The artifact and eval.json are one pair. Quantize and evaluate write into STAGING; only
   when both are complete is the previous pair (with its reports and summary) moved to
   previous/<n>/ and the new one moved in, so a failure leaves the earlier pair intact.
   eval.json names the artifact beside it by file name (artifact_ref), so it still names its
   own after the move.
5. Training writes checkpoint.pt at its last step before any final output (ema.pt,
   quantization), so a failure after training costs a resume, not the run.
6. Data and tokenizer paths are recorded absolute (the user's spelling in *_given, and the
   cwd), so eval_bpb.py and pack.py work from any folder.
7. A write that fails for lack of space or permission (ENOSPC, EROFS, EACCES, ...) is one
   RunIOError naming the path, what the errno means and what was kept.
8. One writer at a time: a command that writes a run directory (training, QUANT_ONLY,
   eval_bpb.py RUN) holds an OS lock on RUN/.lock for its whole life; a second one is refused
   with one line naming the holder's pid and command. The kernel drops the lock when its
   process dies, so a crash leaves no stale lock to clean up.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from golf.run.atomic import atomic_write_json
from golf.run.checkpoint import load_torch_file
from golf.run.config import Config
from golf.run.distributed import on_rank0
from golf.run.errors import IO_ERRNOS, ConfigError, RunIOError, RunLockError, io_message

CONFIG = "config.json"
TRAIN_LOG = "train.log"
METRICS = "metrics.jsonl"
MODEL = "model.pt"
EMA = "ema.pt"
CHECKPOINT = "checkpoint.pt"
HESSIANS = "hessians.pt"
ARTIFACT = "final_model.gkq"
QUANT_REPORT_JSON = "quant_report.json"
QUANT_REPORT_PNG = "quant_report.png"
EVAL = "eval.json"
SUMMARY = "summary.json"
LOSS_PNG = "loss.png"
SENSITIVITY_JSON = "sensitivity.json"
SENSITIVITY_PNG = "sensitivity.png"
IMPORT_INFO = "import.json"      # golf.interop: where an imported run came from
PREVIOUS = "previous"        # previous/<n>/: earlier artifact/eval pairs of this run
STAGING = ".staging"         # the pair being written (rule 4)
LOCK = ".lock"               # held by the one command writing the run (rule 8)

# every file a run (train -> quantize -> eval -> plots) writes in its folder
RUN_FILES = (CONFIG, TRAIN_LOG, METRICS, MODEL, EMA, CHECKPOINT, HESSIANS, ARTIFACT,
             QUANT_REPORT_JSON, QUANT_REPORT_PNG, EVAL, SUMMARY, LOSS_PNG, SENSITIVITY_JSON,
             SENSITIVITY_PNG, IMPORT_INFO)
# what describes one artifact: moved together into previous/<n>/ (rule 4)
PAIR_FILES = (ARTIFACT, EVAL, QUANT_REPORT_JSON, QUANT_REPORT_PNG, SUMMARY)
PATH_FIELDS = ("data_path", "tokenizer_path")
# settings a resume may change (rule 2); every other field defines the model, data or seed
RESUME_MAY_CHANGE = frozenset({
    "iterations", "max_wallclock_seconds", "gptq_reserve_seconds", "val_loss_every",
    "train_log_every", "checkpoint_every", "run_id", "runs_dir", "resume", "overwrite", "compile",
    "val_batch_size", "eval_seq_len", "eval_stride", "max_eval_tokens", "quant_method",
    "gptq_calib_batches", "quant_small_numel", "quant_sensitivity", "budget_bytes",
    "budget_margin_bytes"})
_MAY_CHANGE_TEXT = ", ".join(sorted(n.upper() for n in RESUME_MAY_CHANGE
                                   - {"resume", "run_id", "runs_dir", "overwrite"}))


# ----------------------------------------------------------------------------- where
def resolve_resume(resume: str) -> Path:
    """RESUME (a run dir or a checkpoint file) -> the checkpoint path."""
    p = Path(resume)
    ck = p / CHECKPOINT if p.is_dir() else p
    if not ck.is_file():
        raise ConfigError([f"RESUME={resume}: no checkpoint at {ck}; point RESUME at a run dir "
                           f"holding {CHECKPOINT} (written at the end of training, on SIGINT/"
                           "SIGTERM and every CHECKPOINT_EVERY steps) or unset it"])
    return ck


def resolve_run_dir(cfg: Config, ckpt_path: Path | None, run_dir: str | Path | None = None) -> Path:
    """The folder this run writes: given; the resumed run's own (or, when RUN_ID names another
    folder, that sibling: a fork, rule 3); or RUNS_DIR/RUN_ID (default: a UTC timestamp)."""
    if run_dir is not None:
        return Path(run_dir)
    if ckpt_path is not None:
        src = ckpt_path.parent
        return src.parent / cfg.run_id if cfg.run_id and cfg.run_id != src.name else src
    return Path(cfg.runs_dir) / (cfg.run_id or time.strftime("%Y%m%d_%H%M%S", time.gmtime()))


def is_trained(run_dir: Path) -> bool:
    """Training finished there: its final output (ema.pt) exists (rule 3)."""
    return (run_dir / EMA).is_file()


def unwritable_reason(folder: Path) -> str | None:
    """Why nothing can be created under `folder` (its nearest existing ancestor is checked)."""
    p = folder.resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    if os.access(p, os.W_OK | os.X_OK):
        return None
    ro = os.statvfs(p).f_flag & os.ST_RDONLY if hasattr(os, "statvfs") else 0
    return f"{p} is not writable ({IO_ERRNOS[errno.EROFS if ro else errno.EACCES]})"


def run_dir_problem(run_dir: Path, cfg: Config, *, resuming: bool) -> str | None:
    """Why `run_dir` may not take this run (rule 1): not writable, or it holds files of another
    run. None when it is free, resumed in place, or OVERWRITE=1."""
    if run_dir.exists() and not run_dir.is_dir():
        return f"RUN_ID={run_dir.name}: {run_dir} exists and is not a folder; choose another RUN_ID"
    why = unwritable_reason(run_dir)
    if why:
        return f"RUNS_DIR={cfg.runs_dir}: {why}; choose a writable RUNS_DIR (nothing was written)"
    if resuming or cfg.overwrite or not run_dir.exists():
        return None
    held = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK)
    if not held:
        return None
    shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
    return (f"RUN_ID={run_dir.name}: {run_dir} already holds an earlier run ({shown}); choose "
            f"another RUN_ID, continue it with RESUME={run_dir}, or set OVERWRITE=1 to replace it")


def check_run_dir(run_dir: Path, cfg: Config, *, resuming: bool) -> None:
    """Refuse a reused run directory before any data is read. Rank 0 alone looks and every
    rank gets its verdict, so a slower rank never mistakes rank 0's fresh config.json for an
    earlier run."""
    problem = on_rank0("run_dir", lambda: run_dir_problem(run_dir, cfg, resuming=resuming))
    if problem:
        raise ConfigError([problem])


def _clear_earlier_run(run_dir: Path) -> list[str]:
    """OVERWRITE=1: remove the earlier run's own files only (rule 1)."""
    cleared = [n for n in RUN_FILES if (run_dir / n).is_file()]
    for n in cleared:
        (run_dir / n).unlink()
    prev = run_dir / PREVIOUS
    if prev.is_dir():
        for sub in sorted(prev.iterdir()):
            for n in PAIR_FILES:
                (sub / n).unlink(missing_ok=True)
            if sub.is_dir() and not any(sub.iterdir()):
                sub.rmdir()
        if not any(prev.iterdir()):
            prev.rmdir()
            cleared.append(PREVIOUS)
    return cleared


def start_run_dir(run_dir: Path, cfg: Config, world_size: int, *, resuming: bool,
                  given: Mapping[str, str] | None = None) -> list[str]:
    """Rank 0, after every input check passed: create the folder and write config.json (the
    paths absolute, the user's spelling and the cwd beside them, rule 6). With OVERWRITE=1 (and
    not resuming) the earlier run's files are removed first. Returns what it removed."""
    with io_guard(f"creating {run_dir}", "nothing of this run was written yet"):
        run_dir.mkdir(parents=True, exist_ok=True)
        cleared = _clear_earlier_run(run_dir) if cfg.overwrite and not resuming else []
        record = {**{f"{k}_given": v for k, v in (given or {}).items()}, "cwd": os.getcwd()}
        if resuming and (run_dir / CONFIG).is_file():  # the first start's spelling and cwd stay
            old = json.loads((run_dir / CONFIG).read_text())
            record.update({k: old[k] for k in record if k in old})
        atomic_write_json(run_dir / CONFIG, {**cfg.to_dict(), **record, "world_size": world_size})
    return cleared


# ----------------------------------------------------------------------------- paths (rule 6)
def resolved(path: str | os.PathLike, var: str) -> Path:
    """`path` made absolute; a symlink loop is one ConfigError naming `var`, not a traceback."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as exc:  # 3.11 raises RuntimeError("Symlink loop ..."), 3.13 ELOOP
        raise ConfigError([f"{var}={path}: cannot be resolved ({exc}); a symbolic link there "
                           "points back into itself: fix the link or set another path"]) from None


def absolute_paths(cfg: Config) -> tuple[Config, dict[str, str]]:
    """(cfg with DATA_PATH/TOKENIZER_PATH absolute, the user's spelling of each)."""
    given = {k: getattr(cfg, k) for k in PATH_FIELDS}
    return cfg.replace(**{k: str(resolved(v, k.upper())) for k, v in given.items()}), given


def load_config(run_dir: str | os.PathLike, what: str = "RUN_DIR") -> Config:
    """A run's config.json with its paths made absolute (see `_absolute_config`)."""
    rd = Path(run_dir)
    path = rd / CONFIG
    if not path.is_file():
        raise ConfigError([f"{what}={run_dir}: no {CONFIG} in {rd}; point it at the folder of a "
                           "run (runs/<RUN_ID>)"])
    return _absolute_config(json.loads(path.read_text()), path)


def _absolute_config(raw: Mapping[str, Any], where: Path) -> Config:
    """Relative paths (runs written before paths were recorded absolute) resolved against the
    recorded cwd, else the current one if they exist there, else one error naming the fix."""
    fixed = {}
    for k in PATH_FIELDS:
        p = Path(raw.get(k, getattr(Config, k)))
        if p.is_absolute():
            continue
        base = raw.get("cwd")
        if base or p.exists():
            fixed[k] = str(resolved(Path(base) / p if base else p, f"{where}: {k.upper()}"))
        else:
            raise ConfigError([f"{where}: {k.upper()}={p} is relative to the folder that run was "
                               "started from, which it does not record; run from that folder, or "
                               f"write the absolute path into {where} (or set {k.upper()})"])
    return Config.from_dict({**raw, **fixed})


def saved_config(ckpt_path: Path) -> Config:
    """The resumed run's own config: its folder's config.json, else the copy every checkpoint
    holds (a checkpoint moved out of its run folder still resumes as the run it was)."""
    if (ckpt_path.parent / CONFIG).is_file():
        return load_config(ckpt_path.parent, "RESUME")
    ck = load_torch_file(ckpt_path, "point RESUME at a checkpoint.pt golfkit wrote", keys=("config",))
    return _absolute_config(ck["config"], ckpt_path)


# ----------------------------------------------------------------------------- resume (rule 2)
def _same(name: str, a: Any, b: Any) -> bool:
    if name in PATH_FIELDS:
        return Path(a).resolve() == Path(b).resolve()
    return a == b


def resume_changes(saved: Config, new: Config) -> tuple[list[str], list[str]]:
    """(refused, allowed) differences between the resumed run's config and this one, each
    'FIELD: old -> new'."""
    refused, allowed = [], []
    for k, old in saved.to_dict().items():
        val = getattr(new, k)
        if k == "preset" or _same(k, old, val):
            continue
        (allowed if k in RESUME_MAY_CHANGE else refused).append(f"{k.upper()}: {old!r} -> {val!r}")
    return refused, allowed


def resume_config(saved: Config, env: Mapping[str, str]) -> Config:
    """The config a resume runs under: the saved run's, with the variables set now on top
    (train() checks which of them may change)."""
    preset = (env.get("PRESET") or "").strip().lower()
    if preset and preset != saved.preset:
        raise ConfigError([f"PRESET={preset}: the resumed run was built with PRESET="
                           f"{saved.preset or '(none)'}; a resume takes the run's own config, so "
                           "unset PRESET"])
    return Config.from_env(env, base=saved.replace(run_id=""), cpu_preset=False)


def check_resume(ckpt_path: Path, cfg: Config, run_dir: Path, log_changes: list[str]) -> None:
    """Refuse a resume that would change what defines the run, or train into a trained run
    (rules 2, 3); the allowed changes are appended to `log_changes`."""
    src = ckpt_path.parent
    problems = []
    refused, allowed = resume_changes(saved_config(ckpt_path), cfg)
    if refused:
        where = src / CONFIG if (src / CONFIG).is_file() else ckpt_path
        problems.append(f"RESUME={cfg.resume}: these settings define the run's model, data or "
                        f"seed and differ from {where}: {'; '.join(refused)}; unset them"
                        f" (a resume takes the run's own config; only {_MAY_CHANGE_TEXT} may "
                        "change), or start a new run")
    log_changes.extend(allowed)
    if run_dir == src and is_trained(src):
        problems.append(f"RESUME={cfg.resume}: that run finished training ({EMA}"
                        f"{', ' + ARTIFACT if (src / ARTIFACT).is_file() else ''}"
                        f"{', ' + EVAL if (src / EVAL).is_file() else ''} exist) and its outputs "
                        f"are never replaced: continue into a new folder with RESUME={cfg.resume} "
                        "RUN_ID=<new name> (e.g. with ITERATIONS=<more>), or re-quantize it with "
                        f"QUANT_ONLY={src}")
    if problems:
        raise ConfigError(problems)


# ----------------------------------------------------------------------------- the pair (rule 4)
def staging_dir(run_dir: Path) -> Path:
    return run_dir / STAGING


def clear_staging(run_dir: Path) -> Path:
    """A fresh, empty staging folder (a leftover one is a failed earlier attempt: ours)."""
    st = staging_dir(run_dir)
    if st.exists():
        shutil.rmtree(st)
    st.mkdir(parents=True)
    return st


def artifact_ref(artifact: str | os.PathLike | None, report_path: str | os.PathLike | None
                 ) -> str | None:
    """How an eval report names its artifact: by bare file name when the two sit in one folder
    (so a pair moved together, to previous/<n>/ or out of staging, still names its own
    artifact), else by the path given. `resolve_artifact_ref` is the reverse."""
    if artifact is None or report_path is None:
        return None if artifact is None else str(artifact)
    a, r = Path(artifact), Path(report_path)
    return a.name if a.resolve().parent == r.resolve().parent else str(artifact)


def resolve_artifact_ref(report_path: str | os.PathLike) -> Path | None:
    """The artifact an eval report names (see artifact_ref), as a path."""
    ref = json.loads(Path(report_path).read_text()).get("artifact")
    if not ref:
        return None
    p = Path(ref)
    return p if len(p.parts) > 1 else Path(report_path).parent / p  # a path as given, or a name


def publish_pair(run_dir: Path, log: Callable[[str], None]) -> Path | None:
    """Move the complete staged pair in; the previous pair (if any) first goes to
    previous/<n>/. Returns that folder, or None when there was no previous pair."""
    st = staging_dir(run_dir)
    missing = [n for n in (ARTIFACT, EVAL) if not (st / n).is_file()]
    if missing:
        raise RuntimeError(f"{st}: staged pair incomplete (missing {', '.join(missing)})")
    old = [n for n in PAIR_FILES if (run_dir / n).is_file()]
    prev = None
    if old:
        root = run_dir / PREVIOUS
        n = 1 + max([int(p.name) for p in root.iterdir() if p.name.isdigit()], default=0) \
            if root.is_dir() else 1
        prev = root / str(n)
        prev.mkdir(parents=True)
        for name in old:
            os.replace(run_dir / name, prev / name)
        log(f"quant:previous pair kept in {prev} ({', '.join(old)})")
    for p in sorted(st.iterdir()):
        os.replace(p, run_dir / p.name)
    st.rmdir()
    return prev


# ----------------------------------------------------------------------------- one writer (rule 8)
_HELD: dict[Path, int] = {}  # run dirs this process holds -> open lock fd (nested use is free)
_SCOPES = [0]                # depth of held_locks(): only the outermost releases


def _holder(fd: int) -> str:
    """What the lock file says of the process holding it ('pid N: command')."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", "replace").strip()
    return text or "a process that has not yet written its name"


def lock_run(run_dir: str | os.PathLike, command: str | None = None) -> None:
    """Take RUN/.lock (fcntl.flock, exclusive) until the enclosing `held_locks()` ends (or the
    process does). A second writer is refused with one RunLockError; a lock this process
    already holds is taken again for free (QUANT_ONLY evaluates and packs inside its own)."""
    key = Path(run_dir).resolve()
    if key in _HELD:
        return
    key.mkdir(parents=True, exist_ok=True)
    fd = os.open(key / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise RunLockError(f"{run_dir}: another golfkit command is writing this run ({holder}); "
                           "wait for it to finish, or work on a copy of the folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}: {command or ' '.join(sys.argv)}\n".encode())
    _HELD[key] = fd
    remove_killed_temps(key)


def remove_killed_temps(run_dir: Path) -> list[Path]:
    """Temp files of a killed write (golf.run.atomic's .<name>.*.tmp, quant's <name>.*.tmp, for
    the run's own file names): with the lock held no other command writes here, so they are
    a dead process's, never someone else's file."""
    names = set(RUN_FILES)
    gone = []
    for p in run_dir.glob("*.tmp"):
        stem = p.name[1:] if p.name.startswith(".") else p.name
        if p.is_file() and any(stem.startswith(n + ".") for n in names):
            p.unlink()
            gone.append(p)
    return gone


@contextmanager
def held_locks() -> Iterator[None]:
    """Run locks taken inside the outermost such block are released at its end: a command's
    life (train() alone, or train + quantize + eval + pack under golf.main). The file stays:
    removing it could let two writers lock two different files."""
    before = set(_HELD)
    _SCOPES[0] += 1
    try:
        yield
    finally:
        _SCOPES[0] -= 1
        for key in (set(_HELD) - before if _SCOPES[0] == 0 else ()):
            os.close(_HELD.pop(key))  # closing the descriptor releases the lock


@contextmanager
def run_lock(run_dir: str | os.PathLike, command: str | None = None) -> Iterator[None]:
    """lock_run for the block's duration."""
    with held_locks():
        lock_run(run_dir, command)
        yield


# ----------------------------------------------------------------------------- I/O (rule 7)
def append_line(path: Path, line: str) -> None:
    """Append one line to a run's log (train.log, metrics.jsonl); a failed write (a full disk
    reports no file name) names the file."""
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, exc.filename or str(path)) from exc


@contextmanager
def io_guard(doing: str, kept: str) -> Iterator[None]:
    """Turn a space/permission OSError inside the block into one RunIOError (rule 7)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in IO_ERRNOS:
            raise
        raise RunIOError(io_message(exc, doing, kept)) from None
