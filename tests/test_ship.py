"""The ship line (golf/ship.py): the packed script is the core plus the optional parts its run
needs, it says which ones it carries, and no module guesses its role from a failed import."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from golf import ship
from golf.submission.amalgamate import module_closure
from golf.submission.script import ENTRY, build_train_script

ROOT = Path(__file__).resolve().parents[1]
OURS = ("golf", "quant")
# Third-party probes that may stay: optional compressors and readers (each has a fallback or a
# one-line error naming the pip package), never a module of golfkit's own.
THIRD_PARTY_PROBES = {"brotli", "zstandard"}


def _imported_tops(body: list[ast.stmt]) -> set[str]:
    """Top-level names of what the statements import (relative imports are ours: '.')."""
    found: set[str] = set()
    for node in (n for stmt in body for n in ast.walk(stmt)):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add("." if node.level else (node.module or "").split(".")[0])
    return found


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = [handler.type] if not isinstance(handler.type, ast.Tuple) else handler.type.elts
    return any(getattr(n, "id", "") in ("ImportError", "ModuleNotFoundError") for n in names)


def import_guesses(root: Path = ROOT) -> list[str]:
    """`try: import <ours> except ImportError` anywhere in golf/ and quant/ (file:line), plus
    any ImportError probe of a third-party module not listed in THIRD_PARTY_PROBES."""
    out = []
    for path in sorted(p for pkg in OURS for p in (root / pkg).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
                tops = _imported_tops(node.body)
                if tops - THIRD_PARTY_PROBES:
                    out.append(f"{path.relative_to(root)}:{node.lineno} {sorted(tops)}")
    return out


def test_no_module_guesses_its_role_from_a_failed_import():
    assert import_guesses() == []


def test_the_guess_finder_sees_a_guess(tmp_path):
    """The walker above flags an ImportError guard around our own module, not a third-party probe."""
    (tmp_path / "golf").mkdir()
    (tmp_path / "quant").mkdir()
    (tmp_path / "golf" / "a.py").write_text(
        "try:\n    import brotli\nexcept ImportError:\n    brotli = None\n"
        "def f():\n    try:\n        from golf.eval.ttt import x\n    except (ValueError, ImportError):\n"
        "        return None\n")
    assert import_guesses(tmp_path) == ["golf/a.py:6 ['golf']"]


def test_parts_follow_the_runs_settings():
    """TTT / NGRAM_TILT_ENABLED decide the parts, read from env strings or recorded values."""
    assert ship.parts_for({}) == ()
    assert ship.parts_for({"TTT": "off", "NGRAM_TILT_ENABLED": "0"}) == ()
    assert ship.parts_for({"TTT": " None ", "NGRAM_TILT_ENABLED": False}) == ()
    assert ship.parts_for({"TTT": "lora"}) == ("ttt",)
    assert ship.parts_for({"NGRAM_TILT_ENABLED": True, "TTT": "chunk"}) == ("ttt", "tilt")
    never = {p.name for p in ship.PARTS.values() if p.needs is None}
    assert {"packer", "data_prep", "record_container"} <= never
    assert not any("quant.ctxrans" in p.modules for p in ship.PARTS.values())  # a default coder
    assert set(ship.left_out(("ttt",))) == {m for p in ship.PARTS.values() if p.name != "ttt"
                                            for m in p.modules}
    with pytest.raises(KeyError, match="nope"):
        ship.left_out(("nope",))


def _under(name: str, modules) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def test_the_core_closure_holds_no_optional_module_and_a_part_brings_its_own():
    everything = [m for p in ship.PARTS.values() for m in p.modules]
    core = set(module_closure(ENTRY).modules)
    assert {"golf.main", "golf.ship", "golf.eval.score", "quant.codec", "quant.ctxrans"} <= core
    assert not [n for n in core if _under(n, everything)]
    with_ttt = set(module_closure(ENTRY, parts=("ttt", "tilt")).modules)
    assert with_ttt - core == {"golf.eval.ttt", "golf.eval.lora", "golf.eval.tilt"}


def _packed_state(tmp_path: Path, parts: tuple[str, ...]) -> str:
    """Import the packed script's modules (not its main) in a fresh isolated interpreter and
    print what its ship line says."""
    script = tmp_path / "train_gpt.py"
    script.write_bytes(build_train_script(False, parts=parts))
    probe = ("g = {'__name__': 'probe', '__spec__': None}\n"
             "exec(compile(open('train_gpt.py').read(), 'train_gpt.py', 'exec'), g)\n"
             "import golf, quant.codec as c\nfrom golf import ship\n"
             "print(golf.PACKED_PARTS, [n for n in ship.PARTS if ship.optional(n)], c.LEFT_OUT)\n"
             "print(ship.missing_problems({'TTT': 'lora', 'NGRAM_TILT_ENABLED': '1'}))\n"
             "print(ship.optional('tilt').__spec__.origin if ship.carried('tilt') else '-')\n"
             "print(c.framed_problems(('ctxrans', 'pergroup_v2')))\n")
    out = subprocess.run([sys.executable, "-I", "-c", probe], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_the_packed_script_states_its_parts_and_refuses_the_others(tmp_path):
    out = _packed_state(tmp_path, ("tilt",)).splitlines()
    assert out[0] == "('tilt',) ['tilt'] ('quant.pergroup',)"
    assert "TTT=lora: this packed train_gpt.py does not carry golf.eval.ttt, golf.eval.lora" in out[1]
    assert "NGRAM_TILT_ENABLED" not in out[1]
    assert out[2] == "train_gpt.py:golf.eval.tilt"          # served by the embedded sources
    # one line for the framed coder it leaves out (the records' container); ctxrans ships
    assert out[3].count("is not in this packed script") == 1 and "pergroup_v2" in out[3]
