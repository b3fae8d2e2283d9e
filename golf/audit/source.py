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
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Any, Iterator

import brotli

from golf.audit.folder import Folder

CODEC_MODULES = {"lzma": lzma, "zlib": zlib, "brotli": brotli}
# golfkit's packed train_gpt.py keeps each module's source in `_SOURCES["golf.x"] = '''...'''`
# (golf.submission.amalgamate); the audit parses those strings as code, never runs them.
EMBEDDED_TABLE = "_SOURCES"
# Not code: prose, logs, the tokenizer (uncounted by precedent, #43) and the model artifact
# (already counted as the model bytes; .gkq is golfkit's).
NOT_COUNTED = (".md", ".json", ".log", ".txt", ".model", ".vocab", ".png", ".jpg", ".svg",
               ".pt", ".ptz", ".gkq")


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


@lru_cache(maxsize=256)
def aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> module for every import (`import lzma as L` gives L -> lzma); cached per
    tree (nodes hash by identity): every check asks again, and a packed script has ~50 trees.
    Callers read the mapping, never change it."""
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


def constant(node: ast.AST, names: dict[str, str]) -> Any:
    """A literal, or a codec module constant (lzma.FORMAT_RAW); anything else raises ValueError."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        mod = names.get(node.value.id, node.value.id)
        if mod in CODEC_MODULES and node.attr.isupper():
            return getattr(CODEC_MODULES[mod], node.attr)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return constant(node.left, names) | constant(node.right, names)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [constant(e, names) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {constant(k, names): constant(v, names) for k, v in zip(node.keys, node.values)}
    raise ValueError(ast.unparse(node))


def unwrap(text: str) -> tuple[str, str] | None:
    """A real wrapper `exec(C.decompress(B.b85decode("..."), **constants))`, also through
    `exec(compile(..., name, "exec"))` as golfkit's pack writes it: (codec, inner source)."""
    tree = parse(text)
    if tree is None or len(tree.body) > 4:
        return None
    names = aliases(tree)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and call_name(node, names) == "exec" and node.args):
            continue
        inner = node.args[0]
        if isinstance(inner, ast.Call) and call_name(inner, names) == "compile" and inner.args:
            inner = inner.args[0]
        if not isinstance(inner, ast.Call) or not inner.args:
            continue
        codec = call_name(inner, names).split(".")[0]
        payload = inner.args[0]
        if codec in CODEC_MODULES and isinstance(payload, ast.Call) and payload.args \
                and call_name(payload, names).endswith("b85decode") \
                and isinstance(payload.args[0], ast.Constant):
            raw = payload.args[0].value
            try:
                options = {k.arg: constant(k.value, names) for k in inner.keywords if k.arg}
                blob = base64.b85decode(raw.encode() if isinstance(raw, str) else raw)
                source = CODEC_MODULES[codec].decompress(blob, **options)
                return codec, source.decode("utf-8", errors="replace")
            except (ValueError, TypeError, lzma.LZMAError, zlib.error, brotli.error):
                return None
    return None


def _embedded(tree: ast.AST) -> Iterator[tuple[str, ast.Constant]]:
    """(module name, its source literal) for each `_SOURCES["name"] = "..."` at the top."""
    for node in tree.body if isinstance(tree, ast.Module) else ():
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) \
                and target.value.id == EMBEDDED_TABLE and isinstance(target.slice, ast.Constant) \
                and isinstance(target.slice.value, str) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            yield target.slice.value, node.value


def embedded_sources(tree: ast.Module) -> dict[str, str]:
    """Module name -> source of every module a packed script embeds (data until parsed)."""
    return {name: lit.value for name, lit in _embedded(tree)}


def embedded_name(script: str, module: str) -> str:
    """How evidence names a module embedded in `script`: 'train_gpt.py:golf.main'."""
    return f"{script}:{module}"


def code_trees(folder: Folder) -> dict[str, ast.Module]:
    """Syntax trees of every .py in the folder; a wrapper's tree is its decoded inner source,
    and each module a packed script embeds is a tree of its own ('train_gpt.py:golf.main')."""
    trees = {}
    for name, tf in folder.code.items():
        if not name.endswith(".py"):
            continue
        inner = unwrap(tf.text)
        tree = parse(inner[1] if inner else tf.text)
        if tree is None:
            continue
        trees[name] = tree
        for module, source in embedded_sources(tree).items():
            sub = parse(source)
            if sub is not None:
                trees[embedded_name(name, module)] = sub
    return trees


def _skipped_constants(tree: ast.AST) -> set[int]:
    """Docstrings, and the embedded module sources of a packed script (code, not strings)."""
    ids = {id(lit) for _, lit in _embedded(tree)}
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant):
            ids.add(id(body[0].value))
    return ids


def strings(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """Every string constant but docstrings (f-string pieces included), with its line."""
    skip = _skipped_constants(tree)
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
    """NAME -> (default as text or None, line) for os.environ.get / os.getenv / environ[...],
    settings-table reads (`settings.read("NAME", env)`) and settings fields (settings_fields)."""
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
            elif fn.endswith("settings.read") and str(node.args[0].value).isupper():
                key = node.args[0].value
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                and ast.unparse(node.value).endswith("environ"):
            key = node.slice.value
        if isinstance(key, str):
            out.setdefault(key, (default, node.lineno))
    for key, found in settings_fields(tree).items():
        out.setdefault(key, found)
    return out


def settings_fields(tree: ast.AST) -> dict[str, tuple[str | None, int]]:
    """NAME -> (default, line) for golfkit's settings fields: `field: T = setting(default, ...)`
    in a dataclass that `fields_table(Cls, group)` turns into environment variables named after
    the field, upper-cased (or `env="NAME"`). A class given its own naming function is skipped:
    its names are computed at run time, so the field name alone counts (see identifiers)."""
    names = aliases(tree)
    tabled = {n.args[0].id for n in ast.walk(tree) if isinstance(n, ast.Call)
              and call_name(n, names).endswith("fields_table") and len(n.args) <= 2
              and not n.keywords and n.args and isinstance(n.args[0], ast.Name)}
    out: dict[str, tuple[str | None, int]] = {}
    for cls in ast.walk(tree):
        if not (isinstance(cls, ast.ClassDef) and cls.name in tabled):
            continue
        for node in cls.body:
            call = node.value if isinstance(node, ast.AnnAssign) else None
            if not (isinstance(call, ast.Call) and call_name(call, names).endswith("setting")
                    and isinstance(node.target, ast.Name)):
                continue
            env = next((k.value.value for k in call.keywords if k.arg == "env"
                        and isinstance(k.value, ast.Constant)), node.target.id.upper())
            default = call.args[0].value if call.args and isinstance(call.args[0], ast.Constant) \
                else None
            out[str(env)] = (None if default is None else str(default), node.lineno)
    return out


def local_refs(folder: Folder, trees: dict[str, ast.Module], start: str) -> list[Ref]:
    """Local files `start` pulls in, transitively through .py helpers: imports of a module
    beside it, and string constants naming a file of the folder (open, gcc, CDLL, exec...)."""
    by_base = {PurePosixPath(n).name: n for n in folder.files}
    seen, todo, refs = {start}, [start], []
    while todo:
        cur = todo.pop()
        # a packed script's embedded modules run as part of it
        for code in [cur, *(n for n in trees if n.startswith(embedded_name(cur, "")))]:
            for name, how, line in _mentions(trees.get(code), by_base, folder):
                if name in seen:
                    continue
                seen.add(name)
                refs.append(Ref(name, how, f"{code}:{line}"))
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
