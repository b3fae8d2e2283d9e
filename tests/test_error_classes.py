"""golf's error classes have one home (golf/run/errors.py) and keep their old import paths."""
from __future__ import annotations

import pytest

import golf.run.errors as errors
from golf.run.checkpoint import CheckpointError
from golf.run.config import Config, ConfigError
from golf.eval.score import EvalError, window_plan
from golf.interop import InteropError
from golf.run.rundir import RunIOError
from golf.train.loop import TrainError, resolve_grad_accum


@pytest.mark.parametrize("cls", [ConfigError, TrainError, CheckpointError, InteropError,
                                 RunIOError, EvalError])
def test_defined_once_in_errors_and_printed_as_one_line(cls):
    assert cls.__module__ == "golf.run.errors"
    assert getattr(errors, cls.__name__) is cls
    assert issubclass(cls, ValueError)  # user_errors() prints ValueErrors as one line


def test_raisers_raise_the_errors_module_class():
    with pytest.raises(errors.EvalError):
        window_plan(10, 0)
    with pytest.raises(errors.TrainError):
        resolve_grad_accum(Config(train_batch_tokens=1000, train_seq_len=64), 1)
    with pytest.raises(errors.ConfigError, match="2 bad settings"):
        raise ConfigError(["A=1: fix", "B=2: fix"])
