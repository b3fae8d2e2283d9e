"""Round-trip proof: the shipped train_gpt.py, run alone on the shipped artifact, reproduces
the run's score bit for bit (post-quant, or post+TTT / post+tilt, which it then carries).

Why outside the repo with a clean environment: the proof must show that nothing of ours on
sys.path (or in the cwd) is needed, so it copies both files into a fresh temp dir (in TMPDIR,
named as golfkit's own, and removed by the next pack if this one is killed; the child dies
with the packer).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from golf.run import rundir as rd
from golf.run.errors import RoundTripError
from golf.submission.tempdirs import die_with_parent, roundtrip_dir

_LINE = re.compile(r"final_roundtrip_exact val_loss:(\S+) val_bpb:(\S+)(?: val_bpb_hex:(\S+))?")
# Threads and MKL's kernel path (MKL_CBWR) decide the rounding: the proof runs the parent's.
_KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
             "MKL_CBWR", "CUDA_VISIBLE_DEVICES", "SYSTEMROOT")


@dataclass(frozen=True)
class RoundTripResult:
    val_loss: float
    val_bpb: float
    expected_bpb: float
    seconds: float
    output_tail: str

    @property
    def exact(self) -> bool:
        return self.val_bpb.hex() == self.expected_bpb.hex()


@dataclass(frozen=True)
class RoundTripTarget:
    """What the round trip must reproduce: the run's post-quant val_bpb (bit for bit, or
    within `tolerance`), and the artifact's name for error messages (the user's file, not the
    temp copy; None = the path given)."""
    bpb: float
    tolerance: float = 0.0
    label: str | None = None


def parse_roundtrip_line(output: str) -> tuple[float, float]:
    """(val_loss, val_bpb) from the last final_roundtrip_exact line (hex wins when present)."""
    found = _LINE.findall(output)
    if not found:
        raise RoundTripError("train_gpt.py printed no 'final_roundtrip_exact' line; check that "
                             "its EVAL_ONLY mode is intact (output tail below)\n" + output[-2000:])
    loss, bpb, bpb_hex = found[-1]
    return float(loss), (float.fromhex(bpb_hex) if bpb_hex else float(bpb))


def clean_env(settings: Mapping[str, str]) -> dict[str, str]:
    """A minimal environment: no PYTHONPATH, no inherited golfkit settings, only `settings`."""
    env = {k: os.environ[k] for k in _KEEP_ENV if k in os.environ}
    env.update({k: str(v) for k, v in settings.items()})
    return env


def run_roundtrip(script: str | os.PathLike, artifact: str | os.PathLike,
                  settings: Mapping[str, str], target: RoundTripTarget, *,
                  timeout: float = 1800.0, python: str = sys.executable) -> RoundTripResult:
    """Run `script` with EVAL_ONLY=1 and `settings` on `artifact` in a fresh temp dir and
    compare its val_bpb with `target`."""
    label = target.label or str(artifact)
    expected_bpb, tolerance = target.bpb, target.tolerance
    with rd.io_guard(f"copying the packed script and artifact into TMPDIR={tempfile.gettempdir()}"
                     " for the round trip (set TMPDIR to a folder with free space)",
                     "the run directory and any earlier pack"):
        work = roundtrip_dir()
        try:
            shutil.copyfile(script, work / "train_gpt.py")
            shutil.copyfile(artifact, work / Path(artifact).name)
        except OSError as exc:
            shutil.rmtree(work, ignore_errors=True)
            raise OSError(exc.errno, exc.strerror, exc.filename or str(work)) from exc
    try:
        env = clean_env({**settings, "EVAL_ONLY": "1", "ARTIFACT": str(work / Path(artifact).name)})
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([python, "-I", "train_gpt.py"], cwd=work, env=env, timeout=timeout,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  preexec_fn=die_with_parent())
        except subprocess.TimeoutExpired:
            raise RoundTripError(f"{script}: round-trip evaluation took over {timeout:.0f} s; "
                                 "pass a larger timeout or set MAX_EVAL_TOKENS") from None
        seconds = time.perf_counter() - t0
        out = proc.stdout
        if proc.returncode != 0:
            raise RoundTripError(f"{label}: the packed train_gpt.py failed the round trip on this "
                                 f"artifact (exit {proc.returncode}); its output ends:\n" + out[-2000:])
        loss, bpb = parse_roundtrip_line(out)
        res = RoundTripResult(loss, bpb, float(expected_bpb), seconds, out[-2000:])
        if not res.exact and abs(bpb - expected_bpb) > tolerance:
            raise RoundTripError(
                f"{label}: round-trip val_bpb {bpb!r} ({bpb.hex()}) != the run's scored val_bpb "
                f"{expected_bpb!r} ({float(expected_bpb).hex()}); the shipped file or artifact "
                "differs from what was evaluated: re-run eval on this artifact, then pack again")
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)
