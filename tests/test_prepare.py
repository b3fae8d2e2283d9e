"""Preparation: the embedded build is deterministic and val-clean; text and offline fineweb paths."""
from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece as spm

from golf.data.sources.embedded import embedded_documents, prepare_embedded
from golf.data.sources.fineweb import prepare_fineweb
from golf.data.shards import find_shards, read_shard
from golf.data.sources.splits import is_val_doc
from golf.data.sources.text import prepare_text
from golf.data.sources.tokenizer_train import train_tokenizer
from golf.run.errors import PrepareError


def _hashes(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_embedded_deterministic(tmp_path):
    a = prepare_embedded(tmp_path / "a")
    prepare_embedded(tmp_path / "b")
    ha, hb = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert ha == hb and len(ha) >= 5  # 2 shards, manifest, .model, .vocab
    assert a.tokenizer_path.name == "embedded_1024_bpe.model"
    assert a.dataset_dir.name == "embedded_sp1024"


def test_embedded_layout_and_split(embedded_data, tmp_path):
    sp = spm.SentencePieceProcessor()
    sp.Load(str(embedded_data.tokenizer_path))
    assert sp.vocab_size() == 1024 and sp.bos_id() == 1 and sp.pad_id() == 0
    assert all(sp.is_byte(i) for i in range(4, 260))
    man = json.loads((embedded_data.dataset_dir / "manifest.json").read_text())
    docs = embedded_documents()
    assert len(docs) == len(set(docs)) == man["docs"]["train"] + man["docs"]["val"]
    val_docs = [d for d in docs if is_val_doc(d)]
    assert 0.03 < len(val_docs) / len(docs) < 0.2
    val = np.asarray(read_shard(find_shards(str(embedded_data.dataset_dir / "fineweb_val_*.bin"))[0]))
    assert val[0] == 1 and int((val == 1).sum()) == len(val_docs)
    # decoding the val stream gives back exactly the val documents (normalized), in order
    starts = np.flatnonzero(val == 1).tolist() + [len(val)]
    first = sp.decode(val[starts[0] + 1:starts[1]].tolist())
    assert first == sp.decode(sp.encode(val_docs[0]))
    # the train shards decode to exactly the train documents: no val document leaks into them
    train = [t for p in find_shards(str(embedded_data.dataset_dir / "fineweb_train_*.bin"))
             for t in np.asarray(read_shard(p)).tolist()]
    cut = [i for i, t in enumerate(train) if t == 1] + [len(train)]
    train_text = [sp.decode(train[a + 1:b]) for a, b in zip(cut, cut[1:])]
    train_docs = [d for d in docs if not is_val_doc(d)]
    assert train_text == [sp.decode(sp.encode(d)) for d in train_docs]
    # the tokenizer never saw val text: retrained on the train documents alone it is the same file
    own = tmp_path / "train_only.model"
    train_tokenizer(train_docs, own)
    assert own.read_bytes() == embedded_data.tokenizer_path.read_bytes()


def test_embedded_skips_when_valid_and_rebuilds_when_corrupt(tmp_path):
    paths = prepare_embedded(tmp_path)
    shard = paths.dataset_dir / "fineweb_train_000000.bin"
    mtime = shard.stat().st_mtime_ns
    prepare_embedded(tmp_path)
    assert shard.stat().st_mtime_ns == mtime
    good = shard.read_bytes()
    shard.write_bytes(good[:-10])
    prepare_embedded(tmp_path)
    assert shard.read_bytes() == good


def test_text_jsonl_and_txt(tmp_path, embedded_data):
    docs = [f"Document number {i}: the quick brown fox jumps over {i} lazy dogs." for i in range(20)]
    gz = tmp_path / "d.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    txt = tmp_path / "extra.txt"
    txt.write_text("A plain text file is one document.")
    out = tmp_path / "ds"
    stats = prepare_text([gz, txt], embedded_data.tokenizer_path, out, val_docs=3, shard_tokens=100)
    assert stats["docs"] == {"train": 18, "val": 3}
    sp = spm.SentencePieceProcessor()
    sp.Load(str(embedded_data.tokenizer_path))
    val = np.concatenate([np.asarray(read_shard(p)) for p in find_shards(str(out / "fineweb_val_*.bin"))])
    expect = np.concatenate([[1] + sp.encode(d) for d in docs[:3]])
    np.testing.assert_array_equal(val, expect)
    train_files = find_shards(str(out / "fineweb_train_*.bin"))
    assert len(train_files) > 1 and all(len(read_shard(p)) <= 100 for p in train_files)


def test_text_bad_inputs(tmp_path, embedded_data):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(PrepareError, match="bad.jsonl:2"):
        prepare_text([bad], embedded_data.tokenizer_path, tmp_path / "o")
    with pytest.raises(PrepareError, match="nope.txt"):
        prepare_text([tmp_path / "nope.txt"], embedded_data.tokenizer_path, tmp_path / "o")


def test_fineweb_offline_fails_fast(tmp_path):
    import time
    t0 = time.time()
    with pytest.raises(PrepareError, match="download failed"):
        prepare_fineweb(tmp_path, 1, base_url="http://127.0.0.1:9/none", timeout=2)
    assert time.time() - t0 < 10
    assert not list((tmp_path).rglob("*.bin"))


def test_cli_prints_one_line_error(tmp_path, repo_root):
    r = subprocess.run([sys.executable, "-m", "golf.data.prepare", "text", "--input",
                        str(tmp_path / "missing.jsonl"), "--tokenizer", str(tmp_path / "x.model"),
                        "--name", "n", "--root", str(tmp_path)],
                       cwd=repo_root, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "x.model" in r.stderr


def _serve(srv):
    import functools
    import http.server
    import threading
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(srv))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return httpd


# (variant, tokenizer entry keys, val shards, announces a sidecar, text transform)
LAYOUTS = {
    "sp1024": ("sp1024", ("model_path", "vocab_path"), 1, False, None),        # the challenge's repo
    "sp8192": ("sp8192", ("path",), 2, False, None),                            # kevclark-style
    "caseops": ("sp8192_lossless_caps_caseops_v1_reserved", ("model_path",), 2, True,
                "lossless_caps_caseops_v1"),                                    # romeerp-style
}


@pytest.fixture(params=sorted(LAYOUTS))
def any_mirror(request, tmp_path, embedded_data):
    """A local HTTP server laid out like one published export (root `datasets/`): manifest,
    shards, tokenizer and, for the CaseOps layout, a byte sidecar and an operator tokenizer."""
    import shutil
    from golf.data.sources.tokenizer_train import train_tokenizer
    from golf.data.shards import write_shard
    variant, tok_keys, n_val, sidecar, transform = LAYOUTS[request.param]
    root = tmp_path / "srv" / "datasets"
    shards = root / "datasets" / f"fineweb10B_{variant}"
    tok = root / "tokenizers" / f"fineweb_{variant}_bpe.model"
    if sidecar:
        train_tokenizer([f"\ue001word {i} \ue002more text" for i in range(300)], tok, 300,
                        user_defined_symbols=["\ue001", "\ue002"])
    else:
        tok.parent.mkdir(parents=True)
        shutil.copyfile(embedded_data.tokenizer_path, tok)
        tok.with_suffix(".vocab").write_text("<unk>\t0\n")
    rng = np.random.default_rng(0)
    served = {}
    names = [f"fineweb_val_{i:06d}.bin" for i in range(n_val)] + ["fineweb_train_000000.bin"]
    for name in names:
        served[name] = rng.integers(0, 300, 3000 + 7 * len(served)).astype(np.uint16)
        write_shard(shards / name, served[name])
        if sidecar and "_val_" in name:
            side = name.replace("_val_", "_val_bytes_")
            served[side] = rng.integers(0, 5, len(served[name])).astype(np.uint16)
            write_shard(shards / side, served[side])
    entry = {"name": f"fineweb10B_{variant}", "tokenizer_name": "tok",
             "stats": {"files_val": n_val, "files_train": 1}}
    if sidecar:
        entry["stats"]["val_bytes_glob"] = "fineweb_val_bytes_*.bin"
        entry["text_transform"] = transform
    paths = {"model_path": f"tokenizers/{tok.name}", "vocab_path": f"tokenizers/{tok.stem}.vocab",
             "path": f"tokenizers/{tok.name}"}
    (root / "manifest.json").write_text(json.dumps({
        "datasets": [entry], "tokenizers": [{"name": "tok", **{k: paths[k] for k in tok_keys}}]}))
    httpd = _serve(tmp_path / "srv")
    yield variant, f"http://127.0.0.1:{httpd.server_address[1]}/datasets", served, shards, transform
    httpd.shutdown()


def test_fineweb_variant_layouts(tmp_path, any_mirror):
    """Each layout lands as datasets/fineweb10B_<variant>/ with its tokenizer, the sidecar
    when announced, and a dataset manifest that carries the text transform to the scorer."""
    from golf.data.shards import dataset_text_transform, load_val_bytes
    variant, url, served, _, transform = any_mirror
    paths = prepare_fineweb(tmp_path / "data", 1, variant=variant, base_url=url, timeout=5)
    assert paths.dataset_dir == tmp_path / "data" / "datasets" / f"fineweb10B_{variant}"
    got = sorted(p.name for p in paths.dataset_dir.glob("*.bin"))
    assert got == sorted(served)
    for name in got:
        assert np.array_equal(read_shard(paths.dataset_dir / name), served[name])
    assert paths.tokenizer_path.parent == tmp_path / "data" / "tokenizers"
    assert dataset_text_transform(paths.dataset_dir) == transform
    side = load_val_bytes(paths.dataset_dir)
    assert (side is not None) == bool(transform)
    if side is not None:   # the sidecar lines up with the val stream, shard by shard
        vals = [served[n] for n in sorted(served) if n.startswith("fineweb_val_0")]
        assert len(side) == sum(len(v) for v in vals)
    # the val loader never mistakes the sidecar for val tokens
    from golf.data.shards import load_val_tokens
    assert len(load_val_tokens(str(paths.dataset_dir), 65536)) == sum(
        len(v) for n, v in served.items() if n.startswith("fineweb_val_0"))


@pytest.mark.parametrize("any_mirror", ["caseops"], indirect=True)
def test_fineweb_operator_tokenizer_without_sidecar_is_refused(tmp_path, any_mirror):
    variant, url, served, shards, transform = any_mirror
    srv_manifest = shards.parents[1] / "manifest.json"
    man = json.loads(srv_manifest.read_text())
    del man["datasets"][0]["stats"]["val_bytes_glob"]
    srv_manifest.write_text(json.dumps(man))
    with pytest.raises(PrepareError, match="needs a val byte sidecar"):
        prepare_fineweb(tmp_path / "data", 1, variant=variant, base_url=url, timeout=5)


def test_fineweb_offline_names_the_command(tmp_path, monkeypatch):
    """No network: one error at once that gives the command (and repo) that would fetch it."""
    import time
    monkeypatch.setenv("GOLF_HF_BASE", "http://127.0.0.1:9/none")
    t0 = time.time()
    with pytest.raises(PrepareError, match="python -m golf.data.prepare fineweb --variant sp8192 "
                       "--repo-id kevclark/parameter-golf --train-shards 4"):
        prepare_fineweb(tmp_path, 4, variant="sp8192", timeout=2)
    assert time.time() - t0 < 10 and not list(tmp_path.rglob("*.bin"))


def test_fineweb_variant_repos(monkeypatch):
    from golf.data.sources.fineweb import hf_root_url, variant_repo
    monkeypatch.delenv("MATCHED_FINEWEB_REPO_ID", raising=False)
    monkeypatch.delenv("GOLF_HF_BASE", raising=False)
    assert variant_repo("sp1024") == "willdepueoai/parameter-golf"
    assert variant_repo("sp4096") == variant_repo("sp8192") == "kevclark/parameter-golf"
    assert variant_repo("sp8192_lossless_caps_caseops_v1_reserved") == "romeerp/parameter-golf-caseops-v1"
    assert variant_repo("sp2048", "me/mine") == "me/mine"
    with pytest.raises(PrepareError, match="--repo-id"):
        variant_repo("sp2048")
    with pytest.raises(PrepareError, match="letters, digits"):
        variant_repo("../etc")
    assert hf_root_url("kevclark/parameter-golf") == \
        "https://huggingface.co/datasets/kevclark/parameter-golf/resolve/main/datasets"


@pytest.fixture()
def hf_mirror(tmp_path, embedded_data):
    """A local HTTP server laid out like the challenge's HF export (root `datasets/`)."""
    import shutil
    from golf.data.shards import write_shard
    srv = tmp_path / "srv"
    root = srv / "datasets"
    shards = root / "datasets" / "fineweb10B_sp1024"
    rng = np.random.default_rng(0)
    served = {}
    for name in ("fineweb_val_000000.bin", "fineweb_train_000000.bin", "fineweb_train_000001.bin"):
        served[name] = rng.integers(0, 1024, 5000).astype(np.uint16)
        write_shard(shards / name, served[name])
    (root / "tokenizers").mkdir(parents=True)
    shutil.copyfile(embedded_data.tokenizer_path, root / "tokenizers" / "fineweb_1024_bpe.model")
    (root / "tokenizers" / "fineweb_1024_bpe.vocab").write_text("<unk>\t0\n")
    (root / "manifest.json").write_text(json.dumps({
        "datasets": [{"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024",
                      "stats": {"files_val": 1, "files_train": 2}},
                     {"name": "fineweb10B_sp4096", "tokenizer_name": "sp_bpe_4096",
                      "stats": {"files_val": 1, "files_train": 9}}],
        "tokenizers": [{"name": "sp_bpe_1024", "model_path": "tokenizers/fineweb_1024_bpe.model",
                        "vocab_path": "tokenizers/fineweb_1024_bpe.vocab"}]}))
    httpd = _serve(srv)
    yield f"http://127.0.0.1:{httpd.server_address[1]}/datasets", served, shards
    httpd.shutdown()
def test_fineweb_download_follows_the_export_layout(tmp_path, hf_mirror):
    url, served, _ = hf_mirror
    paths = prepare_fineweb(tmp_path / "data", 1, base_url=url, timeout=5)
    got = sorted(p.name for p in paths.dataset_dir.glob("*.bin"))
    assert got == ["fineweb_train_000000.bin", "fineweb_val_000000.bin"]  # only the first train shard
    for name in got:
        assert np.array_equal(read_shard(paths.dataset_dir / name), served[name])
    assert paths.tokenizer_path == tmp_path / "data" / "tokenizers" / "fineweb_1024_bpe.model"
    assert (tmp_path / "data" / "manifest.json").is_file()
    assert not list((tmp_path / "data").rglob("*.tmp")) and not list((tmp_path / "data").rglob(".fineweb*"))
    # the dataset folder's manifest lists exactly what was downloaded into it
    man = json.loads((paths.dataset_dir / "manifest.json").read_text())
    assert sorted(man["files"]) == got and man["variant"] == "sp1024"


def test_fineweb_download_refuses_more_shards_than_published(tmp_path, hf_mirror):
    url, _, _ = hf_mirror
    with pytest.raises(PrepareError, match="has 2 training shards, 3 requested"):
        prepare_fineweb(tmp_path / "data", 3, base_url=url, timeout=5)


def test_fineweb_corrupt_shard_leaves_nothing(tmp_path, hf_mirror):
    url, _, shards = hf_mirror
    (shards / "fineweb_val_000000.bin").write_bytes(b"\x00" * 2000)
    with pytest.raises(PrepareError, match="fineweb_val_000000.bin.*invalid"):
        prepare_fineweb(tmp_path / "data", 1, base_url=url, timeout=5)
    assert not list((tmp_path / "data").rglob("*.bin"))


# ----------------------------------------------------------------------------- tokenizer
def _spec_fields(model: bytes, which: int) -> dict[int, object]:
    """Non-default fields of the model's trainer (2) or normalizer (3) spec, by field number."""
    from golf.data.tokenizer import _skip_field, _varint
    import struct

    def fields(buf):
        i, out = 0, {}
        while i < len(buf):
            key, i = _varint(buf, i)
            f, w = key >> 3, key & 7
            if w == 0:
                out[f], i = _varint(buf, i)
            elif w == 5:
                out[f] = round(struct.unpack("<f", buf[i:i + 4])[0], 6)
                i += 4
            elif w == 2:
                n, i = _varint(buf, i)
                out[f] = buf[i:i + n]
                i += n
            else:
                i = _skip_field(buf, i, w)
        return out
    return fields(fields(model)[which])


# TrainerSpec / NormalizerSpec field numbers (sentencepiece_model.proto) of what the
# challenge's builder sets; the official model serializes exactly these non-defaults.
TRAINER_FIELDS = {3: "model_type", 4: "vocab_size", 10: "character_coverage", 25: "split_digits",
                  33: "hard_vocab_limit", 35: "byte_fallback", 40: "unk_id", 41: "bos_id",
                  42: "eos_id", 43: "pad_id"}


def test_tokenizer_command_matches_the_official_settings_and_is_deterministic(
        tmp_path, official_tokenizer, shared_data):
    """`prepare tokenizer` twice on the same text: byte-identical .model; its trainer and
    normalizer settings are the official sp1024's (read from both models' protos)."""
    from golf.data.sources.tokenizer_train import prepare_tokenizer
    src = shared_data / "corpora" / "c4_en_olmo_sample1000" / "c4-sample.00000-of-00001.json.gz"
    small = tmp_path / "c4_200.jsonl"
    with gzip.open(src, "rt", encoding="utf-8") as f:
        small.write_text("".join(next(f) for _ in range(200)))
    a = prepare_tokenizer([small], 600, tmp_path / "a" / "fineweb_600_bpe.model")
    b = prepare_tokenizer([small], 600, tmp_path / "b" / "fineweb_600_bpe.model")
    assert a.read_bytes() == b.read_bytes() and a.with_suffix(".vocab").is_file()
    official = official_tokenizer.read_bytes()
    ours = a.read_bytes()
    want, got = _spec_fields(official, 2), _spec_fields(ours, 2)
    for num in TRAINER_FIELDS:
        if num != 4:
            assert got.get(num) == want.get(num), TRAINER_FIELDS[num]
    assert got[4] == 600 and want[4] == 1024
    ours_n, off_n = _spec_fields(ours, 3), _spec_fields(official, 3)
    assert ours_n[1] == off_n[1] == b"nmt_nfkc" and ours_n[3] == off_n[3] == 0  # no dummy prefix
    assert ours_n.get(4, 1) == off_n.get(4, 1) == 1 and ours_n.get(5, 1) == off_n.get(5, 1) == 1
    sp = spm.SentencePieceProcessor(model_file=str(a))
    # the compiled rule table's bytes differ by build (trie layout), its effect must not
    off = spm.SentencePieceProcessor(model_file=str(official_tokenizer))
    texts = [json.loads(line)["text"] for line in small.read_text().splitlines()]
    assert [sp.normalize(t) for t in texts] == [off.normalize(t) for t in texts]
    assert sp.vocab_size() == 600 and all(sp.is_byte(i) for i in range(4, 260))
    assert sp.id_to_piece(sp.piece_to_id("▁")) == "▁"
    with pytest.raises(PrepareError, match="already exists"):
        prepare_tokenizer([small], 600, a)
    assert sorted(p.name for p in a.parent.iterdir()) == ["fineweb_600_bpe.model",
                                                          "fineweb_600_bpe.vocab"]


def test_tokenizer_command_refuses_a_vocab_the_text_cannot_fill(tmp_path):
    from golf.data.sources.tokenizer_train import prepare_tokenizer
    txt = tmp_path / "tiny.txt"
    txt.write_text("a few words only, repeated: a few words only.")
    with pytest.raises(PrepareError, match="supports only .* pieces, 8192 requested"):
        prepare_tokenizer([txt], 8192, tmp_path / "t.model")
    assert not (tmp_path / "t.model").exists()
    with pytest.raises(PrepareError, match="264..65536"):
        prepare_tokenizer([txt], 100, tmp_path / "t.model")


# ----------------------------------------------------------------------------- text folder
def test_text_rerun_replaces_only_its_own_shards(tmp_path, embedded_data):
    """A smaller second preparation leaves none of the first's shards behind; a folder with a
    file no manifest listed is refused before anything is written."""
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"text": f"doc {i} " * 40}) + "\n" for i in range(60)))
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps({"text": f"other {i}"}) + "\n" for i in range(6)))
    out = tmp_path / "ds"
    first = prepare_text([big], embedded_data.tokenizer_path, out, val_docs=5, shard_tokens=500)
    assert len(first["files"]) > 3
    second = prepare_text([small], embedded_data.tokenizer_path, out, val_docs=2, shard_tokens=500)
    assert sorted(p.name for p in out.iterdir()) == sorted([*second["files"], "manifest.json"])
    man = json.loads((out / "manifest.json").read_text())
    assert man["files"] == second["files"] and man["vocab_size"] == 1024
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(PrepareError, match="notes.txt"):
        prepare_text([big], embedded_data.tokenizer_path, out, val_docs=5)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "fineweb_train_000009.bin").write_bytes(b"x")
    with pytest.raises(PrepareError, match="fineweb_train_000009.bin"):
        prepare_text([small], embedded_data.tokenizer_path, stray, val_docs=2)


def test_text_refuses_an_operator_tokenizer(tmp_path):
    """`prepare text` writes no byte sidecar, so a tokenizer with user_defined pieces (whose
    val split could then never be scored) is refused before any shard is written."""
    from golf.data.sources.tokenizer_train import train_tokenizer
    tok = tmp_path / "ops.model"
    train_tokenizer([f"\ue001word {i} and more text" for i in range(300)], tok, 300,
                    user_defined_symbols=["\ue001"])
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(5)))
    with pytest.raises(PrepareError, match="user_defined pieces.*byte sidecar"):
        prepare_text([src], tok, tmp_path / "ds", val_docs=1)
    assert not (tmp_path / "ds").exists()


# ----------------------------------------------------------------------------- proxy corpus
def _fake_shared(root, official_tokenizer, n_c4=104, n_fw=3):
    """A ../shared/data stand-in: n_c4 C4 documents, n_fw FineWeb documents, the official model."""
    c4 = root / "corpora/c4_en_olmo_sample1000/c4-sample.00000-of-00001.json.gz"
    fw = root / "corpora/fineweb_pgolf_docs200/verify_docs.jsonl"
    c4.parent.mkdir(parents=True)
    fw.parent.mkdir(parents=True)
    c4_docs = [f"web page {i}: the quick brown fox number {i * 7} jumps." for i in range(n_c4)]
    fw_docs = [f"fineweb document {i} about golf." for i in range(n_fw)]
    c4.write_bytes(gzip.compress("".join(json.dumps({"text": d}) + "\n" for d in c4_docs).encode()))
    fw.write_text("".join(json.dumps({"text": d}) + "\n" for d in fw_docs))
    (root / "tokenizers").mkdir()
    (root / "tokenizers/fineweb_1024_bpe.model").write_bytes(official_tokenizer.read_bytes())
    return c4_docs, fw_docs


def test_prepare_proxy_splits_c4_and_shuffles_training_by_seed(tmp_path, official_tokenizer):
    """`prepare proxy`: val = the first 100 C4 documents in order; train = the rest + FineWeb +
    stdlib sources in a seed-fixed order; the official tokenizer is copied byte for byte."""
    from golf.data.prepare import main
    from golf.data.sources.proxy import VAL_DOCS
    shared = tmp_path / "shared"
    c4_docs, fw_docs = _fake_shared(shared, official_tokenizer)
    sp = spm.SentencePieceProcessor(model_file=str(official_tokenizer))
    ds = {}
    for seed in (0, 1):
        root = tmp_path / f"root{seed}"
        assert main(["proxy", "--shared", str(shared), "--root", str(root), "--stdlib-mb", "0",
                     "--seed", str(seed)]) == 0
        assert (root / "tokenizers/fineweb_1024_bpe.model").read_bytes() == official_tokenizer.read_bytes()
        ds[seed] = root / "datasets/proxy_sp1024"
    want_val = np.concatenate([[1] + sp.encode(d) for d in c4_docs[:VAL_DOCS]])
    assert np.array_equal(read_shard(ds[0] / "fineweb_val_000000.bin"), want_val)
    assert np.array_equal(read_shard(ds[1] / "fineweb_val_000000.bin"), want_val)
    trains = [np.asarray(read_shard(ds[s] / "fineweb_train_000000.bin")) for s in (0, 1)]
    assert len(trains[0]) == len(trains[1]) and not np.array_equal(*trains)   # same docs, reordered
    text = sp.decode([t for t in trains[0].tolist() if t != 1])
    assert all(d in text for d in c4_docs[VAL_DOCS:] + fw_docs)


def test_prepare_proxy_rebuild_keeps_files_it_did_not_write(tmp_path, official_tokenizer):
    """A rebuild replaces the shards the folder's manifest lists; a shard it did not write is
    refused by name and left in place (the old build deleted every fineweb_*_*.bin there)."""
    from golf.data.sources.proxy import prepare_proxy
    shared, root = tmp_path / "shared", tmp_path / "root"
    with pytest.raises(PrepareError, match=r"c4-sample.*not found; pass --shared"):
        prepare_proxy(shared, root, stdlib_mb=0)
    _fake_shared(shared, official_tokenizer)
    prepare_proxy(shared, root, stdlib_mb=0)
    ds = root / "datasets/proxy_sp1024"
    prepare_proxy(shared, root, stdlib_mb=0, seed=3)             # its own files: replaced
    foreign = ds / "fineweb_train_000007.bin"
    foreign.write_bytes(b"someone else's shard")
    with pytest.raises(PrepareError, match="fineweb_train_000007.bin"):
        prepare_proxy(shared, root, stdlib_mb=0)
    assert foreign.read_bytes() == b"someone else's shard"


def test_a_data_source_is_one_file_found_by_the_dispatcher(tmp_path, monkeypatch, capsys):
    """Adding golf/data/sources/<name>.py with add_parser/run makes it a subcommand: no list to
    edit in prepare.py, and the packed script never embeds it (the whole package is left out)."""
    import sys

    from golf.data import prepare, sources
    names = {m.__name__.rsplit(".", 1)[1] for m in prepare.sources()}
    assert names == {"embedded", "fineweb", "proxy", "text", "tokenizer_train"}  # splits: no run()
    pkg = tmp_path / "extra"
    pkg.mkdir()
    (pkg / "toy.py").write_text(
        "def add_parser(sub):\n    p = sub.add_parser('toy')\n    p.add_argument('--n', type=int)\n"
        "    return p\n\ndef run(args):\n    print('toy ran', args.n)\n")
    monkeypatch.setattr(sources, "__path__", [*sources.__path__, str(pkg)])
    monkeypatch.delitem(sys.modules, "golf.data.sources.toy", raising=False)
    try:
        with pytest.raises(SystemExit) as help_exit:   # the CLI's --help lists the new source
            prepare.main(["--help"])
        assert help_exit.value.code == 0 and "{embedded,fineweb,proxy,text,tokenizer,toy}" \
            in capsys.readouterr().out
        assert prepare.main(["toy", "--n", "3"]) == 0
    finally:
        sys.modules.pop("golf.data.sources.toy", None)
    assert capsys.readouterr().out.strip() == "toy ran 3"
