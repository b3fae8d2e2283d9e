"""Recompute a script's "counted" code size from the recipe the script itself describes.

Why: since April many records log a computed figure, len(stub + b85(compress(minify(src)))),
while the readable source ships (#1855, #2135). The audit reads the recipe from the syntax tree
(codec, its constant arguments, the stub text around the payload) and redoes it with the
stdlib/brotli codecs. A minifier (pyminify) cannot be run here, so that case is reported as
not recomputable, with compress(raw source) as an upper bound.
"""
from __future__ import annotations

import ast
import base64
import lzma
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import brotli

from golf.audit.source import aliases, call_name, constant

CODECS: dict[str, tuple[Any, tuple[str, ...]]] = {
    # module, positional parameter names after the data
    "lzma": (lzma, ("format", "check", "preset", "filters")),
    "brotli": (brotli, ("mode", "quality", "lgwin", "lgblock")),
    "zlib": (zlib, ("level", "wbits")),
}


@dataclass(frozen=True)
class Recipe:
    codec: str
    kwargs: dict[str, Any] | None   # None when an argument is not a constant
    minify: bool
    stub_bytes: int | None          # bytes of the stub around the b85 payload
    line: int


def _codec_kwargs(call: ast.Call, codec: str, names: dict[str, str]) -> dict[str, Any] | None:
    try:
        kw = {p: constant(a, names) for p, a in zip(CODECS[codec][1], call.args[1:])}
        kw.update({k.arg: constant(k.value, names) for k in call.keywords if k.arg})
        return kw
    except (ValueError, TypeError, KeyError):
        return None


def _stub_bytes(func: ast.AST) -> int | None:
    """Constant text of the largest expression that contains 'b85decode' (the exec stub)."""
    best = None
    for node in ast.walk(func):
        parts = _constant_parts(node)
        if parts and any("b85decode" in (p.decode("latin-1") if isinstance(p, bytes) else p)
                         for p in parts):
            size = sum(len(p.encode() if isinstance(p, str) else p) for p in parts)
            best = max(best or 0, size)
    return best


def _constant_parts(node: ast.AST) -> list | None:
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.Constant)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _constant_parts(node.left), _constant_parts(node.right)
        return (left or []) + (right or []) if (left or right) else None
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
        return [node.value]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr == "format" and isinstance(node.func.value, ast.Constant):
        text = node.func.value.value
        return [text.replace("{}", "")] if isinstance(text, str) else None
    return None


def find_recipe(tree: ast.Module) -> Recipe | None:
    """The function that b85-encodes a compressed copy of the source, if the script has one."""
    names = aliases(tree)
    minify = any("minif" in m for m in names.values())
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        calls = [c for c in ast.walk(func) if isinstance(c, ast.Call)]
        if not any(call_name(c, names).endswith("b85encode") for c in calls):
            continue
        for c in calls:
            codec, _, fn = call_name(c, names).partition(".")
            if codec in CODECS and fn == "compress" and c.args:
                uses_min = minify or any("minif" in call_name(x, names) for x in calls) or any(
                    isinstance(x, ast.Constant) and "minif" in str(x.value) for x in ast.walk(func))
                return Recipe(codec, _codec_kwargs(c, codec, names), uses_min,
                              _stub_bytes(func), c.lineno)
    return None


def recompute(recipe: Recipe, source: bytes) -> int | None:
    """len(stub) + len(b85(compress(source))) by the recipe; None if it cannot be redone."""
    if recipe.kwargs is None or recipe.stub_bytes is None:
        return None
    compress: Callable[..., bytes] = getattr(CODECS[recipe.codec][0], "compress")
    return recipe.stub_bytes + len(base64.b85encode(compress(source, **recipe.kwargs)))
