"""The offline default corpus: `python -m golf.data.prepare embedded`.

Documentation text that ships with CPython (pydoc topics + the docstrings of a fixed list of
stdlib modules), split by content hash, its own challenge-settings BPE tokenizer, and shards in
the challenge layout. Same Python version, same bytes; no network.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import platform
import warnings
from pathlib import Path
from typing import Iterator

import sentencepiece as spm
from pydoc_data.topics import topics

from golf.run.atomic import atomic_write_json, file_sha256
from golf.data import EMBEDDED_DATASET, EMBEDDED_TOKENIZER
from golf.data.shards import MANIFEST, max_token_id, read_header
from golf.data.sources.splits import DEFAULT_SHARD_TOKENS, DatasetPaths, encode_docs, is_val_doc, write_split
from golf.data.tokenizer import load_tokenizer
from golf.data.sources.tokenizer_train import train_tokenizer


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


# ---------------------------------------------------------------- corpus
def embedded_documents() -> list[str]:
    """pydoc topics + stdlib docstrings, in a fixed order, deduplicated."""
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
    """Docstrings of a module, its public classes/functions and their public methods."""
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


def _embedded_valid(ds: Path, tok: Path) -> bool:
    """Every shard the manifest lists is there with its recorded hash (then no rebuild)."""
    man = ds / MANIFEST
    if not (man.is_file() and tok.is_file()):
        return False
    try:
        files = json.loads(man.read_text())["sha256"]
        return all((ds / n).is_file() and file_sha256(ds / n) == h for n, h in files.items())
    except (ValueError, KeyError, OSError):
        return False


def prepare_embedded(root: str | Path = "./data", force: bool = False) -> DatasetPaths:
    """Build the offline corpus, tokenizer and shards (skips when present and valid)."""
    root = Path(root)
    ds = root / "datasets" / EMBEDDED_DATASET
    tok = root / "tokenizers" / f"{EMBEDDED_TOKENIZER}.model"
    if not force and _embedded_valid(ds, tok):
        return DatasetPaths(ds, tok)
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
    atomic_write_json(ds / MANIFEST, {
        "name": EMBEDDED_DATASET, "tokenizer": tok.name, "tokenizer_sha256": file_sha256(tok),
        "vocab_size": sp.vocab_size(), "max_token_id": max_token_id(files),
        "docs": {"train": len(train), "val": len(val)},
        "text_bytes": {"train": sum(len(d.encode()) for d in train),
                       "val": sum(len(d.encode()) for d in val)},
        "tokens": {p.name: read_header(p) for p in files},
        "sha256": {p.name: file_sha256(p) for p in files},
        "python": platform.python_version(), "sentencepiece": spm.__version__,
    })
    return DatasetPaths(ds, tok)


# ---------------------------------------------------------------- CLI
def add_parser(sub) -> argparse.ArgumentParser:
    e = sub.add_parser("embedded", help="build the offline CPython-docs corpus + tokenizer")
    e.add_argument("--root", default="./data")
    e.add_argument("--force", action="store_true")
    return e


def run(args: argparse.Namespace) -> None:
    p = prepare_embedded(args.root, force=args.force)
    print(f"dataset {p.dataset_dir}\ntokenizer {p.tokenizer_path}")
