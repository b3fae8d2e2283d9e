"""Muon (the records' optimizer for block matrices), in two forms that give the same update.

Plain: every rank holds every averaged gradient and orthogonalises every matrix.
Sharded ("Parallel Muon"): same-shape matrices form a bank; each bank's gradients are
reduce-scattered so each rank owns whole matrices, each rank runs momentum + Newton–Schulz
on its share only, and the updates are all-gathered, bank by bank, so the gather of one
bank overlaps the orthogonalisation of the next (and the AdamW step runs while the first
gather is in flight). Per matrix the arithmetic is the plain form's, so sharding changes
no result except through the dtype of the gradient reduction (bf16 on NCCL if asked, as
the records do). Momentum buffers are fp32 and per parameter in both forms, so checkpoints
move between them and between world sizes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist

NS_COEFFS = (3.4445, -4.7750, 2.0315)
# MUON_NS_COEFFS: the (a, b, c) of each Newton–Schulz iteration, in order; the last repeats when
# MUON_NS_STEPS is larger. polar_express: the five per-iteration tuples of PR #1344 that the
# 2026-04 records (#1787 -> #1855 -> #2135) use, exactly as they ship.
NS_COEFF_SETS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "classic": (NS_COEFFS,),
    "polar_express": ((8.156554524902461, -22.48329292557795, 15.878769915207462),
                      (4.042929935166739, -2.808917465908714, 0.5000178451051316),
                      (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
                      (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
                      (2.3465413258596377, -1.7097828382687081, 0.42323551169305323)),
}


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7,
                  coeffs: str = "classic") -> torch.Tensor:
    """Approximate orthogonalisation UVᵀ of g (quintic Newton–Schulz, bf16 on CUDA).

    g may be one matrix (m, n) or a stack (b, m, n) of same-shape matrices, each orthogonalised
    on its own: one batched product per iteration instead of one launch per matrix. Iteration
    k uses NS_COEFF_SETS[coeffs][k] (the last one again past the end)."""
    table = NS_COEFF_SETS[coeffs]
    x = g.bfloat16() if g.is_cuda else g.float()
    transposed = x.size(-2) > x.size(-1)
    if transposed:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    for k in range(steps):
        a, b, c = table[min(k, len(table) - 1)]
        s = x @ x.mT
        x = a * x + (b * s + c * s @ s) @ x
    return (x.mT if transposed else x).to(g.dtype)


def row_normalize(u: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """MUON_ROW_NORMALIZE ("MuonEq-R"): each row of each matrix divided by its L2 norm (floor
    eps), applied to the Nesterov update before Newton–Schulz, as the 2026-04 records do."""
    return u / u.norm(dim=-1, keepdim=True).clamp_min(eps)


def _overlap() -> bool:
    """Launch collectives asynchronously only on NCCL, where they run on their own stream
    beside compute. gloo (CPU tests and runs) gains nothing from it, and several gloo ops in
    flight at once on its worker threads occasionally aborted a rank at exit."""
    return dist.get_backend() == "nccl"


def by_shape(params: list[torch.Tensor]) -> dict[tuple[int, ...], list[torch.Tensor]]:
    """Same-shape matrices together, in parameter order (one batched NS / one bank each)."""
    out: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for p in params:
        out.setdefault(tuple(p.shape), []).append(p)
    return out


def shape_factor(shape: tuple[int, ...]) -> float:
    """max(1, rows/cols)^0.5: the update scale that keeps tall matrices' steps comparable."""
    return max(1.0, shape[-2] / shape[-1]) ** 0.5


@dataclass
class Bank:
    """Same-shape matrices of one param group; rank r owns indices [lo, hi) of `params`."""
    group: int
    params: list[torch.Tensor]
    per_rank: int
    lo: int
    hi: int
    shard: torch.Tensor | None = None          # this rank's reduced gradients (per_rank, m, n)
    momentum: torch.Tensor | None = None       # fp32 (per_rank, m, n); state tensors are views
    pending: list = field(default_factory=list)


class Muon(torch.optim.Optimizer):
    """Nesterov momentum, orthogonalised update scaled by max(1, rows/cols)^0.5, decoupled WD."""

    def __init__(self, params, lr: float, momentum: float = 0.95, ns_steps: int = 5, weight_decay: float = 0.0,
                 ns_coeffs: str = "classic", row_normalize: bool = False):
        if ns_coeffs not in NS_COEFF_SETS:
            raise ValueError(f"MUON_NS_COEFFS={ns_coeffs!r}: use one of {', '.join(NS_COEFF_SETS)}")
        super().__init__(params, dict(lr=lr, momentum=momentum, ns_steps=ns_steps, weight_decay=weight_decay,
                                      ns_coeffs=ns_coeffs, row_normalize=row_normalize))
        self._banks: list[Bank] | None = None

    # ------------------------------------------------------------------ plain form
    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            live = [p for p in group["params"] if p.grad is not None]
            for ps in by_shape(live).values():  # same-shape matrices share one batched NS
                bufs = [self._buffer(p) for p in ps]
                g = torch.stack([p.grad for p in ps])
                u = self._orthogonal_update(g, torch.stack(bufs), group)
                for b, new in zip(bufs, u[1].unbind(0)):
                    b.copy_(new)
                self._apply(ps, u[0], group)

    def _buffer(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p, dtype=torch.float32)
        return state["momentum_buffer"]

    @staticmethod
    def _orthogonal_update(g: torch.Tensor, buf: torch.Tensor, group: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(NS(g + mu*buf'), buf') with buf' = mu*buf + g, for a stack of same-shape matrices;
        the Nesterov update row-normalised first under MUON_ROW_NORMALIZE. (.get: groups of a
        checkpoint from before these options load without them.)"""
        mom = group["momentum"]
        buf = buf.mul_(mom).add_(g)
        u = g.add(buf, alpha=mom)  # Nesterov
        if group.get("row_normalize", False):
            u = row_normalize(u)
        return newton_schulz(u, group["ns_steps"], coeffs=group.get("ns_coeffs", "classic")), buf

    @staticmethod
    def _apply(ps: list[torch.Tensor], u: torch.Tensor, group: dict) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        u = u.float().mul_(shape_factor(tuple(ps[0].shape)))
        if wd:
            torch._foreach_mul_(ps, 1 - lr * wd)
        torch._foreach_add_(ps, list(u[:len(ps)].unbind(0)), alpha=-lr)

    # ------------------------------------------------------------------ sharded form
    def banks(self, rank: int, world: int) -> list[Bank]:
        """Banks, largest first (their reductions are launched first and take longest)."""
        if self._banks is None:
            out = []
            for gi, group in enumerate(self.param_groups):
                for ps in by_shape(group["params"]).values():
                    k = -(-len(ps) // world)
                    out.append(Bank(gi, ps, k, min(rank * k, len(ps)), min((rank + 1) * k, len(ps))))
            out.sort(key=lambda b: -b.params[0].numel() * len(b.params))
            self._banks = out
        return self._banks

    def reduce_grads(self, rank: int, world: int, comm_dtype: torch.dtype) -> list:
        """Launch one async reduce-scatter (SUM) per bank; returns the work handles."""
        works = []
        for b in self.banks(rank, world):
            g = torch.stack([p.grad for p in b.params]).to(comm_dtype)
            pad = b.per_rank * world - len(b.params)
            if pad:
                g = torch.cat([g, g.new_zeros((pad, *g.shape[1:]))])
            b.shard = g.new_empty((b.per_rank, *g.shape[1:]))
            if world > 1:
                w = dist.reduce_scatter_tensor(b.shard, g, op=dist.ReduceOp.SUM, async_op=_overlap())
                works.extend([w] if w is not None else [])
            else:
                b.shard.copy_(g)
        return works

    def finish_reduce(self, rank: int, world: int) -> torch.Tensor:
        """Average the landed shards (fp32) and return every Muon matrix's gradient norm,
        in bank order, identical on every rank (each entry has one owner; the others add 0)."""
        norms = []
        for b in self.banks(rank, world):
            b.shard = b.shard.float().div_(world)
            n = torch.zeros(len(b.params), device=b.shard.device)
            if b.hi > b.lo:
                n[b.lo:b.hi] = torch.stack([m.norm() for m in b.shard[:b.hi - b.lo]])
            norms.append(n)
        flat = torch.cat(norms) if norms else torch.zeros(0)
        if world > 1 and flat.numel():
            dist.all_reduce(flat)
        return flat

    @torch.no_grad()
    def sharded_step(self, rank: int, world: int, grad_scale: torch.Tensor | None = None,
                     during: Callable[[], None] | None = None) -> None:
        """Momentum + NS on this rank's shards, all-gather each bank's update asynchronously
        and apply it while the next bank is orthogonalised; `during` runs after the first
        gather is launched (the AdamW step, so it overlaps the communication)."""
        prev: Bank | None = None
        for i, b in enumerate(self.banks(rank, world)):
            group = self.param_groups[b.group]
            g = b.shard if grad_scale is None else b.shard.mul_(grad_scale)
            u, _ = self._orthogonal_update(g, self._bank_momentum(b), group)
            full = u.new_empty((b.per_rank * world, *u.shape[1:]))
            work = dist.all_gather_into_tensor(full, u.contiguous(), async_op=_overlap()) if world > 1 else None
            if world == 1:
                full.copy_(u)
            b.pending = [full, work]
            if i == 0 and during is not None:
                during()
            if prev is not None:
                self._land(prev)
            prev = b
        if prev is not None:
            self._land(prev)
        if during is not None and not self._banks:
            during()

    def _land(self, b: Bank) -> None:
        full, work = b.pending
        if work is not None:
            work.wait()
        self._apply(b.params, full, self.param_groups[b.group])
        b.pending, b.shard = [], None

    def _bank_momentum(self, b: Bank) -> torch.Tensor:
        """This rank's momentum rows of a bank as one fp32 stack whose rows are the owned
        parameters' state tensors (views), plus zero rows for padding."""
        if b.momentum is None:
            rows = [self._buffer(p) for p in b.params[b.lo:b.hi]]
            like = b.params[0]
            stack = torch.zeros((b.per_rank, *like.shape), dtype=torch.float32, device=like.device)
            if rows:
                stack[:len(rows)] = torch.stack(rows)
            for j, p in enumerate(b.params[b.lo:b.hi]):
                self.state[p]["momentum_buffer"] = stack[j]
            b.momentum = stack
        return b.momentum

    def gather_state(self, rank: int, world: int) -> None:
        """Collective: give every rank every parameter's momentum (before state_dict() for a
        checkpoint, which then holds the same full state whatever the world size)."""
        if world == 1 or self._banks is None:
            return
        for b in self._banks:
            mine = self._bank_momentum(b)
            full = mine.new_empty((b.per_rank * world, *mine.shape[1:]))
            dist.all_gather_into_tensor(full, mine)
            for j, p in enumerate(b.params):
                if not b.lo <= j < b.hi:
                    self.state[p]["momentum_buffer"] = full[j].clone()

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._banks = None  # rebuild banks so their momentum stacks view the loaded tensors
