"""A submission folder read strictly as data: text files as text, JSON with json, nothing else.

Why: the audit reviews other people's folders. Nothing here imports, executes, compiles or
unpickles a file from the folder; binaries (.pt, .ptz, .so) are only measured with stat().
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator

ENTRY = "train_gpt.py"
CODE_SUFFIXES = (".py", ".c", ".cc", ".cpp", ".cu", ".h", ".hpp")
LOG_SUFFIXES = (".log", ".txt")
LOG_MARKERS = ("val_bpb", "train_loss", "Hyperparameters", "train_time")
MAX_TEXT_BYTES = 64_000_000  # a log or script larger than this is not read (and says so)
SEED_LINE = re.compile(r"^seed:\s*(\d+)\s*$")
_ASSIGN = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$", re.S)


@dataclass
class TextFile:
    """A file's text with 1-based line access; `name` is the path inside the folder."""
    name: str
    text: str
    size: int

    @cached_property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def at(self, lineno: int) -> str:
        return f"{self.name}:{lineno}"

    def grep(self, pattern: re.Pattern[str]) -> Iterator[tuple[int, re.Match[str]]]:
        """Every (line number, match) of `pattern`, line by line, in file order."""
        for i, line in enumerate(self.lines, 1):
            m = pattern.search(line)
            if m:
                yield i, m

    def first(self, pattern: re.Pattern[str]) -> tuple[int, re.Match[str]] | None:
        return next(iter(self.grep(pattern)), None)

    def last(self, pattern: re.Pattern[str]) -> tuple[int, re.Match[str]] | None:
        hits = list(self.grep(pattern))
        return hits[-1] if hits else None


@dataclass
class LogFile(TextFile):
    """A train log: its `Hyperparameters:` header (key -> (value, line)) and its seed."""
    header: dict[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def seed(self) -> str | None:
        if "seed" in self.header:
            return self.header["seed"][0]
        line = self.first(SEED_LINE)   # the challenge baseline's `seed:1337`
        if line:
            return line[1].group(1)
        m = re.search(r"seed[_-]?(\d+)", Path(self.name).name)
        return m.group(1) if m else None


@dataclass(frozen=True)
class Launch:
    """One launch command: the environment it sets (name -> value) and where it was found."""
    where: str
    env: dict[str, str]
    command: str


@dataclass
class Folder:
    root: Path
    files: dict[str, Path]
    code: dict[str, TextFile]
    logs: list[LogFile]
    readme: TextFile | None
    submission: dict | None
    submission_note: str
    submission_text: TextFile | None
    launches: list[Launch]
    skipped: list[str]

    @property
    def entry(self) -> TextFile | None:
        return self.code.get(ENTRY)

    def launch_env(self) -> dict[str, tuple[str, str]]:
        """Every variable any launch command sets: name -> (value, where); the first wins."""
        env: dict[str, tuple[str, str]] = {}
        for launch in self.launches:
            for k, v in launch.env.items():
                env.setdefault(k, (v, launch.where))
        return env


def _read_text(path: Path, name: str, skipped: list[str]) -> TextFile | None:
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        skipped.append(f"{name}: {size:,} bytes, over the {MAX_TEXT_BYTES:,}-byte text limit")
        return None
    return TextFile(name, path.read_bytes().decode("utf-8", errors="replace"), size)


def parse_header(lines: list[str]) -> dict[str, tuple[str, int]]:
    """The `Hyperparameters:` block: indented `key: value` lines until the first unindented one."""
    header: dict[str, tuple[str, int]] = {}
    inside = False
    for i, line in enumerate(lines, 1):
        if line.strip() == "Hyperparameters:":
            inside = True
            continue
        if inside:
            m = re.match(r"^\s+([A-Za-z_][\w.]*)\s*[:=]\s?(.*)$", line)
            if not m:
                break
            header.setdefault(m.group(1), (m.group(2).strip(), i))
    return header


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines with backslash continuations joined, each with the number of its first line."""
    buf, start = "", 0
    for i, line in enumerate(text.splitlines(), 1):
        if not buf:
            start = i
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        yield start, buf + line
        buf = ""
    if buf:
        yield start, buf


def find_launches(tf: TextFile) -> list[Launch]:
    """Commands that run a .py (torchrun/python) with VAR=value assignments before them;
    `export VAR=value` lines in the same file count as part of every such command."""
    exported: dict[str, str] = {}
    found: list[Launch] = []
    for lineno, line in _logical_lines(tf.text):
        stripped = line.strip().lstrip("$ ").strip()
        if stripped.startswith("export "):
            for tok in _split(stripped[7:]):
                m = _ASSIGN.match(tok)
                if m:
                    exported[m.group(1)] = m.group(2)
            continue
        if ".py" not in stripped or not re.search(r"\b(torchrun|python3?)\b", stripped):
            continue
        env = dict(exported)
        for tok in _split(stripped):
            m = _ASSIGN.match(tok)
            if m:
                env[m.group(1)] = m.group(2)
            elif tok not in ("env", "nohup", "time", "sudo"):
                break
        if env:
            found.append(Launch(tf.at(lineno), env, stripped))
    return found


def _split(command: str) -> list[str]:
    try:
        return shlex.split(command, comments=True)
    except ValueError:  # an unbalanced quote in prose: fall back to whitespace
        return command.split()


def load_folder(root: Path) -> Folder:
    """Read a records/ folder; only text is decoded, and only JSON is parsed (with json)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder; give a records/ submission folder")
    files = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
             if p.is_file() and not p.is_symlink()}
    skipped: list[str] = []
    code, logs = {}, []
    readme = sub_file = None
    for name, path in files.items():
        low = name.lower()
        if low.endswith(CODE_SUFFIXES):
            tf = _read_text(path, name, skipped)
            if tf:
                code[name] = tf
        elif low == "readme.md":
            readme = _read_text(path, name, skipped)
        elif low == "submission.json":
            sub_file = _read_text(path, name, skipped)
        elif low.endswith(LOG_SUFFIXES) and Path(low).name != "requirements.txt":
            tf = _read_text(path, name, skipped)
            if tf and any(m in tf.text for m in LOG_MARKERS):
                logs.append(LogFile(tf.name, tf.text, tf.size, parse_header(tf.lines)))
    submission, note = _parse_submission(sub_file)
    launches = [launch for tf in [readme, *logs] if tf for launch in find_launches(tf)]
    scripts = [_read_text(path, name, skipped) for name, path in files.items()
               if name.endswith(".sh")]
    launches += [launch for tf in scripts if tf for launch in find_launches(tf)]
    return Folder(root, files, code, logs, readme, submission, note, sub_file, launches, skipped)


def _parse_submission(tf: TextFile | None) -> tuple[dict | None, str]:
    if tf is None:
        return None, "no submission.json"
    try:
        data = json.loads(tf.text)
    except json.JSONDecodeError as exc:
        return None, f"submission.json:{exc.lineno}: not valid JSON ({exc.msg})"
    if not isinstance(data, dict):
        return None, "submission.json: top level is not an object"
    return data, "submission.json"
