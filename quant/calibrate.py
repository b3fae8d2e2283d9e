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
    by_module = _by_module(hooked)
    sums: dict[str, torch.Tensor] = {}
    state = {"n": 1.0, "tokens": 0}
    # this batch's forward calls per module, and the (x, g) of the calls whose gradient has
    # arrived: a module's term is taken once all its calls' gradients are in, then dropped (a
    # module called once is taken at once, so only a looped layer's gradients wait)
    n_calls: dict[int, int] = {}
    calls: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def flush(key: int) -> None:
        mod, names = by_module[key]
        om = _fisher_sum(mod, calls.pop(key))
        for name in names:
            k = name.split("#")[0]
            sums[k] = sums[k] + om if k in sums else om

    def take(key: int, x: torch.Tensor, g: torch.Tensor) -> None:
        calls.setdefault(key, []).append((x, g.detach() * state["n"]))
        if len(calls[key]) == n_calls[key]:
            flush(key)

    def make_hook(key: int):
        def hook(mod, args, out):
            x = args[0].detach()
            if out.requires_grad:
                n_calls[key] = n_calls.get(key, 0) + 1
                out.register_hook(lambda g: take(key, x, g))
        return hook

    handles = [mod.register_forward_hook(make_hook(key)) for key, (mod, _n) in by_module.items()]
    was_training = model.training
    model.eval()
    try:
        for x, y in batches:
            state["n"] = float(y.numel())
            state["tokens"] += y.numel()
            model.zero_grad(set_to_none=True)
            n_calls.clear()
            model(x, y).backward()
            for key in list(calls):  # a call whose output never reached the loss has no term
                flush(key)
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return _pooled_half_mean(sums, float(state["tokens"]), all_reduce)


def _fisher_sum(mod: nn.Module, calls: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """sum_t (sum_c g_cti x_ctj)^2 for one batch, over the module's calls c in it (fp64).

    Why the calls are summed before squaring: a module the forward runs twice (a layer of the
    depth loop) has one weight, and position t's gradient of it is the sum of both calls'
    g x^T; squaring each call's alone drops the cross term 2 g_1 x_1 g_2 x_2 (up to as much
    again when the calls' effects of one weight error add up; 1.4-1.7x on the CPU frontier's
    looped block, docs/rate-distortion.md). Expanded, it is sum over call pairs (c, c') of (G_c * G_c')^T (X_c * X_c').
    An embedding's x is its token ids: row v sums, over positions where both calls look up v,
    the products of their output gradients."""
    total: torch.Tensor | None = None
    for a, (xa, ga) in enumerate(calls):
        for b in range(a, len(calls)):
            xb, gb = calls[b]
            part = _pair_sum(mod, xa, ga, xb, gb)
            part = part if a == b else 2.0 * part
            total = part if total is None else total + part
    return total


def _pair_sum(mod: nn.Module, xa: torch.Tensor, ga: torch.Tensor, xb: torch.Tensor,
              gb: torch.Tensor) -> torch.Tensor:
    """sum_t g_ati g_bti x_atj x_btj (one call pair; a == b gives the call's own square)."""
    gg = (ga.to(torch.float64) * gb.to(torch.float64)).reshape(-1, ga.shape[-1])
    if isinstance(mod, nn.Embedding):
        ia, ib = xa.reshape(-1), xb.reshape(-1)
        same = ia == ib
        return torch.zeros(mod.num_embeddings, gg.shape[1], dtype=torch.float64,
                           device=gg.device).index_add_(0, ia[same], gg[same])
    xx = (xa.to(torch.float64) * xb.to(torch.float64)).reshape(-1, xa.shape[-1])
    return gg.T @ xx


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
