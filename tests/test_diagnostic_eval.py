"""Diagnostic evals never replace a run's official outputs (issue 26): `eval_bpb.py RUN` with
a partial, other-mode, other-data or TTT evaluation writes eval.<label>.json beside eval.json
(never over a file); only the run's own full evaluation replaces eval.json, as a staged pair."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import tiny_pipeline_config, untrained_run
from golf.run import rundir as rd
from golf.eval.destination import beside_path, diagnostic_label
from golf.eval.score import EvalRequest


@pytest.fixture()
def run(tmp_path, embedded_data) -> Path:
    """An untrained run whose own evaluation scores 512 targets (fast), with an eval.json."""
    cfg = tiny_pipeline_config(embedded_data, max_eval_tokens=512)
    r = tmp_path / "run"
    untrained_run(r, cfg)
    (r / rd.EVAL).write_text('{"official": true}\n')
    return r


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def test_labels_name_what_differs_from_the_runs_own_evaluation(run, tmp_path):
    class TTT:
        active, mode, on = True, "lora", "post"
    assert diagnostic_label(run, EvalRequest()) == ""
    assert diagnostic_label(run, EvalRequest(max_tokens=512, mode="chunked", stride=0,
                                              seq_len=64, artifact=str(run / rd.ARTIFACT),
                                              checkpoint=str(run / rd.EMA))) == ""
    assert diagnostic_label(run, EvalRequest(max_tokens=2048)) == "partial2048"
    assert diagnostic_label(run, EvalRequest(mode="sliding", stride=32)) == "sliding-stride32"
    assert diagnostic_label(run, EvalRequest(data=str(tmp_path / "other data"))) == "data-other_data"
    assert diagnostic_label(run, EvalRequest(ttt=TTT())) == "ttt-lora-post"
    assert diagnostic_label(run, EvalRequest(byte_check=False)) == "nobytecheck"

    class Tilt:
        enabled = True
    assert diagnostic_label(run, EvalRequest(tilt=Tilt(), doc_windows=True)) == "tilt-docwindows"


def test_beside_path_never_names_an_existing_file(run):
    first = beside_path(run, "partial64")
    assert first == run / "eval.partial64.json"
    first.write_text("{}")
    assert beside_path(run, "partial64") == run / "eval.partial64.2.json"


def test_partial_eval_writes_beside_and_keeps_eval_json(run, capsys):
    """The issue's case: --max-tokens replaced the run's full eval.json with a partial one."""
    import eval_bpb
    before = _files(run)
    assert eval_bpb.main([str(run), "--max-tokens", "128", "--device", "cpu"]) == 0
    assert eval_bpb.main([str(run), "--max-tokens", "128", "--device", "cpu"]) == 0
    after = _files(run)
    assert {k: after[k] for k in before} == before  # eval.json and the artifact untouched
    new = sorted(set(after) - set(before) - {rd.LOCK, rd.TRAIN_LOG})
    assert new == ["eval.partial128.2.json", "eval.partial128.json"]
    rep = json.loads(after["eval.partial128.json"])
    assert rep["partial"] and rep["post"]["tokens"] == 128
    assert "eval.json is left as it is" in capsys.readouterr().out


def test_out_cannot_aim_a_diagnostic_at_eval_json(run, capsys):
    import eval_bpb
    before = _files(run)
    with pytest.raises(SystemExit):
        eval_bpb.main([str(run), "--max-tokens", "128", "--out", str(run / rd.EVAL)])
    assert "diagnostic (partial128)" in capsys.readouterr().err
    assert _files(run) == before


def test_official_eval_goes_through_the_staged_pair(run):
    """The run's own evaluation replaces eval.json; the previous pair moves to previous/1/,
    and the new eval.json's sha256 is that of the artifact beside it."""
    import eval_bpb
    art = (run / rd.ARTIFACT).read_bytes()
    assert eval_bpb.main([str(run), "--device", "cpu"]) == 0
    rep = json.loads((run / rd.EVAL).read_text())
    assert rep["artifact_sha256"] == hashlib.sha256(art).hexdigest()
    assert rep["artifact"] == rd.ARTIFACT and rep["post"]["tokens"] == 512
    assert (run / rd.PREVIOUS / "1" / rd.EVAL).read_text() == '{"official": true}\n'
    assert (run / rd.ARTIFACT).read_bytes() == art
    assert not (run / rd.STAGING).exists()


def test_a_failed_official_eval_leaves_the_pair_and_no_staging(run, capsys):
    """Scoring fails after the artifact was copied into staging: the copies go, the run's
    own pair stays as it was."""
    import eval_bpb
    import golf.eval.score as ev
    before = _files(run)

    def broken(*_a, **_k):
        raise ev.EvalError("scoring failed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ev, "score_modes", broken)
        with pytest.raises(SystemExit):
            eval_bpb.main([str(run), "--device", "cpu"])
    assert "scoring failed" in capsys.readouterr().err
    assert not (run / rd.STAGING).exists()
    assert {k: v for k, v in _files(run).items() if k != rd.LOCK} == before
