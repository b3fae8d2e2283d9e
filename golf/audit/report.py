"""Verdicts and the per-folder table: PASS / WARN / FAIL / N/A with file:line evidence.

Why one place: every check returns a Verdict; the table, the JSON and the exit code are all
derived from the same list, so the text a reviewer reads and the JSON a script reads agree.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

PASS, WARN, FAIL, NA = "PASS", "WARN", "FAIL", "N/A"
_RANK = {NA: 0, PASS: 1, WARN: 2, FAIL: 3}


@dataclass
class Verdict:
    """One check's outcome on one folder; `evidence` lines name file:line and the numbers."""
    status: str
    evidence: list[str] = field(default_factory=list)

    def add(self, status: str, line: str) -> "Verdict":
        """Record one finding and raise the status to it if it is worse (N/A never lowers)."""
        self.evidence.append(f"{status}: {line}" if status in (WARN, FAIL) else line)
        self.status = worst([self.status, status])
        return self


def worst(statuses: Iterable[str]) -> str:
    """FAIL beats WARN beats PASS beats N/A: a folder is as bad as its worst finding."""
    return max(statuses, key=_RANK.__getitem__, default=NA)


def na(reason: str) -> Verdict:
    return Verdict(NA, [reason])


@dataclass(frozen=True)
class Row:
    name: str
    reads: str
    verdict: Verdict

    def to_dict(self) -> dict:
        return {"check": self.name, "reads": self.reads, "status": self.verdict.status,
                "evidence": list(self.verdict.evidence)}


def format_table(folder: str, rows: list[Row]) -> str:
    """A fixed-width table: check, status, then the evidence (continuation lines indented)."""
    width = max([len(r.name) for r in rows] + [5])
    head = f"== {folder}: {worst(r.verdict.status for r in rows)} =="
    out = [head, f"{'check':<{width}}  {'status':<6}  evidence"]
    for r in rows:
        ev = r.verdict.evidence or [""]
        out.append(f"{r.name:<{width}}  {r.verdict.status:<6}  {ev[0]}")
        out += [f"{'':<{width}}  {'':<6}  {line}" for line in ev[1:]]
    return "\n".join(out)
