"""Issue 26's cases for bench.faults: untrusted files are data, wrong inputs never give a number.

Each case runs through a user's entry point (eval_bpb.py, pack.py, train_gpt.py, the packed
script) against the bench's one finished tiny run, and is judged on exit code, message, data
kept, no traceback, no marker file (a pickle payload or shadow module that ran) and peak
memory. Cases whose fix lives on another branch carry its name (`owner`); until it is merged
the table shows them as "after merge: <owner>" instead of failing the bench.
"""
from __future__ import annotations

import copy
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable
from unittest import mock

from bench.fault_case import REPO, Case, first_error
from golf.run import rundir as rd

SAFELOAD, SETTINGS = "safeload", "settings"  # the branches that fix the other cases
OTHER_TOKENIZER = REPO.parent / "shared" / "data" / "tokenizers" / "fineweb_1024_bpe.model"
TOKENIZER_8192 = (REPO.parent / "shared" / "data" / "tokenizers" / "community_lab_variants"
                  / "fineweb_8192_bpe.model")
BOMB_BYTES = 256 << 20  # a 256 MiB decompression bomb: well above any bound, quick to build
PEAK_BOUND_MIB = 128.0


class Payload:
    """Unpickling this runs code: it writes the marker (what a hostile .pt would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def marker_pt(path: Path, marker: Path, config: dict | None = None) -> Path:
    """A .pt shaped like each golfkit torch file, whose unpickling writes `marker`."""
    import torch
    evil = Payload(marker)
    torch.save({"config": config or {}, "state_dict": evil, "model": evil, "step": 1,
                "hessians": evil}, path)
    return path


def craft_artifact(blob: bytes, edit: Callable[[dict], Any] | None = None,
                   payload: bytes | None = None, header_bytes: bytes | None = None) -> bytes:
    """A .gkq with valid checksums around a hostile header (`edit` returns the new header
    object) or payload: what a crafted file looks like to the reader."""
    import brotli
    from quant.artifact import _PREFIX, MAGIC, parse_artifact
    header, old_payload = parse_artifact(blob)
    payload = old_payload if payload is None else payload
    version = _PREFIX.unpack_from(blob)[1]
    if header_bytes is None:
        new = edit(copy.deepcopy(header)) if edit else header
        if isinstance(new, dict) and payload is not old_payload:
            new["payload_len"], new["payload_sha256"] = len(payload), hashlib.sha256(payload).hexdigest()
        raw = json.dumps(new).encode()
        header_bytes = brotli.compress(raw) if version >= 2 else raw
    return (_PREFIX.pack(MAGIC, version, len(header_bytes), hashlib.sha256(header_bytes).digest())
            + header_bytes + payload)


def brotli_bomb(n: int, prefix: bytes = b"{", suffix: bytes = b"}") -> bytes:
    """Brotli of `prefix` + n spaces + `suffix`: a few hundred bytes that inflate to n."""
    import brotli
    c = brotli.Compressor(quality=1)
    parts = [c.process(prefix)]
    chunk = b" " * (16 << 20)
    for _ in range(n // len(chunk)):
        parts.append(c.process(chunk))
    parts.append(c.process(suffix))
    parts.append(c.finish())
    return b"".join(parts)


def replace_stream(blob: bytes, data: bytes, codec: str) -> bytes:
    """The artifact with its first payload stream's bytes replaced by `data` under `codec`,
    every other field (the declared raw_length among them) as it was."""
    from quant.artifact import parse_artifact
    header, payload = parse_artifact(blob)
    s0 = header["streams"][0]
    start, end = s0["offset"], s0["offset"] + s0["length"]

    def edit(h: dict) -> dict:
        h["streams"][0].update(codec=codec, length=len(data))
        for s in h["streams"][1:]:
            if s["offset"] >= end:
                s["offset"] += len(data) - s0["length"]
        return h
    return craft_artifact(blob, edit, payload=payload[:start] + data + payload[end:])


def stream_bomb(blob: bytes) -> bytes:
    """A payload stream that is a brotli bomb: its declared raw_length is not what it inflates to."""
    return replace_stream(blob, brotli_bomb(BOMB_BYTES, b"", b""), "brotli")


def rans_bomb(blob: bytes, n: int = 50_000_000) -> bytes:
    """A payload stream that is a small rANS stream whose header claims n symbols."""
    from quant import rans
    small = bytearray(rans.encode(bytes(range(256)) * 32))
    lanes, _n, n_seg = struct.unpack_from("<IQI", small, 4)
    struct.pack_into("<IQI", small, 4, lanes, n, n_seg)
    struct.pack_into("<I", small, 4 + struct.calcsize("<IQI"), n)  # the one segment's length
    return replace_stream(blob, bytes(small), "rans")


def _first_entry(h: dict, kind: str) -> dict:
    return next(e for e in h["tensors"] if e["kind"] == kind)


def _set(obj: dict, **kv: Any) -> dict:
    obj.update(kv)
    return obj


CRAFTED: dict[str, Callable[[dict], Any]] = {
    "header is a JSON list": lambda h: [h],
    "payload_len missing": lambda h: {k: v for k, v in h.items() if k != "payload_len"},
    "payload_len a string": lambda h: _set(h, payload_len=str(h["payload_len"])),
    "bad alias": lambda h: (_set(_first_entry(h, "quant"), kind="alias", alias_of="no.such"), h)[1],
    "shape that does not fit": lambda h: (_set(_first_entry(h, "quant"),
                                               rows=_first_entry(h, "quant")["rows"] * 4), h)[1],
    "num_heads=0 in meta.config": lambda h: (h["meta"]["config"].update(num_heads=0), h)[1],
}


# ----------------------------------------------------------------------------- OS-level helpers
def vm_peak_reset() -> int:
    """Reset this process's peak RSS (Linux clear_refs 5); returns the current RSS in KiB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmRSS")
    except OSError:
        return 0


def vm_peak_mib(rss0_kib: int) -> float:
    """Peak RSS since vm_peak_reset, above the RSS then, in MiB."""
    try:
        return round(max(0, _status_kib("VmHWM") - rss0_kib) / 1024, 1)
    except OSError:
        return 0.0


def _status_kib(key: str) -> int:
    m = re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text())
    return int(m.group(1)) if m else 0


def hold_lock(run: Path) -> subprocess.Popen:
    """Another process holding the run's lock as golf.run.rundir writes it (a first QUANT_ONLY)."""
    code = ("import fcntl, os, sys, time\n"
            f"fd = os.open({str(run / rd.LOCK)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
            "os.ftruncate(fd, 0)\n"
            "os.write(fd, f'pid {os.getpid()}: QUANT_ONLY=runs/base train_gpt.py'.encode())\n"
            "print('locked', flush=True)\ntime.sleep(120)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    p.stdout.readline()
    return p


def children_of(pid: int) -> list[int]:
    out = []
    for st in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = st.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(st.parent.name))
    return out


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class ReachedTraining(Exception):
    """Raised in place of training: the setting got past every check before work."""


class _FullFsyncOs:
    """The os module, except that fsync fails as a full disk does (a write with no file name)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def fsync(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _enospc(*_a: Any, **_k: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a failed write names no file


def _enospc_on(name: str) -> Callable:
    real = Path.write_bytes

    def fake(self: Path, data: bytes) -> int:
        if self.name == name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data)
    return fake


# ----------------------------------------------------------------------------- the cases
class InputCases:
    """Issue 26's cases against the bench's finished run `base` (see module docstring)."""

    def __init__(self, bench: Any, base: Path):
        self.b, self.base = bench, base
        self.work = bench.tmp / "work"
        self.evil = bench.tmp / "evil"   # hostile files live outside work/ (not "data kept")
        self.evil.mkdir(exist_ok=True)
        self.cfg = json.loads((base / rd.CONFIG).read_text())

    def run(self) -> None:
        self.wrong_inputs()
        self.diagnostic_and_lock()
        self.small_ones()
        self.untrusted_pickles()
        self.crafted_artifacts()
        self.packed_script()
        self.settings()

    def _copy_run(self, name: str, drop: tuple[str, ...] = ()) -> Path:
        dst = self.work / "runs" / name
        shutil.copytree(self.base, dst, ignore=shutil.ignore_patterns(rd.PREVIOUS, rd.LOCK, *drop))
        return dst

    def _eval_args(self) -> list[str]:
        return ["--data", self.cfg["data_path"], "--tokenizer", self.cfg["tokenizer_path"],
                "--max-tokens", "1024", "--device", "cpu"]

    # ------------------------------------------------------------------ inputs vs each other
    def wrong_inputs(self) -> None:
        import eval_bpb
        from golf.main import main as train_gpt
        from pack import main as pack_main
        b, base = self.b, self.base
        if OTHER_TOKENIZER.is_file():
            b.case("wrong tokenizer, same vocab: eval_bpb.py RUN --tokenizer other-1024",
                   lambda: eval_bpb.main([str(base), "--tokenizer", str(OTHER_TOKENIZER)]), {},
                   expect="exit 2 naming TOKENIZER_PATH and the manifest", want_code=2,
                   must=lambda t: "TOKENIZER_PATH=" in t and "manifest.json" in t)
            b.case("wrong tokenizer, same vocab: train_gpt.py", train_gpt,
                   {**b.env, "RUN_ID": "badtok", "TOKENIZER_PATH": str(OTHER_TOKENIZER)},
                   expect="exit 2 naming TOKENIZER_PATH, before any file", want_code=2,
                   must=lambda t: "TOKENIZER_PATH=" in t and not (self.work / "runs" / "badtok").exists())
        if TOKENIZER_8192.is_file():
            b.case("VOCAB_SIZE=8192 + an 8192 tokenizer on sp1024 shards", train_gpt,
                   {**b.env, "RUN_ID": "v8192", "VOCAB_SIZE": "8192", "TOKENIZER_PATH": str(TOKENIZER_8192)},
                   expect="exit 2 before any file", want_code=2,
                   must=lambda t: ("TOKENIZER_PATH=" in t or "VOCAB_SIZE" in t)
                   and not (self.work / "runs" / "v8192").exists())
        foreign = self._foreign_artifact_run()
        b.case("pack.py: another model's artifact + its eval.json", lambda: pack_main(
            [str(foreign), "--out", str(self.work / "foreign_pack"), "--no-roundtrip"]), {},
            expect="exit 2 naming num_layers and config.json", want_code=2,
            must=lambda t: "num_layers" in t and rd.CONFIG in t)
        b.case("eval_bpb.py RUN on another model's artifact", lambda: eval_bpb.main(
            [str(foreign), *self._eval_args()]), {},
            expect="exit 2 naming num_layers", want_code=2, must=lambda t: "num_layers" in t)
        self._race_case()

    def _foreign_artifact_run(self) -> Path:
        """A copy of base whose artifact and eval.json come from a 3-layer model."""
        import quant
        import torch
        from golf.run.config import Config
        from golf.main import artifact_meta
        from golf.model.gpt import GPT
        run = self._copy_run("foreign")
        other = Config.from_dict(self.cfg).replace(num_layers=3)
        torch.manual_seed(0)
        quant.save_artifact(run / rd.ARTIFACT, quant.quantize_model(
            GPT(other), method="int8", meta=artifact_meta(other, 0)))
        ev = json.loads((run / rd.EVAL).read_text())
        ev["artifact_sha256"] = hashlib.sha256((run / rd.ARTIFACT).read_bytes()).hexdigest()
        (run / rd.EVAL).write_text(json.dumps(ev))
        return run

    def _race_case(self) -> None:
        """The artifact replaced (as a racing QUANT_ONLY would) after eval read it."""
        import eval_bpb
        from golf.eval import score as evaluate
        run = self._copy_run("race")
        scored = hashlib.sha256((run / rd.ARTIFACT).read_bytes()).hexdigest()
        real = evaluate.load_models
        other = self.work / "runs" / "foreign" / rd.ARTIFACT

        def load_then_replace(paths: dict, *a: Any, **k: Any) -> Any:
            out = real(paths, *a, **k)
            if "post" in paths:               # the artifact's bytes are read: now replace it
                shutil.copyfile(other, run / rd.ARTIFACT)
            return out
        out = self.evil / "race.json"
        with mock.patch.object(evaluate, "load_models", load_then_replace):
            self.b.case("eval.json's sha256 when the artifact changes mid-eval", lambda: eval_bpb.main(
                [str(run), "--out", str(out), "--device", "cpu"]), {},
                expect="exit 0, sha256 of the bytes scored", want_code=0,
                must=lambda t: json.loads(out.read_text())["artifact_sha256"] == scored,
                removes={run / rd.ARTIFACT})

    # ------------------------------------------------------------------ diagnostics, one writer
    def diagnostic_and_lock(self) -> None:
        import eval_bpb
        from golf.main import main as train_gpt
        from pack import main as pack_main
        b, base = self.b, self.base
        official = (base / rd.EVAL).read_bytes()
        b.case("eval_bpb.py RUN --max-tokens 2048 (a partial eval)", lambda: eval_bpb.main(
            [str(base), "--max-tokens", "2048", "--device", "cpu"]), {},
            expect="exit 0, eval.json unchanged, eval.partial2048.json written", want_code=0,
            must=lambda t: (base / rd.EVAL).read_bytes() == official
            and (base / "eval.partial2048.json").is_file())
        b.case("... then pack.py RUN (does not blame the artifact)", lambda: pack_main(
            [str(base), "--out", str(self.work / "after_partial"), "--no-roundtrip"]), {},
            expect="exit 0", want_code=0)
        holder = hold_lock(base)
        try:
            b.case("second QUANT_ONLY while another writes the run", train_gpt,
                   {**b.env, "QUANT_ONLY": str(base)}, expect="exit 2 naming the holder's pid",
                   want_code=2, must=lambda t: f"pid {holder.pid}" in t)
        finally:
            holder.kill()
            holder.wait()
        stale = base / f".{rd.CHECKPOINT}.k1ll3d.tmp"
        stale.write_bytes(b"half a checkpoint")
        b.case("a killed checkpoint write's .tmp, then the next command", lambda: eval_bpb.main(
            [str(base), "--max-tokens", "1024", "--device", "cpu"]), {},
            expect="exit 0, the .tmp removed", want_code=0, must=lambda t: not stale.exists(),
            removes={stale})

    # ------------------------------------------------------------------ the small ones
    def small_ones(self) -> None:
        import quant.artifact
        from golf.main import main as train_gpt
        from pack import main as pack_main
        b, base = self.b, self.base
        with mock.patch.object(quant.artifact, "os", _FullFsyncOs()):
            b.case("full disk during the artifact's write (no file name in the OSError)",
                   train_gpt, {**b.env, "QUANT_ONLY": str(base)},
                   expect="exit 2 naming final_model.gkq", want_code=2,
                   must=lambda t: "final_model.gkq: the disk is full" in t and "unknown path" not in t)
        with mock.patch.object(Path, "write_bytes", _enospc_on("submission.json")):
            b.case("full disk writing a pack file", lambda: pack_main(
                [str(base), "--out", str(self.work / "full_pack"), "--no-roundtrip"]), {},
                expect="exit 2 naming submission.json", want_code=2,
                must=lambda t: "submission.json: the disk is full" in t and "unknown path" not in t)
        tmpdir = b.tmp / "tmpdir"
        tmpdir.mkdir(exist_ok=True)
        from golf.submission import roundtrip
        with mock.patch.object(roundtrip.tempfile, "tempdir", str(tmpdir)), \
                mock.patch.object(roundtrip.shutil, "copyfile", _enospc):
            b.case("full TMPDIR during pack's round trip", lambda: pack_main(
                [str(base), "--out", str(self.work / "tmpdir_pack")]), {},
                expect="exit 2 naming TMPDIR", want_code=2,
                must=lambda t: "TMPDIR=" in first_error(t) and "SUBMISSION_DIR" not in first_error(t))
        self._killed_pack(tmpdir)
        loop = self.work / "loop"
        loop.symlink_to(loop)
        b.case("symlink loop in DATA_PATH", train_gpt, {**b.env, "RUN_ID": "loop", "DATA_PATH": str(loop)},
               expect="exit 2, one line naming DATA_PATH", want_code=2,
               must=lambda t: "DATA_PATH" in first_error(t))

    def _killed_pack(self, tmpdir: Path) -> None:
        """SIGKILL pack.py during its round trip: its child dies with it; the next pack removes
        the temp folders it left (and only those)."""
        from pack import main as pack_main
        out = self.work / "killed"
        env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, str(REPO / "pack.py"), str(self.base), "--out", str(out)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kids: list[int] = []
        while time.perf_counter() - t0 < 300 and p.poll() is None and not kids:
            time.sleep(0.2)
            kids = children_of(p.pid) if any(tmpdir.glob(f"golf_roundtrip_{p.pid}-*")) else []
        p.send_signal(signal.SIGKILL)
        p.wait()
        deadline = time.perf_counter() + 10
        while time.perf_counter() < deadline and any(running(k) for k in kids):
            time.sleep(0.1)
        left = [k for k in kids if running(k)]
        ok = bool(kids) and not left
        c = Case("SIGKILL pack.py during the round trip", -9, f"child {kids} alive after: {left}",
                 True, round(time.perf_counter() - t0, 2), "its round-trip child is gone", ok)
        self.b.record(c)
        stale = list(tmpdir.glob(f"golf_roundtrip_{p.pid}-*")) + list(self.work.glob(f".killed.tmp-{p.pid}-*"))
        with mock.patch.object(__import__("tempfile"), "tempdir", str(tmpdir)):
            self.b.case("... then pack.py again: the killed one's temp folders removed", lambda: pack_main(
                [str(self.base), "--out", str(out)]), {}, expect="exit 0, no stale folder",
                want_code=0, must=lambda t: bool(stale) and not any(s.exists() for s in stale))

    # ------------------------------------------------------------------ untrusted .pt files
    def untrusted_pickles(self) -> None:
        import eval_bpb
        from golf.main import main as train_gpt
        from pack import main as pack_main
        b, m = self.b, self.b.marker
        ev = self._copy_run("evil_ema")
        marker_pt(ev / rd.EMA, m, self.cfg)
        noeval = self._copy_run("evil_noeval", drop=(rd.EVAL,))
        marker_pt(noeval / rd.EMA, m, self.cfg)
        hess = self._copy_run("evil_hess")
        marker_pt(hess / rd.HESSIANS, m)
        interrupted = self.work / "runs" / "evil_interrupted"
        interrupted.mkdir()
        shutil.copyfile(self.base / rd.CONFIG, interrupted / rd.CONFIG)
        marker_pt(interrupted / rd.CHECKPOINT, m, self.cfg)
        loose = marker_pt(self.evil / "loose.pt", m, self.cfg)
        art = str(self.base / rd.ARTIFACT)
        cases: list[tuple[str, Callable[[], Any], dict]] = [
            ("eval_bpb.py RUN (ema.pt)", lambda: eval_bpb.main([str(ev), "--device", "cpu"]), {}),
            ("eval_bpb.py --checkpoint F", lambda: eval_bpb.main(
                ["--checkpoint", str(loose), "--artifact", art, *self._eval_args()]), {}),
            ("eval_bpb.py --compare A B --evaluate", lambda: eval_bpb.main(
                ["--compare", str(self.base), str(noeval), "--evaluate"]), {}),
            ("pack.py RUN --no-roundtrip (hessians.pt)", lambda: pack_main(
                [str(hess), "--out", str(self.work / "evil_pack"), "--no-roundtrip"]), {}),
            ("QUANT_ONLY=RUN (ema.pt)", train_gpt, {**b.env, "QUANT_ONLY": str(ev)}),
            ("RESUME=RUN, an interrupted run", train_gpt, {"RESUME": str(interrupted), "PACK": "0"}),
            ("RESUME=file.pt RUN_ID=new", train_gpt, {"RESUME": str(loose), "RUN_ID": "evil_fork",
                                                      "PACK": "0"}),
            ("EVAL_ONLY=1 ARTIFACT=F.pt", train_gpt, {**b.env, "EVAL_ONLY": "1", "ARTIFACT": str(loose)}),
        ]
        for name, fn, env in cases:
            b.case(f"marker pickle: {name}", fn, env, expect="exit 2, no marker", want_code=2,
                   owner=SAFELOAD)

    # ------------------------------------------------------------------ crafted artifacts
    def crafted_artifacts(self) -> None:
        import eval_bpb
        blob = (self.base / rd.ARTIFACT).read_bytes()
        files = {name: craft_artifact(blob, edit) for name, edit in CRAFTED.items()}
        files["brotli header bomb (256 MiB)"] = craft_artifact(blob, header_bytes=brotli_bomb(BOMB_BYTES))
        files["stream bomb, raw_length not enforced (256 MiB)"] = stream_bomb(blob)
        files["rANS stream claiming 5e7 symbols"] = rans_bomb(blob)
        for i, (name, data) in enumerate(files.items()):
            path = self.evil / f"crafted_{i}.gkq"
            path.write_bytes(data)
            c = self.b.case(f"crafted .gkq: {name}", lambda p=path: eval_bpb.main(
                ["--artifact", str(p), *self._eval_args()]), {},
                expect=f"exit 2 'corrupt artifact', < {PEAK_BOUND_MIB:.0f} MiB, < 5 s", want_code=2,
                must=lambda t: "corrupt artifact" in first_error(t) or "num_heads" in first_error(t),
                owner=SAFELOAD)
            c.ok = c.ok and c.peak_mib < PEAK_BOUND_MIB and c.seconds < 5.0

    # ------------------------------------------------------------------ the packed script
    def packed_script(self) -> None:
        """The shipped train_gpt.py: a marker .pt as ARTIFACT, and a brotli.py / numpy.py
        placed beside it (run as `python train_gpt.py`, so its folder is on sys.path)."""
        from golf.submission import build_forms
        folder = self.evil / "packed"
        folder.mkdir()
        (folder / "train_gpt.py").write_bytes(build_forms()["plain"])
        shutil.copyfile(self.base / rd.ARTIFACT, folder / rd.ARTIFACT)
        for mod in ("brotli", "numpy"):
            (folder / f"{mod}.py").write_text(f"open({str(self.b.marker)!r}, 'w').write('{mod}')\n"
                                              "raise ImportError('shadow')\n")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
        env.update({k: str(v) for k, v in self.b.env.items()}, EVAL_ONLY="1", OMP_NUM_THREADS="1")
        for name, artifact in (("a marker .pt as ARTIFACT", marker_pt(self.evil / "a.pt", self.b.marker, self.cfg)),
                               ("brotli.py / numpy.py beside it", folder / rd.ARTIFACT)):
            want = 0 if artifact.suffix == ".gkq" else 2
            self.b.subprocess_case(f"packed train_gpt.py: {name}",
                                   [sys.executable, "train_gpt.py"], {**env, "ARTIFACT": str(artifact)},
                                   cwd=folder, expect=f"exit {want}, no marker", want_code=want,
                                   owner=SAFELOAD)

    # ------------------------------------------------------------------ settings
    def settings(self) -> None:
        """Each must be refused before training: training is replaced by ReachedTraining, so a
        setting that gets through costs milliseconds, not a run."""
        from golf import main as golf_main
        bad = [("MATRIX_LR=nan", "MATRIX_LR"), ("TIED_EMBED_LR=inf", "TIED_EMBED_LR"),
               ("QK_GAIN_INIT=nan", "QK_GAIN_INIT"), ("ROPE_BASE=0", "ROPE_BASE"),
               ("MATRIX_LR=-0.01", "MATRIX_LR"), ("MAX_WALLCLOCK_SECONDS=nan", "MAX_WALLCLOCK_SECONDS"),
               ("EVAL_ONLY=2", "EVAL_ONLY"), ("PACK=2", "PACK"), ("NUM_LAYER=3", "NUM_LAYERS"),
               ("TTT=bogus", "TTT"), ("TTT_LR=-1", "TTT_LR"), ("TTT_LORA_RANK=0", "TTT_LORA_RANK"),
               ("SEED=-1", "SEED")]
        with mock.patch.object(golf_main, "train", _reached):
            for setting, var in bad:
                k, v = setting.split("=")
                self.b.case(setting, golf_main.main, {**self.b.env, "RUN_ID": "bad", k: v},
                            expect=f"exit 2 naming {var}, before training", want_code=2,
                            must=lambda t, var=var: var in first_error(t), owner=SETTINGS)
        run = self.work / "runs" / "nonfinite"
        self.b.case("a loss that turns non-finite (TIED_EMBED_LR=1e30)", golf_main.main,
                    {**self.b.env, "RUN_ID": "nonfinite", "TIED_EMBED_LR": "1e30", "MATRIX_LR": "1e30"},
                    expect="exit 2, one line, checkpoint.pt from before kept (or refused as a "
                    "setting)", want_code=2, owner=SETTINGS,
                    must=lambda t: ("finite" in first_error(t) and (run / rd.CHECKPOINT).is_file())
                    or ("_LR" in first_error(t) and not run.exists()))


def _reached(*_a: Any, **_k: Any) -> Any:
    raise ReachedTraining("the setting was accepted: training would start")
