"""A non-1024 vocabulary through every piece of the pipeline: a challenge-settings 8192-piece
tokenizer, shards made with it scored exactly, and the GPT plus quantizer at VOCAB_SIZE=8192
(the tied embedding classed as an embedding, its GPTQ Hessian, the fitter's choice reported,
the artifact loading back). The whole main job at 8192 takes ~70 s on CPU (docs/ablations.md), too slow
for the suite, so the pieces are tested here."""
from __future__ import annotations

import gzip
import json

import pytest
import torch

import quant
from conftest import tiny_pipeline_config

V = 8192


@pytest.fixture(scope="module")
def sp8192_data(tmp_path_factory, shared_data):
    """prepare tokenizer --vocab 8192 on the C4 sample, then prepare text with it."""
    from golf.data.sources.splits import DatasetPaths
    from golf.data.sources.text import prepare_text
    from golf.data.sources.tokenizer_train import prepare_tokenizer
    root = tmp_path_factory.mktemp("sp8192")
    src = shared_data / "corpora" / "c4_en_olmo_sample1000" / "c4-sample.00000-of-00001.json.gz"
    tok = prepare_tokenizer([src], V, root / "tokenizers" / "fineweb_8192_bpe.model")
    prepare_text([src], tok, root / "ds", val_docs=50, vocab_size=V)
    return DatasetPaths(root / "ds", tok), src


def test_sp8192_shards_score_exactly_and_pack_more_bytes_per_token(sp8192_data, official_tokenizer):
    import sentencepiece as spm
    from golf.eval.score import load_eval_data
    data, src = sp8192_data
    lines: list[str] = []
    ed = load_eval_data(str(data.dataset_dir), str(data.tokenizer_path), V, log=lines.append)
    with gzip.open(src, "rt", encoding="utf-8") as f:
        val_docs = [json.loads(next(f))["text"] for _ in range(50)]
    off = spm.SentencePieceProcessor(model_file=str(official_tokenizer))
    normalized = sum(len(off.decode(off.encode(d)).encode("utf-8")) for d in val_docs)
    assert ed.decoded_bytes == normalized            # same normalization, same text bytes
    assert int(ed.tokens.max()) >= 1024              # the big vocabulary is used
    n_1024 = sum(len(off.encode(d)) for d in val_docs)
    assert ed.n_targets < 0.85 * (n_1024 + len(val_docs))  # fewer tokens for the same bytes


def test_gpt_and_quantizer_at_vocab_8192(tmp_path):
    """Tied 8192 x d embedding: classed `embedding`, quantized by GPTQ with its head-input
    Hessian, its bits in the report, and the artifact loads strictly into a fresh GPT."""
    from golf.data.sources.splits import DatasetPaths
    from golf.model.gpt import GPT
    cfg = tiny_pipeline_config(DatasetPaths(tmp_path, tmp_path / "t.model"), vocab_size=V,
                               num_layers=1, model_dim=32, num_heads=2, num_kv_heads=1,
                               bigram_vocab_size=0, ve_dim=0)
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    assert model.tok_emb.weight.shape == (V, 32)
    g = torch.Generator().manual_seed(1)
    hs = quant.collect_hessians(model, [torch.randint(0, V, (2, 64), generator=g) for _ in range(2)])
    assert hs["tok_emb.weight"].shape == (32, 32)
    policy = quant.QuantPolicy(compressors=("zstd",), small_numel=cfg.quant_small_numel)
    budget = int(sum(p.numel() for p in model.parameters()) * 2 * 0.35)   # 35 % of fp16
    q = quant.quantize_model(model, hessians=hs, method="gptq", policy=policy,
                             meta={"config": cfg.to_dict()}, fit=quant.BudgetFit(budget))
    assert q.total_bytes <= budget
    emb = next(r for r in q.report if r["name"] == "tok_emb.weight")
    assert emb["class"] == "embedding" and emb["method"] == "gptq" and emb["bits"]
    assert emb["share"] > 0.5                        # at 8192 rows the embedding dominates
    assert "tok_emb.weight" in quant.format_report(q)
    path = tmp_path / "m.gkq"
    quant.save_artifact(path, q)
    sd, _ = quant.load_artifact(path)
    fresh = GPT(cfg).eval()
    fresh.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()},
                          strict=True)
    assert torch.equal(fresh.tok_emb.weight, q.state_dict()["tok_emb.weight"].float())
    assert emb["bits"] <= 8 and emb["bytes"] < V * 32 * 2 * 0.5   # well under its fp16 size
    ids = torch.randint(0, V, (1, 64), generator=g)
    with torch.no_grad():
        assert fresh(ids).shape == (1, 64, V)
