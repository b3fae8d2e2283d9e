"""quant/ driven like the pipeline drives it, on a small stand-in for the golf GPT (tied embedding,
`hessian_modules()` mapping tok_emb.weight to the head's input): calibrate -> fit -> save ->
load into a fresh model with strict=True."""
from __future__ import annotations

import torch
from torch import nn

import quant

FAST = quant.QuantPolicy(compressors=("zstd",), small_numel=4096)  # the matrices quantize
VOCAB = 400


class Block(nn.Module):
    def __init__(self, d: int, h: int):
        super().__init__()
        self.attn = nn.Module()
        self.attn.c_qkv = nn.Linear(d, h, bias=False)
        self.attn.proj = nn.Linear(h, d, bias=False)
        self.mlp = nn.Module()
        self.mlp.fc = nn.Linear(d, h, bias=False)
        self.mlp.proj = nn.Linear(h, d, bias=False)
        self.attn_scale = nn.Parameter(torch.ones(d))
        self.norm = nn.LayerNorm(d)

    def forward(self, x):
        n = self.norm(x)
        x = x + self.attn_scale * self.attn.proj(torch.tanh(self.attn.c_qkv(n)))
        return x + self.mlp.proj(torch.relu(self.mlp.fc(self.norm(x))) ** 2)


class TinyGPT(nn.Module):
    def __init__(self, vocab=VOCAB, d=128, h=320, layers=2):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, h) for _ in range(layers))
        self.final_norm = nn.LayerNorm(d)
        self.lm_head = nn.Identity()  # its input is the final-normed hidden state
        with torch.no_grad():
            self.tok_emb.weight.mul_(0.05)

    def forward(self, ids):
        x = self.tok_emb(ids)
        for b in self.blocks:
            x = b(x)
        return self.lm_head(self.final_norm(x)) @ self.tok_emb.weight.T

    def hessian_modules(self):
        mods = {"tok_emb.weight": self.lm_head}
        for i, b in enumerate(self.blocks):
            for name, lin in (("attn.c_qkv", b.attn.c_qkv), ("attn.proj", b.attn.proj),
                              ("mlp.fc", b.mlp.fc), ("mlp.proj", b.mlp.proj)):
                mods[f"blocks.{i}.{name}.weight"] = lin
        return mods


def _setup():
    torch.manual_seed(0)
    model = TinyGPT().eval()
    g = torch.Generator().manual_seed(1)
    train = [torch.randint(0, VOCAB, (4, 32), generator=g) for _ in range(4)]
    held = torch.randint(0, VOCAB, (4, 32), generator=g)
    return model, quant.collect_hessians(model, train), held


def _logit_error(model, sd, ids) -> float:
    fresh = TinyGPT().eval()
    fresh.load_state_dict(sd, strict=True)
    with torch.no_grad():
        ref, out = model(ids), fresh(ids)
    return float((out - ref).pow(2).mean() / ref.pow(2).mean())


def test_pipeline_round_trip_and_budget_trades_bytes_for_error(tmp_path):
    model, hs, held = _setup()
    assert set(hs) == set(model.hessian_modules())
    free = quant.quantize_model(model, hessians=hs, method="gptq", meta={"config": {"d": 128}},
                                policy=FAST)
    # 70 %: at 60 % this untrained model's relative logit error is ~0.9-1.0 and which side of
    # 1.0 a fit lands on depends on the bisection's path (the ladder's extent moved it)
    tight_budget = int(free.total_bytes * 0.7)
    errs = {}
    for label, budget in (("free", None), ("tight", tight_budget)):
        fit = None if budget is None else quant.BudgetFit(budget)
        q = quant.quantize_model(model, hessians=hs, method="gptq", meta={"config": {"d": 128}},
                                 policy=FAST, fit=fit)
        path = tmp_path / f"{label}.gkq"
        assert quant.save_artifact(path, q) == q.total_bytes
        sd, meta = quant.load_artifact(path)
        assert meta["config"] == {"d": 128}
        errs[label] = _logit_error(model, sd, held)
        if budget is not None:
            assert q.total_bytes <= budget
            again = quant.quantize_model(model, hessians=hs, method="gptq",
                                         meta={"config": {"d": 128}}, policy=FAST, fit=fit)
            assert again.to_bytes() == q.to_bytes()  # the fit is deterministic too
    assert errs["free"] < 0.1  # untrained random model: relative logit MSE at int6/int7
    assert errs["free"] < errs["tight"] < 1.0


def test_gptq_model_beats_rtn_on_output_error():
    model, hs, held = _setup()
    e = {m: _logit_error(model, quant.quantize_model(model, hessians=hs, method=m, policy=FAST).state_dict(), held)
         for m in ("rtn", "gptq")}
    assert e["gptq"] < e["rtn"]
