"""What every check receives: the folder (read as data), its syntax trees, and the options."""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from golf.audit.folder import Folder
from golf.audit.source import code_trees, env_reads


@dataclass
class Context:
    folder: Folder
    against: Folder | None = None
    against_values: list[float] | None = None   # previous row's per-seed val_bpb, given as numbers
    data_dir: Path | None = None
    cache: dict = field(default_factory=dict)

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
