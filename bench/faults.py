"""Fault injection for "nothing lost" (issue 13) and "untrusted files are data, wrong inputs
never give a number" (issue 26: bench/faults_inputs.py): every action the issues found
destroying work, running foreign code or failing badly, run against one tiny trained model in
a temp folder, through the CLIs' own entry points (train_gpt.py, pack.py, eval_bpb.py,
golf.data.prepare, the packed script) with the environment set as a user would, plus full
disks and read-only folders simulated by failing os.replace / os.access / writes.

    python -m bench.faults [--json faults.json] [--keep DIR] [--issue 13|26|all]

Prints one JSON object per case and a table: case, exit code, whether every file that existed
before the case still exists with its content (appended logs count as kept, a pair moved to
previous/<n>/ too) -- the "data kept" column --, whether a marker file appeared (code from a
file ran), peak memory, and the first line of the message. Cases another branch fixes show
"after merge: <branch>" until it is merged; only the others fail the bench.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator, Mapping
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/faults.py` as well as `python -m bench.faults`
    sys.path.insert(0, str(REPO))
from bench.fault_case import Case, first_error  # noqa: E402  (after the path guard)
from bench.faults_inputs import InputCases, vm_peak_mib, vm_peak_reset  # noqa: E402
from golf.run import rundir as rd  # noqa: E402

# the tiny model of tests/conftest.py's tiny_pipeline_config, as environment variables
TINY_ENV = {"PRESET": "cpu", "NUM_LAYERS": "2", "MODEL_DIM": "64", "NUM_HEADS": "4",
            "NUM_KV_HEADS": "2", "MLP_MULT": "2", "TRAIN_SEQ_LEN": "64",
            "TRAIN_BATCH_TOKENS": "1024", "GRAD_ACCUM_STEPS": "1", "ITERATIONS": "6",
            "WARMUP_STEPS": "0", "WARMDOWN_ITERS": "3", "MAX_WALLCLOCK_SECONDS": "0",
            "VAL_LOSS_EVERY": "0", "TRAIN_LOG_EVERY": "1", "VAL_BATCH_SIZE": "8192",
            "EVAL_SEQ_LEN": "64", "EVAL_STRIDE": "0", "GPTQ_CALIB_BATCHES": "2",
            "EMA_DECAY": "0.9", "MAX_EVAL_TOKENS": "4096", "QUANT_SMALL_NUMEL": "1024",
            "OMP_NUM_THREADS": "1"}
# variables a case may set; cleared before each so one case never leaks into the next
_CLEARED = set(TINY_ENV) | {"RESUME", "RUN_ID", "RUNS_DIR", "SEED", "QUANT_ONLY", "OVERWRITE",
                            "SUBMISSION_DIR", "PACK", "DATA_PATH", "TOKENIZER_PATH",
                            "BUDGET_BYTES", "GPTQ_RESERVE_SECONDS", "GOLF_COMPRESS_THREADS"}


def tiny_env(data_dir: str | Path, tokenizer: str | Path, **extra: str) -> dict[str, str]:
    """TINY_ENV over a prepared corpus, plus `extra` (all as strings)."""
    return {**TINY_ENV, "DATA_PATH": str(data_dir), "TOKENIZER_PATH": str(tokenizer),
            **{k: str(v) for k, v in extra.items()}}


def sigterm_after_first_step(cwd: Path, env: Mapping[str, str], timeout: float | None = None
                             ) -> tuple[int, list[str]]:
    """Run train_gpt.py and send SIGTERM once it logs step 1: (exit code, every output line)."""
    p = subprocess.Popen([sys.executable, str(REPO / "train_gpt.py")], cwd=cwd, env=dict(env),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    for line in p.stdout:
        out.append(line)
        if line.startswith("step:1/"):
            p.send_signal(signal.SIGTERM)
    return p.wait(timeout=timeout), out




# ----------------------------------------------------------------------------- tools
@contextlib.contextmanager
def environ(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    for k in _CLEARED:
        os.environ.pop(k, None)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def call(fn: Callable[[], int | None], env: Mapping[str, str], cwd: Path) -> tuple[int, str]:
    """Run a CLI entry in-process as a user would: (exit code, stderr + stdout)."""
    err, out = io.StringIO(), io.StringIO()
    here = os.getcwd()
    code = 0
    with environ(env), contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        os.chdir(cwd)
        try:
            code = int(fn() or 0)
        except SystemExit as exc:  # SystemExit("message") prints it and exits 1, as Python does
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                err.write(exc.code + "\n")
        except Exception as exc:  # a traceback: the worst outcome, recorded as such
            code = -1
            err.write(f"TRACEBACK {type(exc).__name__}: {exc}\n")
        finally:
            os.chdir(here)
    return code, err.getvalue() + out.getvalue()


def snapshot(root: Path) -> dict[str, tuple[str, bytes]]:
    """path -> (sha256, first 64 KiB) of every file under root (run locks aside: a lock file
    names its latest holder, which is bookkeeping, not data)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != rd.LOCK:
            b = p.read_bytes()
            out[str(p)] = (hashlib.sha256(b).hexdigest(), b[:65536])
    return out


def lost(before: Mapping[str, tuple[str, bytes]], root: Path) -> list[str]:
    """Earlier files that did not survive: neither their content anywhere under root, nor
    their path holding the same bytes followed by more (an appended log)."""
    now = snapshot(root)
    hashes = {h for h, _ in now.values()}
    gone = []
    for path, (h, head) in before.items():
        if h in hashes:
            continue
        cur = Path(path)
        if cur.is_file() and len(head) < 65536 and cur.read_bytes().startswith(head):
            continue
        gone.append(path)
    return gone


def failing_replace(name: str, code: int = errno.ENOSPC) -> contextlib.AbstractContextManager:
    """os.replace onto a file called `name` fails as a full disk (or `code`) would."""
    real = os.replace

    def fake(src, dst, *a, **k):
        if Path(dst).name == name:
            raise OSError(code, os.strerror(code), str(dst))
        return real(src, dst, *a, **k)
    return mock.patch.object(os, "replace", fake)


def unwritable(folder: Path) -> contextlib.AbstractContextManager:
    """os.access says `folder` is not writable (chmod does not bind root)."""
    real = os.access
    target = folder.resolve()

    def fake(path, mode, *a, **k):
        if Path(path).resolve() == target and mode & os.W_OK:
            return False
        return real(path, mode, *a, **k)
    return mock.patch.object(os, "access", fake)


# ----------------------------------------------------------------------------- the cases
class Bench:
    def __init__(self, tmp: Path):
        from golf.data.sources.embedded import prepare_embedded
        self.tmp = tmp
        self.data = prepare_embedded(tmp / "data")
        self.env = tiny_env(self.data.dataset_dir, self.data.tokenizer_path,
                            RUNS_DIR=tmp / "runs", PACK="0")
        self.marker = tmp / "MARKER"  # written by any hostile pickle or shadow module that runs
        self.cases: list[Case] = []

    def case(self, name: str, fn: Callable[[], int | None], env: Mapping[str, str], *,
             expect: str, want_code: int | None, must: Callable[[str], bool] = lambda _t: True,
             cwd: Path | None = None, continues: Path | None = None,
             removes: set[Path] = frozenset(), owner: str = "") -> Case:
        """`continues`: the unfinished run this command resumes in place, whose config.json,
        checkpoint.pt and the exports of its unfinished end (model.pt, hessians.pt: ema.pt
        was never written) it rightly rewrites, after its checks passed. `removes`: files the
        case is meant to remove or replace. `owner`: the branch whose fix the case needs."""
        before = snapshot(self.tmp / "work")
        self.marker.unlink(missing_ok=True)
        rss0 = vm_peak_reset()
        t0 = time.perf_counter()
        code, text = call(fn, env, cwd or self.tmp / "work")
        secs = time.perf_counter() - t0
        own = ({str(continues / n) for n in (rd.CONFIG, rd.CHECKPOINT, rd.MODEL, rd.HESSIANS)}
               if continues else set()) | {str(p) for p in removes}
        gone = [p for p in lost(before, self.tmp / "work") if p not in own]
        return self.judge(name, code, text, secs, gone, expect=expect, want_code=want_code,
                          must=must, owner=owner, peak=vm_peak_mib(rss0))

    def judge(self, name: str, code: int, text: str, secs: float, gone: list[str], *, expect: str,
              want_code: int | None, must: Callable[[str], bool], owner: str, peak: float) -> Case:
        """The case's verdict: exit code, nothing lost, no traceback, no marker, `must`."""
        marker = self.marker.exists()
        self.marker.unlink(missing_ok=True)
        # exit 2: our one-line errors; 1: SystemExit("error: ...") from the env parser
        code_ok = want_code is None or code == want_code or (want_code == 2 and code == 1)
        ok = code_ok and not gone and not marker and "Traceback" not in text \
            and "TRACEBACK" not in text and must(text)
        msg = (first_error(text.replace(str(self.tmp), "<tmp>")) if code else "ok") \
            + (f" LOST: {', '.join(gone)}" if gone else "") + (" MARKER WRITTEN" if marker else "")
        return self.record(Case(name, code, msg, not gone, round(secs, 2), expect, ok,
                                marker=marker, peak_mib=peak, owner=owner))

    def record(self, c: Case) -> Case:
        self.cases.append(c)
        print(json.dumps(asdict(c)), flush=True)
        return c

    def subprocess_case(self, name: str, argv: list[str], env: Mapping[str, str], *, cwd: Path,
                        expect: str, want_code: int, owner: str = "") -> Case:
        """A case run as its own process (the packed script); peak memory is not measured."""
        before = snapshot(self.tmp / "work")
        self.marker.unlink(missing_ok=True)
        t0 = time.perf_counter()
        p = subprocess.run(argv, cwd=cwd, env=dict(env), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=600)
        text = p.stdout.replace("Traceback (most recent call last):", "TRACEBACK") \
            if p.returncode not in (0, 2) else p.stdout
        return self.judge(name, p.returncode, text, time.perf_counter() - t0,
                          lost(before, self.tmp / "work"), expect=expect, want_code=want_code,
                          must=lambda _t: True, owner=owner, peak=0.0)

    def run_all(self, issues: tuple[str, ...] = ("13", "26")) -> list[Case]:
        from golf.main import main as train_gpt
        from pack import main as pack_main
        work = self.tmp / "work"
        work.mkdir()
        (work / "runs").mkdir()
        self.env["RUNS_DIR"] = str(work / "runs")
        base = work / "runs" / "base"
        # the finished run every case starts from
        self.case("setup: tiny run through train_gpt.py", train_gpt, {**self.env, "RUN_ID": "base"},
                  expect="exit 0", want_code=0)
        if "26" in issues:  # first: issue 13's cases below replace base's pair
            InputCases(self, base).run()
        if "13" not in issues:
            return self.cases
        self._config_cases(train_gpt)
        self._run_dir_cases(train_gpt, base)
        self._io_cases(train_gpt, pack_main, base)
        self._path_and_pack_cases(pack_main, base)
        self._prepare_cases()
        self._sigterm_case(base)
        return self.cases

    def _config_cases(self, train_gpt) -> None:
        bad = [("NUM_LAYERS=0", {"NUM_LAYERS": "0"}), ("NUM_HEADS=0", {"NUM_HEADS": "0"}),
               ("NUM_KV_HEADS=0", {"NUM_KV_HEADS": "0"}), ("TRAIN_SEQ_LEN=0", {"TRAIN_SEQ_LEN": "0"}),
               ("MODEL_DIM=-64", {"MODEL_DIM": "-64"}), ("MODEL_DIM=0", {"MODEL_DIM": "0"}),
               ("PRESET=bogus", {"PRESET": "bogus"}),
               ("GOLF_COMPRESS_THREADS=abc", {"GOLF_COMPRESS_THREADS": "abc"}),
               ("MAX_WALLCLOCK_SECONDS=4 <= GPTQ_RESERVE_SECONDS=8",
                {"MAX_WALLCLOCK_SECONDS": "4", "GPTQ_RESERVE_SECONDS": "8"}),
               ("BUDGET_BYTES=1000 (below the code)", {"BUDGET_BYTES": "1000"}),
               ("EVAL_STRIDE=9999 > EVAL_SEQ_LEN", {"EVAL_STRIDE": "9999"})]
        for name, env in bad:
            var = name.split("=")[0].split()[0]
            self.case(name, train_gpt, {**self.env, "RUN_ID": "bad", **env},
                      expect=f"exit 2 naming {var}, before any file", want_code=2,
                      must=lambda t, v=var: v in first_error(t)
                      and not (self.tmp / "work" / "runs" / "bad").exists())

    def _run_dir_cases(self, train_gpt, base: Path) -> None:
        self.case("reused RUN_ID", train_gpt, {**self.env, "RUN_ID": "base"},
                  expect="exit 2, OVERWRITE=1 named", want_code=2, must=lambda t: "OVERWRITE=1" in t)
        self.case("RESUME finished run, SEED changed", train_gpt,
                  {**self.env, "RESUME": str(base), "SEED": "7"},
                  expect="exit 2 naming SEED 1337 -> 7", want_code=2,
                  must=lambda t: "SEED: 1337 -> 7" in t)
        self.case("RESUME finished run, ITERATIONS=10", train_gpt,
                  {"RESUME": str(base), "ITERATIONS": "10", "PACK": "0"},
                  expect="exit 2: fork with RUN_ID", want_code=2, must=lambda t: "RUN_ID=<new" in t)
        self.case("RESUME finished run, RUN_ID=fork ITERATIONS=8 (fork)", train_gpt,
                  {"RESUME": str(base), "RUN_ID": "fork", "ITERATIONS": "8", "PACK": "0"},
                  expect="exit 0, runs/fork written", want_code=0,
                  must=lambda t: (base.parent / "fork" / rd.EVAL).is_file())

    def _io_cases(self, train_gpt, pack_main, base: Path) -> None:
        from golf.main import quant_only
        work = self.tmp / "work"
        env = {**self.env, "RUN_ID": "full"}
        with failing_replace(rd.EMA):
            self.case("full disk writing ema.pt", train_gpt, env,
                      expect="exit 2 naming ema.pt, checkpoint kept", want_code=2,
                      must=lambda t: "ema.pt: the disk is full (ENOSPC)" in t and rd.CHECKPOINT in t)
        self.case("... then RESUME=runs/full (as the message says)", train_gpt,
                  {"RESUME": str(work / "runs" / "full"), "PACK": "0"}, expect="exit 0",
                  want_code=0, continues=work / "runs" / "full",
                  must=lambda t: (work / "runs" / "full" / rd.EVAL).is_file())
        with failing_replace(rd.CHECKPOINT):
            self.case("full disk writing the final checkpoint", train_gpt,
                      {**self.env, "RUN_ID": "full2"}, expect="exit 2 naming checkpoint.pt",
                      want_code=2, must=lambda t: "checkpoint.pt: the disk is full" in t)
        qo = {**self.env, "QUANT_ONLY": str(base), "BUDGET_BYTES": "400000"}
        sub = work / "submission"
        (sub / "older_record").mkdir(parents=True)
        (sub / "README.md").write_text("tracked\n")
        (sub / "older_record" / "submission.json").write_text("{}\n")
        with failing_replace(rd.ARTIFACT):
            self.case("QUANT_ONLY, full disk writing the artifact", train_gpt, qo,
                      expect="exit 2, previous pair intact", want_code=2,
                      must=lambda t: "final_model.gkq: the disk is full" in t)
        with failing_replace(rd.EVAL):
            self.case("QUANT_ONLY, full disk writing eval.json (between the two)", train_gpt, qo,
                      expect="exit 2, previous pair intact", want_code=2,
                      must=lambda t: "eval.json: the disk is full" in t and _pair_ok(base))
        self.case("QUANT_ONLY=runs/X SUBMISSION_DIR=./submission", lambda: quant_only(str(base)),
                  {**qo, "PACK": "1", "SUBMISSION_DIR": str(work / "submission")},
                  expect="exit 0; submission/README.md + older records kept, old pair in previous/1",
                  want_code=0, must=lambda t: _pair_ok(base) and (base / "previous" / "1" /
                                                                  rd.ARTIFACT).is_file())
        ro = work / "readonly"
        ro.mkdir()
        with unwritable(ro):
            self.case("read-only RUNS_DIR", train_gpt, {**self.env, "RUNS_DIR": str(ro / "runs")},
                      expect="exit 2 naming RUNS_DIR", want_code=2, must=lambda t: "RUNS_DIR=" in t)
            self.case("read-only pack --out", lambda: pack_main([str(base), "--out", str(ro / "x"),
                                                               "--no-roundtrip"]),
                      {}, expect="exit 2 naming the folder", want_code=2,
                      must=lambda t: "not writable" in t)
        with failing_replace("x2"):
            self.case("full disk at pack's final move", lambda: pack_main(
                [str(base), "--out", str(work / "x2"), "--no-roundtrip"]), {},
                expect="exit 2, no partial folder", want_code=2,
                must=lambda t: "disk is full" in t and not any(work.glob(".x2.tmp-*")))

    def _path_and_pack_cases(self, pack_main, base: Path) -> None:
        import eval_bpb
        elsewhere = self.tmp / "elsewhere"
        elsewhere.mkdir(exist_ok=True)
        work = self.tmp / "work"
        self.case("eval_bpb.py runs/X from another cwd", lambda: eval_bpb.main(
            [str(base), "--out", str(elsewhere / rd.EVAL)]), {},
                  expect="exit 0", want_code=0, cwd=elsewhere)
        self.case("pack.py runs/X from another cwd (round trip)", lambda: pack_main(
            [str(base), "--out", str(work / "packed")]), {}, expect="exit 0", want_code=0,
            cwd=elsewhere)
        self.case("pack.py with BUDGET_BYTES=100000", lambda: pack_main(
            [str(base), "--out", str(work / "small"), "--no-roundtrip"]), {"BUDGET_BYTES": "100000"},
            expect="exit 2: over the cap of 100,000", want_code=2,
            must=lambda t: "cap of 100,000" in t)
        bad = work / "runs" / "corrupt"
        shutil.copytree(base, bad, ignore=shutil.ignore_patterns("previous"))
        blob = bytearray((bad / rd.ARTIFACT).read_bytes())
        blob[-5] ^= 0xFF
        (bad / rd.ARTIFACT).write_bytes(bytes(blob))
        c = self.case("pack.py on a corrupt artifact", lambda: pack_main(
            [str(bad), "--out", str(work / "corrupt_pack")]), {},
            expect="exit 2 in < 1 s, checksum named", want_code=2, must=lambda t: "checksum" in t)
        c.ok = c.ok and c.seconds < 1.0

    def _prepare_cases(self) -> None:
        from golf.data.prepare import main as prepare
        src = self.tmp / "inputs"
        src.mkdir()
        (src / "latin.txt").write_bytes("one\nna\xefve\n".encode("latin-1"))
        good = gzip.compress(b"".join(b'{"text": "doc %d"}\n' % i for i in range(50)))
        (src / "cut.jsonl.gz").write_bytes(good[: len(good) // 2])
        (src / "empty.jsonl").write_text("\n")
        (src / "three.jsonl").write_text("".join(json.dumps({"text": f"d {i}"}) + "\n" for i in range(3)))
        tok = str(self.data.tokenizer_path)
        for name, inp, extra in (("prepare text: non-UTF-8 input", "latin.txt", ["--val-docs", "1"]),
                                 ("prepare text: corrupt .gz", "cut.jsonl.gz", ["--val-docs", "1"]),
                                 ("prepare text: empty input", "empty.jsonl", ["--val-docs", "1"]),
                                 ("prepare text: --val-docs takes every doc", "three.jsonl",
                                  ["--val-docs", "3"])):
            self.case(name, lambda i=inp, e=extra: prepare(
                ["text", "--input", str(src / i), "--tokenizer", tok, "--name", "t",
                 "--root", str(self.tmp / "work" / "prep"), *e]), {},
                expect="exit 2 naming the file", want_code=2,
                must=lambda t, i=inp: i in first_error(t) or "documents" in first_error(t))

    def _sigterm_case(self, base: Path) -> None:
        """SIGTERM a real train_gpt.py run started with a relative DATA_PATH, then follow its
        hint (only RESUME set) from another folder; the artifact equals the uninterrupted one."""
        from golf.run.atomic import file_sha256
        from golf.main import main as train_gpt
        work = self.tmp / "work"
        rel = os.path.relpath(self.data.dataset_dir, work)
        env = {**os.environ, **tiny_env(rel, self.data.tokenizer_path, RUNS_DIR="runs",
                                        RUN_ID="sig", ITERATIONS="6", PACK="0"),
               "PYTHONPATH": str(REPO)}
        t0 = time.perf_counter()
        code, out = sigterm_after_first_step(work, env)
        hint = next((ln for ln in out if "continue with RESUME=" in ln), "")
        resume = hint.split("continue with RESUME=")[-1].split()[0] if hint else ""
        c = Case("SIGTERM, non-default vars", code, hint.strip()[-80:] or "no hint", True,
                 round(time.perf_counter() - t0, 2), "exit 130 + resume hint", code == 130 and bool(hint))
        self.record(c)
        self.case("... then the hint, only RESUME set, from another cwd", train_gpt,
                  {"RESUME": str(work / resume), "PACK": "0"}, cwd=self.tmp / "elsewhere",
                  continues=work / resume,
                  expect="exit 0, artifact sha256 == uninterrupted run's", want_code=0,
                  must=lambda t: file_sha256(work / "runs" / "sig" / rd.ARTIFACT)
                  == file_sha256(base / rd.PREVIOUS / "1" / rd.ARTIFACT))


def _pair_ok(run: Path) -> bool:
    """eval.json describes the artifact beside it."""
    from golf.run.atomic import file_sha256
    ev = json.loads((run / rd.EVAL).read_text())
    return ev.get("artifact_sha256") == file_sha256(run / rd.ARTIFACT)


def verdict(c: Case) -> str:
    """yes; NO; or, for a case another branch fixes, 'after merge: <branch>'."""
    return "yes" if c.ok else (f"after merge: {c.owner}" if c.owner else "NO")


def format_table(cases: list[Case]) -> str:
    w = max(len(c.case) for c in cases)
    lines = [f"| {'case':<{w}} | exit | data kept | marker | peak MiB | as expected | message (first line) |",
             f"|{'-' * (w + 2)}|------|-----------|--------|----------|-------------|----------------------|"]
    for c in cases:
        msg = c.message.replace("|", "/")
        lines.append(f"| {c.case:<{w}} | {c.exit_code:>4} | {'yes' if c.data_kept else 'NO':<9} | "
                     f"{'RAN' if c.marker else 'no':<6} | {c.peak_mib:>8.1f} | {verdict(c)} | {msg} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the cases to this file")
    ap.add_argument("--keep", help="run in this folder and keep it (default: a temp folder)")
    ap.add_argument("--issue", choices=("13", "26", "all"), default="all",
                    help="replay only this issue's cases (after the shared setup run)")
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    tmp = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="golf_faults_"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        cases = Bench(tmp).run_all(("13", "26") if a.issue == "all" else (a.issue,))
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(format_table(cases))
    bad = [c.case for c in cases if not c.ok and not c.owner]
    pending = [f"{c.case} ({c.owner})" for c in cases if not c.ok and c.owner]
    summary = {"cases": len(cases), "as_expected": sum(c.ok for c in cases), "failed": bad,
               "after_merge": pending, "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(summary))
    if a.json:
        Path(a.json).write_text(json.dumps({"summary": summary, "cases": [asdict(c) for c in cases]},
                                           indent=2) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
