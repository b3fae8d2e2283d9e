"""One declaration per extension concept: a toy entry added to the owning table (and nowhere
else) reaches every place that reads it."""
from __future__ import annotations

import zlib

import pytest

import golf.main as gm
from golf.run import settings
from golf.run.config import Config
from golf.submission.amalgamate import pip_name
from quant import artifact, codec, methods
from quant.bounded import zlib_d
from quant.core import quantize_model
from quant.records import RECORD_METHODS, record_policy
from quant.policy import QuantPolicy

TOY_METHOD = methods.Method("a toy method registered by a test", True, False, False)


def _help_line(name: str, out: str) -> str:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [name])
    # a long accepts column may wrap onto the following indented lines
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith("  ") and lines[i].split()[0].isupper()), len(lines))
    return " ".join(lines[start:end])


def test_a_registered_quant_method_is_accepted_and_listed(monkeypatch, capsys):
    env = {"QUANT_METHOD": "toy_method"}
    assert any("QUANT_METHOD" in p for p in Config.from_env(env, cpu_preset=True).problems())
    monkeypatch.setitem(methods.METHODS, "toy_method", TOY_METHOD)
    cfg = Config.from_env(env, cpu_preset=True)
    assert cfg.quant_method == "toy_method" and not cfg.problems()
    assert settings.lookup("QUANT_METHOD").parse("toy_method") == "toy_method"
    assert gm.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "toy_method" in _help_line("QUANT_METHOD", out)
    assert f"toy_method: {TOY_METHOD.meaning}; fits BUDGET_BYTES" in out


def test_quant_method_flags_are_read_from_the_table(monkeypatch):
    assert methods.default_method() == Config().quant_method == "gptq"
    assert set(RECORD_METHODS) == {n for n, m in methods.METHODS.items() if m.record_coders}
    for name in RECORD_METHODS:
        assert record_policy(name, QuantPolicy()).compressors == methods.METHODS[name].record_coders
    # a second default is refused rather than silently picking one
    monkeypatch.setitem(methods.METHODS, "toy_method",
                        methods.Method("second default", True, False, False, default=True))
    with pytest.raises(ValueError, match="exactly one default"):
        methods.default_method()


def test_an_unknown_quant_method_lists_the_table():
    import torch
    with pytest.raises(Exception, match="QUANT_METHOD to one of gptq, rtn, int8"):
        quantize_model({"w": torch.zeros(4, 4)}, method="nope")


def _toy_codec() -> codec.Codec:
    """zlib-1 reversed: smaller than raw, decodable, and unlike every real codec's bytes."""
    return codec.Codec(lambda d: zlib.compress(d, 1)[::-1], lambda d, limit: zlib_d(d[::-1], limit),
                       ratio=0.5, tried=True, since=artifact.LAYOUT_VERSION + 1,
                       module="toycodec", pip="toy-codec")


def test_a_registered_codec_is_tried_priced_required_and_versioned(monkeypatch, tmp_path):
    import torch
    monkeypatch.setitem(codec.REGISTRY, "toy", _toy_codec())
    policy = QuantPolicy()
    assert policy.compressors[-1] == "toy"                 # tried by default, registry order
    assert codec.codec_ratio(policy.compressors) == 0.5     # the fitter's first guess
    assert pip_name("toycodec") == "toy-codec"              # the packed script's requirements
    sd = {"blocks.0.attn.c_q.weight": torch.randn(300, 256, generator=torch.Generator().manual_seed(0))}
    q = quantize_model(sd, method="rtn", policy=QuantPolicy(compressors=("toy",)))
    header, _payload = artifact.parse_artifact(q.to_bytes())
    assert header["version"] == artifact.LAYOUT_VERSION + 1
    assert {st["codec"] for st in header["streams"]} == {"toy"}
    loaded, _meta = artifact.load_artifact(tmp_path / "x.gkq", blob=q.to_bytes())
    assert torch.equal(loaded["blocks.0.attn.c_q.weight"], q.state_dict()["blocks.0.attn.c_q.weight"])


def test_the_codec_table_gives_todays_defaults():
    """The table reproduces what the scattered lists said (artifact bytes depend on them)."""
    assert QuantPolicy().compressors == ("zstd", "brotli", "lzma", "zlib", "rans", "ctxrans")
    assert artifact.FORMAT_VERSION == 5 and artifact.SUPPORTED_VERSIONS == (1, 2, 3, 4, 5)
    assert codec.codec_ratio(("lzma", "zlib")) == 1.07 and codec.codec_ratio(("pergroup_v1",)) == 1.2
    assert pip_name("zstandard") == "zstandard" and pip_name("yaml") == "pyyaml"


# ----------------------------------------------------------------------------- parameter roles
# The rules as they stood before the roles were declared in golf/model/gpt.py, written out here
# independently: golf/train/optim.py's records grouping and quant/policy.py's classes and fp32 names.
OLD_CONTROL = ("attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix", "resid_mixes",
               "q_gain", "skip_weight", "skip_weights", "smear", "bigram.scale", "ve_shared.scale",
               "ve_layer_scales", "xsa_gate", "skip_gates", "parallel_post_lambdas",
               "parallel_resid_lambdas", "attn_gate_w", "softcap_pos", "softcap_neg")
OLD_TABLES = ("tok_emb.weight", "bigram.embed.weight", "ve_shared.embed.weight")


def _old_group(name: str, p) -> str:
    if p.ndim == 2 and name.startswith("blocks.") and not any(c in name for c in OLD_CONTROL):
        return "muon"
    return "emb" if name in OLD_TABLES or name.startswith("lm_head") else "scalar"


def _old_class(name: str, t, small_numel: int) -> str:
    if not t.is_floating_point() or t.numel() <= small_numel or t.ndim == 0:
        return "small"
    if ".attn." in name or name.startswith("attn."):
        return "attention"
    if ".mlp." in name or name.startswith("mlp."):
        return "mlp"
    return "embedding" if any(s in name for s in ("tok_emb", "embed", "lm_head")) else "other"


@pytest.mark.parametrize("preset", ["cpu", "r29", "cpu_frontier"])
def test_parameter_roles_keep_the_groups_and_classes(preset):
    import torch
    from golf.model.gpt import GPT, quant_roles
    from golf.train.optim import split_params
    from quant.policy import classify, is_control
    cfg = Config.from_preset(preset)
    with torch.device("meta"):  # shapes and names only: no weights to initialise
        model = GPT(cfg)
    got = dict.fromkeys(map(id, model.parameters()), "")
    for group, params in zip(("muon", "emb", "scalar"), split_params(model, "records")):
        got.update({id(p): group for p in params})
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert {n: got[id(p)] for n, p in named} == {n: _old_group(n, p) for n, p in named}
    policy = QuantPolicy(small_numel=cfg.quant_small_numel, **quant_roles(model))
    sd = model.state_dict()
    assert ({n: classify(n, t.numel(), t.ndim, t.is_floating_point(), policy) for n, t in sd.items()}
            == {n: _old_class(n, t, cfg.quant_small_numel) for n, t in sd.items()})
    assert ({n for n in sd if is_control(n, policy.control_patterns)}
            == {n for n in sd if any(c in n for c in OLD_CONTROL)})
    assert len({_old_group(n, p) for n, p in named}) == 3  # every group is exercised


def test_the_optimizer_no_longer_speaks_the_quantizers_vocabulary():
    import ast
    from pathlib import Path
    tree = ast.parse(Path(__file__).resolve().parents[1].joinpath("golf/train/optim.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m and m.split(".")[0] == "quant"}


def test_a_new_parameter_is_routed_by_its_declared_role(monkeypatch):
    """A parameter golf/model/gpt.py gives a role is grouped by the optimizer and classed by the
    quantizer by that role: a new lookup table is an embedding everywhere, and a name added to
    CONTROL_PARAMS turns a 2-D block tensor from a Muon matrix into an fp32 control tensor."""
    import torch
    from golf.model import gpt as gmodel
    from golf.train.optim import split_params
    from quant.policy import classify, is_control
    cfg = Config.from_preset("cpu")
    with torch.device("meta"):
        model = gmodel.GPT(cfg)
        model.blocks[0].toy_mix = torch.nn.Parameter(torch.empty(512, 256))   # > small_numel
        model.toy_table = torch.nn.Embedding(cfg.vocab_size, 128)

    def routes(name: str, p) -> tuple[str, str, str, bool]:
        muon, emb, _scalar = split_params(model)
        group = "muon" if any(p is q for q in muon) else "emb" if any(p is q for q in emb) else "scalar"
        policy = QuantPolicy(**gmodel.quant_roles(model))
        cls = classify(name, p.numel(), p.ndim, p.is_floating_point(), policy)
        return gmodel.param_roles(model)[name], group, cls, is_control(name, policy.control_patterns)

    table = model.toy_table.weight
    assert routes("toy_table.weight", table) == ("embedding", "emb", "embedding", False)
    mix = model.blocks[0].toy_mix
    assert routes("blocks.0.toy_mix", mix) == ("matrix", "muon", "other", False)
    monkeypatch.setattr(gmodel, "CONTROL_PARAMS", (*gmodel.CONTROL_PARAMS, "toy_mix"))
    assert routes("blocks.0.toy_mix", mix) == ("control", "scalar", "other", True)


def test_interop_keeps_no_role_rules_of_its_own():
    """golf/interop.py's name tables say which tensors a record's checkpoint holds and what each
    shape tells; the imported run's tensors get their roles from golf.model.gpt like any run's (the
    run directory holds the weights only), so interop declares no role vocabulary."""
    import ast
    from pathlib import Path
    tree = ast.parse(Path(__file__).resolve().parents[1].joinpath("golf/interop.py").read_text())
    assigned = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                if isinstance(t, ast.Name)}
    assert {"GLOBAL_PARAMS", "BLOCK_PARAMS"} <= assigned          # the walk sees its tables
    assert not {a for a in assigned if any(w in a for w in ("CONTROL", "ROLE", "EMBEDDING"))}
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not used & {"is_control", "classify", "param_role", "split_params"}
