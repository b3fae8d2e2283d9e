"""Published FineWeb exports: `python -m golf.data.prepare fineweb --variant NAME`.

Downloads one variant (sp1024 from the challenge's repo; sp4096, sp8192, CaseOps from the
community exports in the same layout): its manifest, val shards (and the byte sidecar when the
variant ships one), the first N train shards and the tokenizer, each checked before use.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from golf.run import settings

from golf.run.atomic import atomic_file, atomic_write_json, file_sha256
from golf.data.shards import MANIFEST, max_token_id, read_header
from golf.data.sources.splits import DatasetPaths
from golf.data.tokenizer import load_tokenizer, user_defined_pieces
from golf.run.errors import PrepareError, ShardError

HF_REPO = "willdepueoai/parameter-golf"   # the challenge's published exports (data/README.md there)
# Where each published variant lives: the challenge's repo ships sp1024 only; sp4096/sp8192
# and CaseOps are community exports in the same layout.
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
    """Download `url` to `dest` atomically; a shard is validated before it takes the name."""
    check = read_header if dest.suffix == ".bin" else None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, atomic_file(dest, "wb", check) as f:
            total = int(r.headers.get("Content-Length") or 0)
            done = 0
            while chunk := r.read(1 << 20):
                f.write(chunk)
                done += len(chunk)
                if total:
                    print(f"\r{label}: {done / 1e6:.1f}/{total / 1e6:.1f} MB", end="", file=sys.stderr)
            print(file=sys.stderr)
    except (urllib.error.URLError, OSError, ValueError) as exc:
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
    repo = repo_id or settings.read("MATCHED_FINEWEB_REPO_ID", os.environ) or VARIANT_REPOS.get(variant)
    if repo is None:
        raise PrepareError(f"--variant {variant}: no known repository publishes it; pass "
                           f"--repo-id OWNER/NAME (known: {', '.join(sorted(VARIANT_REPOS))})")
    return repo


def hf_root_url(repo_id: str | None = None) -> str:
    """Where an export lives: the HF dataset repo (`repo_id`, else MATCHED_FINEWEB_REPO_ID) and
    the export root inside it (MATCHED_FINEWEB_REMOTE_ROOT_PREFIX, default `datasets`), the
    same variables the challenge's own downloader reads. GOLF_HF_BASE replaces the whole URL
    (a mirror)."""
    base = settings.read("GOLF_HF_BASE", os.environ).strip()
    if base:
        return base.rstrip("/")
    repo = repo_id or settings.read("MATCHED_FINEWEB_REPO_ID", os.environ) or HF_REPO
    prefix = settings.read("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", os.environ).strip("/")
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
                  where: str = MANIFEST) -> FinewebFiles:
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
    _fetch(f"{base}/{MANIFEST}", dest, timeout, "manifest", hint)
    try:
        return json.loads(dest.read_text(encoding="utf-8"))
    except ValueError:
        dest.unlink()
        raise PrepareError(f"{base}/manifest.json is not JSON; check the URL (GOLF_HF_BASE / "
                           "--repo-id / MATCHED_FINEWEB_*) and run the command again") from None


def _check_fineweb(files: FinewebFiles, ds: Path, model: Path) -> None:
    """The sidecar covers the val stream token for token, and a tokenizer whose pieces cannot
    count bytes (user_defined operators) comes with one."""
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
                    timeout: float = 10.0) -> DatasetPaths:
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
    manifest_path = root / MANIFEST
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
    atomic_write_json(ds / MANIFEST, {
        "name": dataset, "variant": variant, "source": base, "tokenizer": model.name,
        "tokenizer_sha256": file_sha256(model), "text_transform": files.text_transform,
        "vocab_size": load_tokenizer(model).vocab_size(),
        "max_token_id": max_token_id([ds / n for n in files.val + files.train]),
        "files": {n: read_header(ds / n) for n in names}})
    return DatasetPaths(ds, model)


def add_parser(sub) -> argparse.ArgumentParser:
    f = sub.add_parser("fineweb", help="download a published export (sp1024, sp4096, sp8192, ...)")
    f.add_argument("--variant", default="sp1024", help="sp1024 | sp4096 | sp8192 | NAME "
                   "(dataset fineweb10B_<variant>)")
    f.add_argument("--repo-id", default=None, help="HF dataset repo (default: the variant's known home)")
    f.add_argument("--root", default="./data")
    f.add_argument("--train-shards", type=int, default=1)
    f.add_argument("--timeout", type=float, default=10.0)
    return f


def run(args: argparse.Namespace) -> None:
    p = prepare_fineweb(args.root, args.train_shards, variant=args.variant,
                        repo_id=args.repo_id, timeout=args.timeout)
    print(f"dataset {p.dataset_dir}\ntokenizer {p.tokenizer_path}")
