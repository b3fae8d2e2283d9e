"""Hessian collection with forward hooks: H = X^T X / n_rows of each module's input; and the
per-entry Fisher error weights (collect_error_weights) with forward + backward hooks.

Call it on training batches only (never validation). On CPU the products are taken in fp64;
on a GPU X^T X is an fp32 matmul on the device (TF32 off) summed in fp64 there, because
copying every activation to the host and multiplying in fp64 would take minutes for the 11L
model instead of well under the seconds the calibration reserve allows. Modules shared by
several weights are hooked once, and modules fed the very same input tensor (q, k and v
projections) reuse one product.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn


def default_modules(model: nn.Module) -> dict[str, nn.Module]:
    """model.hessian_modules() if provided, else every nn.Linear as '<name>.weight'."""
    if hasattr(model, "hessian_modules"):
        return dict(model.hessian_modules())
    return {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def _by_module(modules: dict[str, nn.Module]) -> dict[int, tuple[nn.Module, list[str]]]:
    """Weight names grouped by the module that sees them (tied weights share one hook)."""
    by_module: dict[int, tuple[nn.Module, list[str]]] = {}
    for name, mod in modules.items():
        by_module.setdefault(id(mod), (mod, []))[1].append(name)
    return by_module


def collect_hessians(model: nn.Module, batches: Iterable[torch.Tensor],
                     modules: dict[str, nn.Module] | None = None,
                     all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
                     ) -> dict[str, torch.Tensor]:
    """Run model(x) for each batch and return {weight name: X^T X / n} (float32).

    `all_reduce` (in-place SUM across ranks) pools the fp64 sums and row counts of every
    rank before the one division and the one cast to fp32, so N ranks that split a set of
    batches get the Hessian of the whole set, not a mean of rounded per-rank means. Every
    rank must then have at least one batch (the sums are reduced in the same order).
    """
    modules = default_modules(model) if modules is None else modules
    by_module = _by_module(modules)
    sums: dict[int, torch.Tensor] = {}
    rows: dict[int, int] = {}
    last: dict[str, object] = {}  # the previous hook's input and product (q, k, v share X)

    def gram(x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        if x2.is_cuda:
            xf = x2.float()
            return (xf.T @ xf).double()
        x64 = x2.to(torch.float64)
        return x64.T @ x64

    def make_hook(key: int):
        def hook(_mod, inputs, _out):
            x = inputs[0]
            if last.get("x") is not x or last.get("version") != x._version:
                last.update(x=x, version=x._version, xtx=gram(x.detach()),
                            n=x.numel() // x.shape[-1])
            xtx, n = last["xtx"], int(last["n"])
            sums[key] = sums[key] + xtx if key in sums else xtx.clone()
            rows[key] = rows.get(key, 0) + n
        return hook

    handles = [mod.register_forward_hook(make_hook(key)) for key, (mod, _) in by_module.items()]
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
                last.clear()  # release the batch's last activation
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for h in handles:
            h.remove()
    out: dict[str, torch.Tensor] = {}
    for key, (_mod, names) in by_module.items():
        if key not in sums:
            continue
        if all_reduce is not None:
            sums[key] = all_reduce(sums[key])
            rows[key] = int(all_reduce(torch.tensor([rows[key]], dtype=torch.float64,
                                                    device=sums[key].device)).item())
        h = (sums[key] / max(rows[key], 1)).to(device="cpu", dtype=torch.float32)
        for name in names:
            out[name] = h
    return out


def collect_error_weights(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                          modules: dict[str, nn.Module] | None = None,
                          all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
                          ) -> dict[str, torch.Tensor]:
    """{weight name: Omega (rows, cols)}: predicted loss increase, in nats per token, per unit
    squared error of each weight entry; model(x, y) must return the mean token loss.

    Why: to second order the loss increase of a weight error E is 1/2 vec(E)^T F vec(E); with
    the Fisher's per-token diagonal (the gradient of token t is g_t x_t^T, g = dl_t/dy_t the
    module's output gradient, x_t its input) that is sum_ij E_ij^2 Omega_ij with
    Omega_ij = 1/2 E_t[g_ti^2 x_tj^2]. diag(H) alone prices a row's error the same whatever
    the model does with that output downstream (a learned residual scale, the depth); g is that
    downstream factor, measured. The same rule covers embedding lookups (x one-hot: row t
    collects the squared output gradients of the positions holding token t) and sums both roles
    of a tied embedding. Linear modules and nn.Embedding are hooked (`modules` maps a weight
    name to the module whose input/output it sees, as for collect_hessians); training batches
    only. The hooked output gradient of the mean loss is (1/n) dL_sum/dy, so it is rescaled by
    the batch's target count n. `all_reduce` pools ranks like collect_hessians.
    """
    modules = default_modules(model) if modules is None else modules
    hooked = dict(modules)
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Embedding):
            hooked.setdefault(f"{name}.weight#lookup", mod)
    sums: dict[str, torch.Tensor] = {}
    state = {"n": 1.0, "tokens": 0}

    def accumulate(names: list[str], mod: nn.Module, x: torch.Tensor, g: torch.Tensor) -> None:
        om = _fisher_sum(mod, x, g.detach().to(torch.float64) * state["n"])
        for name in names:
            key = name.split("#")[0]
            sums[key] = sums[key] + om if key in sums else om

    def make_hook(names: list[str]):
        def hook(mod, args, out):
            x = args[0].detach()
            if out.requires_grad:
                out.register_hook(lambda g: accumulate(names, mod, x, g))
        return hook

    handles = [mod.register_forward_hook(make_hook(names)) for mod, names in _by_module(hooked).values()]
    was_training = model.training
    model.eval()
    try:
        for x, y in batches:
            state["n"] = float(y.numel())
            state["tokens"] += y.numel()
            model.zero_grad(set_to_none=True)
            model(x, y).backward()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return _pooled_half_mean(sums, float(state["tokens"]), all_reduce)


def _fisher_sum(mod: nn.Module, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """sum_t g_ti^2 x_tj^2 for one batch (g: the per-token loss's output gradient, fp64); an
    embedding's x is its token ids, so row t sums the g^2 of the positions holding token t."""
    g2 = g.square().reshape(-1, g.shape[-1])
    if isinstance(mod, nn.Embedding):
        return torch.zeros(mod.num_embeddings, g2.shape[1], dtype=torch.float64,
                           device=g2.device).index_add_(0, x.reshape(-1), g2)
    return g2.T @ x.reshape(-1, x.shape[-1]).to(torch.float64).square()


def _pooled_half_mean(sums: dict[str, torch.Tensor], n: float,
                      all_reduce: Callable[[torch.Tensor], torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """1/2 * sum / n in fp32 on CPU; with `all_reduce`, the sums and n of every rank are pooled
    first (sorted names, as collect_hessians: one division of the whole set's sums)."""
    if all_reduce is not None:
        for k in sorted(sums):
            sums[k] = all_reduce(sums[k])
        dev = next(iter(sums.values())).device if sums else "cpu"
        n = float(all_reduce(torch.tensor([n], dtype=torch.float64, device=dev)).item())
    return {k: (0.5 * v / max(n, 1.0)).to(device="cpu", dtype=torch.float32)
            for k, v in sums.items()}
