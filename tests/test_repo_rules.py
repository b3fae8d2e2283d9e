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
