"""Run-directory torch files: a truncated or incomplete file is one error naming it."""
from __future__ import annotations

import pytest
import torch

from golf.run.checkpoint import CheckpointError, load_torch_file


def test_round_trip_and_required_keys(tmp_path):
    p = tmp_path / "ema.pt"
    torch.save({"config": {"a": 1}, "state_dict": {"w": torch.ones(3)}}, p)
    obj = load_torch_file(p, "fix", keys=("config", "state_dict"))
    assert torch.equal(obj["state_dict"]["w"], torch.ones(3))
    with pytest.raises(CheckpointError, match=r"ema\.pt: missing step; retrain"):
        load_torch_file(p, "retrain", keys=("config", "step"))


def test_truncated_and_missing_files_name_the_file(tmp_path):
    p = tmp_path / "checkpoint.pt"
    torch.save({"model": {"w": torch.randn(64, 64)}, "step": 3}, p)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt: not a readable torch file.*unset RESUME"):
        load_torch_file(p, "unset RESUME")
    with pytest.raises(CheckpointError, match=r"nope\.pt: file not found"):
        load_torch_file(tmp_path / "nope.pt", "x")
