"""The shipped train_gpt.py: its forms (plain + one self-extracting form per codec), its exact
bytes, and the requirements.txt that lists what it imports.

Why here and not in amalgamate.py: amalgamation builds one readable file; this module decides
which forms exist and which one a submission counts, so every size quoted is the same figure.
"""
from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Sequence

from golf.submission.amalgamate import (compressed_forms, module_closure, pip_name, render_plain,
                                        smallest_compressed)

ENTRY = "golf.main"


def _plain(entry: str, src_roots: Sequence[Path] | None) -> bytes:
    return render_plain(module_closure(entry, list(src_roots) if src_roots else None), entry)


def build_forms(entry: str = ENTRY, src_roots: Sequence[Path] | None = None) -> dict[str, bytes]:
    """Every form of train_gpt.py: "plain" plus one self-extracting form per codec."""
    plain = _plain(entry, src_roots)
    return {"plain": plain, **compressed_forms(plain)}


def build_train_script(compress: bool, entry: str = ENTRY,
                       src_roots: Sequence[Path] | None = None) -> bytes:
    """The single-file train_gpt.py (deterministic bytes); compressed = smallest codec."""
    plain = _plain(entry, src_roots)
    return smallest_compressed(plain)[1] if compress else plain


def code_bytes(entry: str = ENTRY, src_roots: Sequence[Path] | None = None) -> int:
    """Bytes of the form pack ships by default (the smaller of plain and compressed)."""
    return min(len(b) for b in build_forms(entry, src_roots).values())


def requirements_for(entry: str = ENTRY, src_roots: Sequence[Path] | None = None,
                     codec: str = "") -> str:
    """requirements.txt: the third-party packages the packed file imports (versions pinned)."""
    names = set(module_closure(entry, list(src_roots) if src_roots else None).third_party)
    if codec == "brotli":
        names.add("brotli")
    lines, optional = [], []
    for n in sorted(names):
        dist = pip_name(n)
        try:
            lines.append(f"{dist}>={metadata.version(dist).split('+')[0]}")
        except metadata.PackageNotFoundError:
            # the round trip ran without it, so the packed code imports it optionally (e.g. FA3)
            optional.append(f"# optional, used when installed: {dist}")
    return "\n".join(lines + optional) + "\n"
