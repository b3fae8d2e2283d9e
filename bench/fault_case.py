"""One fault-injection case's outcome and how its message is read (bench.faults, bench.faults_inputs)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    case: str
    exit_code: int
    message: str
    data_kept: bool
    seconds: float
    expect: str        # what the case must show
    ok: bool           # it showed it
    marker: bool = False       # a pickle payload or shadow module ran (wrote the marker file)
    peak_mib: float = 0.0      # peak RSS during the case above the RSS before it
    owner: str = ""            # the branch whose fix the case needs ("" = this one)


def first_error(text: str) -> str:
    """The error line (with its first bullet when it heads a list of problems)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(("error:", "TRACEBACK", "Traceback")):
            if line.endswith(":") and i + 1 < len(lines):
                line += " " + lines[i + 1].strip()
            return line[:160]
    return (text.strip().splitlines() or [""])[-1][:160]
