"""Packaging: the single-file script runs alone, bytes are counted from disk, failures leave
nothing behind, and the round trip reproduces the run's val_bpb bit for bit."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from golf import submission
from golf.submission import (OverCapError, PackError, RoundTripError, budget_table, enforce_budget,
                             format_budget_table)
from conftest import untrained_run
from golf.submission.amalgamate import module_closure
from golf.submission.stats import betainc, student_t_sf, welch_one_sided

REPO = Path(__file__).resolve().parents[1]
ME = submission.Claim(name="me", github_id="gh", blurb="test")

# A stand-in for golf.main: imports a few real modules of ours (one inside a function, one
# guarded like main.py's `from golf.submission import ...`) and implements the EVAL_ONLY contract with a
# deterministic score computed from the artifact that quant's checksummed loader returns.
STANDIN_ENTRY = '''
import os
import sys

from golf.run.config import Config


def score(path):
    """(val_loss, val_bpb): a deterministic function of the artifact's weights."""
    import quant
    sd, _meta = quant.load_artifact(path)
    total = sum(float(sd[k].double().abs().sum()) for k in sorted(sd))
    n = sum(v.numel() for v in sd.values())
    loss = total / n
    return loss, loss / 0.6931471805599453


def main():
    from golf.run.errors import user_errors
    try:
        from golf import submission  # must NOT be shipped
        shipped_pack = True
    except ImportError:
        shipped_pack = False
    with user_errors():
        if os.environ.get("EVAL_ONLY") == "1":
            Config.from_env()
            loss, bpb = score(os.environ["ARTIFACT"])
            print(f"final_roundtrip_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f} val_bpb_hex:{bpb.hex()}")
            return 0
        import golf.run.config
        print("standin ok", Config().budget_bytes, "pack_importable:", shipped_pack,
              "origin:", golf.run.config.__spec__.origin)
    return 0
'''


@pytest.fixture()
def standin(tmp_path: Path) -> tuple[str, list[Path]]:
    src = tmp_path / "standin_src"
    (src / "golfstandin").mkdir(parents=True)
    (src / "golfstandin" / "__init__.py").write_text('"""Test stand-in package."""\n')
    (src / "golfstandin" / "entry.py").write_text(STANDIN_ENTRY)
    return "golfstandin.entry", [REPO, src]


def _standin_score(src_roots: list[Path], artifact: Path) -> tuple[float, float]:
    sys.path.insert(0, str(src_roots[1]))
    try:
        import importlib
        mod = importlib.import_module("golfstandin.entry")
        return mod.score(str(artifact))
    finally:
        sys.path.remove(str(src_roots[1]))
        for k in [k for k in sys.modules if k.startswith("golfstandin")]:
            del sys.modules[k]


def _make_run(tmp_path: Path, standin, seed: int = 1337, scale: float = 1.0) -> Path:
    """A fake run dir whose eval.json holds the stand-in's score of a real quant artifact."""
    import torch
    import quant
    run = tmp_path / f"run_{seed}"
    run.mkdir()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(48, 48, bias=False), torch.nn.Linear(48, 16, bias=False))
    with torch.no_grad():
        model[0].weight.mul_(scale)
    quant.save_artifact(run / "final_model.gkq", quant.quantize_model(model, method="int8",
                                                                       meta={"config": {}}))
    loss, bpb = _standin_score(standin[1], run / "final_model.gkq")
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (tmp_path / "tok.model").write_bytes(b"x")
    cfg = {"seed": seed, "vocab_size": 1024, "val_batch_size": 8192, "max_eval_tokens": 0,
           "data_path": str(data), "tokenizer_path": str(tmp_path / "tok.model"), "world_size": 1}
    (run / "config.json").write_text(json.dumps(cfg))
    res = {"val_loss": loss, "val_bpb": bpb, "tokens": 100, "bytes": 240, "mode": "chunked",
           "seq_len": 64, "stride": 0, "partial": False}
    ev = {"pre": {**res, "val_bpb": bpb - 0.01}, "post": res, "gap": 0.01, "mode": "chunked",
          "seq_len": 64, "stride": 0, "partial": False}
    (run / "eval.json").write_text(json.dumps(ev))
    (run / "train.log").write_text(f"seed:{seed}\nstep:20 train_loss:3.0\n")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 20, "train_time_ms": 1234.0}) + "\n")
    torch.save({"hessians": {}, "tokens": 10, "elapsed_ms": 900.0, "train_budget_ms": 1000.0},
               run / "hessians.pt")
    return run


def _run_alone(script: bytes, tmp_path: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    work = tmp_path / "alone"
    work.mkdir(exist_ok=True)
    (work / "train_gpt.py").write_bytes(script)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(work), **(env_extra or {})}
    return subprocess.run([sys.executable, "-I", "train_gpt.py"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)


# ----------------------------------------------------------------------------- amalgamation
def test_closure_follows_function_imports_and_excludes_packer(standin):
    entry, roots = standin
    c = module_closure(entry, roots)
    assert {"golf", "golf.run.config", "golf.run.errors", "quant", "quant.artifact", entry} <= set(c.modules)
    assert not any(n.startswith("golf.submission") for n in c.modules)
    assert "torch" in c.third_party and "os" not in c.third_party


@pytest.mark.slow
def test_plain_and_compressed_scripts_run_standalone_identically(standin, tmp_path):
    entry, roots = standin
    plain = submission.build_train_script(False, entry, roots)
    packed = submission.build_train_script(True, entry, roots)
    assert len(packed) < len(plain)
    a = _run_alone(plain, tmp_path)
    assert a.returncode == 0, a.stderr
    assert "standin ok 16000000 pack_importable: False origin: train_gpt.py:golf.run.config" in a.stdout
    forms = submission.build_forms(entry, roots)
    assert forms["plain"] == plain and min(forms.values(), key=len) == packed
    for name, script in forms.items():  # every self-extracting codec, not only the shipped one
        b = _run_alone(script, tmp_path)
        assert (b.returncode, b.stdout) == (a.returncode, a.stdout), name


def test_build_is_deterministic(standin):
    entry, roots = standin
    assert submission.build_train_script(False, entry, roots) == submission.build_train_script(False, entry, roots)
    assert submission.build_train_script(True, entry, roots) == submission.build_train_script(True, entry, roots)
    assert submission.code_bytes(entry, roots) == len(submission.build_train_script(True, entry, roots))


def test_missing_module_is_one_clear_error(tmp_path):
    (tmp_path / "golfbroken").mkdir()
    (tmp_path / "golfbroken" / "__init__.py").write_text("")
    (tmp_path / "golfbroken" / "e.py").write_text("def main():\n    import golfbroken.nothere\n")
    with pytest.raises(PackError, match=r"e\.py:2 imports golfbroken\.nothere"):
        module_closure("golfbroken.e", [tmp_path])


# ----------------------------------------------------------------------------- budget
def test_budget_counts_bytes_on_disk_and_enforces_cap(tmp_path):
    code, model = tmp_path / "train_gpt.py", tmp_path / "m.gkq"
    code.write_bytes(b"a" * 1234)
    model.write_bytes(b"b" * 5678)
    t = budget_table(code, model, cap=7000)
    assert (t.code_bytes, t.model_bytes, t.total, t.headroom) == (1234, 5678, 6912, 88)
    assert "warning: headroom" in format_budget_table(t)
    enforce_budget(t)
    over = budget_table(code, model, cap=6900)
    with pytest.raises(OverCapError, match="by 12 bytes"):
        enforce_budget(over)


# ----------------------------------------------------------------------------- pack_run
def test_pack_run_writes_folder_with_exact_accounting_and_roundtrip(standin, tmp_path):
    entry, roots = standin
    run = _make_run(tmp_path, standin)
    out = tmp_path / "sub"
    res = submission.pack_run(run, out,
                              submission.PackRequest(claim=ME, entry=entry, src_roots=roots),
                              log=lambda _m: None)
    names = {p.name for p in out.iterdir()}
    assert names == {"train_gpt.py", "final_model.gkq", "submission.json", "README.md",
                     "train.log", "requirements.txt"}
    sub = json.loads((out / "submission.json").read_text())
    on_disk = (out / "train_gpt.py").stat().st_size + (out / "final_model.gkq").stat().st_size
    assert sub["bytes_total"] == on_disk == res.budget.total
    assert sub["bytes_code"] == (out / "train_gpt.py").stat().st_size
    assert res.roundtrip is not None and res.roundtrip.exact
    # the reported val_bpb is what the shipped folder scores when run: the stand-in's score of
    # the artifact in the folder (computed here, in this process), bit for bit, and the round
    # trip's own number parsed from the shipped script's output
    shipped_bpb = _standin_score(roots, out / "final_model.gkq")[1]
    assert sub["val_bpb"] == shipped_bpb == res.roundtrip.val_bpb
    assert sub["compliance"]["roundtrip_exact"] is True
    assert res.shipped != "plain"  # auto picks the smaller, compressed form
    assert res.ok and f"{sub['bytes_total']:,}" in (out / "README.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".sub.")]


def test_over_cap_leaves_nothing_and_keeps_good_folder(standin, tmp_path):
    entry, roots = standin
    run = _make_run(tmp_path, standin)
    out = tmp_path / "sub"
    with pytest.raises(OverCapError, match="exceeds the cap"):
        submission.pack_run(run, out,
                            submission.PackRequest(roundtrip=False, cap=1000, entry=entry,
                                                   src_roots=roots),
                            log=lambda _m: None)
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    submission.pack_run(run, out,
                        submission.PackRequest(roundtrip=False, entry=entry, src_roots=roots),
                        log=lambda _m: None)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(OverCapError):
        submission.pack_run(run, out,
                            submission.PackRequest(roundtrip=False, cap=1000, entry=entry,
                                                   src_roots=roots),
                            log=lambda _m: None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_tampered_artifact_fails_the_proof(standin, tmp_path):
    entry, roots = standin
    run = _make_run(tmp_path, standin)
    blob = bytearray((run / "final_model.gkq").read_bytes())
    blob[-5] ^= 0xFF
    (run / "final_model.gkq").write_bytes(bytes(blob))
    with pytest.raises(RoundTripError, match=r"(?s)final_model\.gkq.*checksum") as err:
        submission.pack_run(run, tmp_path / "sub",
                            submission.PackRequest(compress=False, entry=entry, src_roots=roots),
                            log=lambda _m: None)
    assert str(err.value).startswith(str(run / "final_model.gkq"))
    assert not (tmp_path / "sub").exists()


def test_wrong_expected_bpb_fails_the_proof(standin, tmp_path):
    entry, roots = standin
    run = _make_run(tmp_path, standin)
    ev = json.loads((run / "eval.json").read_text())
    ev["post"]["val_bpb"] = float.fromhex(ev["post"]["val_bpb"].hex()) + 2 ** -40  # a tiny, non-bit-equal change
    (run / "eval.json").write_text(json.dumps(ev))
    with pytest.raises(RoundTripError, match="!= the run's scored val_bpb"):
        submission.pack_run(run, tmp_path / "sub",
                            submission.PackRequest(compress=False, entry=entry, src_roots=roots),
                            log=lambda _m: None)


def _welch(losses, base_mean, base_std, base_n, margin=0.005):
    """One-sided Welch t for "ours beats the baseline by more than margin", from the textbook
    formulas (sample std, Welch-Satterthwaite df)."""
    import statistics
    n, m, s = len(losses), statistics.fmean(losses), statistics.stdev(losses)
    v1, v2 = s * s / n, base_std ** 2 / base_n
    t = (base_mean - m - margin) / (v1 + v2) ** 0.5
    df = (v1 + v2) ** 2 / (v1 ** 2 / (n - 1) + v2 ** 2 / (base_n - 1))
    return m, t, df


@pytest.mark.parametrize("margin_over,passes", [(0.02, True), (0.004, False)])
def test_multi_seed_record_report(standin, tmp_path, margin_over, passes):
    """Three seeds against a baseline near them: beating it by 0.02 nats (4x the challenge's
    0.005-nat margin) at these spreads is significant; beating it by 0.004 never is."""
    entry, roots = standin
    runs = [_make_run(tmp_path, standin, seed=s, scale=1.0 + 0.01 * i) for i, s in enumerate((1, 2, 3))]
    losses = [json.loads((r / "eval.json").read_text())["post"]["val_loss"] for r in runs]
    bpbs_in = [json.loads((r / "eval.json").read_text())["post"]["val_bpb"] for r in runs]
    mean = sum(losses) / 3
    base = {"mean": mean + margin_over, "std": 0.0005, "n": 3}
    res = submission.pack_run(runs[0], tmp_path / "sub",
                              submission.PackRequest(claim=replace(ME, blurb="b", baseline=base),
                                                     extra_runs=runs[1:], roundtrip=False,
                                                     record=True, entry=entry, src_roots=roots),
                              log=lambda _m: None)
    sub = res.submission
    assert sub["seeds"] == [1, 2, 3] and sub["val_bpb_std"] > 0
    assert [sub["seed_results"][str(s)]["val_bpb"] for s in (1, 2, 3)] == bpbs_in
    assert sub["val_bpb"] == pytest.approx(sum(bpbs_in) / 3, rel=1e-15)
    assert {"train_seed2.log", "train_seed3.log"} <= {p.name for p in (tmp_path / "sub").iterdir()}
    m, t, df = _welch(losses, base["mean"], base["std"], base["n"])
    sig = sub["significance"]
    assert sig["delta_nats"] == pytest.approx(base["mean"] - m, abs=1e-12)
    assert sig["t"] == pytest.approx(t, rel=1e-9) and sig["df"] == pytest.approx(df, rel=1e-9)
    assert (sig["p_value"] < 0.01) == passes
    checks = {c.name: c.status for c in res.checks}
    assert checks["record: >= 3 seeds"] == "PASS"
    assert checks["record: Welch test"] == ("PASS" if passes else "FAIL")


def test_pack_run_runs_every_registered_check_in_order(standin, tmp_path, monkeypatch):
    """Adding a pre-submit check is one function plus one CHECKS entry: pack_run reports it,
    after the built-in ones, in submission.json, the README and its result; a FAIL makes it not ok."""
    from golf.submission import checks
    entry, roots = standin
    run = _make_run(tmp_path, standin)
    seen = []

    def extra(ctx: checks.CheckContext) -> list[checks.Check]:
        seen.append((ctx.submission["seeds"], ctx.table.total, ctx.roundtrip))
        return [checks.Check("extra rule", "FAIL", "made up for the test")]

    monkeypatch.setattr(checks, "CHECKS", checks.CHECKS + (extra,))
    res = submission.pack_run(run, tmp_path / "sub",
                              submission.PackRequest(claim=replace(ME, blurb="b"),
                                                     roundtrip=False, entry=entry, src_roots=roots),
                              log=lambda _m: None)
    assert seen == [([1337], res.budget.total, None)]
    names = [c.name for c in res.checks]
    assert names[0] == "size cap" and names[-1] == "extra rule" and "round trip" in names
    assert json.loads((tmp_path / "sub" / "submission.json").read_text())["checks"]["extra rule"] == "FAIL"
    assert "made up for the test" in (tmp_path / "sub" / "README.md").read_text() and not res.ok

def test_cli_missing_run_files_is_one_line(tmp_path):
    (tmp_path / "run").mkdir()
    p = subprocess.run([sys.executable, str(REPO / "pack.py"), str(tmp_path / "run")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "missing config.json, eval.json, final_model.gkq, train.log" in p.stderr


# ----------------------------------------------------------------------------- statistics
def test_student_t_known_values():
    assert student_t_sf(2.0, 5) == pytest.approx(0.05096973941, abs=1e-10)
    assert student_t_sf(1.0, 1) == pytest.approx(0.25, abs=1e-14)       # Cauchy: 1/2 - atan(1)/pi
    assert student_t_sf(0.0, 7) == 0.5
    assert student_t_sf(-2.0, 5) == pytest.approx(1 - 0.05096973941, abs=1e-10)
    assert student_t_sf(1.5, 2) == pytest.approx(0.5 - 1.5 / (2 * (2 + 1.5 ** 2) ** 0.5), abs=1e-12)
    assert betainc(2.0, 3.0, 0.4) == pytest.approx(0.5248, abs=1e-12)  # closed form 1-(1-x)^3(1+3x)


def test_welch_one_sided_direction_and_margin():
    strong = welch_one_sided(1.00, 0.001, 3, 1.02, 0.001, 3)
    weak = welch_one_sided(1.00, 0.001, 3, 1.006, 0.001, 3)
    assert strong.delta_nats == pytest.approx(0.02) and strong.p_value < 0.001
    assert weak.p_value > 0.05 and weak.t > 0
    assert welch_one_sided(1.0, 0.001, 3, 1.004, 0.001, 3).t < 0  # below the 0.005 margin


# ----------------------------------------------------------------------------- real entry
def test_real_eval_only_roundtrip(tmp_path, request):
    """golf.main's EVAL_ONLY on a tiny real artifact (runs once the pipeline modules exist)."""
    module_closure("golf.main")  # a PackError here is our bug, not a missing resource
    from golf.eval.score import EvalRequest, run_eval
    tiny_config = request.getfixturevalue("tiny_config")
    cfg = tiny_config.replace(max_eval_tokens=4096)
    run = tmp_path / "run"
    untrained_run(run, cfg)
    run_eval(run, EvalRequest(device="cpu"), log=None)
    (run / "train.log").write_text("test\n")
    res = submission.pack_run(run, tmp_path / "sub",
                              submission.PackRequest(claim=submission.Claim("t", "t", "t"),
                                                     compress=False),
                              log=lambda _m: None)
    assert res.roundtrip is not None and res.roundtrip.exact
