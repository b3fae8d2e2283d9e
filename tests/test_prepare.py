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

from golf.data.prepare import (PrepareError, embedded_documents, is_val_doc, prepare_embedded,
                               prepare_fineweb, prepare_text, train_tokenizer)
from golf.data.shards import find_shards, read_shard


def _hashes(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_embedded_deterministic(tmp_path):
    a = prepare_embedded(tmp_path / "a")
    b = prepare_embedded(tmp_path / "b")
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


@pytest.fixture()
def hf_mirror(tmp_path, embedded_data):
    """A local HTTP server laid out like the challenge's HF export (root `datasets/`)."""
    import functools
    import http.server
    import shutil
    import threading
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
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(srv))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
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
