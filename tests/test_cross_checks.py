"""Inputs checked against each other before work (issue 26): the tokenizer and VOCAB_SIZE
against the dataset's manifest, shard ids against VOCAB_SIZE, an artifact's meta.config
against its run's config.json at pack time, and eval.json's sha256 of the bytes scored."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_pipeline_config, untrained_run
from golf.run import rundir as rd
from golf.data import inputs
from golf.data.shards import MANIFEST, read_shard, write_shard
from golf.run.errors import PackError, ShardError, TokenizerError


def _copy_dataset(src: Path, dst: Path, **manifest_changes) -> Path:
    shutil.copytree(src, dst)
    man = json.loads((dst / MANIFEST).read_text())
    man.update(manifest_changes)
    for k in [k for k, v in manifest_changes.items() if v is None]:
        del man[k]
    (dst / MANIFEST).write_text(json.dumps(man))
    return dst


def test_prepare_records_vocab_and_the_largest_token_id(embedded_data):
    ds = embedded_data.dataset_dir
    man = json.loads((ds / MANIFEST).read_text())
    top = max(int(np.max(read_shard(p))) for p in ds.glob("fineweb_*.bin"))
    assert man["max_token_id"] == top and man["vocab_size"] == 1024
    assert man["tokenizer_sha256"] == hashlib.sha256(embedded_data.tokenizer_path.read_bytes()).hexdigest()


def test_the_dataset_own_tokenizer_passes(embedded_data):
    inputs.check_dataset(embedded_data.dataset_dir, embedded_data.tokenizer_path, 1024)


def test_another_tokenizer_of_the_same_vocab_size_is_refused(embedded_data, official_tokenizer):
    """The issue's case: same vocabulary size, other pieces: a silently wrong val_bpb before."""
    with pytest.raises(TokenizerError) as ei:
        inputs.check_dataset(embedded_data.dataset_dir, official_tokenizer, 1024)
    msg = str(ei.value)
    assert f"TOKENIZER_PATH={official_tokenizer}" in msg and MANIFEST in msg
    assert embedded_data.tokenizer_path.name in msg and "\n" not in msg


def test_vocab_size_other_than_the_manifest_is_refused(embedded_data):
    with pytest.raises(TokenizerError, match=r"VOCAB_SIZE=8192: .* set VOCAB_SIZE=1024"):
        inputs.check_dataset(embedded_data.dataset_dir, embedded_data.tokenizer_path, 8192)


def test_recorded_max_id_at_or_above_vocab_is_refused(embedded_data, tmp_path):
    ds = _copy_dataset(embedded_data.dataset_dir, tmp_path / "ds", max_token_id=2000,
                       vocab_size=None, tokenizer_sha256=None)
    with pytest.raises(ShardError, match="VOCAB_SIZE=1024: .*token id 2000"):
        inputs.check_dataset(ds, embedded_data.tokenizer_path, 1024)
    inputs.check_dataset(ds, embedded_data.tokenizer_path, 4096)


def test_without_a_manifest_the_train_shards_are_sampled(tmp_path, embedded_data):
    ds = tmp_path / "hand"
    ds.mkdir()
    write_shard(ds / "fineweb_train_000000.bin", np.array([1, 2, 3], dtype=np.uint16))
    write_shard(ds / "fineweb_train_000001.bin", np.array([1, 1500, 3], dtype=np.uint16))
    with pytest.raises(ShardError, match="fineweb_train_000001.bin: token id 1500"):
        inputs.check_dataset(ds, embedded_data.tokenizer_path, 1024)


def test_training_with_a_foreign_tokenizer_writes_nothing(embedded_data, official_tokenizer,
                                                          tmp_path):
    from golf.train.loop import train
    cfg = tiny_pipeline_config(embedded_data, tokenizer_path=str(official_tokenizer),
                               runs_dir=str(tmp_path / "runs"), run_id="r")
    with pytest.raises(TokenizerError, match="TOKENIZER_PATH"):
        train(cfg)
    assert not (tmp_path / "runs" / "r").exists()


# ----------------------------------------------------------------------------- pack and eval
def _finished(run: Path, cfg) -> None:
    """An untrained run with what pack reads: eval.json naming its artifact, a train.log."""
    untrained_run(run, cfg)
    sha = hashlib.sha256((run / rd.ARTIFACT).read_bytes()).hexdigest()
    (run / rd.EVAL).write_text(json.dumps({"post": {"val_bpb": 3.0, "mode": "chunked"},
                                           "pre": {"val_bpb": 2.9}, "artifact_sha256": sha}))
    (run / rd.TRAIN_LOG).write_text("step:1\n")


def test_pack_refuses_another_models_artifact(tmp_path, tiny_config, capsys):
    """Another run's artifact + its eval.json copied into this run: the sha256 pairs, the
    meta.config does not match this run's config.json."""
    import pack
    mine, other = tmp_path / "mine", tmp_path / "other"
    _finished(mine, tiny_config)
    _finished(other, tiny_config.replace(num_layers=3))
    for name in (rd.ARTIFACT, rd.EVAL):
        shutil.copyfile(other / name, mine / name)
    before = {p.name: p.read_bytes() for p in mine.iterdir()}
    assert _exit_code(lambda: pack.main([str(mine), "--out", str(tmp_path / "sub"),
                                         "--no-roundtrip"])) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "num_layers" in err and "config.json" in err
    assert "not this run's artifact" in err
    assert not (tmp_path / "sub").exists()
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == before


def _exit_code(fn) -> int:
    try:
        return int(fn() or 0)
    except SystemExit as exc:
        return int(exc.code)


def test_eval_json_hashes_the_bytes_it_scored(tmp_path, embedded_data, monkeypatch):
    """An artifact replaced on disk after it was read (a racing QUANT_ONLY) does not lend its
    sha256 to the score of the one read."""
    from golf.eval import score as evaluate
    cfg = tiny_pipeline_config(embedded_data, max_eval_tokens=256)
    run = tmp_path / "run"
    untrained_run(run, cfg)
    scored = (run / rd.ARTIFACT).read_bytes()
    other = tmp_path / "other"
    untrained_run(other, cfg, seed=1)
    real = evaluate.load_models

    def load_then_replace(paths, *a, **k):
        out = real(paths, *a, **k)
        if "post" in paths:                   # the artifact's bytes are read: now replace it
            shutil.copyfile(other / rd.ARTIFACT, run / rd.ARTIFACT)
        return out
    monkeypatch.setattr(evaluate, "load_models", load_then_replace)
    rep = evaluate.run_eval(run, evaluate.EvalRequest(device="cpu"), out=tmp_path / "e.json",
                            log=None)
    assert rep["artifact_sha256"] == hashlib.sha256(scored).hexdigest()
    assert rep["artifact_sha256"] != hashlib.sha256((run / rd.ARTIFACT).read_bytes()).hexdigest()
