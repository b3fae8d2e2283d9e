"""The README's one-guess table, held by test: each everyday change is one file, and a toy
instance added to that file's table (monkeypatched here, nothing else touched) reaches the user:
the CLI's --help or choices, docs/settings.md's generation, the run's numbers.

The rows whose test lives elsewhere: compressor and quantizer method (tests/test_registries.py),
pre-submit check (tests/test_pack.py), data source (tests/test_prepare.py).
"""
from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch

import golf.main as gm
from golf.eval import bpb
from golf.run import settings
from golf.run.config import CONFIG_SETTINGS, Config
from golf.eval.score import Scoring, evaluate_bpb
from golf.model.gpt import MODEL_SETTINGS, ModelConfig

REPO = Path(__file__).resolve().parents[1]

# The README row -> (the one file it touches, the table there that every other mention reads,
# the test that adds a toy entry to that table and sees it reach the user).
ONE_GUESS = {
    "attention variant": ("golf/model/gpt.py", "MODEL_SETTINGS",
                          "tests/test_one_guess.py::test_an_attention_variant_is_one_model_field"),
    "byte rule": ("golf/eval/bpb.py", "PIECE_RULES",
                  "tests/test_one_guess.py::test_a_byte_rule_is_one_piece_rule"),
    "pre-submit check": ("golf/submission/checks.py", "CHECKS",
                         "tests/test_pack.py::test_pack_run_runs_every_registered_check_in_order"),
    "compressor": ("quant/codec.py", "REGISTRY",
                   "tests/test_registries.py::test_a_registered_codec_is_tried_priced_required_and_versioned"),
    "data source": ("golf/data/sources/<name>.py", "",
                    "tests/test_prepare.py::test_a_data_source_is_one_file_found_by_the_dispatcher"),
    "model feature": ("golf/model/gpt.py", "MODEL_SETTINGS",
                      "tests/test_one_guess.py::test_a_model_feature_is_one_model_field"),
    "quantizer method": ("quant/methods.py", "METHODS",
                         "tests/test_registries.py::test_a_registered_quant_method_is_accepted_and_listed"),
    "TTT mode": ("golf/eval/ttt.py", "TTT_MODES",
                 "tests/test_one_guess.py::test_a_ttt_mode_is_one_table_entry"),
    "setting": ("golf/run/config.py", "CONFIG_SETTINGS",
                "tests/test_one_guess.py::test_a_run_setting_is_one_config_field"),
}


# ----------------------------------------------------------------------------- the README table
def _readme_rows() -> dict[str, list[str]]:
    """'Where a change goes' rows: change -> the repository paths its files cell names."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Where a change goes", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and line.startswith("|") and not set(cells[0]) <= set("-"):
            rows[re.sub(r" \(.*\)$", "", cells[0])] = re.findall(r"`((?:golf|quant)/[^`\s]+)`", cells[1])
    return rows


def test_the_readme_table_names_one_file_per_row_its_declared_owner():
    rows = _readme_rows()
    for change, (path, table, test) in ONE_GUESS.items():
        assert rows.get(change) == [path], f"README row {change!r}: {rows.get(change)} != [{path}]"
        if table:   # the owner declares the table every other mention reads
            module = path[:-3].replace("/", ".")
            assert hasattr(__import__(module, fromlist=[table]), table), f"{module}.{table}"
        file, name = test.split("::")
        assert f"def {name}(" in (REPO / file).read_text(), f"{test}: no such test"


# ----------------------------------------------------------------------------- model fields
@dataclasses.dataclass(frozen=True)
class _ToyModel(ModelConfig):
    toy_loops: int = settings.setting(0, "a toy model feature registered by a test (0 = off)", ge=0)


@dataclasses.dataclass(frozen=True)
class _ToyAttention(ModelConfig):
    toy_attn_temp: float = settings.setting(1.0, "a toy attention temperature from a test", gt=0)


@dataclasses.dataclass(frozen=True)
class _ToyRun(Config):
    toy_warmdown_frac: float = settings.setting(0.5, "a toy run setting registered by a test",
                                                ge=0, le=1)


def _reaches_the_user(monkeypatch, capsys, owner: str, table, name: str, bad: str) -> None:
    """`table` registered as `owner`'s (what the owning module does at import) is listed by
    `train_gpt.py --help` and docs/settings.md, and checked before any work starts."""
    meaning = next(s.help for s in table if s.name == name)
    assert name not in {s.name for s in settings.catalogue()}     # not declared before
    monkeypatch.setitem(settings._TABLES, owner, table)
    assert gm.main(["--help"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.split()[:1] == [name])
    assert line.endswith(meaning)
    from golf.run.settings_doc import markdown
    assert f"| `{name}` |" in markdown() and meaning in markdown()
    assert settings.environment_problems({name: "1"}) == []
    (problem,) = settings.environment_problems({name: bad})
    assert problem.startswith(f"{name}=")


def test_a_model_feature_is_one_model_field(monkeypatch, capsys):
    """A ModelConfig field declared with setting(...) (golf/model/gpt.py) is the feature's switch:
    --help, docs/settings.md and the start-up check read golf.model.gpt's table, nothing else."""
    table = settings.fields_table(_ToyModel, "model")
    assert table[:len(MODEL_SETTINGS)] == MODEL_SETTINGS    # golf.model.gpt's own table, rebuilt
    _reaches_the_user(monkeypatch, capsys, "model", table, "TOY_LOOPS", "-1")
    # the artifact's model dict is every ModelConfig field: nothing lists them by hand
    assert set(ModelConfig().model_dict()) == {s.field for s in MODEL_SETTINGS}


def _cfg_reads(cls_name: str) -> set[str]:
    """The names `cfg.X` that golf/model/gpt.py's class `cls_name` reads."""
    tree = ast.parse((REPO / "golf" / "model" / "gpt.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name)
    return {n.attr for n in ast.walk(cls) if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name) and n.value.id == "cfg"}


def test_an_attention_variant_is_one_model_field(monkeypatch, capsys):
    """Attention is configured by ModelConfig's declared fields alone, so a variant is its field,
    check and code in golf/model/gpt.py; a toy field reaches --help, the docs and the check."""
    declared = {s.field for s in MODEL_SETTINGS} | {"head_dim"}
    reads = _cfg_reads("Attention")
    assert {"xsa_gate", "sparse_attn_gate_enabled", "rope_dims"} <= reads <= declared
    _reaches_the_user(monkeypatch, capsys, "model", settings.fields_table(_ToyAttention, "model"),
                      "TOY_ATTN_TEMP", "0")


def test_a_run_setting_is_one_config_field(monkeypatch, capsys):
    """A Config field with setting(...) (golf/run/config.py) is parsed, listed and checked."""
    table = tuple(s for s in settings.fields_table(_ToyRun, "run")
                  if s.field not in ModelConfig.model_field_names())
    assert table[:len(CONFIG_SETTINGS)] == CONFIG_SETTINGS
    _reaches_the_user(monkeypatch, capsys, "run", table, "TOY_WARMDOWN_FRAC", "2")
    parsed, bad = settings.parse_env(table, {"TOY_WARMDOWN_FRAC": "0.25"})
    assert parsed == {"toy_warmdown_frac": 0.25} and not bad


# ----------------------------------------------------------------------------- byte rule
def _digit_run(sp, t: int) -> bool:
    piece = sp.id_to_piece(t)
    return piece.isascii() and piece.isdigit()


def test_a_byte_rule_is_one_piece_rule(official_tokenizer, monkeypatch):
    """A PieceRule added to golf/eval/bpb.py's PIECE_RULES decides its pieces' bytes in the table the
    scorer divides by; the other pieces keep theirs."""
    sp = spm.SentencePieceProcessor()
    sp.Load(str(official_tokenizer))
    text = "In 1984 there were 365 days and 2048 tokens, said the 42 reports."
    toks = np.array([1, *sp.encode(text)], dtype=np.int64)
    n = len(toks) - 1
    plain = bpb.build_byte_lut(sp, 1024)
    assert bpb.range_bytes(toks, 0, n, plain) == len(sp.decode(toks[1:].tolist()).encode())
    # a toy rule: a piece of bare digits counts 3 bytes a digit
    toy = bpb.PieceRule(_digit_run, lambda sp_, t, where: (3 * len(sp_.id_to_piece(t)), False))
    monkeypatch.setattr(bpb, "PIECE_RULES", {"toy": toy, **bpb.PIECE_RULES})
    lut = bpb.build_byte_lut(sp, 1024)
    digits = sum(len(sp.id_to_piece(int(t))) for t in toks[1:] if _digit_run(sp, int(t)))
    assert digits >= 4   # the text does hold bare-digit pieces
    got = bpb.range_bytes(toks, 0, n, lut)
    assert got == bpb.range_bytes(toks, 0, n, plain) + 2 * digits
    # the evaluation's bytes and val_bpb: a uniform model costs log2(1024) = 10 bits a token
    res = evaluate_bpb(_Uniform(), toks, lut, Scoring(seq_len=8))
    assert (res.tokens, res.bytes) == (n, got)
    assert res.val_bpb == pytest.approx(10.0 * n / got, rel=1e-5)


class _Uniform(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*x.shape, 1024)


# ----------------------------------------------------------------------------- TTT mode
def test_a_ttt_mode_is_one_table_entry(monkeypatch, capsys):
    """A TTTMode added to golf/eval/ttt.py's TTT_MODES is an eval_bpb.py --ttt choice (with its line
    in --help), a valid TTT=..., run by run_ttt, and its knobs are what eval.json records."""
    import eval_bpb
    from golf.eval import ttt
    assert any(p.startswith("TTT=") for p in settings.environment_problems({"TTT": "toy"}))
    calls = []

    def toy_run(model, toks, lut, s, n, p):
        calls.append((s.mode, n, p.scoring.seq_len))
        return ttt.TTTResult(val_loss=1.0, val_bpb=1.5, tokens=n, bytes=2 * n,
                             seconds=0.0, tokens_per_s=0.0, mode="chunked",
                             seq_len=p.scoring.seq_len, stride=0, partial=False, ttt="toy")

    monkeypatch.setitem(ttt.TTT_MODES, "toy", ttt.TTTMode(toy_run, "a toy mode from a test",
                                                          ("lr",), fixed={"kind": "toy"}))
    with pytest.raises(SystemExit):
        eval_bpb.build_parser().parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "lora_golf,toy}" in shown and "toy = a toy mode from a test" in shown
    s = eval_bpb.ttt_settings(eval_bpb.build_parser().parse_args(["run", "--ttt", "toy",
                                                                  "--ttt-lr", "0.5"]))
    assert s.mode == "toy" and s.knobs() == {"lr": 0.5, "kind": "toy"}
    assert s.env() == {"TTT": "toy", "TTT_ON": "post", "TTT_LR": 0.5}
    assert settings.environment_problems({"TTT": "toy"}) == []
    res = ttt.run_ttt(torch.nn.Linear(2, 2), np.arange(9), None, s,
                      ttt.TTTPass(Scoring(seq_len=4), max_tokens=6))
    assert calls == [("toy", 6, 4)] and res.weights == "post" and res.partial
