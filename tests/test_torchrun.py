"""The real command under torchrun (gloo, CPU): train -> calibrate -> quantize -> eval -> pack.

Equivalence at the same global batch: 1 process with GRAD_ACCUM_STEPS=2 and 2 processes with
GRAD_ACCUM_STEPS=1 see the same micro-batches, and every sum is then exact (a gradient
scaled by 1/2 and summed equals the sum of two halved gradients in floating point), so the
artifact is byte-identical. With 3 ranks the 1/3 scaling and gloo's ring order round
differently, so the weights agree only to a tolerance (stated below).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow   # real torchrun launches: `python -m pytest -q -m slow`
REPO = Path(__file__).resolve().parents[1]
TINY = dict(NUM_LAYERS="2", MODEL_DIM="64", NUM_HEADS="4", NUM_KV_HEADS="2", MLP_MULT="2",
            TRAIN_SEQ_LEN="64", ITERATIONS="6", WARMDOWN_ITERS="2", MAX_WALLCLOCK_SECONDS="0",
            VAL_LOSS_EVERY="0", TRAIN_LOG_EVERY="2", EVAL_SEQ_LEN="64", EVAL_STRIDE="0",
            MAX_EVAL_TOKENS="4096", QUANT_SMALL_NUMEL="1024", WARMUP_STEPS="0", EMA_DECAY="0.9",
            PRESET="cpu", OMP_NUM_THREADS="1")


def torchrun(nproc: int, tmp: Path, data, run_id: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_"))}
    full.update(TINY, DATA_PATH=str(data.dataset_dir), TOKENIZER_PATH=str(data.tokenizer_path),
                RUNS_DIR=str(tmp / "runs"), RUN_ID=run_id, SUBMISSION_DIR=str(tmp / "sub"), **env)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(REPO / "train_gpt.py")]
    return subprocess.run(cmd, cwd=tmp, env=full, capture_output=True, text=True, timeout=600)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, embedded_data):
    tmp = tmp_path_factory.mktemp("torchrun")
    batch = dict(TRAIN_BATCH_TOKENS="1024", GPTQ_CALIB_BATCHES="2")
    one = torchrun(1, tmp, embedded_data, "n1", GRAD_ACCUM_STEPS="2", PACK="0", **batch)
    two = torchrun(2, tmp, embedded_data, "n2", GRAD_ACCUM_STEPS="1", PACK="1", **batch)
    return tmp, one, two


def test_two_ranks_complete_the_main_job_and_pack(runs):
    tmp, _one, two = runs
    ok(two)
    run = tmp / "runs" / "n2"
    for name in ("ema.pt", "hessians.pt", "final_model.gkq", "eval.json", "summary.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    assert "world_size:2 grad_accum_steps:1" in two.stdout
    sub = next((tmp / "sub").rglob("submission.json"))
    assert sha(sub.parent / "final_model.gkq") == sha(run / "final_model.gkq")
    assert "(bit-exact)" in two.stdout        # pack's fresh-process round trip ran under torchrun
    assert "terminate called" not in two.stderr


def test_two_ranks_give_the_one_rank_artifact_byte_for_byte(runs):
    tmp, one, two = runs
    ok(one), ok(two)
    a, b = tmp / "runs" / "n1", tmp / "runs" / "n2"
    wa, wb = (torch.load(p / "ema.pt")["state_dict"] for p in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ha, hb = (torch.load(p / "hessians.pt") for p in (a, b))
    assert ha["tokens"] == hb["tokens"]       # the same calibration set, split over the ranks
    assert all(torch.equal(ha["hessians"][k], hb["hessians"][k]) for k in ha["hessians"])
    # the Fisher error weights too: the same batches, pooled (a per-rank subset made the
    # artifact depend on the world size whenever the fit was close)
    assert ha["error_weights"].keys() == hb["error_weights"].keys() and ha["error_weights"]
    assert all(torch.equal(ha["error_weights"][k], hb["error_weights"][k]) for k in ha["error_weights"])
    assert sha(a / "final_model.gkq") == sha(b / "final_model.gkq")


def test_three_ranks_match_one_rank_within_rounding(tmp_path, embedded_data):
    """1/3 is not exact in binary and gloo sums 3 ranks in ring order, so gradients differ
    in the last bits; Muon's orthogonalisation then spreads that over a few steps. Measured:
    weights within 6e-4 of their tensor's max after 6 steps, val_bpb within 1e-7."""
    # the challenge cap, not the tiny model's scaled cap: the point is the ranks' arithmetic, and a
    # tight fit turns last-bit weight differences into code flips (post differed by 2e-4 there)
    batch = dict(TRAIN_BATCH_TOKENS="1536", GPTQ_CALIB_BATCHES="3", BUDGET_BYTES="16000000")
    one = torchrun(1, tmp_path, embedded_data, "n1", GRAD_ACCUM_STEPS="3", PACK="0", **batch)
    # PACK=0: packing and its fresh-process round trip under torchrun are proved by the 2-rank
    # run (test_two_ranks_complete_the_main_job_and_pack); here only the numbers are compared
    three = torchrun(3, tmp_path, embedded_data, "n3", GRAD_ACCUM_STEPS="1", PACK="0", **batch)
    ok(one), ok(three)
    assert "world_size:3 grad_accum_steps:1" in three.stdout
    a, b = tmp_path / "runs" / "n1", tmp_path / "runs" / "n3"
    wa, wb = (torch.load(p / "ema.pt")["state_dict"] for p in (a, b))
    for k in wa:
        assert (wa[k] - wb[k]).abs().max() <= 5e-3 * wa[k].abs().max().clamp_min(1e-6), k
    ea, eb = (json.loads((p / "eval.json").read_text()) for p in (a, b))
    assert ea["pre"]["tokens"] == eb["pre"]["tokens"] and ea["pre"]["bytes"] == eb["pre"]["bytes"]
    assert abs(ea["pre"]["val_bpb"] - eb["pre"]["val_bpb"]) < 1e-4
    assert abs(ea["post"]["val_bpb"] - eb["post"]["val_bpb"]) < 1e-4


def test_a_rank0_failure_stops_every_rank_with_its_message(tmp_path, embedded_data):
    """A model budget of 5,000 bytes passes the checks made before training (it is above the
    code bytes) but no artifact of this model is that small, so the fitter fails on rank 0;
    rank 1, waiting for that phase, stops at once with rank 0's message instead of hanging."""
    from golf.submission import code_bytes
    budget = code_bytes() + 2_000 + 5_000
    proc = torchrun(2, tmp_path, embedded_data, "bad", TRAIN_BATCH_TOKENS="1024",
                    GPTQ_CALIB_BATCHES="2", BUDGET_BYTES=str(budget), PACK="0", ITERATIONS="2",
                    MAX_EVAL_TOKENS="1024")
    assert proc.returncode != 0
    assert "rank 0 failed in quantize" in proc.stderr
    assert proc.stderr.count("error: ") == 2          # one line per rank, the same cause
    assert "terminate called" not in proc.stderr
    assert f"{os.sep}golf{os.sep}" not in proc.stderr  # no traceback through our code


def test_rank0_timeout_setting_is_checked(monkeypatch):
    from golf.run.distributed import rank0_timeout_s
    monkeypatch.setenv("GOLF_RANK0_TIMEOUT_SECONDS", "abc")
    with pytest.raises(ValueError, match="GOLF_RANK0_TIMEOUT_SECONDS='abc'"):
        rank0_timeout_s()
    monkeypatch.setenv("GOLF_RANK0_TIMEOUT_SECONDS", "0")
    with pytest.raises(ValueError, match="positive"):
        rank0_timeout_s()
    monkeypatch.setenv("GOLF_RANK0_TIMEOUT_SECONDS", "90")
    assert rank0_timeout_s() == 90.0
