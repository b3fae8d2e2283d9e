"""What every check receives: the folder (read as data), its syntax trees, and the options."""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import cached_property, wraps
from pathlib import Path
from typing import Callable

from golf.audit.folder import ENTRY, Folder
from golf.audit.report import Verdict, na
from golf.audit.source import code_trees, env_reads


@dataclass
class Context:
    folder: Folder
    against: list[Folder] = field(default_factory=list)   # the previous row, reproductions pooled
    against_values: list[float] | None = None   # previous row's per-seed val_bpb, given as numbers
    data_dir: Path | None = None
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # earlier checks, by name

    @cached_property
    def trees(self) -> dict[str, ast.Module]:
        return code_trees(self.folder)

    @cached_property
    def env_defaults(self) -> dict[str, tuple[str | None, str]]:
        """Every environment variable the code reads: NAME -> (code default, file:line)."""
        out: dict[str, tuple[str | None, str]] = {}
        for name, tree in self.trees.items():
            for key, (default, line) in env_reads(tree).items():
                out.setdefault(key, (default, f"{name}:{line}"))
        return out


def needs_logs(check: Callable[[Context], Verdict]) -> Callable[[Context], Verdict]:
    """N/A instead of running a check that reads train logs when the folder has none."""
    @wraps(check)
    def run(ctx: Context) -> Verdict:
        return check(ctx) if ctx.folder.logs else na("no train log in the folder")
    return run


def needs_entry(check: Callable[[Context], Verdict]) -> Callable[[Context], Verdict]:
    """N/A instead of running a check that reads train_gpt.py when the folder has none."""
    @wraps(check)
    def run(ctx: Context) -> Verdict:
        return check(ctx) if ctx.folder.entry else na(f"no {ENTRY} in the folder")
    return run
