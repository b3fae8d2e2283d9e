"""Local documents -> shards: `python -m golf.data.prepare text`.

Reads .txt (one document per file) and .jsonl / .jsonl.gz (field "text"), splits them into
train/val (the first --val-docs, else a hashed fraction) and tokenizes them with a given
tokenizer. The folder's manifest.json owns its shards (nothing else there is touched).
"""
from __future__ import annotations

import argparse
import gzip
import json
import zlib
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from golf.run.atomic import atomic_write_json, file_sha256
from golf.data.shards import MANIFEST, max_token_id, read_header
from golf.data.sources.splits import DEFAULT_SHARD_TOKENS, encode_docs, is_val_doc, write_split
from golf.data.tokenizer import load_tokenizer, user_defined_pieces
from golf.run.errors import PrepareError


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
    man = out / MANIFEST
    if man.is_file():
        try:
            data = json.loads(man.read_text(encoding="utf-8"))
            owned = set(data.get("files") or data.get("sha256") or {})
        except (ValueError, AttributeError):
            raise PrepareError(f"{man}: not a dataset manifest; move the folder away or use "
                               "another --name") from None
        owned.add(MANIFEST)
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
    atomic_write_json(out / MANIFEST, {
        "name": out.name, "tokenizer": str(tokenizer), "tokenizer_sha256": file_sha256(tokenizer),
        "vocab_size": sp.vocab_size(),
        "max_token_id": max_token_id([out / n for n in stats["files"]]), **stats})
    for name in sorted(old - set(stats["files"]) - {MANIFEST}):
        (out / name).unlink()
    return stats


def add_parser(sub) -> argparse.ArgumentParser:
    t = sub.add_parser("text", help="tokenize local documents into shards")
    t.add_argument("--input", nargs="+", required=True)
    t.add_argument("--tokenizer", required=True)
    t.add_argument("--name", required=True, help="dataset folder name under ROOT/datasets")
    t.add_argument("--root", default="./data")
    t.add_argument("--val-docs", type=int, default=0, help="first N documents are val")
    t.add_argument("--val-fraction", type=float, default=0.1, help="hashed val fraction (if no --val-docs)")
    t.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS)
    return t


def run(args: argparse.Namespace) -> None:
    out = Path(args.root) / "datasets" / args.name
    stats = prepare_text(args.input, args.tokenizer, out, val_docs=args.val_docs,
                         val_fraction=args.val_fraction, shard_tokens=args.shard_tokens)
    print(json.dumps(stats, indent=2))
