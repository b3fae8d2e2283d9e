"""The eval-time check counts the whole scored evaluation (deserialize, n-gram hints, scoring or
TTT) as measured, scales it to 8xH100 by the one stated rule or says N/A; pack.py --score reads
the score from a TTT + tilt record, refuses a partial one, and submission.json / the README say
the TTT and tilt settings that produced it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import untrained_run
from golf.run.errors import PackError
from golf.submission import checks as C
from golf.submission.evaltime import (ESTIMATE_RULE, HOST, eval_cost, eval_seconds,
                                      format_eval_cost)
from golf.submission.run import headline

TTT_PART = "TTT (score-first: scores as it adapts)"


def _record(ttt_s: float = 450.0, hint_s: float = 80.0, deser_s: float = 25.0,
            hardware: str = "8xNVIDIA H100 80GB HBM3", tilt: bool = True, ttt: bool = True) -> dict:
    """A synthetic eval record as golf.eval.score.run_eval writes it (TTT + tilt on the artifact)."""
    knobs = {"NGRAM_TILT_ENABLED": True, "TOKEN_ORDER": 16, "TOKEN_THRESHOLD": 0.8, "TOKEN_BOOST": 2.625}
    ev = {"pre": {"val_bpb": 1.10, "seconds": 40.0}, "mode": "chunked", "stride": 0,
          "post": {"val_bpb": 1.12, "val_loss": 1.9, "seconds": 40.0},
          "deserialize_seconds": deser_s, "hardware": hardware}
    if tilt:
        ev["post_tilt"] = {"val_bpb": 1.11, "val_loss": 1.88, "seconds": 41.0, "weights": "post",
                           "tilt": knobs, "gated": 7, "hint_seconds": hint_s}
    if ttt:
        ev["post_ttt"] = {"val_bpb": 1.09, "val_loss": 1.85, "seconds": ttt_s, "weights": "post",
                          "ttt": "lora", "score_first": True, "tilt": knobs if tilt else None,
                          "env": {"TTT": "lora", "TTT_LORA_RANK": 80}}
    return ev


def _check(ev: dict, ratio: float | None = None) -> tuple[C.Check, float | None]:
    return C.check_eval_time(eval_cost(ev), 1, ratio)


def test_counts_deserialize_hints_and_ttt_not_the_diagnostic_passes():
    cost = eval_cost(_record())
    counted = {p.name: p.seconds for p in cost.counted}
    assert counted == {"deserialize artifact": 25.0, "n-gram hint precompute": 80.0, TTT_PART: 450.0}
    listed = {p.name for p in cost.parts if not p.counted}
    assert listed == {"post-quant scoring", "post-quant scoring + tilt"}
    assert cost.measured == eval_seconds(_record()) == 555.0
    # tilt without TTT: the tilted pass is the score and the hints count; no tilt: no hint part
    assert {p.name for p in eval_cost(_record(ttt=False)).counted} == {
        "deserialize artifact", "n-gram hint precompute", "post-quant scoring + tilt"}
    assert eval_cost(_record(tilt=False, ttt=False)).measured == 25.0 + 40.0


def test_pass_on_8xh100_and_fail_when_the_parts_add_up_over_600_s():
    c, est = _check(_record())
    assert c.status == "PASS" and est == 555.0 and "n-gram hint precompute 80.0 s" in c.detail
    # TTT alone (500 s) is under the limit; with the hints and deserialization it is not
    c, est = _check(_record(ttt_s=500.0))
    assert c.status == "FAIL" and est == 605.0


def test_a_ratio_in_the_environment_never_rescales_an_8xh100_measurement(monkeypatch):
    monkeypatch.setenv("GOLF_EVAL_SPEED_RATIO", "100")
    assert _check(_record(ttt_s=500.0))[0].status == "FAIL"            # 605 s as measured
    c, est = _check(_record(ttt_s=4000.0, hardware="1xNVIDIA H100 80GB HBM3"))
    assert c.status == "WARN" and est == pytest.approx(25.0 + 80.0 + 40.0)  # the env's R = 100


def test_one_gpu_scales_device_parts_only():
    # 25 + 80 as measured (every rank does them whole on its CPU) + 4000 / 8 = 605 > 600
    c, est = _check(_record(ttt_s=4000.0, hardware="1xNVIDIA H100 80GB HBM3"))
    assert c.status == "FAIL" and est == pytest.approx(605.0) and "ESTIMATE" in c.detail
    c, est = _check(_record(ttt_s=3000.0, hardware="1xNVIDIA H200"))
    assert c.status == "WARN" and est == pytest.approx(480.0)   # under: only an estimate
    assert {p.where for p in eval_cost(_record()).counted if "TTT" not in p.name} == {HOST}


def test_cpu_is_not_applicable_unless_a_ratio_is_given():
    c, est = _check(_record(ttt_s=30.0, hardware="1xCPU"))
    assert c.status == "N/A" and est is None
    assert "GOLF_EVAL_SPEED_RATIO" in c.detail and "555" not in c.detail and "135.0 s measured" in c.detail
    assert "n/a" in C.format_checks([c])
    c, est = _check(_record(ttt_s=30.0, hardware="1xCPU"), ratio=0.01)   # CPU 100x slower
    assert c.status == "FAIL" and est == pytest.approx(25.0 + 80.0 + 3000.0)
    table = format_eval_cost(eval_cost(_record(hardware="1xCPU")))
    assert "N/A" in table and "diagnostic, not counted" in table and "deserialize artifact" in table


def test_a_record_without_deserialize_seconds_warns():
    ev = _record()
    del ev["deserialize_seconds"]
    c, est = _check(ev)
    assert c.status == "WARN" and est is None and "deserialize artifact" in c.detail
    assert "host parts as measured" in ESTIMATE_RULE and "N/A" in ESTIMATE_RULE


def test_headline_is_the_tilted_score_when_one_ran():
    assert headline(_record())[1] == "ttt(lora, score-first)+ngram_tilt+roundtrip"
    assert headline(_record(ttt=False)) == (_record()["post_tilt"], "ngram_tilt+roundtrip")
    pre_only = {**_record(ttt=False), "post_tilt": {**_record()["post_tilt"], "weights": "pre"}}
    assert headline(pre_only)[1] == "roundtrip"


def _run(tmp_path: Path, ev: dict, seed: int = 1):
    from golf.submission import RunInfo
    d = tmp_path / f"r{seed}"
    d.mkdir(exist_ok=True)
    (d / "final_model.gkq").write_bytes(b"x" * 100)
    return RunInfo(d, {"seed": seed}, ev, {}, None, seed, "1xCPU", 1000.0, 10, "eval.x.json")


def test_a_tilted_score_is_named_and_seeds_must_share_the_settings(tmp_path):
    from golf.submission import Claim, build_submission_json
    from golf.submission.budget import BudgetTable
    table = BudgetTable(50, 100, 150, 16_000_000, 15_999_850)
    c = C.check_post_ttt(_run(tmp_path, _record(ttt=False)))
    assert (c.name, c.status) == ("tilted score", "WARN") and "eval.x.json" in c.detail
    a, b = _record(), _record()
    sub = build_submission_json([_run(tmp_path, a, 1), _run(tmp_path, b, 2)], table,
                                Claim("n", "g", "b"))
    assert sub["eval_env"]["TOKEN_ORDER"] == 16 and sub["compliance"]["ngram_tilt_token_only"] is True
    b["post_ttt"]["tilt"] = {**b["post_ttt"]["tilt"], "TOKEN_ORDER": 8}
    with pytest.raises(PackError, match="different TTT/tilt settings"):
        build_submission_json([_run(tmp_path, a, 3), _run(tmp_path, b, 4)], table,
                              Claim("n", "g", "b"))


def test_training_under_600s_counts_the_calibration_after_the_loop(tmp_path):
    """The rule bounds every read of training data: a loop that stops at 590 s and a Hessian
    pass on training batches ending at 608 s is not training under 600 s."""
    from dataclasses import replace
    from golf.submission import Claim, build_submission_json
    from golf.submission.budget import BudgetTable
    table = BudgetTable(50, 100, 150, 16_000_000, 15_999_850)
    def flag(train_ms: float, calib_ms: float | None) -> bool:
        hess = None if calib_ms is None else {"elapsed_ms": calib_ms, "train_budget_ms": 3_600_000}
        run = replace(_run(tmp_path, _record(ttt=False)), train_time_ms=train_ms, hessians=hess)
        sub = build_submission_json([run], table, Claim("n", "g", "b"))
        return sub["compliance"]["training_under_600s"]
    assert flag(590_000, None) and flag(590_000, 599_000)
    assert not flag(590_000, 608_480) and not flag(601_000, None)


# ----------------------------------------------------------------------------- a real pack
@pytest.fixture()
def small_run(tmp_path, embedded_data):
    """A tiny untrained run over a short val split (1,200 targets), so a TTT + tilt record
    covers the whole split (a partial one cannot be the score)."""
    from golf.run.config import Config
    from golf.data.shards import read_shard, write_shard
    from golf.eval.score import run_eval
    data = tmp_path / "data"
    shutil.copytree(embedded_data.dataset_dir, data)
    val = data / "fineweb_val_000000.bin"
    write_shard(val, read_shard(val)[:1201])
    cfg = Config.from_env({"PRESET": "cpu"}, cpu_preset=True).replace(
        data_path=str(data), tokenizer_path=str(embedded_data.tokenizer_path), num_layers=2,
        model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=2.0, train_seq_len=64, eval_seq_len=64,
        eval_stride=0, val_batch_size=4096, max_eval_tokens=0, compile=False)
    run = tmp_path / "run"
    untrained_run(run, cfg)
    (run / "train.log").write_text("hardware: 1xCPU\n")
    run_eval(run, log=None)                       # the official eval.json
    return run


def _ttt_tilt_eval(run: Path, max_tokens: int | None = None):
    from golf.eval.destination import evaluate_run_dir
    from golf.eval.score import EvalRequest
    from golf.eval.tilt import TiltSettings
    from golf.eval.ttt import TTTSettings
    ttt = TTTSettings(mode="lora", lora_rank=4, batch_size=4, chunk_size=16,
                      phased_ttt_num_phases=1, phased_ttt_prefix_docs=2,
                      global_ttt_chunk_tokens=256).validated()
    tilt = TiltSettings(enabled=True, order=3, threshold=0.5, boost=1.5)
    return evaluate_run_dir(run, lambda _m: None,
                            request=EvalRequest(max_tokens=max_tokens, ttt=ttt, tilt=tilt))


@pytest.mark.slow
def test_pack_scores_ttt_and_tilt_from_the_named_record(small_run, tmp_path, one_thread, capsys):
    from golf.submission import Claim, PackRequest, pack_run
    rep, path = _ttt_tilt_eval(small_run)
    assert path.parent == small_run and path.name != "eval.json" and not rep["partial"]
    lines: list[str] = []
    res = pack_run(small_run, tmp_path / "sub",
                   PackRequest(claim=Claim(name="t", github_id="t", blurb="b"), score=path.name,
                               compress=False),
                   log=lines.append)
    # the packed script carries TTT and the tilt (golf.ship) and re-ran them bit for bit
    assert res.roundtrip.exact and res.roundtrip.val_bpb == rep["post_ttt"]["val_bpb"]
    shipped = (res.out_dir / "train_gpt.py").read_text()
    assert "_SOURCES['golf.eval.ttt']" in shipped and "_SOURCES['golf.eval.tilt']" in shipped
    assert "_SOURCES['golf.submission']" not in shipped
    sub = json.loads((res.out_dir / "submission.json").read_text())
    assert sub["eval_record"] == path.name and sub["val_bpb"] == rep["post_ttt"]["val_bpb"]
    assert sub["eval_method"].startswith("ttt(lora, score-first)+ngram_tilt+")
    env = sub["ttt"]["env"]
    assert (env["TTT"], env["TTT_ON"], env["TTT_LORA_RANK"], env["TTT_BATCH_SIZE"],
            env["PHASED_TTT_NUM_PHASES"], env["GLOBAL_TTT_CHUNK_TOKENS"]) == ("lora", "post", 4, 4, 1, 256)
    assert sub["tilt"]["env"] == {"NGRAM_TILT_ENABLED": True, "TOKEN_ORDER": 3,
                                  "TOKEN_THRESHOLD": 0.5, "TOKEN_BOOST": 1.5}
    assert sub["tilt"]["gated"] == rep["post_tilt"]["gated"]
    assert sub["eval_env"] == {**env, **sub["tilt"]["env"]}
    seed = sub["seed_results"][str(sub["seeds"][0])]
    assert seed["eval_time_parts"] == {"deserialize artifact": rep["deserialize_seconds"],
                                       "n-gram hint precompute": rep["post_tilt"]["hint_seconds"],
                                       TTT_PART: rep["post_ttt"]["seconds"]}
    assert seed["eval_time_s"] == pytest.approx(sum(seed["eval_time_parts"].values()))
    assert sub["checks"][f"eval <= 600 s (seed {sub['seeds'][0]})"] == "N/A"   # measured on a CPU
    assert sub["compliance"]["eval_under_600s"] is None
    assert sub["checks"]["post-TTT score"] == "PASS" and sub["compliance"]["ngram_tilt_token_only"]
    assert sub["compliance"]["roundtrip_exact"] is True
    readme = (res.out_dir / "README.md").read_text()
    assert "TTT=lora" in readme and "TTT_LORA_RANK=4" in readme and "NGRAM_TILT_ENABLED=1" in readme
    assert "TOKEN_ORDER=3" in readme and "n-gram hint precompute" in readme and path.name in readme
    assert any("n-gram hint precompute" in line for line in lines)     # pack's printed table
    import pack
    capsys.readouterr()
    assert pack.main(["--budget-only", str(small_run), "--score", path.name]) == 0
    out = capsys.readouterr().out
    assert f"eval time, {path.name}" in out and "n-gram hint precompute" in out and "N/A" in out


def test_score_record_must_be_full_and_beside_eval_json(small_run, tmp_path, one_thread):
    from golf.submission import load_run
    rep, path = _ttt_tilt_eval(small_run, max_tokens=600)
    assert rep["partial"]
    with pytest.raises(PackError, match="partial"):
        load_run(small_run, path.name)
    with pytest.raises(PackError, match="not found"):
        load_run(small_run, "eval.nothing.json")
    elsewhere = tmp_path / "eval.x.json"
    elsewhere.write_text((small_run / "eval.json").read_text())
    with pytest.raises(PackError, match="not in the run directory"):
        load_run(small_run, str(elsewhere))
    assert load_run(small_run).eval_file == "eval.json"
