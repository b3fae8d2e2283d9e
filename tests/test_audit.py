"""golf.audit on small synthetic record folders written by the tests (never third-party files).

A good folder passes every check; each failing test changes one thing and asserts the check
that must catch it, and the evidence it must name.
"""
from __future__ import annotations

import base64
import json
import lzma
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from golf.audit import CHECKS, Context, load_folder, run_checks
from golf.audit.__main__ import main
from golf.data.shards import write_shard

SEEDS = (42, 0, 314)
GOOD_BPB = (1.0561, 1.0568, 1.0565)
BYTES_PER_TOKEN_NATS = 2.1877   # val_loss / val_bpb of a CaseOps record, only to make losses
MODEL_BYTES = 15_000_000

SCRIPT = '''"""A tiny stand-in for a record's train_gpt.py (it is never run by the audit)."""
import base64
import lzma
import os

SEED = int(os.environ.get("SEED", "1337"))
SMEAR_GATE_BOS_FIX = int(os.environ.get("SMEAR_GATE_BOS_FIX", "1"))
MATRIX_LR = float(os.environ.get("MATRIX_LR", "0.028"))
TTT_ENABLED = int(os.environ.get("TTT_ENABLED", "1"))


def compressed_code_size(code):
    payload = base64.b85encode(lzma.compress(code.encode("utf-8")))
    stub = b'import lzma as L,base64 as B\\nexec(L.decompress(B.b85decode("' + payload + b'")))\\n'
    return len(stub)


def eval_ttt(model, chunks, opt):
    import torch
    total = 0.0
    for chunk in chunks:
        with torch.no_grad():
            total += float(model(chunk))
        model(chunk).backward()
        opt.step()
    return total
'''


def counted_size(script: str) -> int:
    """The wrapper size the script's recipe gives, computed here independently of the audit."""
    payload = base64.b85encode(lzma.compress(script.encode("utf-8")))
    return len(b'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("' + payload
               + b'")))\n')


def log_text(seed: int, bpb: float, script: str, *, header: dict | None = None,
             stop_ms: int = 590_000, hessian_s: float = 3.6, train_shards: int = 80,
             val_tokens: int = 47_851_520, counted: int | None = None, eval_ms: int = 500_000,
             raw: int | None = None, reserve_ms: int = 10_000, data_path: str = "./data/datasets/fineweb10B_sp8192") -> str:
    counted = counted_size(script) if counted is None else counted
    raw = len(script.encode()) if raw is None else raw
    head = {"seed": seed, "matrix_lr": 0.028, "smear_gate_bos_fix": 1, "ttt_enabled": True,
            "vocab_size": 8192, "run_id": f"run{seed}", "datasets_dir": data_path}
    head.update(header or {})
    loss = bpb * BYTES_PER_TOKEN_NATS
    return "\n".join([
        "Hyperparameters:", *[f"  {k}: {v}" for k, v in head.items() if v is not None],
        f"train_shards: {train_shards}", f"val_tokens: {val_tokens}",
        f"gptq:reserving {reserve_ms / 1000:.0f}s, effective={600_000 - reserve_ms}ms",
        "4000/20000 train_loss: 2.5144 train_time: 6.6m tok/s: 6904774",
        f"stopping_early: wallclock_cap train_time: {stop_ms}ms step: 5000/20000",
        f"diagnostic pre-quantization post-ema val_loss:2.3 val_bpb:1.06 eval_time:5000ms",
        f"Code size (uncompressed): {raw} bytes", f"Code size (compressed): {counted} bytes",
        "GPTQ:collecting Hessians from calibration data...",
        f"GPTQ:collected 67 Hessians in {hessian_s}s",
        f"Serialized model quantized+brotli: {MODEL_BYTES} bytes",
        f"Total submission size quantized+brotli: {MODEL_BYTES + counted} bytes",
        "diagnostic quantized val_loss:2.34 val_bpb:1.0695 eval_time:11962ms",
        "ttt_lora:warming up compile (random tokens, no val data)",
        "ttt_lora:compile warmup done (30.0s)", "", "beginning TTT eval timer",
        "ngram_tilt:precompute_done elapsed=20.00s total_targets=47851520",
        f"quantized_ttt_phased val_loss:{loss:.8f} val_bpb:{bpb:.8f} eval_time:{eval_ms}ms",
        f"total_eval_time:{eval_ms / 1000:.1f}s", ""])


README = """# A synthetic record

BOS-fixed SmearGate and score-first TTT.

```bash
SEED=42 SMEAR_GATE_BOS_FIX=1 MATRIX_LR=0.028 torchrun --standalone --nproc_per_node=8 train_gpt.py
```
"""


def make_folder(root: Path, *, script: str = SCRIPT, bpbs=GOOD_BPB, logs: dict | None = None,
                readme: str = README, **log_kw) -> Path:
    """A folder every check passes; `logs` maps a seed to log_text overrides for that seed."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "train_gpt.py").write_text(script)
    (root / "README.md").write_text(readme)
    for seed, bpb in zip(SEEDS, bpbs):
        kw = {**log_kw, **(logs or {}).get(seed, {})}
        (root / f"train_seed{seed}.log").write_text(log_text(seed, bpb, script, **kw))
    sub = {"author": "t", "name": "synthetic", "val_bpb": round(sum(bpbs) / len(bpbs), 8),
           "seeds": list(SEEDS), "bytes_total": MODEL_BYTES + counted_size(script)}
    (root / "submission.json").write_text(json.dumps(sub, indent=2))
    return root


def audit(root: Path, **kw) -> dict[str, tuple[str, list[str]]]:
    rows = run_checks(Context(load_folder(root), **kw))
    return {r.name: (r.verdict.status, r.verdict.evidence) for r in rows}


def status(result, name: str) -> str:
    return result[name][0]


def evidence(result, name: str) -> str:
    return "\n".join(result[name][1])


@pytest.fixture
def good(tmp_path) -> Path:
    return make_folder(tmp_path / "good")


def test_good_folder_has_no_fail_or_warn(good):
    result = audit(good)
    bad = {k: v for k, v in result.items() if v[0] in ("FAIL", "WARN")}
    assert bad == {}
    assert status(result, "size.code") == "PASS" and "difference +0" in evidence(result, "size.code")
    assert status(result, "stats.significance") == "N/A"
    assert set(result) == {c.name for c in CHECKS}


def test_model_size_over_cap_fails(tmp_path):
    result = audit(make_folder(tmp_path / "f", counted=1_200_000))
    assert status(result, "size.model") == "FAIL"
    assert "16,200,000 vs cap 16,000,000" in evidence(result, "size.model")


def test_recomputed_wrapper_size_differs_from_logged(tmp_path):
    true = counted_size(SCRIPT)
    result = audit(make_folder(tmp_path / "f", counted=true - 300))
    assert status(result, "size.code") == "FAIL"
    assert f"recomputed lzma+b85 wrapper = {true:,} bytes vs logged {true - 300:,}" \
        in evidence(result, "size.code")


def test_minified_recipe_is_not_recomputed_and_says_why(tmp_path):
    script = SCRIPT.replace("import os\n", "import os\nimport python_minifier\n").replace(
        'lzma.compress(code.encode("utf-8"))',
        'lzma.compress(python_minifier.minify(code).encode("utf-8"))')
    result = audit(make_folder(tmp_path / "f", script=script, counted=900))
    assert status(result, "size.code") == "N/A"
    assert "cannot run the minifier" in evidence(result, "size.code")
    assert f"gives {counted_size(script):,} (an upper bound)" in evidence(result, "size.code")


def test_self_extracting_wrapper_is_decoded_not_run(tmp_path):
    inner = SCRIPT
    blob = base64.b85encode(lzma.compress(inner.encode())).decode()
    wrapper = f'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("{blob}")))\n'
    root = make_folder(tmp_path / "f", script=wrapper, counted=len(wrapper), raw=len(inner))
    result = audit(root)
    assert status(result, "size.code") == "PASS" and "self-extracting" in evidence(result, "size.code")
    assert status(result, "identity.script") == "PASS"       # the logged raw size is the inner source
    assert status(result, "claims.unread_knobs") == "PASS"   # knobs read by the inner source count


def test_imported_helper_and_compiled_c_file_are_counted(tmp_path):
    script = SCRIPT.replace("import os\n", "import os\nimport ngram_helper\n")
    root = make_folder(tmp_path / "f", script=script)
    (root / "ngram_helper.py").write_text(
        'import subprocess\nSRC = "ngram_state.c"\n'
        'def build():\n    subprocess.run(["gcc", "-O2", "-shared", SRC, "-o", "x.so"])\n')
    (root / "ngram_state.c").write_text("int f(void) { return 1; }\n" * 40)
    (root / "prepare_data.py").write_text("print('not imported by the script')\n")
    result = audit(root)
    ev = evidence(result, "size.helpers")
    assert status(result, "size.helpers") == "WARN"
    assert "train_gpt.py:5: import ngram_helper.py" in ev
    assert "ngram_helper.py:2: named in a string ngram_state.c (1,040 bytes)" in ev
    assert "prepare_data.py" not in ev
    assert "runs a process" in evidence(result, "legality.eval_access")


def test_helpers_that_push_the_total_over_the_cap_fail(tmp_path):
    script = SCRIPT.replace("import os\n", "import os\nimport big_helper\n")
    root = make_folder(tmp_path / "f", script=script, counted=990_000)
    (root / "big_helper.py").write_text("X = 1\n" + "# padding\n" * 2_000)
    result = audit(root)
    assert status(result, "size.model") == "WARN"      # fits, by less than 10 KB, without helpers
    assert status(result, "size.helpers") == "FAIL"
    assert "= 16,010,006 vs cap 16,000,000" in evidence(result, "size.helpers")


def test_committed_script_differs_from_the_one_that_ran(tmp_path):
    result = audit(make_folder(tmp_path / "f", raw=len(SCRIPT) - 561))
    assert status(result, "identity.script") == "FAIL"
    assert f"logged code {len(SCRIPT) - 561:,} bytes vs committed train_gpt.py {len(SCRIPT):,}" \
        in evidence(result, "identity.script")


def test_logged_code_hash_against_the_committed_file(tmp_path):
    import hashlib
    root = make_folder(tmp_path / "f")
    good_hash = hashlib.sha256(SCRIPT.encode()).hexdigest()
    log = root / "train_seed0.log"
    log.write_text(log.read_text() + f"code_sha256: {good_hash}\n")
    assert status(audit(root), "identity.script") == "PASS"
    log.write_text(log.read_text() + f"code_sha256: {'0' * 64}\n")
    log.write_text(log.read_text().replace(good_hash, "0" * 64))
    result = audit(root)
    assert status(result, "identity.script") == "FAIL"
    assert f"logged hash {'0' * 64} vs committed sha256 {good_hash[:16]}" in \
        evidence(result, "identity.script")


def test_training_over_600s_fails(tmp_path):
    result = audit(make_folder(tmp_path / "f", logs={0: {"stop_ms": 601_153}}))
    assert status(result, "time.train") == "FAIL"
    assert "train_seed0.log:13: training stopped at 601.153 s" in evidence(result, "time.train")


def test_hessian_phase_ending_after_600s_fails(tmp_path):
    result = audit(make_folder(tmp_path / "f", stop_ms=599_500, hessian_s=6.9, reserve_ms=500))
    ev = evidence(result, "time.train_data_after_stop")
    assert status(result, "time.train_data_after_stop") == "FAIL"
    assert "phase of 6.90 s ends at >= 606.40 s" in ev and "611.40 s counting" in ev
    assert "reserve 0.500 s (printed as 0s)" in evidence(result, "time.train")


def test_hessian_inside_600s_only_without_the_eval_between_warns(tmp_path):
    result = audit(make_folder(tmp_path / "f", stop_ms=594_000, hessian_s=4.1))
    assert status(result, "time.train_data_after_stop") == "WARN"   # 598.1 alone, 603.1 with eval


def test_eval_over_600s_fails_and_excluded_phases_are_listed(tmp_path):
    result = audit(make_folder(tmp_path / "f", eval_ms=612_000))
    assert status(result, "time.eval") == "FAIL"
    result = audit(make_folder(tmp_path / "g", eval_ms=580_000))
    ev = evidence(result, "time.eval")
    assert status(result, "time.eval") == "WARN"   # 580 s + 12.0 diagnostic + 30.0 warm-up
    assert "42.0 s of phases logged outside it" in ev and "compile warmup done" in ev
    assert "precompute_done" in ev
    result = audit(make_folder(tmp_path / "h", header={"ngram_hint_precompute_outside": True}))
    assert status(result, "time.eval") == "WARN"
    assert "runs outside the eval timer" in evidence(result, "time.eval")


def test_fewer_than_three_seeds_fail(tmp_path):
    root = make_folder(tmp_path / "f")
    (root / "train_seed314.log").unlink()
    result = audit(root)
    assert status(result, "seeds.count") == "FAIL"
    assert "submission.json seeds [314] have no log" in evidence(result, "seeds.count")


def test_seed_log_with_a_changed_key_fails_and_names_it(tmp_path):
    result = audit(make_folder(tmp_path / "f", logs={314: {"header": {"matrix_lr": 0.03}}}))
    ev = evidence(result, "seeds.same_config")
    assert status(result, "seeds.same_config") == "FAIL"
    assert "train_seed314.log differs from train_seed0.log in 1 key(s): matrix_lr: '0.028' -> '0.03'" in ev


def test_leaky_train_shard_count_fails(tmp_path):
    result = audit(make_folder(tmp_path / "f", train_shards=1499,
                               data_path="./data/datasets/datasets/fineweb10B_sp8192"))
    assert status(result, "data.train_shards") == "FAIL"
    assert "train_shards 1499" in evidence(result, "data.train_shards")
    assert status(result, "data.doubled_path") == "WARN"


def test_non_canonical_val_tokens_and_low_coverage_fail(tmp_path):
    result = audit(make_folder(tmp_path / "f", val_tokens=9_662_464,
                               header={"datasets_dir": "./data/fineweb10B_sp8192_caseops"}))
    assert status(result, "data.val_tokens") == "FAIL"
    assert status(result, "coverage.targets") == "FAIL"
    assert "9,662,464 of 47,853,343 targets of the sp8192 CaseOps split" in \
        evidence(result, "coverage.targets")
    result = audit(make_folder(tmp_path / "c", val_tokens=41_000_000, header={"vocab_size": 998}))
    assert status(result, "data.val_tokens") == "WARN"          # a custom tokenizer: no canon
    result = audit(make_folder(tmp_path / "g", val_tokens=62_021_632, header={"vocab_size": 1024}))
    assert status(result, "data.val_tokens") == "PASS" and "sp1024" in evidence(result, "data.val_tokens")
    assert "62,021,632 of 62,021,845 targets of the sp1024 split" in \
        evidence(result, "coverage.targets")


def test_dropped_tail_is_reported_with_the_counts(good):
    result = audit(good)
    assert status(result, "coverage.targets") == "PASS"
    assert "47,851,520 of 47,853,343 targets of the sp8192 CaseOps split scored (1,823 dropped," \
        in evidence(result, "coverage.targets")


def _shards(folder: Path, val_docs, train_docs) -> Path:
    folder.mkdir()
    for name, docs in (("fineweb_val_000000.bin", val_docs), ("fineweb_train_000000.bin",
                                                               train_docs[:2]),
                       ("fineweb_train_000001.bin", train_docs[2:])):
        write_shard(folder / name, np.array([t for d in docs for t in [1, *d]], dtype=np.uint16))
    return folder


def test_train_val_document_overlap_with_data_dir(tmp_path, good):
    val = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    clean = _shards(tmp_path / "clean", val, [[20, 21], [22], [23, 24, 25], [26]])
    leaky = _shards(tmp_path / "leaky", val, [[20, 21], [8, 9], [23, 24, 25], [10, 11, 12, 13]])
    assert status(audit(good, data_dir=clean), "data.disjoint") == "PASS"
    result = audit(good, data_dir=leaky)
    assert status(result, "data.disjoint") == "FAIL"
    assert "3 distinct val documents, 2 of them also in train" in evidence(result, "data.disjoint")
    assert status(audit(good), "data.disjoint") == "N/A"
    many = [[100 + i, 7] for i in range(150)]            # 1 shared of 151: a duplicate, not a leak
    dup = _shards(tmp_path / "dup", many + [[8, 9]], [[20], [8, 9], [21, 22]])
    assert status(audit(good, data_dir=dup), "data.disjoint") == "WARN"


def test_claim_contradicted_by_the_launch_command(tmp_path):
    readme = README.replace("SMEAR_GATE_BOS_FIX=1", "SMEAR_GATE_BOS_FIX=0")
    result = audit(make_folder(tmp_path / "f", readme=readme,
                               header={"smear_gate_bos_fix": 0}))
    ev = evidence(result, "claims.phrases")
    assert status(result, "claims.phrases") == "FAIL"
    assert "README.md:3 says 'BOS-fix' (BOS-fixed SmearGate)" in ev
    assert "SMEAR_GATE_BOS_FIX=0 in the launch command (README.md:6)" in ev


def test_claim_contradicted_by_the_code_default(tmp_path):
    script = SCRIPT.replace('"SMEAR_GATE_BOS_FIX", "1"', '"SMEAR_GATE_BOS_FIX", "0"')
    readme = README.replace("SMEAR_GATE_BOS_FIX=1 ", "")
    result = audit(make_folder(tmp_path / "f", script=script, readme=readme,
                               header={"smear_gate_bos_fix": None}))
    assert status(result, "claims.phrases") == "FAIL"
    assert "SMEAR_GATE_BOS_FIX=0 in the code default (train_gpt.py:7)" in evidence(result, "claims.phrases")
    result = audit(make_folder(tmp_path / "g", script=script, readme=readme))   # header shows 1
    assert status(result, "claims.phrases") == "PASS"


def test_launch_knob_that_differs_from_the_log_header(tmp_path):
    readme = README.replace("MATRIX_LR=0.028", "MATRIX_LR=0.03")
    result = audit(make_folder(tmp_path / "f", readme=readme))
    assert status(result, "claims.launch_vs_header") == "FAIL"
    assert "README.md:6 sets MATRIX_LR=0.03 but train_seed0.log:3 ran with matrix_lr: 0.028" \
        in evidence(result, "claims.launch_vs_header")
    root = make_folder(tmp_path / "g", readme="# no command here\n")
    (root / "run.sh").write_text("#!/bin/bash\nexport MATRIX_LR=0.03 \\\n  TTT_ENABLED=1\n"
                                 "torchrun --nproc_per_node=8 train_gpt.py\n")
    assert "run.sh:4 sets MATRIX_LR=0.03" in evidence(audit(root), "claims.launch_vs_header")


def test_launch_knob_the_code_never_reads(tmp_path):
    readme = README.replace("MATRIX_LR=0.028", "MATRIX_LR=0.028 EVAL_STRIDE=64 NCCL_DEBUG=INFO "
                                               "WARMDOWN_FRAC=0.85")
    script = SCRIPT + "\n\nSETTINGS = dict(warmdown_frac=0.75)  # filled from WARMDOWN_FRAC by name\n"
    result = audit(make_folder(tmp_path / "f", readme=readme, script=script))
    assert status(result, "claims.unread_knobs") == "WARN"
    ev = evidence(result, "claims.unread_knobs").split("\n", 1)[1]
    assert "EVAL_STRIDE is set but no code file" in ev
    assert "NCCL_DEBUG" not in ev and "WARMDOWN_FRAC" not in ev


def test_defaults_reproduce_claim_against_launch_knobs(tmp_path):
    readme = README.replace("score-first TTT.", "score-first TTT. The defaults reproduce it.")
    readme = readme.replace("MATRIX_LR=0.028", "MATRIX_LR=0.03")
    result = audit(make_folder(tmp_path / "f", readme=readme, header={"matrix_lr": 0.03}))
    assert status(result, "claims.phrases") == "FAIL"
    assert "MATRIX_LR=0.03 (README.md:6; default 0.028)" in evidence(result, "claims.phrases")


def test_submission_val_bpb_not_the_mean_of_the_logs(tmp_path):
    root = make_folder(tmp_path / "f")
    sub = json.loads((root / "submission.json").read_text())
    sub["val_bpb"] = 1.0501
    (root / "submission.json").write_text(json.dumps(sub))
    assert status(audit(root), "claims.reported_numbers") == "FAIL"


def test_ttt_update_before_scoring_warns(tmp_path):
    script = SCRIPT.replace(
        "        with torch.no_grad():\n            total += float(model(chunk))\n"
        "        model(chunk).backward()\n",
        "        model(chunk).backward()\n        with torch.no_grad():\n"
        "            total += float(model(chunk))\n")
    result = audit(make_folder(tmp_path / "f", script=script))
    assert status(result, "legality.ttt_order") == "WARN"
    assert "update at line 22 comes before the first no_grad scoring block (line 23)" in \
        evidence(result, "legality.ttt_order")
    assert status(audit(make_folder(tmp_path / "g")), "legality.ttt_order") == "PASS"


def test_warmup_on_validation_tokens_and_network_import_warn(tmp_path):
    script = SCRIPT.replace("import os\n", "import os\nimport urllib.request\n") + (
        "\n\ndef ttt_warmup(model, val_tokens, opt):\n"
        "    model(val_tokens[:2048]).backward()\n    opt.step()\n")
    result = audit(make_folder(tmp_path / "f", script=script))
    assert status(result, "legality.val_in_calibration") == "WARN"
    assert "ttt_warmup() uses 'val_tokens'" in evidence(result, "legality.val_in_calibration")
    assert "imports urllib.request" in evidence(result, "legality.eval_access")


MARKER_SCRIPT = '''from pathlib import Path
import marker_helper
Path({marker!r}).write_text("train_gpt.py ran")
'''


class _WritesMarker:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('unpickled')",))


def test_audit_never_imports_runs_or_unpickles_the_folder(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    root = make_folder(tmp_path / "trap", script=MARKER_SCRIPT.format(marker=str(marker)))
    (root / "marker_helper.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('helper imported')\n")
    (root / "final_model.pt").write_bytes(pickle.dumps(_WritesMarker(str(marker))))
    (root / "final_model.int6.ptz").write_bytes(pickle.dumps(_WritesMarker(str(marker))))
    out = tmp_path / "audit.json"
    main([str(root), "--json", str(out)])
    assert not marker.exists()
    assert "size.helpers" in capsys.readouterr().out and out.exists()
    # the traps are real: running the script or unpickling the artifact does write the marker
    subprocess.run([sys.executable, "train_gpt.py"], cwd=root, check=True)
    assert marker.read_text() == "train_gpt.py ran"
    marker.unlink()
    pickle.loads((root / "final_model.pt").read_bytes())
    assert marker.read_text() == "unpickled"


def test_cli_exit_code_json_and_no_overwrite(tmp_path, good, capsys):
    bad = make_folder(tmp_path / "bad", train_shards=1499)
    out = tmp_path / "r.json"
    assert main([str(good), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["exit_code"] == 0 and report["folders"][0]["status"] == "PASS"
    assert {c["check"] for c in report["folders"][0]["checks"]} == {c.name for c in CHECKS}
    assert main([str(good), str(bad)]) == 1
    text = capsys.readouterr().out
    assert f"== {bad}: FAIL ==" in text and f"== {good}: PASS ==" in text
    before = out.read_text()
    with pytest.raises(SystemExit) as exc:
        main([str(good), "--json", str(out)])
    assert exc.value.code == 2 and out.read_text() == before
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "missing")])
    assert exc.value.code == 2 and "not a folder" in capsys.readouterr().err


def test_missing_required_files_fail_the_layout(tmp_path, good):
    assert status(audit(good), "folder.layout") == "PASS"
    root = make_folder(tmp_path / "f")
    (root / "submission.json").write_text("{not json")
    (root / "README.md").unlink()
    result = audit(root)
    assert status(result, "folder.layout") == "FAIL"
    assert "missing README.md" in evidence(result, "folder.layout")
    assert "submission.json:1: not valid JSON" in evidence(result, "folder.layout")


def test_a_broken_wrapper_payload_is_reported_not_raised(tmp_path):
    wrapper = 'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("not lzma data")))\n'
    result = audit(make_folder(tmp_path / "f", script=wrapper))
    assert status(result, "size.code") == "WARN"   # logged counted figure without a recipe
    assert "no compress+b85 recipe" in evidence(result, "size.code")


def test_docs_checks_table_is_the_checks_declaration():
    from golf.audit.checks import markdown_table
    docs = (Path(__file__).resolve().parents[1] / "docs" / "audit.md").read_text()
    assert markdown_table() in docs


def test_torch_pin_and_undeclared_program(tmp_path):
    script = SCRIPT.replace("import os\n", "import os\nimport subprocess\n") + (
        "\n\ndef unpack(path):\n    subprocess.run(['lrzip', '-d', path], check=True)\n")
    root = make_folder(tmp_path / "f", script=script)
    (root / "requirements.txt").write_text("brotli\ntorch==2.9.1\n")
    sub = json.loads((root / "submission.json").read_text())
    (root / "submission.json").write_text(json.dumps({**sub, "pytorch_version": "2.11.0+cu130"}))
    result = audit(root)
    ev = evidence(result, "claims.environment")
    assert status(result, "claims.environment") == "WARN"
    assert "pins torch==2.9.1; submission.json pytorch_version 2.11.0+cu130" in ev
    assert "runs `lrzip`: not named in README.md or requirements.txt" in ev
    (root / "requirements.txt").write_text("brotli\ntorch==2.11.0\n# needs the lrzip binary\n")
    assert status(audit(root), "claims.environment") == "PASS"


BROTLI_SCRIPT = '''import base64
import brotli


def code_size(code):
    blob = base64.b85encode(brotli.compress(code.encode("utf-8"), quality=11)).decode()
    return len(f'import brotli as B,base64 as b\\nexec(B.decompress(b.b85decode("{blob}")))\\n'.encode())
'''


def test_brotli_recipe_with_an_fstring_stub_is_recomputed(tmp_path):
    import brotli
    blob = base64.b85encode(brotli.compress(BROTLI_SCRIPT.encode(), quality=11)).decode()
    true = len(f'import brotli as B,base64 as b\nexec(B.decompress(b.b85decode("{blob}")))\n')
    result = audit(make_folder(tmp_path / "f", script=BROTLI_SCRIPT, counted=true))
    assert status(result, "size.code") == "PASS"
    assert f"recomputed brotli+b85 wrapper = {true:,} bytes vs logged {true:,}" in \
        evidence(result, "size.code")


def test_hostile_files_are_reported_not_raised_and_links_not_followed(tmp_path):
    root = make_folder(tmp_path / "f")
    (root / "broken.py").write_text("def f(:\n")                     # not Python
    (root / "train_seed7.log").write_bytes(b"\xff\xfe val_bpb \x00\x81" * 50)   # not UTF-8
    (root / "empty.txt").write_text("")
    (root / "nested" / "deep").mkdir(parents=True)
    (root / "nested" / "deep" / "x.c").write_bytes(bytes(range(256)))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text("X = 1\n")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "link.py").symlink_to(outside / "secret.py")
    folder = load_folder(root)
    assert not any("secret" in name for name in folder.files)
    result = audit(root)
    assert set(result) == {c.name for c in CHECKS}
    assert not any(ev.startswith("not evaluated") for _, evs in result.values() for ev in evs)
    assert status(result, "seeds.count") == "WARN"    # the garbage log has no seed 7 in the json


def test_compliance_flag_contradicted_by_the_audit(tmp_path):
    root = make_folder(tmp_path / "f", stop_ms=599_500, hessian_s=6.9, reserve_ms=500)
    sub = json.loads((root / "submission.json").read_text())
    sub["compliance"] = {"training_under_600s": True, "artifact_under_16mb": True,
                         "three_seeds": True}
    (root / "submission.json").write_text(json.dumps(sub))
    result = audit(root)
    ev = evidence(result, "claims.compliance_flags")
    assert status(result, "claims.compliance_flags") == "FAIL"
    assert "compliance.training_under_600s: true; time.train_data_after_stop is FAIL" in ev
    assert "compliance.artifact_under_16mb: true; size.model is PASS" in ev
    assert status(audit(make_folder(tmp_path / "g")), "claims.compliance_flags") == "N/A"


def test_compliance_flags_read_only_checks_that_run_before_them():
    from golf.audit.compliance import DECIDED_BY
    order = [c.name for c in CHECKS]
    deciders = {n for names in DECIDED_BY.values() for n in names}
    assert deciders <= set(order)
    assert max(order.index(n) for n in deciders) < order.index("claims.compliance_flags")
