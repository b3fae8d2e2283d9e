"""What the folder's code says, read from its syntax tree only (ast.parse never runs code).

Why: settings defaults, environment reads, local files a script pulls in and the calls a
legality hint looks at are all visible in the tree. A self-extracting wrapper is decoded
(b85 + decompress, both pure data transforms) so its inner source is read the same way.
"""
from __future__ import annotations

import ast
import base64
import lzma
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterator

import brotli

from golf.audit.folder import Folder

DECOMPRESSORS = {"lzma": lzma.decompress, "zlib": zlib.decompress, "brotli": brotli.decompress}
# Not code: prose, logs, the tokenizer (uncounted by precedent, #43) and the model artifact
# (already counted as the model bytes).
NOT_COUNTED = (".md", ".json", ".log", ".txt", ".model", ".vocab", ".png", ".jpg", ".svg",
               ".pt", ".ptz")


@dataclass(frozen=True)
class Ref:
    """A local file the code pulls in: how (import / string) and where (file:line)."""
    name: str
    how: str
    where: str


def parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None


def aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> module for every import (`import lzma as L` gives L -> lzma)."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def call_name(node: ast.Call, names: dict[str, str]) -> str:
    """`L.decompress(...)` -> 'lzma.decompress' (aliases resolved); '' when not a plain name."""
    parts, f = [], node.func
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if not isinstance(f, ast.Name):
        return ".".join(reversed(parts)) if parts else ""
    return ".".join([names.get(f.id, f.id), *reversed(parts)])


def unwrap(text: str) -> tuple[str, str] | None:
    """A real wrapper `exec(C.decompress(B.b85decode("...")))`: (compressor, inner source)."""
    tree = parse(text)
    if tree is None or len(tree.body) > 4:
        return None
    names = aliases(tree)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and call_name(node, names) == "exec" and node.args):
            continue
        inner = node.args[0]
        if not isinstance(inner, ast.Call) or not inner.args:
            continue
        codec = call_name(inner, names).split(".")[0]
        payload = inner.args[0]
        if codec in DECOMPRESSORS and isinstance(payload, ast.Call) and payload.args \
                and call_name(payload, names).endswith("b85decode") \
                and isinstance(payload.args[0], ast.Constant):
            raw = payload.args[0].value
            try:
                blob = base64.b85decode(raw.encode() if isinstance(raw, str) else raw)
                return codec, DECOMPRESSORS[codec](blob).decode("utf-8", errors="replace")
            except (ValueError, TypeError, lzma.LZMAError, zlib.error, brotli.error):
                return None
    return None


def code_trees(folder: Folder) -> dict[str, ast.Module]:
    """Syntax trees of every .py in the folder; a wrapper's tree is its decoded inner source."""
    trees = {}
    for name, tf in folder.code.items():
        if not name.endswith(".py"):
            continue
        inner = unwrap(tf.text)
        tree = parse(inner[1] if inner else tf.text)
        if tree is not None:
            trees[name] = tree
    return trees


def docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant):
            ids.add(id(body[0].value))
    return ids


def strings(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """Every string constant but docstrings (f-string pieces included), with its line."""
    skip = docstring_nodes(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.value, node.lineno


def identifiers(tree: ast.AST) -> Iterator[str]:
    """Names, attributes, arguments and keywords: a settings field `matrix_lr` filled from
    MATRIX_LR by a generated name is read even though no string spells MATRIX_LR."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node.id
        elif isinstance(node, ast.Attribute):
            yield node.attr
        elif isinstance(node, ast.arg):
            yield node.arg
        elif isinstance(node, ast.keyword) and node.arg:
            yield node.arg


def env_reads(tree: ast.AST) -> dict[str, tuple[str | None, int]]:
    """NAME -> (default as text or None, line) for os.environ.get / os.getenv / environ[...]."""
    names = aliases(tree)
    out: dict[str, tuple[str | None, int]] = {}
    for node in ast.walk(tree):
        key, default = None, None
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            fn = call_name(node, names)
            if fn.endswith(("environ.get", "getenv", "environ.setdefault")):
                key = node.args[0].value
                if len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                    default = str(node.args[1].value)
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                and ast.unparse(node.value).endswith("environ"):
            key = node.slice.value
        if isinstance(key, str):
            out.setdefault(key, (default, node.lineno))
    return out


def local_refs(folder: Folder, trees: dict[str, ast.Module], start: str) -> list[Ref]:
    """Local files `start` pulls in, transitively through .py helpers: imports of a module
    beside it, and string constants naming a file of the folder (open, gcc, CDLL, exec...)."""
    by_base = {PurePosixPath(n).name: n for n in folder.files}
    seen, todo, refs = {start}, [start], []
    while todo:
        cur = todo.pop()
        for name, how, line in _mentions(trees.get(cur), by_base, folder):
            if name in seen:
                continue
            seen.add(name)
            refs.append(Ref(name, how, f"{cur}:{line}"))
            if name in trees:
                todo.append(name)
    return refs


def resolve_module(folder: Folder, dotted: str) -> list[str]:
    """The folder's files a dotted import loads: each package __init__ on the way, the module."""
    parts, found = dotted.split("."), []
    for i in range(1, len(parts) + 1):
        base = "/".join(parts[:i])
        for cand in (f"{base}/__init__.py", f"{base}.py"):
            if cand in folder.files:
                found.append(cand)
    return found


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return []


def _mentions(tree, by_base, folder) -> Iterator[tuple[str, str, int]]:
    if tree is None:
        return
    for node in ast.walk(tree):
        for dotted in _imported(node):
            for name in resolve_module(folder, dotted):
                yield name, "import", node.lineno
    for value, line in strings(tree):
        for token in value.split():
            cand = token.strip("'\"`,;()").removeprefix("./")
            hit = cand if cand in folder.files else by_base.get(PurePosixPath(cand).name)
            if hit and len(cand) > 2 and not hit.lower().endswith(NOT_COUNTED):
                yield hit, "named in a string", line
