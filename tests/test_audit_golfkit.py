"""golf.audit on folders golfkit's own pack writes: the self-extracting train_gpt.py with its
embedded modules, golfkit's log lines (settings header, budget table, calibration end, eval
table) and submission.json, read as the records' folders are: as data, never run."""
from __future__ import annotations

import base64
import json
import lzma
import re
import shutil
from pathlib import Path

import brotli
import pytest

from golf.audit import Context, load_folder, run_checks
from golf.audit.source import code_trees, env_reads, strings
from golf.data.shards import find_shards, read_shard
from golf.submission.amalgamate import compressed_forms

# A module as golfkit embeds it: settings fields named after the field (one renamed with env=),
# a class whose names come from a function (not derivable statically), and a table read.
MODULE = '''
from dataclasses import dataclass
from golf.run import settings
from golf.run.settings import fields_table, setting


@dataclass
class RunConfig:
    matrix_lr: float = setting(0.028, "Muon learning rate")
    data_path: str = setting("./data", "shards", env="DATA_DIR")


@dataclass
class Knobs:
    chunk: int = setting(32, "tokens per chunk")


RUN_TABLE = fields_table(RunConfig, "run")
KNOB_TABLE = fields_table(Knobs, "knobs", lambda f: "KNOB_" + f.upper())


def main(env):
    return settings.read("EVAL_ONLY", env)
'''


def packed_script(modules: dict[str, str]) -> bytes:
    """The plain form's shape (golf.submission.amalgamate.render_plain): one literal per module."""
    body = "_SOURCES = {}\n" + "".join(f"_SOURCES[{n!r}] = {src!r}\n" for n, src in modules.items())
    return (body + "print('ran')\n").encode()


@pytest.mark.parametrize("form", sorted(compressed_forms(b"x = 1\n")))
def test_each_packed_form_is_decoded_and_its_modules_parsed_as_code(tmp_path, form):
    """Every codec pack can ship (lzma-raw passes format/filters to decompress, all go through
    exec(compile(...))): the embedded modules become trees, their settings fields are
    environment reads, and their sources are not counted as string constants."""
    script = compressed_forms(packed_script({"pkg.config": MODULE}))[form]
    (tmp_path / "train_gpt.py").write_bytes(script)
    trees = code_trees(load_folder(tmp_path))
    assert set(trees) == {"train_gpt.py", "train_gpt.py:pkg.config"}
    reads = env_reads(trees["train_gpt.py:pkg.config"])
    def line(text: str) -> int:
        return next(i for i, s in enumerate(MODULE.splitlines(), 1) if text in s)
    assert reads["MATRIX_LR"] == ("0.028", line("matrix_lr:"))
    assert reads["DATA_DIR"] == ("./data", line("data_path:"))
    assert "EVAL_ONLY" in reads
    assert "CHUNK" not in reads and "KNOB_CHUNK" not in reads   # named by a function: not guessed
    assert all("matrix_lr" not in s for s, _ in strings(trees["train_gpt.py"]))


def test_a_file_an_embedded_module_opens_is_a_helper(tmp_path):
    """The embedded modules are the code that runs: a folder file one of them names is a
    helper outside the counted code; the artifact and the logs are not."""
    module = 'def load():\n    return open("table.bin", "rb").read(), "final_model.gkq"\n'
    (tmp_path / "train_gpt.py").write_bytes(compressed_forms(packed_script({"pkg.io": module}))["xz"])
    (tmp_path / "table.bin").write_bytes(b"\0" * 1234)
    (tmp_path / "final_model.gkq").write_bytes(b"\0" * 99)
    status, ev = audit(tmp_path)["size.helpers"]
    assert status == "WARN"
    assert ev == "WARN: train_gpt.py:pkg.io:2: named in a string table.bin (1,234 bytes) is not in the counted code"


# ----------------------------------------------------------------------------- a real pack
@pytest.fixture()
def golfkit_folder(packed_tiny_run, tmp_path) -> tuple[Path, object]:
    """A copy of the folder pack wrote for the session's tiny run (golf.main.run_pipeline)."""
    cfg, _summary, tmp = packed_tiny_run
    folder = tmp_path / "golfkit"
    shutil.copytree(tmp / "submission", folder)
    return folder, cfg


def audit(root: Path) -> dict[str, tuple[str, str]]:
    rows = run_checks(Context(load_folder(root)))
    return {r.name: (r.verdict.status, "\n".join(r.verdict.evidence)) for r in rows}


def failing(result) -> set[str]:
    return {name for name, (status, _) in result.items() if status == "FAIL"}


def inner_source_bytes(script: bytes) -> int:
    """The shipped wrapper's payload decoded here, independently of golf.audit.source."""
    payload = base64.b85decode(re.search(rb'b85decode\("([^"]+)"\)', script).group(1))
    if b"import brotli" in script:
        return len(brotli.decompress(payload))
    if b"FORMAT_RAW" in script:
        return len(lzma.decompress(payload, format=lzma.FORMAT_RAW,
                                   filters=[{"id": lzma.FILTER_LZMA2}]))
    return len(lzma.decompress(payload))


def test_golfkit_pack_folder_is_read_with_its_own_numbers(golfkit_folder):
    """Sizes, identity, seed, times and score come from golfkit's lines and match the files;
    the only FAILs are the ones this one-seed, MAX_EVAL_TOKENS run deserves."""
    folder, cfg = golfkit_folder
    result = audit(folder)
    script = (folder / "train_gpt.py").read_bytes()
    model = (folder / "final_model.gkq").stat().st_size
    status, ev = result["size.model"]
    assert status == "PASS" and f"model {model:,} + code {len(script):,}" in ev
    assert f"= {model + len(script):,} vs cap 16,000,000" in ev
    status, ev = result["identity.script"]
    assert status == "PASS" and f"logged code {inner_source_bytes(script):,} bytes" in ev
    assert result["size.code"][0] == "PASS" and "self-extracting wrapper" in result["size.code"][1]
    assert result["seeds.count"][1].startswith(f"seeds ['{cfg.seed}'] from 1 logs")
    assert result["claims.unread_knobs"] == (
        "PASS", "5 of 5 launch variables are read by the code, name a settings field, or are "
        "runtime variables")
    assert result["time.train_data_after_stop"][0] == "PASS"
    assert "calibration on training data ends at" in result["time.train_data_after_stop"][1]
    assert result["time.eval"][0] == "PASS" and "post chunked" in result["time.eval"][1] or \
        re.search(r"train\.log:\d+: eval \d+\.\d s", result["time.eval"][1])
    assert result["claims.reported_numbers"][0] == "PASS"
    assert result["claims.compliance_flags"][0] == "PASS"
    # deserved: one seed on the record track, and a score over MAX_EVAL_TOKENS of the split
    assert failing(result) == {"seeds.count", "coverage.targets"}
    targets = sum(len(read_shard(p)) for p in find_shards(f"{cfg.data_path}/fineweb_val_*.bin")) - 1
    assert f"covers {cfg.max_eval_tokens:,} of the {targets:,} targets" in result["coverage.targets"][1]


def add_seed_logs(folder: Path, seeds: list[int], change: dict[str, str] | None = None) -> None:
    """train_seed<N>.log copies of train.log for `seeds` as pack names extra seeds, with their
    header's seed (and `change` in the last one), listed in submission.json."""
    text = (folder / "train.log").read_text()
    sub = json.loads((folder / "submission.json").read_text())
    first = str(sub["seeds"][0])
    for i, seed in enumerate(seeds):
        log = re.sub(r"(?m)^  seed: \d+$", f"  seed: {seed}", text)
        for key, value in (change or {}).items() if i == len(seeds) - 1 else ():
            log = re.sub(rf"(?m)^  {key}: .*$", f"  {key}: {value}", log)
        (folder / f"train_seed{seed}.log").write_text(log)
        sub["seed_results"][str(seed)] = sub["seed_results"][first]
    sub["seeds"] += seeds
    (folder / "submission.json").write_text(json.dumps(sub))


def test_three_golfkit_seed_logs_compare_their_settings_key_by_key(golfkit_folder):
    folder, cfg = golfkit_folder
    add_seed_logs(folder, [42, 7])
    result = audit(folder)
    assert result["seeds.count"][0] == "PASS"
    assert result["seeds.count"][1].startswith(f"seeds ['7', '42', '{cfg.seed}'] from 3 logs")
    assert result["seeds.same_config"][0] == "PASS"
    assert "train_seed7.log: identical except per-run keys" in result["seeds.same_config"][1]
    assert failing(result) == {"coverage.targets"}

    changed = folder.parent / "changed"
    shutil.copytree(folder, changed)
    for p in changed.glob("train_seed*.log"):
        p.unlink()
    sub = json.loads((changed / "submission.json").read_text())
    sub["seeds"] = sub["seeds"][:1]
    (changed / "submission.json").write_text(json.dumps(sub))
    add_seed_logs(changed, [42, 7], change={"matrix_lr": "0.05"})
    status, ev = audit(changed)["seeds.same_config"]
    line = next(i for i, s in enumerate((changed / "train_seed7.log").read_text().splitlines(), 1)
                if s.startswith("  matrix_lr:"))
    assert status == "FAIL"
    assert (f"train_seed7.log differs from train.log in 1 key(s): matrix_lr: "
            f"'{cfg.matrix_lr}' -> '0.05' (train_seed7.log:{line})") in ev


def test_golfkit_val_tokens_line_counts_the_whole_stream(tmp_path):
    """golfkit logs the validation stream it loaded (62,021,846 tokens for the SP1024 export),
    the records the truncated count (62,021,632): both are the canonical export, and the full
    stream leaves no target unscored."""
    header = "Hyperparameters:\n  vocab_size: 1024\n  data_path: /d/datasets/fineweb10B_sp1024\n"
    for n, split_status in ((62_021_846, "PASS"), (62_021_632, "PASS"), (61_000_000, "FAIL")):
        folder = tmp_path / str(n)
        folder.mkdir()
        (folder / "train.log").write_text(f"{header}train_shards:80\nval_tokens:{n}\n"
                                          "step:1/1 train_loss:1.0 train_time:5ms\n")
        result = audit(folder)
        assert result["data.val_tokens"][0] == split_status, result["data.val_tokens"]
        assert result["data.train_shards"][0] == "PASS"
    assert "62,021,845 of 62,021,845 targets" in audit(tmp_path / "62021846")["coverage.targets"][1]


def test_a_challenge_style_seed_line_names_the_logs_seed(tmp_path):
    """The challenge baseline's log prints `seed:1337` on a line of its own, not a header."""
    for i, seed in enumerate((1337, 42, 7)):
        (tmp_path / f"run{i}.log").write_text(f"seed:{seed}\nstep:1/1 train_loss:1.0 "
                                              "train_time:5ms\nrun_seed:99\n")
    status, ev = audit(tmp_path)["seeds.count"]
    assert status == "PASS" and ev.startswith("seeds ['7', '42', '1337'] from 3 logs")
