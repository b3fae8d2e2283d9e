"""docs/settings.md from the settings table: `python -m golf.run.settings_doc > docs/settings.md`.

Why a module of its own: the table is spread over its owners (golf.model.gpt, golf.run.config, golf.eval.ttt,
golf.run.settings), so rendering all of it imports the workshop's TTT, which the shipped core must
not; tests/test_settings.py checks the committed file equals this output.
"""
from __future__ import annotations

from golf.run import settings
from golf import ship
from golf.run.config import preset_columns
from quant.methods import describe as describe_methods

HEADER = """# Settings

Every environment variable golfkit reads, generated from its declaration (golf/run/settings.py's
table: the `setting(...)` fields of golf/model/gpt.py, golf/run/config.py and golf/eval/ttt.py, and
golf/run/settings.py's OPERATIONAL list) by `python -m golf.run.settings_doc > docs/settings.md`;
`python train_gpt.py --help` prints the same table. Columns: the default without CUDA
(cpu_frontier), with it (frontier), what the parser accepts, and the meaning.
Every variable set is checked before any work starts: a value outside its range (NaN, inf,
negative learning rates, ...), a boolean spelled other than 1/0, true/false, yes/no, on/off, and
an unknown variable that looks like golfkit's (`NUM_LAYER`: did you mean NUM_LAYERS?) are refused
together in one error.

Two rules that are not one variable's: under the cpu presets MAX_WALLCLOCK_SECONDS is a safety
cap (3600 s), so the CPU demo is bounded by ITERATIONS and a slow machine still trains all 400
steps to the same weights (the GPU stacks keep the challenge's 600 s). Training stops at the first
non-finite loss (any rank) with one line; that step's update is skipped and checkpoint.pt holds
the last finite state (weights, optimizers, EMA, data stream), so
`RESUME=runs/<id> ITERATIONS=<that step> python train_gpt.py` exports it.
"""


def markdown() -> str:
    ship.load_switchable()   # TTT_* and the tilt's variables join the table
    methods = "".join(f"- {line}\n" for line in describe_methods())
    return (HEADER + "\n" + settings.render_markdown(settings.catalogue(), preset_columns())
            + "\n## QUANT_METHOD values\n\nFrom quant/methods.py's table:\n\n" + methods)


if __name__ == "__main__":
    print(markdown(), end="")
