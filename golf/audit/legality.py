"""Legality hints from the code and logs: TTT order, validation tokens in calibration or
warm-up, network and process access at eval.

Why hints: score-before-update (C3 of #1017), no backward pass on validation tokens before
they are scored (#1530's warm-up), and no network or training data at eval are rules about
what runs, which a syntax tree only suggests. These checks say WARN with the line to read,
never FAIL: a file cannot prove an ordering the runtime decides.
"""
from __future__ import annotations

import ast
import re

from golf.audit.context import Context
from golf.audit.report import PASS, WARN, Verdict, na
from golf.audit.source import aliases, call_name, embedded_name, local_refs, strings

NETWORK_MODULES = ("socket", "urllib", "requests", "http", "huggingface_hub", "aiohttp",
                   "ftplib", "boto3", "wget")
PROCESS_CALLS = ("subprocess.run", "subprocess.Popen", "subprocess.call", "subprocess.check_call",
                 "subprocess.check_output", "os.system", "os.popen")
VAL_NAME = re.compile(r"(?:^|_)val(?:_|$)|validation")


def run_trees(ctx: Context) -> dict[str, ast.Module]:
    """The entry script, every .py it pulls in and the modules they embed: the code that runs."""
    entry = ctx.folder.entry
    if entry is None or entry.name not in ctx.trees:
        return {}
    files = [entry.name] + [r.name for r in local_refs(ctx.folder, ctx.trees, entry.name)]
    return {n: tree for n, tree in ctx.trees.items()
            if n in files or any(n.startswith(embedded_name(f, "")) for f in files)}


def _functions(tree: ast.AST, pattern: str):
    return [f for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            and re.search(pattern, f.name, re.I)]


def _first_lines(func: ast.AST, names: dict[str, str]) -> tuple[int | None, int | None]:
    """(first no_grad/inference_mode scoring block, first backward()/optimizer step)."""
    score = update = None
    for node in ast.walk(func):
        if isinstance(node, ast.With) and any(
                isinstance(i.context_expr, ast.Call) and call_name(i.context_expr, names)
                .endswith(("no_grad", "inference_mode")) for i in node.items):
            score = min(score or node.lineno, node.lineno)
        if isinstance(node, ast.Call):
            fn = call_name(node, names)
            if fn.split(".")[-1] == "backward" or (fn.endswith(".step") and "opt" in fn.lower()):
                update = min(update or node.lineno, node.lineno)
    return score, update


def check_ttt_order(ctx: Context) -> Verdict:
    trees = run_trees(ctx)
    v = Verdict(PASS)
    for name, tree in trees.items():
        names = aliases(tree)
        for func in _functions(tree, r"ttt"):
            score, update = _first_lines(func, names)
            if update is None:
                continue
            where = f"{name}:{func.lineno} {func.name}()"
            if score is None:
                v.add(WARN, f"{where}: update at line {update} and no no_grad scoring block; "
                      "check that each chunk is scored before it is trained on")
            elif update < score:
                v.add(WARN, f"{where}: update at line {update} comes before the first no_grad "
                      f"scoring block (line {score})")
            else:
                v.evidence.append(f"{where}: no_grad scoring (line {score}) precedes the first "
                                  f"update (line {update})")
    return v if v.evidence else na("no TTT function with an update step in the code that runs")


def check_val_in_calibration(ctx: Context) -> Verdict:
    v = Verdict(PASS)
    for name, tree in run_trees(ctx).items():
        for func in _functions(tree, r"calib|hessian|warmup|warm_up|gptq"):
            for node in ast.walk(func):
                ident = node.id if isinstance(node, ast.Name) else \
                    node.attr if isinstance(node, ast.Attribute) else None
                if ident and VAL_NAME.search(ident) and "eval" not in ident:
                    v.add(WARN, f"{name}:{node.lineno} {func.name}() uses {ident!r}: "
                          "calibration or warm-up on validation data is not allowed (#1530)")
                    break
    for log in ctx.folder.logs:
        hit = log.first(re.compile(r"(?i)warm.*(random tokens|no val)"))
        if hit:
            v.evidence.append(f"{log.at(hit[0])}: {hit[1].string.strip()[:80]}")
            break
    return v if v.evidence else Verdict(PASS, ["no calibration/warm-up function reads a "
                                                "validation name"])


def check_eval_access(ctx: Context) -> Verdict:
    v = Verdict(PASS)
    for name, tree in run_trees(ctx).items():
        names = aliases(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) \
                    else [node.module or ""]
                for mod in mods:
                    if mod.split(".")[0] in NETWORK_MODULES:
                        v.add(WARN, f"{name}:{node.lineno}: imports {mod} (network access is "
                              "not allowed at eval)")
            elif isinstance(node, ast.Call) and call_name(node, names) in PROCESS_CALLS:
                cmd = " ".join(s for s, _ in strings(node))[:60]
                v.add(WARN, f"{name}:{node.lineno}: runs a process ({call_name(node, names)} "
                      f"{cmd!r}); anything it builds or reads counts as code or data")
        for func in _functions(tree, r"eval|ttt"):
            for node in ast.walk(func):
                if isinstance(node, ast.Attribute) and "train_files" in node.attr:
                    v.add(WARN, f"{name}:{node.lineno} {func.name}() reads {node.attr}: "
                          "training data at eval is not allowed unless paid for in the artifact")
                    break
    return v if v.evidence else Verdict(PASS, ["no network import, process call or "
                                                "training-data read found in the code that runs"])
