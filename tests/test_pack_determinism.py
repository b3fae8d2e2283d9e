"""The shipped train_gpt.py is the same bytes in every process: the fitter counts its code
bytes in the training process and pack builds the file again later, so a byte of difference
(a set rendered in hash order, for instance) would put the submission over what was fitted."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = ("import hashlib, sys; sys.path.insert(0, {repo!r}); from golf import submission; "
          "b = submission.build_train_script(True); p = submission.build_train_script(False); "
          "print(len(b), hashlib.sha256(b).hexdigest(), hashlib.sha256(p).hexdigest(), submission.code_bytes())")


def build_in_fresh_process(hash_seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(repo=str(REPO))], env=env,
                         capture_output=True, text=True, timeout=300, check=True)
    return out.stdout.split()


@pytest.mark.slow
def test_packed_script_bytes_do_not_depend_on_the_hash_seed():
    a, b = build_in_fresh_process("1"), build_in_fresh_process("4242")
    assert a == b, (a, b)
    size, _sha_compressed, _sha_plain, counted = a
    # the fitter's figure (code_bytes) is the size of the form that ships, by construction
    assert int(counted) <= int(size)
    from golf import submission
    forms = submission.build_forms()
    assert int(counted) == min(len(v) for v in forms.values())
    assert hashlib.sha256(submission.build_train_script(False)).hexdigest() == a[2]  # and in this process


def test_shipped_closure_leaves_out_what_a_submission_never_runs():
    from golf import submission
    from golf.submission.amalgamate import module_closure
    names = set(module_closure(submission.ENTRY).modules)
    assert {"golf.main", "golf.train.loop", "golf.model.gpt", "quant.core"} <= names
    assert not names & {"golf.eval.ttt", "golf.submission", "golf.interop", "golf.data.prepare"}
    # the packer and every data source, whole: listed by file here, not by the packer's own rule
    sources = {f"golf.data.sources.{p.stem}" for p in (REPO / "golf" / "data" / "sources").glob("*.py")}
    assert {"golf.data.sources.embedded", "golf.data.sources.fineweb"} <= sources
    assert not names & sources
    assert not any(n.startswith(("golf.submission.", "golf.data.sources")) for n in names)


def test_packed_script_refuses_ttt_it_does_not_carry(monkeypatch):
    """A packed script stating it carries no TTT (golf.PACKED_PARTS): no TTT settings, and
    TTT=... is one clear line naming the variable, before any work."""
    import golf
    from golf import main
    monkeypatch.setattr(golf, "PACKED_PARTS", ())
    monkeypatch.delenv("TTT", raising=False)
    assert main.ttt_settings() is None and main.tilt_settings() is None
    assert not any("TTT" in p for p in main.env_problems())
    monkeypatch.setenv("TTT", "chunk")
    assert any(p.startswith("TTT=chunk: this packed train_gpt.py does not carry golf.eval.ttt")
               for p in main.env_problems())


def test_shipped_sources_are_the_same_program_without_docstrings():
    """The packed script embeds each module without docstrings and comments (36 KB of code
    bytes); what runs must be the original program: the same syntax tree once the original's
    docstrings are dropped, and no docstring left anywhere."""
    import ast
    from golf import submission
    from golf.submission.amalgamate import module_closure, strip_docs
    closure = module_closure(submission.ENTRY)
    for name, mod in closure.modules.items():
        src = mod.path.read_text(encoding="utf-8")
        shipped = strip_docs(src)
        assert len(shipped) < len(src), name
        tree = ast.parse(shipped)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                assert ast.get_docstring(node) is None, (name, getattr(node, "name", "module"))
        orig = ast.parse(src)   # its docstrings found by the standard library's own rule
        for node in ast.walk(orig):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) \
                    and ast.get_docstring(node, clean=False) is not None:
                node.body = node.body[1:] or [ast.Pass()]
        assert ast.dump(tree) == ast.dump(orig), name
