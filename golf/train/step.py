"""One optimizer step across ranks: accumulate, reduce, clip the global gradient, update.

Two communication schemes, one result per matrix (golf/train/muon.py):
  sharded (MUON_SHARDED=1, default): Muon banks are reduce-scattered asynchronously, largest
    first, while every other gradient goes out in one packed all-reduce; each rank
    orthogonalises its own matrices, the AdamW step runs while the first update gather is in
    flight. On NCCL the bank reduction may be bf16 (MUON_REDUCE_BF16=1, as the records);
    the small tensors, the norms and the momentum stay fp32 (AdamW's second moment and the
    clip threshold are sensitive to rounding, and they are a fraction of a percent of the bytes).
  plain (MUON_SHARDED=0): one flat fp32 all-reduce of every gradient, then every rank runs
    the whole update (the reference the sharded form is tested against).
Clipping is on the averaged gradient in both (like one GPU with accumulation; the records
clip each rank's local gradient, which makes 1 and 8 GPUs differ).
Nothing here reads a value back to the host: the loss stays a device tensor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.distributed as dist

from golf.train.muon import Muon

CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s epsilon


@dataclass(frozen=True)
class StepPlan:
    """How a step runs: this rank of `world`, `accum` micro-batches per rank, the global-norm
    clip (0 = off), and the communication scheme (sharded, bf16 bank reduction on NCCL)."""
    rank: int = 0
    world: int = 1
    accum: int = 1
    clip_norm: float = 0.0
    sharded: bool = True
    reduce_bf16: bool = False


class Stepper:
    def __init__(self, model: torch.nn.Module, opts: list[torch.optim.Optimizer], plan: StepPlan):
        self.model, self.opts = model, opts
        rank, world, reduce_bf16 = plan.rank, plan.world, plan.reduce_bf16
        self.rank, self.world, self.accum, self.clip_norm = rank, world, plan.accum, plan.clip_norm
        self.muon = next((o for o in opts if isinstance(o, Muon)), None)
        self.others = [o for o in opts if o is not self.muon]
        self.sharded = plan.sharded and self.muon is not None
        muon_ids = {id(p) for g in (self.muon.param_groups if self.muon else []) for p in g["params"]}
        self.small = [p for o in self.others for g in o.param_groups for p in g["params"]
                      if id(p) not in muon_ids]
        on_nccl = world > 1 and dist.get_backend() == "nccl"
        self.comm_dtype = torch.bfloat16 if (reduce_bf16 and on_nccl) else torch.float32

    def zero(self) -> None:
        for o in self.opts:
            o.zero_grad(set_to_none=True)

    def accumulate(self, forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Forward/backward over this rank's micro-batches; the mean loss as a device tensor."""
        total = None
        for x, y in batches:
            loss = forward(x, y)
            (loss / self.accum).backward()
            part = loss.detach() / self.accum
            total = part if total is None else total + part
        return total

    def step(self) -> None:
        """Reduce, clip and apply every optimizer (after `accumulate`)."""
        if self.sharded:
            self._sharded_step()
        else:
            self._plain_step()

    # ------------------------------------------------------------------ the two schemes
    def _plain_step(self) -> None:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.world > 1:
            _packed_all_reduce([p.grad for p in params], self.world)
        if self.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, self.clip_norm)
        for o in self.opts:
            o.step()

    def _sharded_step(self) -> None:
        muon, rank, world = self.muon, self.rank, self.world
        works = muon.reduce_grads(rank, world, self.comm_dtype)  # async, largest bank first
        small = [p.grad for p in self.small if p.grad is not None]
        _packed_all_reduce(small, world)                         # runs while the banks travel
        for w in works:
            w.wait()
        norms = muon.finish_reduce(rank, world)
        scale = None
        if self.clip_norm > 0:
            small_norms = torch._foreach_norm(small) if small else []
            total = torch.linalg.vector_norm(torch.cat([norms, *(n.reshape(1) for n in small_norms)]))
            scale = torch.clamp(self.clip_norm / (total + CLIP_EPS), max=1.0)
            if small:
                torch._foreach_mul_(small, scale)
        muon.sharded_step(rank, world, grad_scale=scale,
                          during=lambda: [o.step() for o in self.others])

    def state_dicts(self) -> list[dict]:
        """Every optimizer's full state (collective in the sharded form: call on all ranks)."""
        if self.sharded:
            self.muon.gather_state(self.rank, self.world)
        return [o.state_dict() for o in self.opts]


def _packed_all_reduce(grads: list[torch.Tensor], world: int) -> None:
    """Average gradients across ranks in one flat fp32 all-reduce (SUM, then / world)."""
    if world <= 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(world)
    torch._foreach_copy_(grads, [v.view_as(g) for v, g in zip(flat.split([g.numel() for g in grads]), grads)])
