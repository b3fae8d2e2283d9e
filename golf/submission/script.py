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


def _closure(entry: str, src_roots: Sequence[Path] | None, parts: Sequence[str]):
    return module_closure(entry, list(src_roots) if src_roots else None, parts=tuple(parts))


def _plain(entry: str, src_roots: Sequence[Path] | None, parts: Sequence[str]) -> bytes:
    return render_plain(_closure(entry, src_roots, parts), entry)


def build_forms(entry: str = ENTRY, src_roots: Sequence[Path] | None = None,
                parts: Sequence[str] = ()) -> dict[str, bytes]:
    """Every form of train_gpt.py carrying the optional `parts` (golf.ship.PARTS): "plain"
    plus one self-extracting form per codec."""
    plain = _plain(entry, src_roots, parts)
    return {"plain": plain, **compressed_forms(plain)}


def build_train_script(compress: bool, entry: str = ENTRY,
                       src_roots: Sequence[Path] | None = None, parts: Sequence[str] = ()) -> bytes:
    """The single-file train_gpt.py (deterministic bytes); compressed = smallest codec."""
    plain = _plain(entry, src_roots, parts)
    return smallest_compressed(plain)[1] if compress else plain


def code_bytes(entry: str = ENTRY, src_roots: Sequence[Path] | None = None,
               parts: Sequence[str] = ()) -> int:
    """Bytes of the form pack ships by default (the smaller of plain and compressed) when it
    carries the optional `parts` (a run's: golf.ship.parts_for)."""
    return min(len(b) for b in build_forms(entry, src_roots, parts).values())


def requirements_for(entry: str = ENTRY, src_roots: Sequence[Path] | None = None,
                     codec: str = "", parts: Sequence[str] = ()) -> str:
    """requirements.txt: the third-party packages the packed file imports (versions pinned)."""
    names = set(_closure(entry, src_roots, parts).third_party)
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
