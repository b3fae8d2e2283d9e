"""One declaration per extension concept: a toy entry added to the owning table (and nowhere
else) reaches every place that reads it."""
from __future__ import annotations

import pytest

import golf.main as gm
from golf import settings
from golf.config import Config
from quant import methods
from quant.core import quantize_model
from quant.records import RECORD_METHODS, record_policy
from quant.policy import QuantPolicy

TOY_METHOD = methods.Method("a toy method registered by a test", True, False, False)


def _help_line(name: str, out: str) -> str:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [name])
    # a long accepts column may wrap onto the following indented lines
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith("  ") and lines[i].split()[0].isupper()), len(lines))
    return " ".join(lines[start:end])


def test_a_registered_quant_method_is_accepted_and_listed(monkeypatch, capsys):
    env = {"QUANT_METHOD": "toy_method"}
    assert any("QUANT_METHOD" in p for p in Config.from_env(env, cpu_preset=True).problems())
    monkeypatch.setitem(methods.METHODS, "toy_method", TOY_METHOD)
    cfg = Config.from_env(env, cpu_preset=True)
    assert cfg.quant_method == "toy_method" and not cfg.problems()
    assert settings.lookup("QUANT_METHOD").parse("toy_method") == "toy_method"
    assert gm.main(["--help"]) == 0
    assert "toy_method" in _help_line("QUANT_METHOD", capsys.readouterr().out)


def test_quant_method_flags_are_read_from_the_table(monkeypatch):
    assert methods.default_method() == Config().quant_method == "gptq"
    assert set(RECORD_METHODS) == {n for n, m in methods.METHODS.items() if m.record_coders}
    for name in RECORD_METHODS:
        assert record_policy(name, QuantPolicy()).compressors == methods.METHODS[name].record_coders
    # a second default is refused rather than silently picking one
    monkeypatch.setitem(methods.METHODS, "toy_method",
                        methods.Method("second default", True, False, False, default=True))
    with pytest.raises(ValueError, match="exactly one default"):
        methods.default_method()


def test_an_unknown_quant_method_lists_the_table():
    import torch
    with pytest.raises(Exception, match="QUANT_METHOD to one of gptq, rtn, int8"):
        quantize_model({"w": torch.zeros(4, 4)}, method="nope")
