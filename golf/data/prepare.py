"""Data preparation: `python -m golf.data.prepare {embedded,text,fineweb} [options]`.

embedded:  an offline corpus from documentation text that ships with CPython, its own
           challenge-settings BPE tokenizer, and shards in the challenge layout.
tokenizer: train a SentencePiece BPE of any vocabulary size with the challenge's settings.
text:      tokenize local .txt / .jsonl / .jsonl.gz documents into shards.
fineweb:   download a published export (sp1024, sp4096, sp8192, CaseOps, ...): shards,
           tokenizer and, when the variant ships one, the val byte sidecar.
"""
from __future__ import annotations

import argparse
import fnmatch
import gzip
import hashlib
import importlib
import inspect
import io
import json
import os
import platform
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from golf.atomic import atomic_write_bytes, atomic_write_json, file_sha256
from golf.data.shards import ShardError, read_header, write_shard
from golf.data.tokenizer import load_tokenizer

EMBEDDED_DATASET = "embedded_sp1024"
EMBEDDED_TOKENIZER = "embedded_1024_bpe"
BOS_ID = 1
DEFAULT_SHARD_TOKENS = 10**8
HF_REPO = "willdepueoai/parameter-golf"   # the challenge's published exports (data/README.md there)
HF_PREFIX = "datasets"                    # export root inside that repo

# Fixed, sorted list: the corpus must not depend on what happens to be installed or imported.
STDLIB_MODULES: tuple[str, ...] = tuple(sorted((
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "builtins", "bz2",
    "calendar", "cmath", "codecs", "collections", "collections.abc", "concurrent.futures",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal",
    "difflib", "dis", "email", "email.message", "enum", "filecmp", "fnmatch", "fractions",
    "ftplib", "functools", "gc", "getopt", "gettext", "glob", "gzip", "hashlib", "heapq",
    "hmac", "html", "html.parser", "http", "http.client", "http.cookies", "http.server",
    "imaplib", "importlib", "inspect", "io", "ipaddress", "itertools", "json", "keyword",
    "linecache", "locale", "logging", "logging.handlers", "lzma", "mailbox", "marshal",
    "math", "mimetypes", "mmap", "multiprocessing", "netrc", "numbers", "operator",
    "optparse", "os", "os.path", "pathlib", "pickle", "pickletools", "pkgutil", "platform",
    "plistlib", "poplib", "pprint", "queue", "quopri", "random", "re", "reprlib", "sched",
    "secrets", "select", "selectors", "shelve", "shlex", "shutil", "signal", "smtplib",
    "socket", "socketserver", "sqlite3", "ssl", "stat", "statistics", "string",
    "stringprep", "struct", "subprocess", "symtable", "sys", "tarfile", "tempfile",
    "textwrap", "threading", "time", "timeit", "token", "tokenize", "tomllib", "trace",
    "traceback", "types", "typing", "unicodedata", "unittest", "unittest.mock",
    "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref", "xml.dom",
    "xml.dom.minidom", "xml.etree.ElementTree", "xml.sax", "zipfile", "zlib", "zoneinfo",
    "asyncio.base_events", "asyncio.events", "asyncio.futures", "asyncio.locks", "asyncio.queues",
    "asyncio.streams", "asyncio.subprocess", "asyncio.tasks", "bdb", "cProfile", "cmd", "code",
    "codeop", "compileall", "concurrent.futures.process", "concurrent.futures.thread",
    "contextvars", "copyreg", "ctypes", "doctest", "email.charset", "email.header",
    "email.headerregistry", "email.parser", "email.policy", "email.utils", "fileinput",
    "graphlib", "importlib.abc", "importlib.machinery", "importlib.metadata",
    "importlib.resources", "importlib.util", "json.decoder", "json.encoder", "logging.config",
    "modulefinder", "multiprocessing.connection", "multiprocessing.managers",
    "multiprocessing.pool", "multiprocessing.queues", "multiprocessing.shared_memory",
    "multiprocessing.synchronize", "ntpath", "pdb", "posixpath", "profile", "pstats", "pty",
    "py_compile", "pyclbr", "pydoc", "runpy", "sqlite3.dbapi2", "sysconfig", "tabnanny",
    "tracemalloc", "tty", "unittest.case", "unittest.loader", "unittest.result",
    "unittest.runner", "unittest.suite", "urllib.error", "urllib.robotparser", "wsgiref.handlers",
    "wsgiref.simple_server", "wsgiref.util", "wsgiref.validate", "xml.etree.ElementPath",
    "xml.sax.handler", "xml.sax.saxutils", "xml.sax.xmlreader", "xmlrpc.client",
    "xmlrpc.server", "zipapp", "zipimport",
)))

TRAINER_SETTINGS = dict(
    model_type="bpe", vocab_size=1024, byte_fallback=True, normalization_rule_name="nmt_nfkc",
    add_dummy_prefix=False, remove_extra_whitespaces=True, split_digits=True,
    character_coverage=0.999, pad_id=0, bos_id=1, eos_id=2, unk_id=3, hard_vocab_limit=False,
    max_sentencepiece_length=16, num_threads=1, shuffle_input_sentence=False,
    input_sentence_size=0, seed_sentencepiece_size=1_000_000, minloglevel=2,
)


class PrepareError(ValueError):
    """Bad preparation input or a failed download; the message names the file and the fix."""


@dataclass(frozen=True)
class EmbeddedPaths:
    dataset_dir: Path
    tokenizer_path: Path


# ---------------------------------------------------------------- embedded corpus
def embedded_documents() -> list[str]:
    """pydoc topics + stdlib docstrings, in a fixed order, deduplicated."""
    from pydoc_data.topics import topics
    docs: list[str] = [topics[k] for k in sorted(topics)]
    with warnings.catch_warnings():  # deprecated modules warn on import and attribute access
        warnings.simplefilter("ignore")
        for name in STDLIB_MODULES:
            try:
                mod = importlib.import_module(name)
            except Exception:
                continue
            docs.extend(_module_docs(mod))
    seen: set[str] = set()
    out = []
    for d in docs:
        d = inspect.cleandoc(d).strip() if d else ""
        if len(d) >= 40 and d not in seen:
            seen.add(d)
            out.append(d)
    return out


def _module_docs(mod) -> Iterator[str]:
    if isinstance(mod.__doc__, str):
        yield mod.__doc__
    for attr in sorted(vars(mod)):
        if attr.startswith("_"):
            continue
        obj = vars(mod)[attr]
        if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
            continue
        if getattr(obj, "__module__", None) != mod.__name__:
            continue
        if isinstance(obj.__doc__, str):
            yield obj.__doc__
        if inspect.isclass(obj):
            for m in sorted(vars(obj)):
                if not m.startswith("_"):
                    doc = getattr(vars(obj)[m], "__doc__", None)
                    if isinstance(doc, str) and callable(vars(obj)[m]):
                        yield doc


def is_val_doc(text: str, val_percent: int = 10) -> bool:
    """Deterministic split by content hash: stable across runs and orderings."""
    h = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    return h % 100 < val_percent


def train_tokenizer(docs: list[str], model_path: Path, vocab_size: int = 1024,
                    user_defined_symbols: Sequence[str] = ()) -> None:
    """Train a challenge-settings BPE model; write .model/.vocab atomically.

    Input comes from an iterator and the model from a writer, so no temp path is recorded
    in the model's trainer spec (same inputs -> same bytes). `user_defined_symbols` are
    operator pieces (a CaseOps-style transform): text made with them needs a byte sidecar.
    """
    import sentencepiece as spm
    model_path.parent.mkdir(parents=True, exist_ok=True)
    lines = [line[:4000] for d in docs for line in d.splitlines() if line.strip()]
    if not lines:
        raise PrepareError(f"{model_path}: no text to train the tokenizer on; pass non-empty --input")
    extra = {"user_defined_symbols": list(user_defined_symbols)} if user_defined_symbols else {}
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf,
                                       **{**TRAINER_SETTINGS, "vocab_size": vocab_size, **extra})
    except RuntimeError as exc:
        raise PrepareError(f"{model_path}: SentencePiece could not train a {vocab_size}-piece "
                           f"model on this text ({exc}); pass more --input text or a smaller "
                           "--vocab") from None
    model = buf.getvalue()
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(model)
    vocab = "".join(f"{sp.id_to_piece(i)}\t{sp.GetScore(i):g}\n" for i in range(sp.vocab_size()))
    atomic_write_bytes(model_path.with_suffix(".vocab"), vocab.encode("utf-8"))
    atomic_write_bytes(model_path, model)


def prepare_tokenizer(inputs: Sequence[str | Path], vocab_size: int, out: str | Path, *,
                      force: bool = False) -> Path:
    """`prepare tokenizer`: a challenge-settings BPE of `vocab_size` pieces on the user's text
    (same text, same .model bytes), for `prepare text` to build sp4096/sp8192 shards with.
    An existing model is kept unless `force` (nothing is overwritten by surprise)."""
    out = Path(out)
    if out.suffix != ".model":
        raise PrepareError(f"{out}: the tokenizer path must end in .model; fix --out")
    if out.exists() and not force:
        raise PrepareError(f"{out}: already exists; pass --force to replace it or another --out")
    if vocab_size < 260 + 4 or vocab_size > 65536:
        raise PrepareError(f"--vocab {vocab_size}: must be in 264..65536 (4 special + 256 byte "
                           "pieces, and token ids must fit the shards' uint16)")
    docs = list(iter_text_docs(inputs))
    with tempfile.TemporaryDirectory() as tmp:   # check the size before touching `out`
        trial = Path(tmp) / out.name
        train_tokenizer(docs, trial, vocab_size)
        got = load_tokenizer(trial).vocab_size()
        if got != vocab_size:
            raise PrepareError(f"{', '.join(map(str, inputs))}: this text supports only {got} "
                               f"pieces, {vocab_size} requested; pass more --input text or "
                               f"--vocab {got}")
        atomic_write_bytes(out.with_suffix(".vocab"), trial.with_suffix(".vocab").read_bytes())
        atomic_write_bytes(out, trial.read_bytes())
    return out


def encode_docs(sp, docs: Iterable[str]) -> np.ndarray:
    """[BOS] + ids per document, concatenated."""
    parts = []
    for ids in sp.encode(list(docs)):
        parts.append(np.array([BOS_ID] + ids, dtype=np.uint16))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def write_split(out_dir: Path, split: str, tokens: np.ndarray, shard_tokens: int) -> list[Path]:
    paths = []
    n = max(1, -(-len(tokens) // shard_tokens))
    for i in range(n):
        p = out_dir / f"fineweb_{split}_{i:06d}.bin"
        write_shard(p, tokens[i * shard_tokens:(i + 1) * shard_tokens])
        paths.append(p)
    return paths




def _embedded_valid(ds: Path, tok: Path) -> bool:
    man = ds / "manifest.json"
    if not (man.is_file() and tok.is_file()):
        return False
    try:
        files = json.loads(man.read_text())["sha256"]
        return all((ds / n).is_file() and file_sha256(ds / n) == h for n, h in files.items())
    except (ValueError, KeyError, OSError):
        return False


def prepare_embedded(root: str | Path = "./data", force: bool = False) -> EmbeddedPaths:
    """Build the offline corpus, tokenizer and shards (skips when present and valid)."""
    import sentencepiece as spm
    root = Path(root)
    ds = root / "datasets" / EMBEDDED_DATASET
    tok = root / "tokenizers" / f"{EMBEDDED_TOKENIZER}.model"
    if not force and _embedded_valid(ds, tok):
        return EmbeddedPaths(ds, tok)
    docs = embedded_documents()
    train = [d for d in docs if not is_val_doc(d)]
    val = [d for d in docs if is_val_doc(d)]
    train_tokenizer(train, tok)
    sp = load_tokenizer(tok, expected_vocab=1024)
    ds.mkdir(parents=True, exist_ok=True)
    for old in ds.glob("fineweb_*.bin"):
        old.unlink()
    files = write_split(ds, "val", encode_docs(sp, val), DEFAULT_SHARD_TOKENS)
    files += write_split(ds, "train", encode_docs(sp, train), DEFAULT_SHARD_TOKENS)
    atomic_write_json(ds / "manifest.json", {
        "name": EMBEDDED_DATASET, "tokenizer": tok.name, "tokenizer_sha256": file_sha256(tok),
        "docs": {"train": len(train), "val": len(val)},
        "text_bytes": {"train": sum(len(d.encode()) for d in train),
                       "val": sum(len(d.encode()) for d in val)},
        "tokens": {p.name: read_header(p) for p in files},
        "sha256": {p.name: file_sha256(p) for p in files},
        "python": platform.python_version(), "sentencepiece": spm.__version__,
    })
    return EmbeddedPaths(ds, tok)


# ---------------------------------------------------------------- local text
def _utf8(data: bytes, where: str, unit: str) -> str:
    """Decode one document's bytes; non-UTF-8 names the file, the line and the fix."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1 if unit == "file" else None
        at = f"{where}:{line}" if line else where
        raise PrepareError(f"{at}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                           f"{exc.start} of this {unit}); re-encode the file as UTF-8 "
                           "(e.g. iconv -f latin1 -t utf-8) or drop the document") from None


def _jsonl_docs(p: Path) -> Iterator[str]:
    """The "text" field of each line; lines are read as bytes so a decode error has its line."""
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    try:
        with opener(p, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                line = _utf8(raw, f"{p}:{lineno}", "line")
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)["text"]
                except (ValueError, KeyError, TypeError):
                    text = None
                if not isinstance(text, str):
                    raise PrepareError(f"{p}:{lineno}: not a JSON object with a \"text\" string "
                                       "field; fix the line or the --input file")
                yield text
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise PrepareError(f"{p}: corrupt or truncated gzip file ({exc}); re-download or "
                           "re-compress it (gzip -t checks a file)") from None


def iter_text_docs(paths: Iterable[str | Path]) -> Iterator[str]:
    """Documents from .txt (one per file), .jsonl / .jsonl.gz / .json.gz (field "text")."""
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise PrepareError(f"{p}: input file not found; fix the --input path")
        name = p.name.lower()
        if name.endswith(".txt"):
            yield _utf8(p.read_bytes(), str(p), "file")
        elif name.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".json")):
            yield from _jsonl_docs(p)
        else:
            raise PrepareError(f"{p}: unsupported input type; use .txt, .jsonl or .jsonl.gz")


def check_splits(n_train: int, n_val: int, inputs: Sequence[str | Path], val_docs: int) -> None:
    """Both splits must hold documents: training on nothing or scoring on nothing is an
    error here, before any shard is written, not an empty dataset found later."""
    where = ", ".join(str(p) for p in inputs)
    n = n_train + n_val
    if n == 0:
        raise PrepareError(f"{where}: no documents found; pass non-empty --input files")
    if n_train == 0:
        raise PrepareError(f"{where}: --val-docs {val_docs} takes all {n} documents, leaving the "
                           f"train split empty; pass --val-docs below {n} or more input")
    if n_val == 0:
        raise PrepareError(f"{where}: the val split is empty ({n} documents, --val-docs "
                           f"{val_docs}); pass --val-docs N or a larger --val-fraction")


def owned_files(out: Path) -> set[str]:
    """Names a previous preparation of `out` wrote (its manifest.json lists them), after
    refusing a folder that holds anything else: its shards would mix into this dataset."""
    if not out.is_dir():
        return set()
    present = {p.name for p in out.iterdir()}
    owned: set[str] = set()
    man = out / "manifest.json"
    if man.is_file():
        try:
            data = json.loads(man.read_text(encoding="utf-8"))
            owned = set(data.get("files") or data.get("sha256") or {})
        except (ValueError, AttributeError):
            raise PrepareError(f"{man}: not a dataset manifest; move the folder away or use "
                               "another --name") from None
        owned.add("manifest.json")
    foreign = sorted(present - owned)
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise PrepareError(f"{out}: holds files no earlier `prepare` here listed ({shown}); their "
                           "shards would mix into the new dataset: use another --name or move "
                           "them out")
    return owned & present


def prepare_text(inputs: list[str | Path], tokenizer: str | Path, out_dir: str | Path, *,
                 val_docs: int = 0, val_fraction: float = 0.0,
                 shard_tokens: int = DEFAULT_SHARD_TOKENS, vocab_size: int | None = None) -> dict:
    """Tokenize documents into train/val shards; the first `val_docs` (or a hashed fraction) are val.

    The folder's manifest.json owns its shards: a rerun replaces only what the previous
    manifest listed (a smaller dataset leaves no stale shard behind), and a folder holding
    anything else is refused."""
    from golf.bpb import user_defined_pieces
    inputs = list(inputs)
    sp = load_tokenizer(tokenizer, expected_vocab=vocab_size)
    ops = user_defined_pieces(sp)
    if ops:
        raise PrepareError(f"{tokenizer}: has {len(ops)} user_defined pieces (e.g. "
                           f"{sp.id_to_piece(ops[0])!r}); `prepare text` writes no byte sidecar, "
                           "so its val split could not be scored exactly; use a tokenizer "
                           "without user_defined symbols")
    out = Path(out_dir)
    old = owned_files(out)
    train, val = [], []
    n_bytes = 0
    for i, doc in enumerate(iter_text_docs(inputs)):
        n_bytes += len(doc.encode("utf-8"))
        to_val = i < val_docs if val_docs else (val_fraction > 0 and
                                                is_val_doc(doc, int(round(val_fraction * 100))))
        (val if to_val else train).append(doc)
    check_splits(len(train), len(val), inputs, val_docs)
    out.mkdir(parents=True, exist_ok=True)
    stats = {"docs": {"train": len(train), "val": len(val)}, "text_bytes": n_bytes, "files": {}}
    for split, docs in (("val", val), ("train", train)):
        if docs:
            for p in write_split(out, split, encode_docs(sp, docs), shard_tokens):
                stats["files"][p.name] = read_header(p)
    atomic_write_json(out / "manifest.json", {
        "name": out.name, "tokenizer": str(tokenizer), "tokenizer_sha256": file_sha256(tokenizer),
        "vocab_size": sp.vocab_size(), **stats})
    for name in sorted(old - set(stats["files"]) - {"manifest.json"}):
        (out / name).unlink()
    return stats


# ---------------------------------------------------------------- fineweb download
# Where each published variant lives (anchor_eval.md §2.2): the challenge's repo ships sp1024
# only; sp4096/sp8192 and CaseOps are community exports in the same layout.
VARIANT_REPOS = {
    "sp1024": HF_REPO,
    "sp4096": "kevclark/parameter-golf",
    "sp8192": "kevclark/parameter-golf",
    "sp8192_lossless_caps_caseops_v1_reserved": "romeerp/parameter-golf-caseops-v1",
}


@dataclass(frozen=True)
class FinewebFiles:
    """What one variant's download consists of, read from the export's manifest.json."""
    dataset: str
    val: list[str]
    train: list[str]
    val_bytes: list[str]       # byte sidecar shards (empty when the variant ships none)
    tokenizer: list[str]       # paths relative to the export root
    text_transform: str | None


def _fetch(url: str, dest: Path, timeout: float, label: str, hint: str = "") -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, os.fdopen(fd, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0)
            done = 0
            while chunk := r.read(1 << 20):
                f.write(chunk)
                done += len(chunk)
                if total:
                    print(f"\r{label}: {done / 1e6:.1f}/{total / 1e6:.1f} MB", end="", file=sys.stderr)
            print(file=sys.stderr)
        if dest.suffix == ".bin":
            read_header(tmp)
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, ShardError):
            raise PrepareError(f"{dest}: downloaded shard is invalid ({exc}); run the command again") from None
        raise PrepareError(f"{url}: download failed ({exc}); this machine cannot fetch it: on one "
                           f"with network run `{hint or 'the same command'}` (or fetch {url} into "
                           f"{dest}; GOLF_HF_BASE points at a mirror)") from None


FINEWEB_DATASET = "fineweb10B_sp1024"


def variant_repo(variant: str, repo_id: str | None = None) -> str:
    """The HF dataset repo of a variant: --repo-id, else MATCHED_FINEWEB_REPO_ID, else the
    known home of the variant; an unknown NAME needs one of the first two."""
    if not variant.replace("_", "").isalnum():
        raise PrepareError(f"--variant {variant!r}: use a name like sp1024, sp8192 or "
                           "sp8192_lossless_caps_caseops_v1_reserved (letters, digits, _)")
    repo = repo_id or os.environ.get("MATCHED_FINEWEB_REPO_ID") or VARIANT_REPOS.get(variant)
    if repo is None:
        raise PrepareError(f"--variant {variant}: no known repository publishes it; pass "
                           f"--repo-id OWNER/NAME (known: {', '.join(sorted(VARIANT_REPOS))})")
    return repo


def hf_root_url(repo_id: str | None = None) -> str:
    """Where an export lives: the HF dataset repo (`repo_id`, else MATCHED_FINEWEB_REPO_ID) and
    the export root inside it (MATCHED_FINEWEB_REMOTE_ROOT_PREFIX, default `datasets`), the
    same variables the challenge's own downloader reads. GOLF_HF_BASE replaces the whole URL
    (a mirror)."""
    if os.environ.get("GOLF_HF_BASE"):
        return os.environ["GOLF_HF_BASE"].rstrip("/")
    repo = repo_id or os.environ.get("MATCHED_FINEWEB_REPO_ID", HF_REPO)
    prefix = os.environ.get("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", HF_PREFIX).strip("/")
    return f"https://huggingface.co/datasets/{repo}/resolve/main/{prefix}"


def _sidecar_names(entry: dict, n_val: int, where: str) -> list[str]:
    """fineweb_val_bytes_XXXXXX.bin names when the dataset entry announces a sidecar
    (`val_bytes_glob` or `files_val_bytes`, in the entry or its stats): one per val shard."""
    stats = entry.get("stats") or {}
    glob_ = entry.get("val_bytes_glob") or stats.get("val_bytes_glob")
    count = entry.get("files_val_bytes", stats.get("files_val_bytes"))
    if not glob_ and count is None:
        return []
    n = int(count) if count is not None else n_val
    names = [f"fineweb_val_bytes_{i:06d}.bin" for i in range(n)]
    if glob_ and not all(fnmatch.fnmatch(x, Path(str(glob_)).name) for x in names):
        raise PrepareError(f"{where}: val_bytes_glob {glob_!r} does not name "
                           "fineweb_val_bytes_XXXXXX.bin files; this export's layout is unknown")
    return names


def fineweb_files(manifest: dict, train_shards: int, dataset: str = FINEWEB_DATASET,
                  where: str = "manifest.json") -> FinewebFiles:
    """A variant's files from the export's manifest: datasets[].stats.{files_val, files_train},
    its byte sidecar (val_bytes_glob / files_val_bytes) and the tokenizer entry its
    tokenizer_name points to (model_path / vocab_path / path)."""
    entry = next((d for d in manifest.get("datasets", []) if d.get("name") == dataset), None)
    if entry is None:
        names = [d.get("name") for d in manifest.get("datasets", [])]
        raise PrepareError(f"{where}: no dataset {dataset!r} (it lists {names}); pick one of "
                           "those with --variant, or point --repo-id at the export that has it")
    stats = entry.get("stats") or {}
    n_val, n_train = int(stats.get("files_val", 1)), int(stats.get("files_train", 0))
    if train_shards > n_train:
        raise PrepareError(f"{where}: {dataset} has {n_train} training shards, {train_shards} "
                           f"requested; pass --train-shards {n_train} or fewer")
    tok = next((t for t in manifest.get("tokenizers", [])
                if t.get("name") == entry.get("tokenizer_name")), None)
    if tok is None:
        raise PrepareError(f"{where}: tokenizer {entry.get('tokenizer_name')!r} of {dataset} is "
                           "not listed under tokenizers; the manifest is incomplete, re-download it")
    return FinewebFiles(
        dataset=dataset, val=[f"fineweb_val_{i:06d}.bin" for i in range(n_val)],
        train=[f"fineweb_train_{i:06d}.bin" for i in range(train_shards)],
        val_bytes=_sidecar_names(entry, n_val, where),
        tokenizer=[str(tok[k]) for k in ("model_path", "vocab_path", "path") if tok.get(k)],
        text_transform=entry.get("text_transform") or tok.get("text_transform"))


def _fetch_manifest(base: str, dest: Path, timeout: float, hint: str) -> dict:
    _fetch(f"{base}/manifest.json", dest, timeout, "manifest", hint)
    try:
        return json.loads(dest.read_text(encoding="utf-8"))
    except ValueError:
        dest.unlink()
        raise PrepareError(f"{base}/manifest.json is not JSON; check the URL (GOLF_HF_BASE / "
                           "--repo-id / MATCHED_FINEWEB_*) and run the command again") from None


def _check_fineweb(files: FinewebFiles, ds: Path, model: Path) -> None:
    """The sidecar covers the val stream token for token, and a tokenizer whose pieces cannot
    count bytes (user_defined operators) comes with one."""
    from golf.bpb import user_defined_pieces
    sp = load_tokenizer(model)  # a truncated or wrong file fails here, naming it
    n_val = sum(read_header(ds / n) for n in files.val)
    if files.val_bytes:
        n_side = sum(read_header(ds / n) for n in files.val_bytes)
        if n_side != n_val:
            raise PrepareError(f"{ds}: the byte sidecar has {n_side:,} entries for {n_val:,} val "
                               "tokens; delete fineweb_val_bytes_*.bin there and download again")
    elif user_defined_pieces(sp) or files.text_transform:
        raise PrepareError(f"{model}: {files.dataset} needs a val byte sidecar (user_defined "
                           "pieces or a text transform) but the export's manifest lists none; "
                           "its val_bpb could not be counted exactly")


def prepare_fineweb(root: str | Path = "./data", train_shards: int = 1, *, variant: str = "sp1024",
                    repo_id: str | None = None, base_url: str | None = None,
                    timeout: float = 10.0) -> EmbeddedPaths:
    """Download one variant's export: its manifest, every val shard (and byte sidecar), the
    first `train_shards` train shards and the tokenizer, into root/{manifest.json, datasets/
    fineweb10B_<variant>/, tokenizers/} (the challenge's local layout). Files already present
    and valid are kept; each download goes to a temp file that is checked before the rename."""
    repo = (variant_repo(variant, repo_id) if base_url is None
            else repo_id or VARIANT_REPOS.get(variant, "OWNER/NAME"))
    base = (base_url or hf_root_url(repo)).rstrip("/")
    hint = (f"python -m golf.data.prepare fineweb --variant {variant} --repo-id {repo} "
            f"--train-shards {train_shards}")
    root = Path(root)
    dataset = f"fineweb10B_{variant}"
    ds, tokdir = root / "datasets" / dataset, root / "tokenizers"
    manifest_path = root / "manifest.json"
    files = fineweb_files(_fetch_manifest(base, manifest_path, timeout, hint), train_shards,
                          dataset, where=str(manifest_path))
    for n in files.val + files.val_bytes + files.train:
        try:
            read_header(ds / n)
            continue
        except ShardError:
            pass
        _fetch(f"{base}/datasets/{dataset}/{n}", ds / n, timeout, n, hint)
    model = None
    for rel in files.tokenizer:
        dest = tokdir / Path(rel).name
        if not dest.is_file():
            _fetch(f"{base}/{rel.lstrip('/')}", dest, timeout, dest.name, hint)
        if dest.suffix == ".model":
            model = dest
    if model is None:
        raise PrepareError(f"{manifest_path}: the tokenizer entry names no .model file; re-download "
                           "the manifest or pass TOKENIZER_PATH yourself")
    _check_fineweb(files, ds, model)
    names = files.val + files.val_bytes + files.train
    atomic_write_json(ds / "manifest.json", {
        "name": dataset, "variant": variant, "source": base, "tokenizer": model.name,
        "tokenizer_sha256": file_sha256(model), "text_transform": files.text_transform,
        "files": {n: read_header(ds / n) for n in names}})
    return EmbeddedPaths(ds, model)


# ---------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    from golf.errors import user_errors
    ap = argparse.ArgumentParser(prog="python -m golf.data.prepare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embedded", help="build the offline CPython-docs corpus + tokenizer")
    e.add_argument("--root", default="./data")
    e.add_argument("--force", action="store_true")
    k = sub.add_parser("tokenizer", help="train a challenge-settings BPE of any vocabulary size")
    k.add_argument("--vocab", type=int, required=True)
    k.add_argument("--input", nargs="+", required=True)
    k.add_argument("--out", default=None, help="default ROOT/tokenizers/fineweb_<vocab>_bpe.model")
    k.add_argument("--root", default="./data")
    k.add_argument("--force", action="store_true", help="replace an existing --out")
    t = sub.add_parser("text", help="tokenize local documents into shards")
    t.add_argument("--input", nargs="+", required=True)
    t.add_argument("--tokenizer", required=True)
    t.add_argument("--name", required=True, help="dataset folder name under ROOT/datasets")
    t.add_argument("--root", default="./data")
    t.add_argument("--val-docs", type=int, default=0, help="first N documents are val")
    t.add_argument("--val-fraction", type=float, default=0.1, help="hashed val fraction (if no --val-docs)")
    t.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS)
    f = sub.add_parser("fineweb", help="download a published export (sp1024, sp4096, sp8192, ...)")
    f.add_argument("--variant", default="sp1024", help="sp1024 | sp4096 | sp8192 | NAME "
                   "(dataset fineweb10B_<variant>)")
    f.add_argument("--repo-id", default=None, help="HF dataset repo (default: the variant's known home)")
    f.add_argument("--root", default="./data")
    f.add_argument("--train-shards", type=int, default=1)
    f.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args(argv)
    with user_errors():
        if args.cmd == "embedded":
            p = prepare_embedded(args.root, force=args.force)
            print(f"dataset {p.dataset_dir}\ntokenizer {p.tokenizer_path}")
        elif args.cmd == "tokenizer":
            out = args.out or Path(args.root) / "tokenizers" / f"fineweb_{args.vocab}_bpe.model"
            p = prepare_tokenizer(args.input, args.vocab, out, force=args.force)
            print(f"tokenizer {p} sha256 {file_sha256(p)}")
        elif args.cmd == "text":
            out = Path(args.root) / "datasets" / args.name
            stats = prepare_text(args.input, args.tokenizer, out, val_docs=args.val_docs,
                                 val_fraction=args.val_fraction, shard_tokens=args.shard_tokens)
            print(json.dumps(stats, indent=2))
        else:
            p = prepare_fineweb(args.root, args.train_shards, variant=args.variant,
                                repo_id=args.repo_id, timeout=args.timeout)
            print(f"dataset {p.dataset_dir}\ntokenizer {p.tokenizer_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
