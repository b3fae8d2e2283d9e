"""The optimizer step's two schemes (golf/train/step.py): sharded Muon gives the plain update,
checked in one process and across gloo ranks spawned here (2 and 3 ranks vs 1)."""
from __future__ import annotations


import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from golf.run.config import Config
from golf.model.gpt import GPT
from golf.train.muon import Muon, newton_schulz, shape_factor
from golf.train.optim import build_optimizers
from golf.train.step import StepPlan, Stepper
from conftest import exit_without_teardown

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = Config().replace(num_layers=3, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=2.0,
                       vocab_size=61, rope_dims=8)
GLOBAL_ROWS, SEQ = 6, 12


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    t = torch.randint(0, CFG.vocab_size, (GLOBAL_ROWS, SEQ + 1), generator=g)
    return t[:, :-1], t[:, 1:]


def train_steps(rank: int, world: int, accum: int, steps: int, *, sharded: bool, clip: float,
                state: dict | None = None) -> tuple[dict, list[dict]]:
    """`steps` steps on the same global batches; rank r takes rows of micro-part m*W + r."""
    torch.manual_seed(0)
    model = GPT(CFG)
    with torch.no_grad():  # give the zero-init projections weight so every matrix learns
        for b in model.blocks:
            b.attn.proj.weight.normal_(std=0.05)
            b.mlp.proj.weight.normal_(std=0.05)
    opts = build_optimizers(model, CFG)
    if state is not None:
        model.load_state_dict(state["model"])
        for o, s in zip(opts, state["opts"]):
            o.load_state_dict(s)
    st = Stepper(model, opts, StepPlan(rank=rank, world=world, accum=accum, clip_norm=clip,
                                       sharded=sharded, reduce_bf16=False))
    per = GLOBAL_ROWS // (world * accum)
    for s in range(steps):
        x, y = batch(s + (state or {}).get("step", 0))
        parts = [(m * world + rank) * per for m in range(accum)]
        st.accumulate(lambda a, b: model(a, b), [(x[p:p + per], y[p:p + per]) for p in parts])
        st.step()
        st.zero()
    return ({k: v.detach().clone() for k, v in model.state_dict().items()}, st.state_dicts())


def test_sharded_form_equals_plain_form_in_one_process():
    plain, _ = train_steps(0, 1, 2, 4, sharded=False, clip=0.0)
    shard, _ = train_steps(0, 1, 2, 4, sharded=True, clip=0.0)
    assert all(torch.equal(plain[k], shard[k]) for k in plain)
    # clipped: the global norm is summed in another order (banks, then small tensors)
    plain_c, _ = train_steps(0, 1, 2, 4, sharded=False, clip=0.05)
    shard_c, _ = train_steps(0, 1, 2, 4, sharded=True, clip=0.05)
    assert any(not torch.equal(plain[k], plain_c[k]) for k in plain)   # the clip was active
    for k in plain_c:
        assert torch.allclose(plain_c[k], shard_c[k], rtol=1e-5, atol=1e-6), k


def test_muon_update_matches_the_formula():
    """One plain step on one matrix against §2.3 written out by hand."""
    torch.manual_seed(1)
    w = torch.nn.Parameter(torch.randn(24, 8))
    g = torch.randn(24, 8)
    w0 = w.detach().clone()
    opt = Muon([w], lr=0.1, momentum=0.9, ns_steps=5, weight_decay=0.2)
    w.grad = g.clone()
    opt.step()
    buf = g                                  # mu*0 + g
    u = newton_schulz(g + 0.9 * buf, 5)
    expect = w0 * (1 - 0.1 * 0.2) - 0.1 * shape_factor((24, 8)) * u
    assert shape_factor((24, 8)) == pytest.approx(3 ** 0.5)
    assert torch.allclose(w.detach(), expect, atol=1e-6)


def _worker(rank: int, world: int, store: str, accum: int, steps: int, out: str) -> None:
    torch.set_num_threads(1)
    # a file rendezvous: no TCP port to race other processes for
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        half = steps // 2
        sd, opt_states = train_steps(rank, world, accum, half, sharded=True, clip=0.05)
        # resume mid-run from rank 0's gathered state, as a checkpoint (written by rank 0) would
        box = [opt_states]
        dist.broadcast_object_list(box, src=0)
        opt_states = box[0]
        sd, _ = train_steps(rank, world, accum, steps - half, sharded=True, clip=0.05,
                            state={"model": sd, "opts": opt_states, "step": half})
        if rank == 0:
            torch.save(sd, out)
        dist.barrier()  # leave together: gloo aborts a rank whose peer closed mid-read
    finally:
        dist.destroy_process_group()
    exit_without_teardown()


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_with_sharded_muon_and_resume_match_one_process(world, tmp_path):
    """W ranks x 1 micro-batch == 1 rank x W micro-batches, with clipping and a resume
    half-way. W=2 is bit-identical (halving is exact); W=3 rounds 1/3 and gloo's ring sum
    differently, so it is held to 1e-4 of each tensor's scale."""
    steps = 4
    one, states = train_steps(0, 1, world, steps // 2, sharded=True, clip=0.05)
    one, _ = train_steps(0, 1, world, steps - steps // 2, sharded=True, clip=0.05,
                         state={"model": one, "opts": states, "step": steps // 2})
    out = tmp_path / "weights.pt"
    mp.spawn(_worker, args=(world, str(tmp_path / "store"), 1, steps, str(out)), nprocs=world, join=True)
    many = torch.load(out)
    for k in one:
        if world == 2:
            assert torch.equal(one[k], many[k]), k
        else:
            assert (one[k] - many[k]).abs().max() <= 1e-4 * one[k].abs().max().clamp_min(1e-3), k
