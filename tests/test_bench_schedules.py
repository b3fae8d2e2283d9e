"""bench.schedules: epochs from the manifest's token counts, the gain per doubling of steps."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import schedules


def _run(root: Path, name: str, iterations: int, vals: dict[int, float], data: Path) -> Path:
    run = root / name
    run.mkdir()
    cfg = {"train_batch_tokens": 100, "iterations": iterations, "max_eval_tokens": 64,
           "data_path": str(data), "tokenizer_path": str(data / "tok.model")}
    (run / "config.json").write_text(json.dumps(cfg))
    lines = [{"step": s, "train_loss": 3.0} for s in range(1, iterations + 1, 5)]
    lines += [{"step": s, "val_loss": v * 0.7, "val_bpb": v} for s, v in vals.items()]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    return run


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    files = {"fineweb_train_000000.bin": 600, "fineweb_train_000001.bin": 400,
             "fineweb_val_000000.bin": 90}
    (d / "manifest.json").write_text(json.dumps({"files": files}))
    return d


def test_epochs_and_gain_per_doubling(tmp_path: Path, data: Path) -> None:
    long = _run(tmp_path, "long", 40, {20: 2.0, 40: 1.5}, data)
    short = _run(tmp_path, "short", 10, {5: 2.6, 10: 2.1}, data)
    out = tmp_path / "res" / "sched"
    assert schedules.main([str(long), str(short), "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert [r["iterations"] for r in res["runs"]] == [10, 40]      # sorted by schedule length
    assert [r["epochs"] for r in res["runs"]] == [1.0, 4.0]        # 100 tokens/step, 1,000 train
    assert res["runs"][1]["val"][0] == [20, 2.0, 2.0]
    (d,) = res["per_doubling"]
    assert d["delta_bpb"] == pytest.approx(-0.6)
    assert d["per_doubling"] == pytest.approx(-0.3)                 # two doublings, 10 -> 40
    assert all(r["finished"] for r in res["runs"])
    assert out.with_suffix(".png").stat().st_size > 5000


def test_unfinished_run_is_plotted_not_compared(tmp_path: Path, data: Path) -> None:
    runs = [schedules.curve(_run(tmp_path, "a", 10, {10: 2.1}, data)),
            schedules.curve(_run(tmp_path, "partial", 40, {20: 2.0}, data)),
            schedules.curve(_run(tmp_path, "b", 80, {80: 1.2}, data))]
    assert [r["finished"] for r in runs] == [True, False, True]
    (d,) = schedules.per_doubling(runs)                             # a -> b, three doublings
    assert (d["from"], d["to"]) == (10, 80) and d["per_doubling"] == pytest.approx(-0.3)


def test_run_without_val_lines_refused(tmp_path: Path, data: Path) -> None:
    bare = _run(tmp_path, "bare", 10, {}, data)
    with pytest.raises(SystemExit, match="VAL_LOSS_EVERY"):
        schedules.curve(bare)


def test_dataset_without_manifest_counts_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="manifest.json"):
        schedules.train_tokens(str(tmp_path))


def test_folder_without_config_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no config.json"):
        schedules.curve(tmp_path)
