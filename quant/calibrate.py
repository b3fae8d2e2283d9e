"""Hessian collection with forward hooks: H = X^T X / n_rows of each module's input.

Call it on training batches only (never validation). Accumulates in fp64 so the result does
not depend on batch order rounding; modules shared by several weights are hooked once.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def default_modules(model: nn.Module) -> dict[str, nn.Module]:
    """model.hessian_modules() if provided, else every nn.Linear as '<name>.weight'."""
    if hasattr(model, "hessian_modules"):
        return dict(model.hessian_modules())
    return {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def collect_hessians(model: nn.Module, batches: Iterable[torch.Tensor],
                     modules: dict[str, nn.Module] | None = None) -> dict[str, torch.Tensor]:
    """Run model(x) for each batch and return {weight name: X^T X / n} (float32)."""
    modules = default_modules(model) if modules is None else modules
    by_module: dict[int, tuple[nn.Module, list[str]]] = {}
    for name, mod in modules.items():
        by_module.setdefault(id(mod), (mod, []))[1].append(name)
    sums: dict[int, torch.Tensor] = {}
    rows: dict[int, int] = {}

    def make_hook(key: int):
        def hook(_mod, inputs, _out):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).to("cpu", torch.float64)
            sums[key] = sums[key] + x.T @ x if key in sums else x.T @ x
            rows[key] = rows.get(key, 0) + x.shape[0]
        return hook

    handles = [mod.register_forward_hook(make_hook(key)) for key, (mod, _) in by_module.items()]
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for h in handles:
            h.remove()
    out: dict[str, torch.Tensor] = {}
    for key, (_mod, names) in by_module.items():
        if key not in sums:
            continue
        h = (sums[key] / max(rows[key], 1)).to(torch.float32)
        for name in names:
            out[name] = h
    return out
