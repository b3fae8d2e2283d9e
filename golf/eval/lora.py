"""Per-document, per-virtual-layer LoRA adapters on golfkit's GPT: the records' TTT targets.

Why a module of its own: the phased TTT of the 1.0611 record (PR #1855, and #2014 / #2135 after
it) does not put a low-rank update on every Linear. Its adapters are
- Q, K, V: added to the outputs of c_q, c_k, c_v (before the QK norm);
- "O": a bypass from the normed attention *input* u to the model width, added to the
  attention output (after the output projection, before attn_scale);
- "MLP": a bypass from the normed MLP input to the model width, added to the MLP output
  (before mlp_scale);
- head: from the final hidden state to the vocabulary, added to the logits before the softcap.
With the depth loop on, each *virtual* layer (every pass of a looped physical layer) has its
own Q/K/V/O/MLP adapters, so 17 slots for the records' 11 layers. Every document of a batch
has its own set: delta = (x Aᵀ) Bᵀ · alpha/rank with A (rank x in) and B (out x rank) taken
per batch row, so a document's gradient reaches only its own adapters.

How: golf/model/gpt.py stays untouched. Each physical layer's attention and MLP are wrapped; during
one forward pass they are called once per virtual layer, in order, so the number of calls so
far *is* the virtual slot (reset by a pre-hook on the model, checked against the layer plan
after the pass). With no rows routed (`route(None)`) every wrapper is the base module exactly.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn as nn

BLOCK_TARGETS = ("q", "k", "v", "o", "mlp")   # per virtual slot; the head adapter is separate


class SlotLoRA(nn.Module):
    """A (slots, docs, rank, in) and B (slots, docs, out, rank); `delta` applies slot `s` of
    the documents routed to each batch row."""

    def __init__(self, slots: int, docs: int, rank: int, fin: int, fout: int, scale: float,
                 device: torch.device):
        super().__init__()
        self.A = nn.Parameter(torch.zeros(slots, docs, rank, fin, device=device))
        self.B = nn.Parameter(torch.zeros(slots, docs, fout, rank, device=device))
        self.scale = scale

    def delta(self, x: torch.Tensor, slot: int, rows: torch.Tensor) -> torch.Tensor:
        a = self.A[slot].index_select(0, rows).to(x.dtype)          # (B, r, in)
        b = self.B[slot].index_select(0, rows).to(x.dtype)          # (B, out, r)
        h = torch.bmm(x.reshape(x.size(0), -1, x.size(-1)), a.transpose(1, 2))
        out = torch.bmm(h, b.transpose(1, 2)) * self.scale
        return out.reshape(*x.shape[:-1], out.size(-1))


class _Router:
    """Shared by the wrappers of one model: which document feeds each batch row, and the
    attention / MLP call counters of the current forward pass (= the virtual slot)."""

    def __init__(self) -> None:
        self.rows: torch.Tensor | None = None
        self.slot = 0
        self.attn_calls = 0
        self.mlp_calls = 0


class _Proj(nn.Module):
    """c_q / c_k / c_v plus the current slot's adapter."""

    def __init__(self, base: nn.Module, lora: SlotLoRA, router: _Router):
        super().__init__()
        self.base, self.lora, self._router = base, lora, [router]

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, r = self.base(x), self._router[0]
        return y if r.rows is None else y + self.lora.delta(x, r.slot, r.rows)


class _Attn(nn.Module):
    """A physical layer's attention; each call is the next virtual slot, plus the O bypass."""

    def __init__(self, inner: nn.Module, o: SlotLoRA | None, router: _Router):
        super().__init__()
        self.inner, self.o, self._router = inner, o, [router]

    def forward(self, u: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        r = self._router[0]
        r.slot, r.attn_calls = r.attn_calls, r.attn_calls + 1
        y = self.inner(u, *args, **kwargs)
        if r.rows is None or self.o is None:
            return y
        return y + self.o.delta(u, r.slot, r.rows)


class _MLP(nn.Module):
    """A physical layer's MLP plus the MLP bypass of the virtual slot it runs as."""

    def __init__(self, inner: nn.Module, lora: SlotLoRA, router: _Router):
        super().__init__()
        self.inner, self.lora, self._router = inner, lora, [router]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self._router[0]
        slot, r.mlp_calls = r.mlp_calls, r.mlp_calls + 1
        y = self.inner(x)
        return y if r.rows is None else y + self.lora.delta(x, slot, r.rows)


class _Head(nn.Module):
    """The LM head plus the head adapter (slot 0), before the softcap."""

    def __init__(self, inner: nn.Module, lora: SlotLoRA, router: _Router):
        super().__init__()
        self.inner, self.lora, self._router = inner, lora, [router]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z, r = self.inner(h), self._router[0]
        return z if r.rows is None else z + self.lora.delta(h, 0, r.rows)


def virtual_slots(model: nn.Module) -> int:
    """Virtual layers of the model's current loop state (17 for the records' stack, looping)."""
    enc, dec = model.cfg.layer_plan(bool(getattr(model, "looping", False)))
    return len(enc) + len(dec)


class DocLoRA(nn.Module):
    """The records' adapters on `model` (modified in place: pass a copy), for `docs` documents.

    `targets` is a subset of BLOCK_TARGETS; `head` adds the head adapter. Parameters: one
    SlotLoRA per target (slots = virtual layers) and one for the head (1 slot)."""

    def __init__(self, model: nn.Module, docs: int, rank: int, alpha: float,
                 targets: tuple[str, ...] = BLOCK_TARGETS, head: bool = True):
        super().__init__()
        if not all(hasattr(model, a) for a in ("cfg", "blocks", "lm_head")):
            raise ValueError("the records' LoRA needs golfkit's GPT (cfg, blocks, lm_head); "
                             "use TTT=lora_golf for another model")
        unknown = set(targets) - set(BLOCK_TARGETS)
        if unknown:
            raise ValueError(f"unknown LoRA targets {sorted(unknown)}; use {BLOCK_TARGETS}")
        cfg, dev = model.cfg, next(model.parameters()).device
        self.slots, self.docs, self.rank = virtual_slots(model), docs, rank
        scale, d = alpha / rank, cfg.model_dim
        outs = {"q": cfg.num_heads * cfg.head_dim, "k": cfg.num_kv_heads * cfg.head_dim,
                "v": cfg.num_kv_heads * cfg.head_dim, "o": d, "mlp": d}
        self.block = nn.ModuleDict({t: SlotLoRA(self.slots, docs, rank, d, outs[t], scale, dev)
                                    for t in BLOCK_TARGETS if t in targets})
        self.head = SlotLoRA(1, docs, rank, d, cfg.vocab_size, scale, dev) if head else None
        self._router = _Router()
        self._wrap(model)
        self.fresh_A(torch.Generator().manual_seed(0))

    def _wrap(self, model: nn.Module) -> None:
        r, blk = self._router, self.block
        for b in model.blocks:
            attn = b.attn
            for t, name in (("q", "c_q"), ("k", "c_k"), ("v", "c_v")):
                if t in blk:
                    setattr(attn, name, _Proj(getattr(attn, name), blk[t], r))
            b.attn = _Attn(attn, blk["o"] if "o" in blk else None, r)
            if "mlp" in blk:
                b.mlp = _MLP(b.mlp, blk["mlp"], r)
        if self.head is not None:
            model.lm_head = _Head(model.lm_head, self.head, r)
        model.register_forward_pre_hook(self._start)
        model.register_forward_hook(self._check)

    def _start(self, _module: nn.Module, _args: tuple) -> None:
        self._router.attn_calls = self._router.mlp_calls = 0

    def _check(self, _module: nn.Module, _args: tuple, _out: torch.Tensor) -> None:
        r = self._router
        if r.rows is not None and r.attn_calls != self.slots:
            raise RuntimeError(f"the forward ran {r.attn_calls} attention layers but the adapters "
                               f"have {self.slots} virtual slots: the loop state changed")

    def route(self, rows: torch.Tensor | None) -> None:
        """Batch row i uses document slot rows[i]; None = the base model exactly."""
        self._router.rows = rows

    def lora_modules(self) -> Iterator[SlotLoRA]:
        yield from self.block.values()
        if self.head is not None:
            yield self.head

    def fresh_A(self, gen: torch.Generator) -> None:
        """A ~ U(±1/sqrt(in)) from `gen` (never from tokens), B = 0: the base model exactly."""
        with torch.no_grad():
            for m in self.lora_modules():
                bound = 1.0 / math.sqrt(m.A.size(-1))
                m.A.copy_((torch.rand(m.A.shape, generator=gen) * 2 - 1) * bound)
                m.B.zero_()

    def zero_B(self) -> None:
        """The records' reset per batch with TTT_WARM_START_A: B = 0, A kept."""
        with torch.no_grad():
            for m in self.lora_modules():
                m.B.zero_()
