"""Environment claims: the torch the run used vs the pinned one, and the binaries it calls.

Why: #2135 ran on torch 2.11.0 (its submission.json) while its requirements.txt pins 2.9.1,
and step counts depend on the software; #1855's artifact needs the `lrzip` binary, accepted
because it was declared. A program the code runs must be named in README.md or
requirements.txt, or a reproduction cannot know to install it.
"""
from __future__ import annotations

import ast
import re

from golf.audit.context import Context
from golf.audit.legality import PROCESS_CALLS, run_trees
from golf.audit.report import NA, PASS, WARN, Verdict
from golf.audit.source import aliases, call_name

TORCH_PIN = re.compile(r"^\s*torch\s*==\s*([0-9][\w.+]*)", re.M)


def _requirements(ctx: Context) -> str:
    path = ctx.folder.files.get("requirements.txt")
    return path.read_bytes().decode("utf-8", errors="replace") if path else ""


def _programs(ctx: Context) -> list[tuple[str, str]]:
    """(program, file:line) for each process call whose command starts with a constant."""
    out = []
    for name, tree in run_trees(ctx).items():
        names = aliases(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and call_name(node, names) in PROCESS_CALLS \
                    and node.args and (program := _program(node.args[0])):
                out.append((program, f"{name}:{node.lineno}"))
    return out


def _program(command: ast.AST) -> str | None:
    """The program a command names when it is a constant: "gcc -O2 ..." or ["lrzip", ...]."""
    if isinstance(command, (ast.List, ast.Tuple)) and command.elts:
        command = command.elts[0]
    if isinstance(command, ast.Constant) and isinstance(command.value, str) and command.value.split():
        return command.value.split()[0].rsplit("/", 1)[-1]
    return None


def check_environment(ctx: Context) -> Verdict:
    """The pinned torch vs the claimed one; every program the code runs is declared."""
    v = Verdict(NA)
    reqs = _requirements(ctx)
    pin = TORCH_PIN.search(reqs)
    used = (ctx.folder.submission or {}).get("pytorch_version")
    if pin and isinstance(used, str):
        same = used.split("+")[0] == pin.group(1).split("+")[0]
        v.add(PASS if same else WARN, f"requirements.txt pins torch=={pin.group(1)}; "
              f"submission.json pytorch_version {used}")
    declared = reqs + (ctx.folder.readme.text if ctx.folder.readme else "")
    for program, where in _programs(ctx):
        ok = re.search(rf"\b{re.escape(program)}\b", declared) is not None
        v.add(PASS if ok else WARN, f"{where} runs `{program}`: "
              + ("declared in README.md / requirements.txt" if ok else
                 "not named in README.md or requirements.txt"))
    return v if v.evidence else Verdict(NA, ["no torch pin with a claimed version, and no "
                                             "program run by the code"])
