"""Arrows point down: golf/ and quant/ form an import graph without a cycle, function-level
imports included, and quant imports nothing from golf.

The graph is read from the source with ast (no module is imported), so an import hidden inside a
function to break a cycle at run time still counts as an edge.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("golf", "quant")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the packages (a package is its __init__)."""
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute dotted name an ImportFrom refers to (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, source: str, known: set[str], is_package: bool = False) -> set[str]:
    """Every module of `known` that `source` imports, at any depth of the syntax tree.

    `from a.b import c` names the module a.b.c when that is a module, else a.b (c is a name in it).
    Parent packages Python imports on the way are not edges: an __init__ that re-exports its
    submodules is not a cycle."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                while name and name not in known:
                    name = name.rpartition(".")[0]
                if name:
                    found.add(name)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                if sub in known:
                    found.add(sub)
                elif base in known:
                    found.add(base)
    found.discard(module)
    return found


@functools.lru_cache(maxsize=None)
def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = module_files(root)
    known = set(files)
    return {m: imports_of(m, p.read_text(encoding="utf-8"), known, p.name == "__init__.py")
            for m, p in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (iterative depth-first search, sorted for a stable report)."""
    state: dict[str, int] = {}          # 1 = on the current path, 2 = done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


# ----------------------------------------------------------------------------- the checker itself
def test_function_level_and_relative_imports_are_edges():
    known = {"golf", "golf.a", "golf.b", "golf.pkg", "golf.pkg.c", "quant", "quant.x"}
    src = ("import os\nfrom golf import a\nimport quant\n"
           "def f():\n    from golf.b import thing\n    from .pkg import c\n"
           "class K:\n    def m(self):\n        import golf.pkg.c as cc\n")
    assert imports_of("golf.z", src, known) == {"golf.a", "golf.b", "golf.pkg.c", "quant"}
    # inside a package's __init__, "." is the package itself
    assert imports_of("golf.pkg", "from . import c\nfrom .c import y\n", known, True) == {"golf.pkg.c"}
    assert imports_of("quant.x", "from . import y\n", known) == {"quant"}     # y: a name in quant


def test_find_cycle_reports_the_cycle_and_accepts_a_dag():
    dag = {"a": {"b", "c"}, "b": {"c"}, "c": set()}
    assert find_cycle(dag) is None
    cyc = find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert cyc is not None and cyc[0] == cyc[-1] and set(cyc) == {"a", "b", "c"}
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_graph_covers_every_module_and_sees_real_edges():
    g = import_graph()
    assert {"golf.main", "golf.eval.score", "golf.eval.ttt", "quant", "quant.core",
            "golf.submission.checks", "golf.data.sources.fineweb"} <= set(g)
    assert "golf.eval.score" in g["golf.eval.ttt"]          # a module-level edge the scan must see
    assert "golf.run.errors" in g["golf.run.rundir"]


# ----------------------------------------------------------------------------- the repository
def test_no_import_cycle_in_golf_and_quant():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("module", sorted(m for m in module_files() if m.split(".")[0] == "quant"))
def test_quant_imports_nothing_from_golf(module):
    from_golf = sorted(m for m in import_graph()[module] if m.split(".")[0] == "golf")
    assert not from_golf, f"{module} imports {from_golf}; quant must not depend on golf"
