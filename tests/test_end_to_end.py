"""The main job at tiny scale, through the same code path as `python train_gpt.py`:
train -> calibrate -> quantize (budget fitter) -> evaluate pre/post -> pack (+ round trip)."""
from __future__ import annotations

import json

import pytest


@pytest.fixture()
def e2e(packed_tiny_run):
    """The session's tiny packed run (conftest.packed_tiny_run), shared with tests/test_audit_golfkit.py."""
    return packed_tiny_run


def _independent_bpb(cfg, state_dict) -> float:
    """val_bpb recomputed here without the scorer: the first MAX_EVAL_TOKENS targets in
    non-overlapping windows of EVAL_SEQ_LEN, float32 cross-entropy of one plain forward, and
    bytes as the UTF-8 length of each document's decoded text (documents start at BOS)."""
    import math
    from pathlib import Path
    import numpy as np
    import sentencepiece as spm
    import torch
    from golf.model.gpt import GPT
    n, T = cfg.max_eval_tokens, cfg.eval_seq_len
    val = np.concatenate([np.fromfile(p, dtype="<u2", offset=256 * 4)
                          for p in sorted(Path(cfg.data_path).glob("fineweb_val_*.bin"))])
    toks = torch.as_tensor(val[:n + 1].astype(np.int64))
    model = GPT(cfg)
    model.load_state_dict(state_dict)
    model.eval()
    with torch.no_grad():
        logits = model(toks[:-1].view(-1, T)).float()
        nll = float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                      toks[1:], reduction="sum"))
    sp = spm.SentencePieceProcessor(model_file=cfg.tokenizer_path)
    ids = val[:n + 1].tolist()
    assert ids[0] == sp.bos_id()
    cuts = [i for i, t in enumerate(ids) if t == sp.bos_id()] + [len(ids)]
    n_bytes = sum(len(sp.decode(ids[a + 1:b]).encode("utf-8")) for a, b in zip(cuts, cuts[1:]))
    return nll / math.log(2) / n_bytes


def test_summary_numbers_match_an_independent_score_and_the_files(e2e):
    """pre/post val_bpb re-scored here from ema.pt and the shipped artifact; the sizes from the
    shipped files; the headroom to the challenge's 16,000,000-byte cap."""
    import torch
    import quant
    from pathlib import Path
    cfg, s, tmp = e2e
    assert cfg.eval_stride == 0 and cfg.max_eval_tokens % cfg.eval_seq_len == 0
    run, sub = Path(s["run_dir"]), tmp / "submission"
    pre = _independent_bpb(cfg, torch.load(run / "ema.pt", weights_only=True)["state_dict"])
    post = _independent_bpb(cfg, quant.load_artifact(sub / "final_model.gkq")[0])
    assert s["pre_val_bpb"] == pytest.approx(pre, rel=1e-5)
    assert s["post_val_bpb"] == pytest.approx(post, rel=1e-5)
    assert s["gap"] == pytest.approx(post - pre, abs=1e-5)
    code, model = (sub / "train_gpt.py").stat().st_size, (sub / "final_model.gkq").stat().st_size
    assert (s["code_bytes"], s["model_bytes"], s["total_bytes"]) == (code, model, code + model)
    # the headroom is to the run's cap: the scaled CPU cap here, never above the challenge's
    assert cfg.budget_bytes < 16_000_000
    assert s["headroom_bytes"] == cfg.budget_bytes - code - model > 0
    assert set(s["phase_seconds"]) >= {"prepare", "train", "quantize", "evaluate", "pack"}


def test_bytes_match_the_files_that_ship(e2e):
    _, s, tmp = e2e
    sub = tmp / "submission"
    assert (sub / "train_gpt.py").stat().st_size == s["code_bytes"]
    assert (sub / "final_model.gkq").stat().st_size == s["model_bytes"]
    meta = json.loads((sub / "submission.json").read_text())
    assert meta["bytes_total"] == s["total_bytes"]
    assert meta["val_bpb"] == s["post_val_bpb"]          # round trip proved equal in pack
    assert meta["pre_quant_val_bpb"] == s["pre_val_bpb"]


def test_run_dir_has_plots_and_reports(e2e):
    _, s, tmp = e2e
    from pathlib import Path
    run = Path(s["run_dir"])
    for name in ("config.json", "train.log", "metrics.jsonl", "ema.pt", "hessians.pt",
                 "final_model.gkq", "quant_report.json", "eval.json", "summary.json"):
        assert (run / name).is_file(), name
    for png in ("loss.png", "quant_report.png"):
        data = (run / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", png


@pytest.mark.slow
def test_quant_only_refits_a_finished_run_to_a_new_budget(e2e, monkeypatch):
    """QUANT_ONLY=runs/ID with a smaller BUDGET_BYTES: no training, a smaller artifact under the
    new model budget, eval.json re-measured on the new artifact, the saved config kept."""
    from pathlib import Path
    from golf import main as golf_main
    from golf.submission import code_bytes
    _, s, _ = e2e
    run = Path(s["run_dir"])
    before = (run / "final_model.gkq").read_bytes()
    ema_mtime = (run / "ema.pt").stat().st_mtime_ns
    budget = code_bytes() + 2_000 + len(before) // 2
    monkeypatch.setenv("BUDGET_BYTES", str(budget))
    monkeypatch.setenv("PACK", "0")
    assert golf_main.quant_only(str(run)) == 0
    after = (run / "final_model.gkq").read_bytes()
    assert len(after) <= budget - code_bytes() - 2_000 < len(before)
    assert (run / "ema.pt").stat().st_mtime_ns == ema_mtime       # not retrained
    ev = json.loads((run / "eval.json").read_text())
    assert ev["pre"]["val_bpb"] == s["pre_val_bpb"]                # same weights, same tokens
    assert ev["post"]["val_bpb"] != s["post_val_bpb"]              # the new artifact was scored
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model_bytes"] == len(after) and summary["steps"] == s["steps"]
    # unpacked, the headroom is to the budget that was asked for, and says so
    assert summary["cap_bytes"] == budget
    assert summary["headroom_bytes"] == budget - summary["code_bytes"] - len(after)


@pytest.mark.slow
def test_quant_row_steps_reaches_the_fitter(e2e, monkeypatch, tmp_path):
    """The main job's default rows are flat (one step per tensor, 8-bit codes in every
    quantized tensor); QUANT_ROW_STEPS=sdclip refits (a copy of the run, at half its model
    bytes) with each row's own step, whose class bits (6 / 7) show where a step is not finer
    than the policy's."""
    import shutil
    from pathlib import Path
    from golf import main as golf_main
    from golf.submission import code_bytes
    _, s, _ = e2e
    run = shutil.copytree(Path(s["run_dir"]), tmp_path / "run")

    def bits() -> list[int]:
        rows = json.loads((run / "quant_report.json").read_text())["tensors"]
        return [r["bits"] for r in rows if r.get("kind") == "quant"]
    assert bits() and set(bits()) == {8}
    half = code_bytes() + 2_000 + (run / "final_model.gkq").stat().st_size // 2
    monkeypatch.setenv("BUDGET_BYTES", str(half))
    monkeypatch.setenv("PACK", "0")
    monkeypatch.setenv("QUANT_ROW_STEPS", "sdclip")
    assert golf_main.quant_only(str(run)) == 0
    assert bits() and min(bits()) < 8


def test_quant_only_on_a_folder_without_a_run_names_it(tmp_path):
    from golf import main as golf_main
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        golf_main.quant_only(str(tmp_path))


@pytest.mark.slow
def test_quant_sensitivity_weights_the_fit_and_guards_its_artifact(e2e, monkeypatch):
    """eval_bpb --sensitivity -> QUANT_SENSITIVITY: the refit uses the measured slopes (logged)
    and stays under budget; a sensitivity file whose artifact changed since is refused."""
    from pathlib import Path
    from golf.eval.score import EvalRequest
    from golf.eval.sensitivity import run_sensitivity
    from golf import main as golf_main
    from golf.submission import code_bytes
    _, s, _ = e2e
    run = Path(s["run_dir"])
    logs: list[str] = []
    budget = code_bytes() + 2_000 + (run / "final_model.gkq").stat().st_size  # quantized by now
    rep = run_sensitivity(str(run), EvalRequest(max_tokens=1024), split="train", log=logs.append)
    assert rep["split"] == "train" and rep["rows"]
    sens = run / "sensitivity.json"
    monkeypatch.setenv("BUDGET_BYTES", str(budget))
    monkeypatch.setenv("PACK", "0")
    monkeypatch.setenv("QUANT_SENSITIVITY", str(sens))
    assert golf_main.quant_only(str(run)) == 0
    log = (run / "train.log").read_text()
    assert f"quant:sensitivity {sens}" in log and "quant:loss_slopes measured:" in log
    assert "validation split" not in log    # measured on training data: no warning
    assert (run / "final_model.gkq").stat().st_size <= budget - code_bytes() - 2_000
    # the refit replaced the artifact the sensitivity was measured on: refuse to reuse it
    with pytest.raises(ValueError, match="has changed since"):
        golf_main.quant_only(str(run))


def test_quant_only_eval_settings_set_now_reach_the_evaluation(e2e, monkeypatch):
    """QUANT_ONLY promises that EVAL_STRIDE / MAX_EVAL_TOKENS / EVAL_SEQ_LEN set now override
    the saved config; they used to be dropped because run_eval re-read config.json."""
    from pathlib import Path
    from golf import main as golf_main
    from golf.run.config import Config
    _, s, _ = e2e
    run = Path(s["run_dir"])
    saved = Config.load(run / "config.json")
    seq = saved.train_seq_len // 2
    stride = seq // 4
    assert (saved.max_eval_tokens, saved.eval_stride) != (1000, stride)
    for k, v in {"MAX_EVAL_TOKENS": "1000", "EVAL_STRIDE": str(stride), "EVAL_SEQ_LEN": str(seq),
                 "PACK": "0"}.items():
        monkeypatch.setenv(k, v)
    assert golf_main.quant_only(str(run)) == 0
    ev = json.loads((run / "eval.json").read_text())
    assert ev["mode"] == "sliding" and ev["stride"] == stride and ev["seq_len"] == seq
    assert ev["post"]["tokens"] == ev["pre"]["tokens"] == 1000
    assert ev["modes"]["chunked"]["post"]["tokens"] == 1000
