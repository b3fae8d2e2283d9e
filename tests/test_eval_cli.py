"""eval_bpb.py: run-dir evaluation, --compare divergence alarm, sensitivity, bad-input messages."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import eval_bpb
from golf.eval.compare import divergence_box, find_divergences
from golf.eval.score import EvalRequest
from golf.eval.sensitivity import run_sensitivity, tensor_class
from quant.policy import CLASSES
from conftest import untrained_run  # noqa: E402


# ----------------------------------------------------------------------------- pure parts
def test_divergence_on_the_reference_example():
    """XSA-gate 1.1932 -> 1.1961 after int8+zlib while the plain stack 1.1946 went the other way."""
    rows = [{"run": "xsa_gate", "pre": 1.1932, "post": 1.1961},
            {"run": "plain", "pre": 1.1946, "post": 1.1950}]
    warns = find_divergences(rows, 0.005)
    assert len(warns) == 1 and "xsa_gate" in warns[0] and "plain" in warns[0]
    assert "ordering flips" in warns[0]
    box = divergence_box(warns)
    assert "!!! DIVERGENCE" in box and box.splitlines()[0] == "!" * len(box.splitlines()[0])


def test_no_divergence_when_orderings_agree_and_gaps_are_small():
    rows = [{"run": "a", "pre": 1.20, "post": 1.203}, {"run": "b", "pre": 1.21, "post": 1.214},
            {"run": "c", "pre": 1.25, "post": 1.2549}]
    assert find_divergences(rows, 0.005) == []


def test_large_gap_alone_is_a_divergence():
    rows = [{"run": "a", "pre": 1.20, "post": 1.2100}, {"run": "b", "pre": 1.30, "post": 1.301}]
    warns = find_divergences(rows, 0.005)
    assert len(warns) == 1 and warns[0].startswith("a:") and "+0.0100" in warns[0]
    assert find_divergences(rows, 0.02) == []


def test_sensitivity_classes_are_the_quantizers_classes():
    names = ["tok_emb.weight", "lm_head.weight", "blocks.0.attn.c_q.weight",
             "blocks.3.attn.proj.weight", "blocks.0.mlp.fc.weight", "blocks.1.mlp.proj.weight",
             "blocks.0.attn_scale", "skip_weights", "final_norm.weight"]
    c = {n: tensor_class(n) for n in names}
    assert c["tok_emb.weight"] == c["lm_head.weight"] == "embedding"
    assert c["blocks.0.attn.c_q.weight"] == c["blocks.3.attn.proj.weight"] == "attention"
    assert c["blocks.0.mlp.fc.weight"] == c["blocks.1.mlp.proj.weight"] == "mlp"
    assert c["skip_weights"] == c["final_norm.weight"] == "other"
    assert set(c.values()) <= set(CLASSES)


def _fake_run(root: Path, name: str, pre: float, post: float) -> Path:
    d = root / name
    d.mkdir()
    (d / "eval.json").write_text(json.dumps({"pre": {"val_bpb": pre}, "post": {"val_bpb": post},
                                             "gap": post - pre, "mode": "chunked", "partial": False}))
    return d


def test_compare_cli_warns_and_strict_fails(tmp_path, capsys):
    a = _fake_run(tmp_path, "xsa_gate", 1.1932, 1.1961)
    b = _fake_run(tmp_path, "plain", 1.1946, 1.1950)
    assert eval_bpb.main(["--compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "!!! DIVERGENCE" in out and "xsa_gate" in out
    assert eval_bpb.main(["--compare", str(a), str(b), "--strict"]) != 0
    capsys.readouterr()
    c = _fake_run(tmp_path, "c", 1.2000, 1.2010)
    assert eval_bpb.main(["--compare", str(b), str(c), "--strict"]) == 0
    assert "DIVERGENCE" not in capsys.readouterr().out


def test_compare_missing_eval_json_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    with pytest.raises(SystemExit) as ei:
        eval_bpb.main(["--compare", str(tmp_path / "r")])
    assert ei.value.code != 0
    err = capsys.readouterr().err
    assert "eval.json" in err and "--evaluate" in err and "Traceback" not in err


def test_missing_run_dir_files_message_without_traceback(tmp_path):
    empty = tmp_path / "run"
    empty.mkdir()
    p = subprocess.run([sys.executable, "eval_bpb.py", str(empty)], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1])
    assert p.returncode != 0
    assert "config.json" in p.stderr and "Traceback" not in p.stderr


def test_run_dir_without_weights_names_the_missing_file(run_dir, tmp_path, capsys):
    _, cfg = run_dir
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    assert "ema.pt" in _cli_error(capsys, str(tmp_path))


# ----------------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, shared_data, official_tokenizer):
    """A run directory with a random tiny GPT (ema.pt) and its int8 artifact, over a val shard
    of FineWeb docs tokenized with the official tokenizer."""
    from golf.data import shards
    import sentencepiece as spm
    from golf.run.config import Config

    root = tmp_path_factory.mktemp("evalrun")
    sp = spm.SentencePieceProcessor(model_file=str(official_tokenizer))
    ids: list[int] = []
    with open(shared_data / "corpora" / "fineweb_pgolf_docs200" / "verify_docs.jsonl") as fh:
        for i, line in enumerate(fh):
            if i >= 12:
                break
            ids += [sp.bos_id()] + sp.encode(json.loads(line)["text"])
    data = root / "data"
    data.mkdir()
    shards.write_shard(data / "fineweb_val_000000.bin", np.asarray(ids[:6000], dtype=np.uint16))
    cfg = Config.from_env({"PRESET": "cpu"}, cpu_preset=True).replace(
        data_path=str(data), tokenizer_path=str(official_tokenizer), num_layers=2, model_dim=64,
        num_heads=4, num_kv_heads=2, mlp_mult=2.0, train_seq_len=64, eval_seq_len=64,
        eval_stride=16, val_batch_size=4096, max_eval_tokens=0, compile=False)
    run = root / "run"
    untrained_run(run, cfg)
    return run, cfg


def _plain_chunked_bpb(cfg, state_dict, n: int) -> float:
    """bpb of the first n targets of the run's val shard, computed without the scorer."""
    import math
    import sentencepiece as spm
    from golf.model.gpt import GPT
    val = np.fromfile(next(Path(cfg.data_path).glob("fineweb_val_*.bin")), dtype="<u2", offset=1024)
    toks = torch.as_tensor(val[:n + 1].astype(np.int64))
    model = GPT(cfg)
    model.load_state_dict(state_dict)
    model.eval()
    nll = 0.0
    with torch.no_grad():
        for a in range(0, n, cfg.eval_seq_len):
            b = min(a + cfg.eval_seq_len, n)
            logits = model(toks[a:b][None]).float()[0]
            nll += float(torch.nn.functional.cross_entropy(logits, toks[a + 1:b + 1], reduction="sum"))
    sp = spm.SentencePieceProcessor(model_file=cfg.tokenizer_path)
    ids = val[:n + 1].tolist()
    cuts = [i for i, t in enumerate(ids) if t == sp.bos_id()] + [len(ids)]
    assert cuts[0] == 0
    n_bytes = sum(len(sp.decode(ids[a + 1:b]).encode("utf-8")) for a, b in zip(cuts, cuts[1:]))
    return nll / math.log(2) / n_bytes


def test_run_eval_writes_consistent_eval_json(run_dir):
    from golf.eval.score import EvalRequest, run_eval
    run, cfg = run_dir
    lines: list[str] = []
    rep = run_eval(run, EvalRequest(mode="both", max_tokens=3000), log=lines.append)
    on_disk = json.loads((run / "eval.json").read_text())
    assert on_disk == json.loads(json.dumps(rep))
    # chunked pre/post/gap against a score computed here: one plain forward per 64-token window
    # of the checkpoint and of the dequantized artifact, bytes from the decoded documents
    import quant
    pre = _plain_chunked_bpb(cfg, torch.load(run / "ema.pt", weights_only=True)["state_dict"], 3000)
    post = _plain_chunked_bpb(cfg, quant.load_artifact(run / "final_model.gkq")[0], 3000)
    ch = rep["modes"]["chunked"]
    assert ch["pre"]["val_bpb"] == pytest.approx(pre, rel=1e-5)
    assert ch["post"]["val_bpb"] == pytest.approx(post, rel=1e-5)
    assert ch["gap"] == pytest.approx(post - pre, abs=1e-5)
    assert rep["gap"] == rep["modes"]["sliding"]["gap"]  # the headline is the sliding mode
    assert rep["mode"] == "sliding" and rep["stride"] == 16 and rep["partial"] is True
    assert set(rep["modes"]) == {"chunked", "sliding"}
    for m in rep["modes"].values():
        assert m["pre"]["tokens"] == m["post"]["tokens"] == 3000        # same tokens, pre and post
        assert m["pre"]["bytes"] == m["post"]["bytes"] == rep["decoded_bytes"]
        assert m["pre"]["partial"] and m["post"]["partial"]
    assert len(rep["artifact_sha256"]) == 64
    assert any("byte_check" in s and "decoded_utf8_bytes" in s for s in lines)
    assert any("(partial)" in s for s in lines)


def test_evaluate_source_is_deterministic_and_full_by_default(run_dir):
    from golf.eval.score import evaluate_source
    run, cfg = run_dir
    asked = EvalRequest(data=cfg.data_path, tokenizer=cfg.tokenizer_path, seq_len=64, stride=0,
                        max_tokens=None, batch_tokens=2048, device="cpu")
    a = evaluate_source(run / "final_model.gkq", asked)
    b = evaluate_source(run / "final_model.gkq", asked)
    assert a.val_bpb == b.val_bpb and a.tokens == 5999 and not a.partial


def test_sensitivity_by_class_writes_sorted_json_and_png(run_dir):
    run, _ = run_dir
    rep = run_sensitivity(str(run), EvalRequest(max_tokens=1024), by="class", log=lambda s: None)
    deltas = [r["delta_bpb"] for r in rep["rows"]]
    assert deltas == sorted(deltas, reverse=True) and rep["rows"]
    assert {r["name"] for r in rep["rows"]} <= set(CLASSES)
    assert json.loads((run / "sensitivity.json").read_text())["rows"] == rep["rows"]
    assert (run / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sensitivity_scores_the_windows_eval_json_reports(run_dir, tmp_path, shared_data,
                                                        official_tokenizer):
    """A DOC_ATTENTION model's sensitivity base is eval.json's pre for the same chunked windows
    (one document per window), and scoring across BOS gives another number."""
    from dataclasses import replace
    from golf.data import shards
    from golf.eval.score import run_eval
    import sentencepiece as spm
    run, cfg = run_dir
    sp = spm.SentencePieceProcessor(model_file=str(official_tokenizer))
    ids: list[int] = []
    with open(shared_data / "corpora" / "fineweb_pgolf_docs200" / "verify_docs.jsonl") as fh:
        for _i, line in zip(range(6), fh):    # six documents of 100 tokens: BOS every 100
            ids += [sp.bos_id()] + sp.encode(json.loads(line)["text"])[:99]
    data = tmp_path / "data"
    data.mkdir()
    shards.write_shard(data / "fineweb_val_000000.bin", np.asarray(ids, dtype=np.uint16))
    doc = tmp_path / "doc"
    untrained_run(doc, cfg.replace(doc_attention=True, data_path=str(data)), noise=0.05)
    asked = EvalRequest(stride=0)
    rep = run_sensitivity(str(doc), asked, by="class", log=lambda s: None)
    ev = run_eval(str(doc), asked, out=tmp_path / "eval.json", log=None)
    assert rep["doc_windows"] and ev["doc_windows"]
    assert rep["base_val_bpb"] == ev["pre"]["val_bpb"]
    across = run_sensitivity(str(doc), replace(asked, doc_windows=False), by="class",
                             out_dir=str(tmp_path / "across"), log=lambda s: None)
    assert not across["doc_windows"] and across["base_val_bpb"] != rep["base_val_bpb"]


def _cli_error(capsys, *args: str) -> str:
    """Run the CLI in-process; it must exit non-zero with one message and no traceback."""
    with pytest.raises(SystemExit) as ei:
        eval_bpb.main(list(args))
    assert ei.value.code not in (0, None)
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_artifact_from_another_config_lists_differing_keys(run_dir, tmp_path, capsys):
    run, cfg = run_dir
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps(cfg.replace(num_layers=3, model_dim=96).to_dict()))
    err = _cli_error(capsys, str(other), "--checkpoint", str(run / "ema.pt"),
                     "--artifact", str(run / "final_model.gkq"), "--max-tokens", "256")
    assert "num_layers" in err and "model_dim" in err and "ema.pt" in err
    from golf.eval.score import EvalError, load_eval_model
    with pytest.raises(EvalError, match="num_layers") as ei:
        load_eval_model(run / "final_model.gkq", cfg_override=cfg.replace(num_layers=3))
    assert "final_model.gkq" in str(ei.value)


def test_tokenizer_vocab_mismatch(run_dir, shared_data, capsys):
    run, _ = run_dir
    wrong = shared_data / "tokenizers" / "community_lab_variants" / "fineweb_2048_bpe.model"
    if not wrong.is_file():
        pytest.skip("no second-vocab tokenizer in shared data")
    err = _cli_error(capsys, str(run), "--tokenizer", str(wrong), "--max-tokens", "256")
    assert "fineweb_2048_bpe.model" in err


def test_missing_val_shards(run_dir, tmp_path, capsys):
    run, _ = run_dir
    empty = tmp_path / "nodata"
    empty.mkdir()
    err = _cli_error(capsys, str(run), "--data", str(empty), "--max-tokens", "256")
    assert "nodata" in err
