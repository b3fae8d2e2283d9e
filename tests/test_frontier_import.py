"""Import of a frontier record's banked checkpoint (`--stack pr1855|pr2135`): a state dict built
in the records' layout (qo/kv/mlp banks + the frontier tensors under their record names) from a
golfkit model loads back to identical logits with the depth loop on and off."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import randomize
from golf.run.config import Config
from golf.run.errors import InteropError
from golf.interop import import_checkpoint
from golf.model.gpt import GPT, quant_roles

pytestmark = pytest.mark.usefixtures("one_thread")
ENV = "NUM_LOOPS=1 LOOP_START=1 LOOP_END=2 PARALLEL_START_LAYER=3 ROPE_DIMS=4 EVAL_STRIDE=0"


def golf_cfg(stack: str) -> Config:
    return Config.from_preset(stack).replace(
        vocab_size=64, num_layers=5, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=2.0,
        rope_dims=4, num_loops=1, loop_start=1, loop_end=2, parallel_start_layer=3, gate_window=6)


def to_banks(sd: dict[str, torch.Tensor], L: int) -> dict[str, torch.Tensor]:
    """The records' banked layout: qo = [W_q per layer, then W_o], kv = [W_k.., then W_v..],
    mlp_up / mlp_down one per layer; every other tensor keeps its (record) name."""
    w = lambda i, n: sd.pop(f"blocks.{i}.{n}.weight")
    q, o = [w(i, "attn.c_q") for i in range(L)], [w(i, "attn.proj") for i in range(L)]
    k, v = [w(i, "attn.c_k") for i in range(L)], [w(i, "attn.c_v") for i in range(L)]
    up, down = [w(i, "mlp.fc") for i in range(L)], [w(i, "mlp.proj") for i in range(L)]
    return {**sd, "qo_bank": torch.stack(q + o), "kv_bank": torch.stack(k + v),
            "mlp_up_bank": torch.stack(up), "mlp_down_bank": torch.stack(down)}


def random_model(cfg: Config) -> GPT:
    torch.manual_seed(0)
    return randomize(GPT(cfg), std=0.2).eval()


@pytest.mark.parametrize("stack", ["pr1855", "pr2135"])
def test_banked_frontier_checkpoint_round_trips_loop_on_and_off(stack, tmp_path):
    cfg = golf_cfg(stack)
    m = random_model(cfg)
    sd = to_banks({k: v.clone() for k, v in m.state_dict().items()}, cfg.num_layers)
    assert {"skip_gates", "parallel_post_lambdas", "smear_gate.weight", "smear_lambda",
            "blocks.0.attn.attn_gate_w"} <= set(sd)
    assert ("softcap_pos" in sd) == (stack == "pr2135")
    src = tmp_path / "final_model.pt"
    torch.save(sd, src)
    res = import_checkpoint(src, tmp_path / "runs" / stack, stack=stack, env=ENV, log=lambda m: None)
    got = Config.load(res.out_dir / "config.json")
    assert got.model_dict() == cfg.model_dict()                  # shapes, stack and --env agree
    assert got.smear_gate_bos_fix == (stack == "pr1855") and got.asym_logit_rescale == (stack == "pr2135")
    back = GPT(got)
    back.load_state_dict(torch.load(res.out_dir / "ema.pt", weights_only=True)["state_dict"])
    back.eval()
    assert back.looping                                          # evaluation runs the loop
    idx = torch.randint(2, 64, (2, 12))
    idx[:, 0] = idx[0, 6] = 1
    for looping in (True, False):
        m.looping = back.looping = looping
        with torch.no_grad():
            assert torch.equal(back(idx), m(idx)), looping
    info = json.loads((res.out_dir / "import.json").read_text())
    assert info["layout"] == "banked" and any(w.startswith("looping:") for w in info["warnings"])


def test_frontier_banked_checkpoint_needs_its_stack(tmp_path):
    cfg = golf_cfg("pr1855")
    src = tmp_path / "final_model.pt"
    torch.save(to_banks(dict(random_model(cfg).state_dict()), cfg.num_layers), src)
    with pytest.raises(InteropError, match="pass --stack pr1855 or --stack pr2135"):
        import_checkpoint(src, tmp_path / "runs" / "x", env=ENV, log=lambda m: None)
    sd = to_banks(dict(random_model(cfg).state_dict()), cfg.num_layers)
    sd["parallel_resid_lambdas"] = sd["parallel_resid_lambdas"][:3]
    torch.save(sd, src)
    with pytest.raises(InteropError, match=r"parallel_resid_lambdas: shape \(3, 2\).*expected \(5, 2\)"):
        import_checkpoint(src, tmp_path / "runs" / "y", stack="pr1855", env=ENV, log=lambda m: None)
    assert not (tmp_path / "runs" / "y").exists()


def test_frontier_model_quantizes_and_loads_back(tmp_path):
    """The frontier tensors are control tensors (fp32 passthrough, never GPTQ'd, never Muon's),
    and the artifact rebuilds the model with the loop on."""
    import quant
    cfg = golf_cfg("pr2135").replace(asym_logit_train=True)
    m = random_model(cfg)
    with torch.no_grad():
        m.softcap_pos.fill_(27.0)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 64, (2, 16), generator=g) for _ in range(2)]
    hs = quant.collect_hessians(m, batches)
    q = quant.quantize_model(m, hessians=hs, method="gptq", meta={"config": cfg.to_dict()},
                             policy=quant.QuantPolicy(small_numel=256, compressors=("zstd",),
                                                      **quant_roles(m)))  # golf.model.gpt's roles
    by = {t.name: t for t in q.tensors}
    for n in ("skip_gates", "parallel_post_lambdas", "parallel_resid_lambdas", "smear_gate.weight",
              "smear_lambda", "softcap_pos", "blocks.2.attn.attn_gate_w"):
        assert by[n].kind == "pass" and by[n].method == "fp32", n
    assert by["blocks.2.mlp.fc.weight"].method == "gptq"
    quant.save_artifact(tmp_path / "m.gkq", q)
    sd, meta = quant.load_artifact(tmp_path / "m.gkq")
    back = GPT(Config.from_dict(meta["config"]))
    back.load_state_dict(sd, strict=True)
    assert back.looping and float(back.softcap_pos.detach()) == 27.0
    x = batches[0]
    with torch.no_grad():
        ref, out = m(x), back.eval()(x)
    assert float((out - ref).pow(2).mean() / ref.pow(2).mean()) < 0.05
