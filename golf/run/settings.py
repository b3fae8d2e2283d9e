"""The settings table: every environment variable golfkit reads, declared once, and its one parser.

Why one table: a setting used to live in four homes with four parsers, so `PACK=ture` read as
false, `MATRIX_LR=nan` trained to the end and `NUM_LAYER=3` (a typo) was ignored. Here each
variable is one `Setting` (name, type, default, range or choices, one line of meaning); the
dataclass fields of golf.model.gpt / golf.run.config / golf.eval.ttt carry theirs as field metadata
(`setting(...)`), operational variables are declared in OPERATIONAL below, and `--help`,
docs/settings.md, validation and the unknown-name check all read the same table.
This module imports nothing from golf, so every layer may use it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

BOOL_TRUE = ("1", "true", "yes", "on")
BOOL_FALSE = ("0", "false", "no", "off")
# A set variable with one of these prefixes is golfkit's: unknown -> refused, never ignored.
GOLF_PREFIXES = ("NUM_", "QUANT_", "TTT_", "MUON_", "EVAL_", "GOLF_", "GPTQ_", "BIGRAM_",
                 "ROPE_", "XSA_", "SMEAR_", "BUDGET_", "TIED_", "ADAM_", "PHASED_TTT_", "GLOBAL_TTT_")
# Set by the tools golfkit runs under (torchrun, CUDA, OpenMP, Python): never taken for a typo.
FOREIGN_PREFIXES = ("TORCH", "NCCL_", "CUDA_", "OMP_", "MKL_", "PYTHON", "LC_",
                    "ROLE_", "GROUP_", "MASTER_", "LOCAL_WORLD_", "SLURM_", "PYTEST_")
META_KEY = "golf_setting"
HELP_COLUMN = 16  # --help's widest default / accepts column


@dataclass(frozen=True)
class Setting:
    """One environment variable: what it is called, parsed as, defaults to, accepts, means."""
    name: str
    kind: type
    default: Any
    help: str
    ge: float | None = None          # value >= ge
    gt: float | None = None          # value > gt
    le: float | None = None          # value <= le
    lt: float | None = None          # value < lt
    choices: tuple = ()
    aliases: tuple[tuple[str, str], ...] = ()   # (spelling, canonical choice)
    group: str = ""
    field: str = ""                  # the dataclass field it fills ("" = read where used)

    def parse_type(self, raw: str) -> Any:
        """`raw` as this setting's type (spellings and aliases resolved), not yet range-checked;
        ValueError with one line naming the variable."""
        return _parse_kind(self, raw.strip())

    def parse(self, raw: str) -> Any:
        """`raw` as this setting's value, checked against its rule; ValueError naming it."""
        value = self.parse_type(raw)
        problem = self.problem(value)
        if problem:
            raise ValueError(problem)
        return value

    def problem(self, value: Any) -> str:
        """Why `value` is not acceptable ("" when it is): finiteness, range, choices."""
        shown = f"{self.name}={value!r}"
        if self.choices and value not in self.choices:
            return f"{shown}: not one of {', '.join(map(str, self.choices))}; fix or unset it"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{shown}: not a finite number; set a finite value (see --help)"
        if self.kind in (int, float) and not isinstance(value, bool):
            return _range_problem(self, value)
        return ""

    def rule(self) -> str:
        """The accepted values in a few words (for --help and the docs)."""
        if self.choices:
            return " | ".join(map(str, self.choices))
        if self.kind is bool:
            return "bool"
        bounds = [f"{op} {v:g}" for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le),
                                               ("<", self.lt)) if v is not None]
        return self.kind.__name__ + (" " + ", ".join(bounds) if bounds else "")


def _parse_kind(s: Setting, raw: str) -> Any:
    if s.kind is bool:
        low = raw.lower()
        if low in BOOL_TRUE or low in BOOL_FALSE:
            return low in BOOL_TRUE
        raise ValueError(f"{s.name}={raw!r}: not a valid bool; use one of "
                         f"{'/'.join(BOOL_TRUE)} or {'/'.join(BOOL_FALSE)}")
    try:
        if s.kind is int:
            value: Any = int(float(raw)) if "e" in raw.lower() and float(raw).is_integer() else int(raw)
        elif s.kind is float:
            value = float(raw)
        else:
            value = dict(s.aliases).get(raw.lower(), raw) if s.aliases or s.choices else raw
            if s.choices and value not in s.choices and value.lower() in s.choices:
                value = value.lower()
    except (ValueError, OverflowError):
        raise ValueError(f"{s.name}={raw!r}: not a valid {s.kind.__name__}; fix or unset it") from None
    return value


def _range_problem(s: Setting, v: float) -> str:
    shown = f"{s.name}={v!r}"
    if s.ge is not None and v < s.ge:
        if s.ge == 1:
            return f"{shown}: must be >= 1; set a positive value"
        if s.ge == 0:
            return f"{shown}: must be >= 0; set 0 or a positive value (see --help)"
        return f"{shown}: must be >= {s.ge:g}"
    if s.gt is not None and v <= s.gt:
        return f"{shown}: must be > {s.gt:g}" + ("; set a positive value" if s.gt == 0 else "")
    if s.le is not None and v > s.le:
        return f"{shown}: must be <= {s.le:g}"
    if s.lt is not None and v >= s.lt:
        return f"{shown}: must be < {s.lt:g}"
    return ""


# ----------------------------------------------------------------------------- declaring
def setting(default: Any, help: str, **rules: Any) -> Any:
    """A dataclass field that declares its environment variable (name = the owner's rule,
    type = the default's; `rules`: ge, gt, le, lt, choices, aliases, env)."""
    return dataclasses.field(default=default, metadata={META_KEY: (help, rules)})


def fields_table(cls: type, group: str, env_name: Callable[[str], str] = str.upper) -> tuple[Setting, ...]:
    """The Settings a dataclass declares with `setting(...)`, in field order."""
    out = []
    for f in dataclasses.fields(cls):
        if META_KEY not in f.metadata:
            continue
        help_, rules = f.metadata[META_KEY]
        rules = dict(rules)
        name = rules.pop("env", None) or env_name(f.name)
        kind = type(f.default)
        out.append(Setting(name, kind, f.default, help_, group=group, field=f.name, **rules))
    return tuple(out)


def value_problems(obj: Any, table: Iterable[Setting]) -> list[str]:
    """Every field of `obj` whose value breaks its declared rule, one line each."""
    return [p for s in table if s.field for p in [s.problem(getattr(obj, s.field))] if p]


def parse_env(table: Iterable[Setting], env: Mapping[str, str],
              full: bool = True) -> tuple[dict[str, Any], list[str]]:
    """(field -> value for every set, non-empty variable of `table`; one line per bad value).
    `full=False` parses types only: a dataclass's own check (e.g. Config.validate) then judges
    the values together with the ones that did not come from the environment."""
    values: dict[str, Any] = {}
    bad: list[str] = []
    for s in table:
        raw = env.get(s.name)
        if raw is None or not raw.strip():
            continue
        try:
            values[s.field or s.name] = s.parse(raw) if full else s.parse_type(raw)
        except ValueError as exc:
            bad.append(str(exc))
    return values, bad


# ----------------------------------------------------------------------------- the registry
_TABLES: dict[str, tuple[Setting, ...]] = {}


def register(owner: str, table: Sequence[Setting]) -> None:
    """Called once by the module that owns `table` (golf.model.gpt, golf.run.config, golf.eval.ttt, ...)."""
    _TABLES[owner] = tuple(table)


def catalogue() -> tuple[Setting, ...]:
    """Every registered setting, each name once (a subclass's table repeats its base's)."""
    seen: dict[str, Setting] = {}
    # the run's own tables (model, run, ttt, tilt) first, the operational variables after them;
    # a fixed order, not the order the owners happened to be imported in
    for _owner, table in sorted(_TABLES.items(), key=lambda kv: _owner_rank(kv[0])):
        for s in table:
            seen.setdefault(s.name, s)
    return tuple(seen.values())


_OWNER_ORDER = ("model", "run", "ttt", "tilt")


def _owner_rank(owner: str) -> tuple[int, str]:
    if owner == "operational":
        return (len(_OWNER_ORDER) + 1, owner)
    return (_OWNER_ORDER.index(owner) if owner in _OWNER_ORDER else len(_OWNER_ORDER), owner)


def lookup(name: str) -> Setting:
    for s in catalogue():
        if s.name == name:
            return s
    raise KeyError(f"{name}: not declared in golf.run.settings' table")


def read(name: str, env: Mapping[str, str]) -> Any:
    """The value of a declared variable in `env` (its default when unset or empty)."""
    s = lookup(name)
    raw = env.get(name)
    return s.default if raw is None or not raw.strip() else s.parse(raw)


# ----------------------------------------------------------------------------- checking env
def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insert, delete, substitute), for did-you-mean suggestions."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _near(name: str, known: Iterable[str]) -> str:
    """The closest known name within a small distance (1 for short names, 2 from 8 chars) that
    starts with the same letter (ROLE_NAME, torchrun's, is 2 edits from GOLF_NAME)."""
    limit = 1 if len(name) < 8 else 2
    best = min(((edit_distance(name, k), k) for k in known if k[:1] == name[:1]),
               default=(limit + 1, ""))
    return best[1] if best[0] <= limit else ""


def unknown_problems(env: Mapping[str, str], known: Iterable[str]) -> list[str]:
    """Set variables that look like golfkit's (a near miss or a golfkit prefix) but are not."""
    known = set(known)
    out = []
    for name in sorted(env):
        if name in known or name.startswith(FOREIGN_PREFIXES):
            continue
        guess = _near(name, known)
        if guess:
            out.append(f"{name}: not a golfkit setting; did you mean {guess}?")
        elif name.startswith(GOLF_PREFIXES):
            out.append(f"{name}: not a golfkit setting; unset it (python train_gpt.py --help "
                       "lists them all)")
    return out


def environment_problems(env: Mapping[str, str]) -> list[str]:
    """Every registered variable set in `env` parsed and ranged, plus unknown look-alikes."""
    table = catalogue()
    return parse_env(table, env)[1] + unknown_problems(env, (s.name for s in table))


# ----------------------------------------------------------------------------- rendering
def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value != "" else '""'


def rows(table: Iterable[Setting], columns: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """One row per setting: name, one default per column (a column maps names to values that
    differ from the declared default), accepted values, meaning."""
    return [[s.name, *(_shown(col.get(s.name, s.default)) for col in columns.values()), s.rule(), s.help]
            for s in table]


def render_help(table: Sequence[Setting], columns: Mapping[str, Mapping[str, Any]]) -> str:
    """Plain text for `--help`: one line per setting, a heading per group; a long value
    (a data path) overflows its column rather than widening every line."""
    head = ["NAME", *columns, "ACCEPTS"]
    body = rows(table, columns)
    widths = [max(len(r[0]) for r in [head, *body])] + [
        min(max(len(r[i]) for r in [head, *body]), HELP_COLUMN) for i in range(1, len(head))]
    lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(head, widths)) + "  MEANING"]
    group = None
    for s, r in zip(table, body):
        if s.group != group:
            group = s.group
            lines += ["", f"[{group}]"]
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return "\n".join(lines)


def render_markdown(table: Sequence[Setting], columns: Mapping[str, Mapping[str, Any]]) -> str:
    """docs/settings.md's tables, one per group."""
    head = ["Variable", *columns, "Accepts", "Meaning"]
    out, group = [], None
    for s, r in zip(table, rows(table, columns)):
        if s.group != group:
            group = s.group
            out += ["", f"## {group}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in [f"`{r[0]}`", *r[1:]]) + " |")
    return "\n".join(out).lstrip("\n") + "\n"


# ----------------------------------------------------------------------------- operational
def _op(name: str, kind: type, default: Any, help_: str, group: str, **rules: Any) -> Setting:
    return Setting(name, kind, default, help_, group=group, **rules)


OPERATIONAL: tuple[Setting, ...] = (
    _op("PRESET", str, "", "named stack applied first (default r29 with CUDA, cpu without); "
        "explicit variables win", "mode"),
    _op("EVAL_ONLY", bool, False, "evaluate ARTIFACT and print the round-trip line instead of "
        "training", "mode"),
    _op("ARTIFACT", str, "", "artifact EVAL_ONLY evaluates (unset = final_model.gkq here)", "mode"),
    _op("QUANT_ONLY", str, "", "a finished run folder: re-quantize, evaluate and pack it without "
        "training", "mode"),
    _op("PACK", bool, True, "pack the run into SUBMISSION_DIR/<RUN_ID> at the end", "mode"),
    _op("SUBMISSION_DIR", str, "", "parent folder of every packed record (unset = ./submission)",
        "mode"),
    _op("GOLF_NAME", str, "", "submission.json name", "submission"),
    _op("GOLF_GITHUB_ID", str, "", "submission.json github_id", "submission"),
    _op("GOLF_AUTHOR", str, "", "submission.json author (default GOLF_NAME)", "submission"),
    _op("GOLF_EVAL_SPEED_RATIO", float, None, "assumed speed of 8xH100 over this machine for "
        "the eval-time estimate (unset = from the hardware name)", "submission", gt=0),
    _op("GOLF_COMPRESS_THREADS", int, None, "artifact compression threads (unset = all cores, "
        "at most 32; quant.codec reads it)", "runtime", ge=1),
    _op("GOLF_RANK0_TIMEOUT_SECONDS", float, 3600.0, "how long ranks > 0 wait for a rank-0 "
        "phase (quantize, pack)", "runtime", gt=0),
    _op("GOLF_DEBUG", bool, False, "show the full traceback instead of the one-line error",
        "runtime"),
    _op("WORLD_SIZE", int, 1, "set by torchrun: number of processes", "runtime", ge=1),
    _op("RANK", int, 0, "set by torchrun: this process's rank", "runtime", ge=0),
    _op("LOCAL_RANK", int, None, "set by torchrun: this process's device index (unset = RANK)",
        "runtime", ge=0),
    _op("GOLF_HF_BASE", str, "", "download base URL replacing the Hugging Face dataset's "
        "(data preparation)", "data"),
    _op("MATCHED_FINEWEB_REPO_ID", str, "", "Hugging Face dataset repo of the FineWeb shards "
        "(data preparation; unset = the variant's known home)", "data"),
    _op("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", str, "datasets", "folder inside that repo (data "
        "preparation)", "data"),
    _op("GOLF_SHARED_DATA", str, "", "folder of shared test/bench data (bench/ and tests/)",
        "data"),
)
register("operational", OPERATIONAL)
