"""Build the single-file train_gpt.py: our modules embedded as sources, served by an import hook.

Why an import hook rather than concatenation: every module keeps its own namespace and its
imports work unchanged, so the packed file behaves like the checkout. Only modules reachable
from the entry module (found by walking import statements, including those inside functions)
are embedded, so bench/, tests/ and the packer itself never count against the byte cap. The
optional parts (golf/ship.py) are embedded only when the run needs them, and the header states
which ones it carries (ship.markers), so the packed core never has to guess.
"""
from __future__ import annotations

import ast
import base64
import lzma
import sys
from dataclasses import dataclass, field
from pathlib import Path

from golf import ship
from golf.run.errors import PackError
from quant.codec import pip_names

REPO_ROOT = Path(__file__).resolve().parents[2]
OUR_ROOTS = ("golf", "quant")
# Import names whose pip distribution name differs (the codecs' own: quant/codec.py REGISTRY).
PIP_NAMES = {"sentencepiece": "sentencepiece", "yaml": "pyyaml", "PIL": "pillow"}


def pip_name(module: str) -> str:
    """The pip distribution that provides top-level import `module`."""
    return {**PIP_NAMES, **pip_names()}.get(module, module)


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


@dataclass
class Closure:
    """The embedded modules, the third-party top-level packages they import, and the optional
    parts (golf/ship.py) they include."""
    modules: dict[str, Module] = field(default_factory=dict)
    third_party: set[str] = field(default_factory=set)
    parts: tuple[str, ...] = ()


def _under(name: str, excluded: tuple[str, ...]) -> bool:
    return any(name == e or name.startswith(e + ".") for e in excluded)


def _is_ours(name: str, roots: tuple[str, ...]) -> bool:
    return name.split(".")[0] in roots


def find_module(name: str, src_roots: list[Path]) -> Module | None:
    """Locate `a.b.c` as a/b/c.py or a/b/c/__init__.py under the first source root holding it."""
    rel = Path(*name.split("."))
    for root in src_roots:
        pkg = root / rel / "__init__.py"
        if pkg.is_file():
            return Module(name, pkg, True)
        mod = root / rel.with_suffix(".py")
        if mod.is_file():
            return Module(name, mod, False)
    return None


def _imported_names(tree: ast.AST, mod: Module) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) for every import statement, relative ones resolved."""
    out: list[tuple[str, list[str], int]] = []
    pkg = mod.name if mod.is_package else mod.name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((a.name, [], node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                anchor = parts[: len(parts) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            out.append((base, [a.name for a in node.names], node.lineno))
    return out


def module_closure(entry: str, src_roots: list[Path] | None = None,
                   roots: tuple[str, ...] = OUR_ROOTS, parts: tuple[str, ...] = ()) -> Closure:
    """Every module of ours reachable from `entry` and the optional `parts`' modules, plus
    parents, without the modules of the parts left out; third-party imports listed."""
    src_roots = src_roots or [REPO_ROOT]
    roots = tuple(sorted(set(roots) | {entry.split(".")[0]}))
    excluded = ship.left_out(parts)
    closure = Closure(parts=tuple(p for p in ship.PARTS if p in set(parts)))
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    todo = [(entry, "<entry>")] + [(m, f"part {p}") for p in closure.parts
                                   for m in ship.PARTS[p].modules]
    while todo:
        name, importer = todo.pop()
        if name in closure.modules or _under(name, excluded):
            continue
        mod = find_module(name, src_roots)
        if mod is None:
            raise PackError(f"{importer} imports {name}, which has no source file under "
                            f"{', '.join(map(str, src_roots))}; add the module or remove the import")
        closure.modules[name] = mod
        parent = name.rpartition(".")[0]
        if parent:
            todo.append((parent, str(mod.path)))
        tree = ast.parse(mod.path.read_text(encoding="utf-8"), filename=str(mod.path))
        for base, names, line in _imported_names(tree, mod):
            where = f"{mod.path}:{line}"
            if _is_ours(base, roots):
                todo.append((base, where))
                for n in names:  # `from golf import submission` names a submodule
                    sub = f"{base}.{n}"
                    if n != "*" and not _under(sub, excluded) and find_module(sub, src_roots):
                        todo.append((sub, where))
            elif base:
                top = base.split(".")[0]
                if top not in stdlib:
                    closure.third_party.add(top)
    return closure


_DOC_OWNERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _is_docstring(node: ast.stmt) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str))


def strip_docs(source: str) -> str:
    """The source as shipped: the same syntax tree without docstrings, comments or layout.

    Why: every byte of code is a byte the model cannot use, and the docstrings and comments
    that explain golfkit to its readers do nothing in a submission (no shipped module reads
    __doc__). The result is rebuilt by ast.unparse, so it depends only on the source and the
    Python version, never on the process."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, _DOC_OWNERS) and node.body and _is_docstring(node.body[0]):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree) + "\n"


def _literal(source: str) -> str:
    """A readable triple-quoted literal that evaluates back to `source` exactly."""
    body = (source.replace("\\", "\\\\").replace("'''", "\\'\\'\\'").replace("\r", "\\r"))
    if body.endswith("'"):
        body = body[:-1] + "\\'"
    lit = "'''" + body + "'''"
    if ast.literal_eval(lit) != source:  # belt and braces: never ship a corrupted module
        raise PackError("internal error: could not embed a module source losslessly; "
                        "please report this packer bug")
    return lit


# First statement of every form: run as `python train_gpt.py` (or by torchrun), Python puts the
# script's own folder first on sys.path, so a numpy.py / brotli.py / lzma.py copied beside it
# would be imported instead of the real module. Only `sys` (built in, never looked up on
# sys.path) is imported before that folder is taken off. A file run as a script is the one
# __main__ with a __file__ and no __spec__ (python -m has one, -c no file); -I / -P never put
# the folder there. The compressed forms exec the plain form in the same globals, so _OWN_DIR
# makes it run once.
OFF_PATH = ('import sys\nif"_OWN_DIR"not in globals():_OWN_DIR=sys.path.pop(0)if __spec__ is None and'
            '"__file__"in globals()and not sys.flags.safe_path else None\n')

_LOADER = '''
import importlib.abc
import importlib.util
import sys


class _EmbeddedModules(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Serve golfkit's modules from the sources embedded above (nothing on disk is needed)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _SOURCES:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin="train_gpt.py:" + fullname,
                                               is_package=fullname in _PACKAGES)

    def get_source(self, fullname):
        return _SOURCES[fullname]

    def is_package(self, fullname):
        return fullname in _PACKAGES

    def exec_module(self, module):
        code = compile(_SOURCES[module.__name__], "<train_gpt.py:" + module.__name__ + ">", "exec")
        exec(code, module.__dict__)


sys.meta_path.insert(0, _EmbeddedModules())
'''


def render_plain(closure: Closure, entry: str) -> bytes:
    """The readable single file: embedded sources, the import hook, then entry.main()."""
    names = sorted(closure.modules)
    stated = ship.markers(closure.parts)
    # the module names are the keys of _SOURCES below: the header does not list them twice
    parts = ['"""golfkit submission script (generated by pack.py; do not edit).\n\n'
             f"{len(names)} embedded modules (_SOURCES). Runs {entry}.main(); third-party imports: "
             f"{', '.join(sorted(closure.third_party)) or 'none'}; optional parts: "
             f"{', '.join(closure.parts) or 'none'}.\n\"\"\"\n",
             OFF_PATH, "_SOURCES = {}\n"]
    for n in names:
        src = strip_docs(closure.modules[n].path.read_text(encoding="utf-8")) + stated.get(n, "")
        parts.append(f"_SOURCES[{n!r}] = {_literal(src)}\n")
    pkgs = sorted(n for n in names if closure.modules[n].is_package)
    # a sorted literal, never repr(set): a set's order follows PYTHONHASHSEED, which would make
    # the shipped bytes (and the fitter's code-byte figure) differ from process to process
    parts.append(f"_PACKAGES = set({pkgs!r})\n")
    parts.append(_LOADER)
    parts.append(f'\nif __name__ == "__main__":\n    import importlib\n'
                 f"    sys.exit(importlib.import_module({entry!r}).main())\n")
    return "".join(parts).encode("utf-8")


def _wrappers(plain: bytes) -> dict[str, bytes]:
    """Self-extracting forms of `plain`, one per codec (all deterministic)."""
    out: dict[str, bytes] = {}
    filt = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
    raw = base64.b85encode(lzma.compress(plain, format=lzma.FORMAT_RAW, filters=filt)).decode()
    out["lzma-raw"] = (OFF_PATH + 'import lzma,base64\nexec(compile(lzma.decompress(base64.b85decode("'
                       + raw + '"),format=lzma.FORMAT_RAW,filters=[{"id":lzma.FILTER_LZMA2}]),'
                       '"train_gpt.py","exec"))\n').encode()
    xz = base64.b85encode(lzma.compress(plain, preset=9 | lzma.PRESET_EXTREME)).decode()
    out["xz"] = (OFF_PATH + 'import lzma,base64\nexec(compile(lzma.decompress(base64.b85decode("' + xz
                 + '")),"train_gpt.py","exec"))\n').encode()
    try:  # optional dependency: without brotli the lzma forms still ship
        import brotli
    except ImportError:
        return out
    br = base64.b85encode(brotli.compress(plain, quality=11)).decode()
    out["brotli"] = (OFF_PATH + 'import brotli,base64\nexec(compile(brotli.decompress(base64.b85decode("' + br
                     + '")),"train_gpt.py","exec"))\n').encode()
    return out


def compressed_forms(plain: bytes) -> dict[str, bytes]:
    """All self-extracting candidates, so callers can report every size."""
    return _wrappers(plain)


def smallest_compressed(plain: bytes) -> tuple[str, bytes]:
    """(codec, bytes) of the smallest self-extracting form; ties broken by codec name."""
    forms = _wrappers(plain)
    codec = min(forms, key=lambda k: (len(forms[k]), k))
    return codec, forms[codec]
