"""The settings table (golf/run/settings.py): one parser, one rule per variable, refused before work.

Each test feeds the product the inputs a user types (environment variables, argv) and checks
what it does with them: refuses with one line naming the variable, suggests the name meant,
prints the table, stops a diverging run with a resumable checkpoint.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

import golf.main as gm
import golf.eval.ttt  # noqa: F401  (registers the TTT_* settings, as golf.main does before a check)
from golf.run import settings
from golf.run.config import Config, preset_columns
from golf.run.errors import TrainError

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(iterations=6, grad_accum_steps=1, max_eval_tokens=4096, gptq_calib_batches=0,
             quant_small_numel=1024, warmdown_iters=3, train_log_every=1)


# ----------------------------------------------------------------------------- the parser
@pytest.mark.parametrize("name,raw", [
    ("MATRIX_LR", "nan"), ("TIED_EMBED_LR", "inf"), ("SCALAR_LR", "-0.01"), ("MATRIX_LR", "0"),
    ("QK_GAIN_INIT", "nan"), ("ROPE_BASE", "0"), ("MAX_WALLCLOCK_SECONDS", "nan"),
    ("MAX_WALLCLOCK_SECONDS", "-inf"), ("SEED", "-1"), ("ITERATIONS", "-5"), ("BETA2", "1"),
    ("TTT_LR", "-1"), ("TTT_LORA_RANK", "0"), ("TTT", "bogus"), ("TTT_ON", "mid"),
    ("EVAL_ONLY", "2"), ("PACK", "2"), ("PACK", "ture"), ("QUANT_FISHER", "2"),
    ("QUANT_METHOD", "gptq2"), ("GOLF_RANK0_TIMEOUT_SECONDS", "0"), ("GOLF_COMPRESS_THREADS", "0"),
    ("GOLF_EVAL_SPEED_RATIO", "nan"), ("WORLD_SIZE", "0"), ("NUM_LAYERS", "1.5")])
def test_a_meaningless_value_is_one_line_naming_the_variable(name, raw):
    problems = settings.environment_problems({name: raw})
    assert len(problems) == 1 and problems[0].startswith(f"{name}=") and "\n" not in problems[0]


@pytest.mark.parametrize("name,raw,want", [
    ("MATRIX_LR", "0.02", 0.02), ("SEED", "0", 0), ("ITERATIONS", "1e3", 1000),
    ("MAX_WALLCLOCK_SECONDS", "0", 0.0), ("XSA_LAST_N", "-1", -1), ("TTT", "LoRA", "lora"),
    ("TTT", "none", "off"), ("TTT_BOS_ID", "-1", -1), ("GOLF_EVAL_SPEED_RATIO", "2.5", 2.5)])
def test_a_meaningful_value_parses_to_its_type(name, raw, want):
    assert settings.read(name, {name: raw}) == want
    assert settings.environment_problems({name: raw}) == []


def test_a_saved_config_with_a_nan_is_refused_by_the_same_rule():
    """config.json values (RESUME, QUANT_ONLY) go through the table's rule as well."""
    bad = Config().replace(matrix_lr=math.nan, qk_gain_init=-1.0, seed=-1, rope_base=math.inf)
    names = sorted(p.split("=")[0] for p in bad.problems())
    assert names == ["MATRIX_LR", "QK_GAIN_INIT", "ROPE_BASE", "SEED"]
    for preset in ("r29", "p1125", "cpu", "cpu_p1125"):
        assert Config.from_preset(preset).problems() == []  # every shipped default passes


def test_a_new_setting_is_one_declaration():
    """One field with setting(...) is parsed, checked, and listed by --help and the docs."""
    @dataclasses.dataclass(frozen=True)
    class Toy:
        toy_rate: float = settings.setting(0.5, "a toy rate", gt=0)
    table = settings.fields_table(Toy, "toy")
    (s,) = table
    assert (s.name, s.kind, s.default, s.rule()) == ("TOY_RATE", float, 0.5, "float > 0")
    assert settings.parse_env(table, {"TOY_RATE": "2"}) == ({"toy_rate": 2.0}, [])
    assert settings.value_problems(Toy(toy_rate=-1.0), table) == \
        ["TOY_RATE=-1.0: must be > 0; set a positive value"]
    assert "TOY_RATE" in settings.render_help(table, {"cpu": {}})
    assert "| `TOY_RATE` | 0.5 | float > 0 | a toy rate |" in settings.render_markdown(table, {"cpu": {}})


def test_config_json_round_trip_is_unchanged(tmp_path):
    """The metadata lives on the fields: config.json keeps its keys, an older one still loads."""
    cfg = Config.from_preset("cpu")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert Config.load(path) == cfg
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("quant_scales", "checkpoint_every")}
    path.write_text(json.dumps({**old, "a_field_from_the_future": 1}))
    assert Config.load(path) == cfg.replace(quant_scales=Config().quant_scales,
                                            checkpoint_every=Config().checkpoint_every)


BOOL_NAMES = [s.name for s in settings.catalogue() if s.kind is bool]


@pytest.mark.parametrize("name", BOOL_NAMES)
def test_every_boolean_takes_one_set_of_spellings(name):
    for raw in ("1", "true", "YES", " on "):
        assert settings.read(name, {name: raw}) is True
    for raw in ("0", "False", "no", "OFF"):
        assert settings.read(name, {name: raw}) is False
    for raw in ("ture", "2", "y", "enabled"):
        (problem,) = settings.environment_problems({name: raw})
        assert problem.startswith(f"{name}={raw!r}: not a valid bool")


def test_unknown_names_that_look_like_golfkits_are_refused_with_a_suggestion():
    env = {"NUM_LAYER": "3", "MATRIX_RL": "0.1", "QUANT_FOO": "1", "TTT_LORA_RANKS": "4",
           "PATH": "/bin", "HOME": "/root", "LANG": "C", "OMP_NUM_THREADS": "1", "TMPDIR": "/tmp",
           "PYTHONHASHSEED": "0", "MASTER_PORT": "29500", "LOCAL_WORLD_SIZE": "8"}
    got = settings.environment_problems(env)
    assert got == ["MATRIX_RL: not a golfkit setting; did you mean MATRIX_LR?",
                   "NUM_LAYER: not a golfkit setting; did you mean NUM_LAYERS?",
                   got[2], "TTT_LORA_RANKS: not a golfkit setting; did you mean TTT_LORA_RANK?"]
    assert got[2].startswith("QUANT_FOO: not a golfkit setting")


def test_the_variables_torchrun_and_friends_set_are_not_taken_for_typos():
    torchrun = {n: "1" for n in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "ROLE_RANK",
                                 "ROLE_NAME", "ROLE_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                                 "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
                                 "TORCHELASTIC_RESTART_COUNT", "TORCH_NCCL_ASYNC_ERROR_HANDLING",
                                 "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "MKL_CBWR", "LC_ALL",
                                 "SHELL", "USER", "HOSTNAME", "TERM", "PWD", "VIRTUAL_ENV")}
    assert settings.environment_problems(torchrun) == []


def test_edit_distance_matches_an_independent_count():
    assert settings.edit_distance("NUM_LAYER", "NUM_LAYERS") == 1
    assert settings.edit_distance("PACK", "PATH") == 2          # so PATH is not taken for PACK
    assert settings.edit_distance("kitten", "sitting") == 3
    assert settings.edit_distance("", "abc") == 3


# ----------------------------------------------------------------------------- the CLI
def test_every_problem_is_reported_at_once_before_any_work(monkeypatch, tmp_path, capsys):
    def never(*_a, **_k):
        raise AssertionError("trained despite bad settings")
    monkeypatch.setattr(gm, "run_pipeline", never)
    monkeypatch.setattr(gm, "shipped_code_bytes", lambda: 70_000)  # not packed: seconds saved
    for k, v in {"TTT": "bogus", "TTT_LR": "-1", "MATRIX_LR": "nan", "PACK": "ture",
                 "NUM_LAYER": "3", "RUNS_DIR": str(tmp_path / "runs")}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as ei:
        gm.main([])
    err = capsys.readouterr().err
    assert ei.value.code == 2 and "5 bad settings" in err
    for name in ("TTT=", "TTT_LR=", "MATRIX_LR=", "PACK=", "NUM_LAYER:"):
        assert name in err, name
    assert not (tmp_path / "runs").exists()


def test_help_prints_the_table_and_trains_nothing(monkeypatch, capsys):
    monkeypatch.setattr(gm, "run_pipeline", lambda *_a, **_k: pytest.fail("--help trained"))
    assert gm.main(["--help"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ")}
    assert {s.name for s in settings.catalogue()} <= set(rows)
    cpu, gpu = list(preset_columns().values())          # without CUDA, with it
    assert rows["NUM_LAYERS"][1:3] == [str(cpu["NUM_LAYERS"]), str(gpu.get("NUM_LAYERS", 11))]
    assert rows["MAX_WALLCLOCK_SECONDS"][1:3] == ["3600", "600"]
    assert "learning rate" in " ".join(rows["MATRIX_LR"])


@pytest.mark.parametrize("argv", [["--bogus"], ["train"], ["--help", "x"]])
def test_an_unknown_argument_is_exit_2_with_one_line(argv, monkeypatch, capsys):
    monkeypatch.setattr(gm, "run_pipeline", lambda *_a, **_k: pytest.fail("trained"))
    assert gm.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert repr(argv[0]) in captured.err and "--help" in captured.err


def test_docs_settings_md_is_the_generated_table():
    from golf.run.settings_doc import markdown
    assert (REPO / "docs" / "settings.md").read_text() == markdown(), \
        "docs/settings.md is stale: python -m golf.run.settings_doc > docs/settings.md"


# ----------------------------------------------------------------------------- every read declared
_READERS = {"get", "getenv", "read", "pop"}


def _env_names_read(tree: ast.AST) -> set[str]:
    """String names passed to os.environ.get / os.getenv / env.get / settings.read /
    os.environ[...] (the ways golfkit reads a variable)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in _READERS and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            owner = ast.unparse(node.func.value)
            if owner in ("os.environ", "os", "env", "settings", "environ"):
                names.add(node.args[0].value)
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("os.environ", "env") \
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            names.add(node.slice.value)
    return names


def test_every_variable_the_code_reads_is_declared():
    sources = [*REPO.joinpath("golf").rglob("*.py"), *REPO.joinpath("quant").rglob("*.py"),
               *(REPO / n for n in ("train_gpt.py", "eval_bpb.py", "pack.py"))]
    read = {n: p for p in sources for n in _env_names_read(ast.parse(p.read_text()))}
    assert {"PACK", "EVAL_ONLY", "GOLF_COMPRESS_THREADS", "WORLD_SIZE"} <= set(read)  # the walk sees them
    declared = {s.name for s in settings.catalogue()}
    undeclared = {n: str(p.relative_to(REPO)) for n, p in read.items() if n not in declared}
    assert not undeclared, f"read but not in golf.run.settings' table: {undeclared}"


def test_the_walk_sees_each_way_of_reading():
    src = ('import os\nos.environ.get("A")\nos.getenv("B")\nenv.get("C", "")\n'
           'os.environ["D"]\nsettings.read("E", os.environ)\nother.get("F")\n')
    assert _env_names_read(ast.parse(src)) == {"A", "B", "C", "D", "E"}


# ----------------------------------------------------------------------------- non-finite loss
def test_training_stops_at_the_first_nonfinite_loss_with_the_last_good_checkpoint(
        tiny_config, tmp_path, monkeypatch):
    """A loss made NaN at step 4: the run stops there with one TrainError line, and its
    checkpoint equals the one an interrupted run writes after step 3 (weights, optimizer,
    stream), from which the run resumes."""
    from golf.run import rundir as rd
    from golf.run.checkpoint import load_torch_file
    from golf.main import config_from_env
    from golf.train.loop import Trainer, train
    ref = train(tiny_config.replace(**SMALL, runs_dir=str(tmp_path), run_id="ref"), stop_after_steps=3)
    clean_forward = Trainer.forward

    def forward(self, x, y):
        loss = clean_forward(self, x, y)
        return loss * math.nan if self.step == 3 else loss
    monkeypatch.setattr(Trainer, "forward", forward)
    with pytest.raises(TrainError, match=r"train_loss is nan at step 4: .*holds step 3") as ei:
        train(tiny_config.replace(**SMALL, runs_dir=str(tmp_path), run_id="nan"))
    assert "\n" not in str(ei.value) and "RESUME=" in str(ei.value)
    keys = ("step",)
    got = load_torch_file(tmp_path / "nan" / rd.CHECKPOINT, "", keys)
    want = load_torch_file(ref.run_dir / rd.CHECKPOINT, "", keys)
    assert got["step"] == want["step"] == 3 and got["loader"] == want["loader"]
    for k, v in want["model"].items():
        assert torch.isfinite(got["model"][k]).all() and torch.equal(got["model"][k], v), k
    for k, v in want["ema"].items():
        assert torch.equal(got["ema"][k], v), k
    monkeypatch.setattr(Trainer, "forward", clean_forward)
    done = train(config_from_env({"RESUME": str(tmp_path / "nan"), "ITERATIONS": "5"}))
    assert done.steps == 5 and math.isfinite(done.final_val_loss)
    assert "train:nonfinite step:4/6" in (tmp_path / "nan" / rd.TRAIN_LOG).read_text()


def test_cpu_presets_are_bounded_by_steps_not_the_machine():
    """Under the cpu presets the wallclock cap is a safety cap far above their steps' time, so the
    LR schedule (and the depth loop's switch) follows the steps alone: the weights do not
    depend on the machine's speed."""
    from golf.train.optim import schedule_multiplier, training_fraction
    for name in ("cpu", "cpu_p1125", "cpu_frontier"):
        c = Config.from_preset(name)
        assert c.max_wallclock_seconds >= 3600 and c.iterations * 1.5 < c.max_wallclock_seconds
        cap_ms = 1000.0 * (c.max_wallclock_seconds - c.gptq_reserve_seconds)
        for step_ms in (50.0, 1500.0):  # a fast machine and one 2.5x slower than the old cap allowed
            for step in range(c.iterations):
                elapsed = step * step_ms
                assert schedule_multiplier(c, step, elapsed, cap_ms) == \
                    schedule_multiplier(c, step, 0.0, 0.0), (name, step)
                assert training_fraction(step, elapsed, cap_ms, c.iterations) == step / c.iterations
