"""Rules about the checkout itself that no behaviour test would notice breaking."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_code_cites_no_file_outside_the_checkout():
    """Docstrings and comments say where a fact comes from (the records, the challenge's rules)
    in words: the reference notes beside a workspace are not in a clone, so a citation of them
    points nowhere for a reader. (Tests may *read* ../shared/data; citing notes is the problem.)"""
    pattern = re.compile(r"anchor_(arch|quant|eval|frontier)|shared/reference")
    files = [p for d in ("golf", "quant", "bench", "tests") for p in (REPO / d).rglob("*.py")]
    files += [REPO / n for n in ("train_gpt.py", "eval_bpb.py", "pack.py")]
    hits = [f"{p.relative_to(REPO)}:{i}" for p in files if p != Path(__file__)
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert len(files) > 60 and hits == []


# Functions of eight or more parameters take a settings object instead (issue 28, item 7);
# no exceptions.
MAX_PARAMS = 7


def parameter_counts(source: str) -> dict[str, int]:
    """Qualified function name -> its parameters (positional-only, ordinary and keyword-only;
    a method's self/cls and *args/**kwargs not counted)."""
    import ast
    out: dict[str, int] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = child.args
                names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
                if prefix and names[:1] in (["self"], ["cls"]):
                    names = names[1:]
                out[prefix + child.name] = len(names)
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")
    walk(ast.parse(source), "")
    return out


def test_the_parameter_counter_counts_what_a_caller_must_pass():
    src = ("def f(a, /, b, *args, c, d=1, **kw): pass\n"
           "class K:\n    def m(self, a, b): pass\n    @classmethod\n    def c(cls, a): pass\n"
           "def outer(x):\n    def inner(a, b, c): pass\n")
    assert parameter_counts(src) == {"f": 4, "K.m": 2, "K.c": 1, "outer": 1, "outer.inner": 3}


def test_no_function_takes_eight_or_more_parameters():
    """Eight or more parameters is a settings object waiting to be named (a frozen dataclass of
    what travels together: golf.eval.score.Scoring, golf.submission.PackRequest, ...)."""
    files = [p for d in ("golf", "quant") for p in sorted((REPO / d).rglob("*.py"))]
    files += [REPO / n for n in ("train_gpt.py", "eval_bpb.py", "pack.py")]
    over = sorted((str(p.relative_to(REPO)), name)
                  for p in files for name, n in parameter_counts(p.read_text()).items()
                  if n > MAX_PARAMS)
    assert not over, f"{over}: more than {MAX_PARAMS} parameters; group them in a settings object"
