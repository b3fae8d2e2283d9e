"""Muon for block matrices, AdamW for the embedding and scalars, and the LR schedule.

Parameter grouping is by shape and name so every new block matrix gets Muon automatically.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from golf.run.config import Config
from golf.model.gpt import embedding_ids, param_role
from golf.train.muon import Muon, newton_schulz  # noqa: F401  (re-exported: the optimizers' one import)


# parameters of the scalar group that take no weight decay (golf.model.gpt: ASYM_LOGIT_TRAIN's caps)
NO_DECAY = ("softcap_pos", "softcap_neg")


def muon_momentum(step: int, cfg: Config) -> float:
    """Linear warmup of Muon momentum from MUON_MOMENTUM_WARMUP_START to MUON_MOMENTUM."""
    n = cfg.muon_momentum_warmup_steps
    frac = 1.0 if n <= 0 else min(step / n, 1.0)
    return (1 - frac) * cfg.muon_momentum_warmup_start + frac * cfg.muon_momentum


def split_params(model: nn.Module, mode: str = "records") -> tuple[list, list, list]:
    """(Muon matrices, embedding tables / head, scalars and small matrices) for OPTIM_GROUPS.

    records (R23 onwards), the roles golf.model.gpt declares: Muon gets only the 2-D block weights
    that are not control tensors (c_q, c_k, c_v, attn.proj, mlp.fc, mlp.proj); the embedding group every
    nn.Embedding table (tok_emb, bigram.embed, ve_shared.embed) and an untied lm_head; the
    scalar group the rest: control tensors (resid_mix, scales, gains, skip_weights, gates) and
    the small bigram/VE projections. legacy: golfkit's earlier rule, every 2-D tensor under
    `blocks.` (resid_mix too) to Muon, tok_emb/lm_head to the embedding group, the rest scalar.
    """
    if mode not in ("records", "legacy"):
        raise ValueError(f"OPTIM_GROUPS={mode!r} is not records or legacy; fix the variable")
    tables = embedding_ids(model)
    muon, emb, scal = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if mode == "legacy":
            is_matrix = p.ndim == 2 and name.startswith("blocks.")
            is_emb = name.startswith(("tok_emb", "lm_head"))
        else:  # the roles golf.model.gpt declares: control and other share the scalar group
            role = param_role(name, p, tables)
            is_matrix, is_emb = role == "matrix", role == "embedding"
        (muon if is_matrix else emb if is_emb else scal).append(p)
    return muon, emb, scal


def build_optimizers(model: nn.Module, cfg: Config) -> list[torch.optim.Optimizer]:
    """Muon (MATRIX_LR) + AdamW (TIED_EMBED_LR on embeddings, SCALAR_LR on the rest); groups
    as OPTIM_GROUPS says (split_params)."""
    muon, emb, scal = split_params(model, getattr(cfg, "optim_groups", "records"))
    opts: list[torch.optim.Optimizer] = []
    if muon:
        opts.append(Muon(muon, lr=cfg.matrix_lr, momentum=cfg.muon_momentum_warmup_start,
                         ns_steps=cfg.muon_ns_steps, weight_decay=cfg.muon_wd,
                         ns_coeffs=cfg.muon_ns_coeffs, row_normalize=cfg.muon_row_normalize))
    groups = []
    if emb:
        groups.append(dict(params=emb, lr=cfg.tied_embed_lr,
                           weight_decay=cfg.adam_wd if cfg.embed_wd < 0 else cfg.embed_wd))
    # ASYM_LOGIT_TRAIN's caps (~30) learn without decay: ADAM_WD would pull them toward 0 by
    # lr*wd of their value every step (about e^-2 over the records' 5,000 steps)
    caps = {id(p) for n, p in model.named_parameters() if n in NO_DECAY}
    decayed = [p for p in scal if id(p) not in caps]
    if decayed:
        groups.append(dict(params=decayed, lr=cfg.scalar_lr))
    if len(decayed) < len(scal):
        groups.append(dict(params=[p for p in scal if id(p) in caps], lr=cfg.scalar_lr, weight_decay=0.0))
    if groups:
        # on CUDA one fused kernel updates every embedding/scalar tensor (per-tensor launches
        # cost ~5 ms a step, several % of an 8xH100 step); on CPU the plain loop
        cuda = all(p.is_cuda for g in groups for p in g["params"])
        opts.append(torch.optim.AdamW(groups, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps,
                                      weight_decay=cfg.adam_wd, foreach=False if not cuda else None,
                                      fused=True if cuda else None))
    for o in opts:
        for g in o.param_groups:
            g["base_lr"] = g["lr"]
    return opts


def ema_decay_at(step: int, decay: float, warmup: bool = True) -> float:
    """EMA decay for optimizer step `step` (1-based).

    A fixed 0.997 keeps 0.997**t of the *initial* weights in the average: ~8 % after 850 steps,
    which is why EMA hurt short runs in the challenge's reports. With warmup the decay starts
    low and reaches `decay` after a few thousand steps, so long runs are unchanged while short
    runs (CPU preset, quick experiments) average only trained weights.
    """
    return min(decay, (1.0 + step) / (10.0 + step)) if warmup else decay


def training_fraction(step: int, elapsed_ms: float, cap_ms: float, iterations: int) -> float:
    """How far training has gone, in [0, 1]: the larger of steps/ITERATIONS and elapsed/cap.

    The records' schedules use the wallclock fraction only (cap = 600 s less the reserve); a
    run that ends by ITERATIONS first (the CPU main job) maps the fraction to steps, so its
    loop switch does not depend on how fast the machine happened to be."""
    by_steps = step / iterations if iterations > 0 else 0.0
    by_time = elapsed_ms / cap_ms if cap_ms > 0 else 0.0
    return min(max(by_steps, by_time), 1.0)


def lr_multiplier(step: int, elapsed_ms: float, cap_ms: float, warmdown_iters: int, iterations: int) -> float:
    """LR factor in [0, 1]: constant, then linear to 0 at whichever end comes first.

    By steps: the last `warmdown_iters` of ITERATIONS. By time (a wallclock cap, cap_ms > 0):
    the last `warmdown_iters` steps' worth of *measured* time (step_avg = elapsed/step), the
    records' rule, so the LR reaches 0 when time runs out. The factor is the smaller of the
    two. Why both: the records never reach ITERATIONS, so for them it is their rule; a run that
    ends by ITERATIONS first (the CPU main job) still anneals to 0 at its last step, and its
    schedule (hence its weights) does not depend on how fast the machine happened to be.
    """
    if warmdown_iters <= 0:
        return 1.0
    start = max(iterations - warmdown_iters, 0)
    by_steps = 1.0 if step < start else max(iterations - step, 0) / max(warmdown_iters, 1)
    if cap_ms <= 0:
        return by_steps
    step_ms = elapsed_ms / max(step, 1)
    warm_ms = warmdown_iters * step_ms
    remaining = max(cap_ms - elapsed_ms, 0.0)
    by_time = remaining / warm_ms if remaining < warm_ms else 1.0
    return min(by_steps, by_time)


def schedule_multiplier(cfg: Config, step: int, elapsed_ms: float, cap_ms: float) -> float:
    """The LR factor of the step: WARMDOWN_FRAC's rule when it is set (the 2026-04 records'),
    else WARMDOWN_ITERS's (lr_multiplier)."""
    if cfg.warmdown_frac > 0:
        frac = training_fraction(step, elapsed_ms, cap_ms, cfg.iterations)
        return frac_multiplier(frac, cfg.warmdown_frac, cfg.min_lr)
    return lr_multiplier(step, elapsed_ms, cap_ms, cfg.warmdown_iters, cfg.iterations)


def frac_multiplier(frac: float, warmdown_frac: float, min_lr: float) -> float:
    """1 until the last `warmdown_frac` of training, then (1 - frac)/warmdown_frac, never below
    MIN_LR (#1855: 0.85 and 0.1, so the floor is reached at frac 0.915)."""
    if frac < 1 - warmdown_frac:
        return 1.0
    return max((1 - frac) / warmdown_frac, min_lr)


def set_lrs(opts: list[torch.optim.Optimizer], mult: float, momentum: float | None = None) -> None:
    for o in opts:
        for g in o.param_groups:
            g["lr"] = g["base_lr"] * mult
            if momentum is not None and isinstance(o, Muon):
                g["momentum"] = momentum
