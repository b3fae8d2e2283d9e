"""Nothing lost (issue 13): every bad setting fails before any work, a run directory belongs to
one run, a pack never replaces what it did not write, a resumed run gives the uninterrupted
artifact byte for byte, and bad text input to `prepare text` is one error naming the file."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from golf.run.atomic import file_sha256
from golf.run.config import Config, ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]


def tiny(cfg: Config, tmp: Path, **kw) -> Config:
    """The conftest tiny model, short, with runs under `tmp`."""
    base = dict(runs_dir=str(tmp / "runs"), iterations=6, grad_accum_steps=1,
                max_eval_tokens=4096, gptq_calib_batches=2, quant_small_numel=1024)
    return cfg.replace(**{**base, **kw})


# ----------------------------------------------------------------------------- 1. settings
def test_every_bad_size_is_listed_at_once_naming_the_variable(tiny_config):
    """MODEL_DIM=0 blames MODEL_DIM (not ROPE_DIMS); all problems come in one error."""
    bad = tiny_config.replace(model_dim=0, num_layers=0, num_kv_heads=3, train_seq_len=-1,
                              vocab_size=0, mlp_mult=0.0, bigram_dim=-4, ve_layers="7")
    with pytest.raises(ConfigError) as err:
        bad.validate()
    msg = str(err.value)
    for name in ("MODEL_DIM=0", "NUM_LAYERS=0", "NUM_KV_HEADS=3", "TRAIN_SEQ_LEN=-1",
                 "VOCAB_SIZE=0", "MLP_MULT=0", "BIGRAM_DIM=-4"):
        assert name in msg, name
    assert "ROPE_DIMS" not in msg and len(err.value.problems) == 7
    odd = tiny_config.replace(model_dim=62, rope_dims=18).problems()
    assert len(odd) == 1 and odd[0].startswith("MODEL_DIM=62: must be divisible by NUM_HEADS=4")
    assert "ROPE_DIMS=18" in tiny_config.replace(rope_dims=18).problems()[0]  # head_dim 16
    assert "VE_LAYERS" in " ".join(tiny_config.replace(ve_layers="7").problems())


def test_cap_not_above_reserve_fails_before_any_file(tiny_config, tmp_path):
    """A 4 s cap under an 8 s GPTQ reserve used to switch the cap off (37 s of training)."""
    cfg = tiny(tiny_config, tmp_path, max_wallclock_seconds=4.0, gptq_reserve_seconds=8.0)
    from golf.train.loop import train
    with pytest.raises(ConfigError, match="MAX_WALLCLOCK_SECONDS=4 is not above GPTQ_RESERVE_SECONDS=8"):
        train(cfg)
    assert not (tmp_path / "runs").exists()


def test_eval_stride_and_lengths_are_checked(tiny_config):
    probs = tiny_config.replace(eval_stride=65, eval_seq_len=64).problems()
    assert len(probs) == 1 and probs[0].startswith("EVAL_STRIDE=65")
    assert tiny_config.replace(eval_stride=64).problems() == []
    probs = tiny_config.replace(eval_seq_len=-1, max_eval_tokens=-5, eval_stride=-1).problems()
    assert {p.split("=")[0] for p in probs} == {"EVAL_SEQ_LEN", "MAX_EVAL_TOKENS", "EVAL_STRIDE"}


def test_budget_below_the_code_fails_before_training(tiny_config, tmp_path):
    from golf.main import run_pipeline
    from golf.submission import code_bytes
    cfg = tiny(tiny_config, tmp_path, run_id="b", budget_bytes=code_bytes())
    with pytest.raises(ConfigError, match=r"BUDGET_BYTES=\d+: leaves no bytes for the model"):
        run_pipeline(cfg, do_pack=False)
    assert not (tmp_path / "runs").exists()


def test_compress_threads_names_the_variable(tiny_config, tmp_path, monkeypatch):
    from golf.main import run_pipeline
    from quant.codec import compress_workers
    monkeypatch.setenv("GOLF_COMPRESS_THREADS", "abc")
    with pytest.raises(ValueError, match="GOLF_COMPRESS_THREADS='abc'"):
        compress_workers()
    with pytest.raises(ConfigError, match="GOLF_COMPRESS_THREADS='abc'"):
        run_pipeline(tiny(tiny_config, tmp_path, run_id="t"), do_pack=False)
    assert not (tmp_path / "runs").exists()


def test_cli_prints_every_problem_in_one_error(tmp_path, embedded_data):
    env = {**os.environ, "MODEL_DIM": "0", "MAX_WALLCLOCK_SECONDS": "4", "EVAL_STRIDE": "9999",
           "PRESET": "cpu", "RUNS_DIR": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1",
           "DATA_PATH": str(embedded_data.dataset_dir),
           "TOKENIZER_PATH": str(embedded_data.tokenizer_path)}
    r = subprocess.run([sys.executable, str(REPO / "train_gpt.py")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "3 bad settings" in r.stderr
    for name in ("MODEL_DIM=0", "MAX_WALLCLOCK_SECONDS=4", "EVAL_STRIDE=9999"):
        assert name in r.stderr
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- 2. run dirs
def test_reused_run_id_is_refused_and_overwrite_starts_fresh(tiny_config, tmp_path):
    from golf.train.loop import train
    cfg = tiny(tiny_config, tmp_path, run_id="same", iterations=2, train_log_every=1,
               gptq_calib_batches=0)
    first = train(cfg)
    log_before = (first.run_dir / "train.log").read_bytes()
    (first.run_dir / "notes.txt").write_text("mine")
    (first.run_dir / "previous" / "1").mkdir(parents=True)           # an earlier QUANT_ONLY pair
    (first.run_dir / "previous" / "1" / "eval.json").write_text("{}")
    (first.run_dir / "previous" / "2").mkdir()
    (first.run_dir / "previous" / "2" / "mine.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"RUN_ID=same: .*same already holds an earlier run.*OVERWRITE=1"):
        train(cfg.replace(seed=7))
    assert (first.run_dir / "train.log").read_bytes() == log_before   # untouched
    second = train(cfg.replace(seed=7, overwrite=True))
    log = (second.run_dir / "train.log").read_text()
    assert log.count("model_params:") == 1 and "overwrite:" in log
    rows = [json.loads(x) for x in (second.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 2]                     # one run: steps, final eval
    assert json.loads((second.run_dir / "config.json").read_text())["seed"] == 7
    assert (first.run_dir / "notes.txt").read_text() == "mine"        # not a run file: kept
    assert not (first.run_dir / "previous" / "1").exists()             # the earlier run's pair
    assert (first.run_dir / "previous" / "2" / "mine.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- 3, 4: runs
@pytest.fixture(scope="module")
def straight(tmp_path_factory, embedded_data):
    """An uninterrupted tiny run through the pipeline (train -> quantize -> eval), unpacked."""
    from golf.main import run_pipeline
    tmp = tmp_path_factory.mktemp("nothing_lost")
    from conftest import tiny_pipeline_config
    cfg = tiny(tiny_pipeline_config(embedded_data, warmdown_iters=3, train_log_every=2), tmp,
               run_id="straight")
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = run_pipeline(cfg, do_pack=False)
    finally:
        torch.set_num_threads(n)
    return cfg, Path(summary["run_dir"]), tmp


def test_resumed_run_gives_the_uninterrupted_artifact_byte_for_byte(straight):
    from golf.main import quantize_run, shipped_code_bytes
    from golf.train.loop import train
    cfg, run, _ = straight
    part = train(cfg.replace(run_id="parted"), stop_after_steps=3)
    assert part.interrupted and (part.run_dir / "checkpoint.pt").is_file()
    done = train(cfg.replace(run_id="parted", resume=str(part.run_dir)))  # its own folder: no refusal
    assert done.steps == cfg.iterations
    art = quantize_run(cfg.replace(run_id="parted"), done.run_dir, lambda _m: None,
                       shipped_code_bytes())
    assert file_sha256(art) == file_sha256(run / "final_model.gkq")


@pytest.mark.slow
def test_submission_dir_is_a_parent_and_keeps_its_other_records(straight, monkeypatch):
    """QUANT_ONLY=runs/X SUBMISSION_DIR=./submission used to replace submission/ itself."""
    from golf.main import quant_only
    _cfg, run, tmp = straight
    sub = tmp / "submission"
    (sub / "older_record").mkdir(parents=True)
    (sub / "README.md").write_text("tracked")
    (sub / "older_record" / "submission.json").write_text("{}")
    monkeypatch.setenv("SUBMISSION_DIR", str(sub))
    monkeypatch.setenv("PACK", "1")
    assert quant_only(str(run)) == 0
    assert (sub / "README.md").read_text() == "tracked"
    assert (sub / "older_record" / "submission.json").read_text() == "{}"
    rec = sub / run.name
    assert file_sha256(rec / "final_model.gkq") == file_sha256(run / "final_model.gkq")
    assert json.loads((rec / "submission.json").read_text())["compliance"]["roundtrip_exact"]


def test_pack_replaces_only_its_own_earlier_folder(straight):
    """An earlier pack of the run is replaced atomically; a folder with anything else in it
    (a parent such as submission/, or a record someone added to) is refused before any work."""
    from golf.submission import PackError, PackRequest, pack_run
    _cfg, run, tmp = straight
    out = tmp / "repack" / run.name
    quiet = dict(request=PackRequest(roundtrip=False), log=lambda _m: None)
    pack_run(run, out, **quiet)
    (out / "submission.json").write_text("{}")            # stale: must be replaced
    pack_run(run, out, **quiet)
    assert json.loads((out / "submission.json").read_text())["bytes_total"] > 0
    (out / "my_notes.md").write_text("keep")
    with pytest.raises(PackError, match="is not an earlier pack's record folder"):
        pack_run(run, out, **quiet)
    with pytest.raises(PackError, match="is not an earlier pack's record folder"):
        pack_run(run, tmp / "repack", **quiet)              # the parent itself
    assert (out / "my_notes.md").read_text() == "keep"
    assert sorted(p.name for p in (tmp / "repack").iterdir()) == [run.name]  # no temp left


# ----------------------------------------------------------------------------- 5. prepare
def _prep(inputs, tok, out, **kw):
    from golf.data.sources.text import prepare_text
    return prepare_text(inputs, tok, out, **kw)


def test_prepare_text_non_utf8_names_file_and_line(tmp_path, embedded_data):
    from golf.run.errors import PrepareError
    tok = embedded_data.tokenizer_path
    txt = tmp_path / "latin.txt"
    txt.write_bytes("line one\nna\xefve line two\n".encode("latin-1"))
    with pytest.raises(PrepareError, match=r"latin\.txt:2: not UTF-8 .*re-encode"):
        _prep([txt], tok, tmp_path / "o", val_docs=1)
    jl = tmp_path / "docs.jsonl"
    jl.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(PrepareError, match=r"docs\.jsonl:2: not UTF-8"):
        _prep([jl], tok, tmp_path / "o", val_docs=1)
    assert not (tmp_path / "o").exists()


def test_prepare_text_corrupt_gz_is_one_error(tmp_path, embedded_data, repo_root):
    gz = tmp_path / "d.jsonl.gz"
    good = gzip.compress(b"".join(b'{"text": "document %d here"}\n' % i for i in range(50)))
    gz.write_bytes(good[: len(good) // 2])                               # truncated
    r = subprocess.run([sys.executable, "-m", "golf.data.prepare", "text", "--input", str(gz),
                        "--tokenizer", str(embedded_data.tokenizer_path), "--name", "n",
                        "--root", str(tmp_path / "root"), "--val-docs", "1"],
                       cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{gz}: corrupt or truncated gzip file" in r.stderr
    assert not (tmp_path / "root").exists()


def test_prepare_text_empty_splits_are_errors(tmp_path, embedded_data):
    from golf.run.errors import PrepareError
    tok = embedded_data.tokenizer_path
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(PrepareError, match="no documents found"):
        _prep([empty], tok, tmp_path / "o", val_docs=1)
    three = tmp_path / "three.jsonl"
    three.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(3)))
    with pytest.raises(PrepareError, match="--val-docs 3 takes all 3 documents"):
        _prep([three], tok, tmp_path / "o", val_docs=3)
    with pytest.raises(PrepareError, match="the val split is empty"):
        _prep([three], tok, tmp_path / "o")
    assert not (tmp_path / "o").exists()
    assert _prep([three], tok, tmp_path / "o", val_docs=1)["docs"] == {"train": 2, "val": 1}


def test_quant_fisher_is_zero_or_one():
    from golf.run.config import Config
    probs = Config().replace(quant_fisher=2).problems()
    assert len(probs) == 1 and probs[0].startswith("QUANT_FISHER=2")
    assert Config().replace(quant_fisher=0).problems() == []
