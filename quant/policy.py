"""Per-tensor precision policy: which class a tensor belongs to and how that class is stored.

Classes are decided from names only so the same policy works on any torch model.
Defaults follow current best practice (SDClip steps: attention int6 k=13, MLP int6 k=12,
tied embedding int7 k=15, small tensors fp16 and control tensors fp32).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .codec import default_compressors

SMALL_NUMEL = 65_536
# Control tensors (gains, mixes, gates, scalar scales): passthrough in fp32. Which tensors are
# control is the model's to say (golf declares its parameters' roles in golf/model/gpt.py and passes
# them in); without a declaration, the challenge baseline's nine names.
CONTROL_PATTERNS = ("attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix",
                    "resid_mixes", "q_gain", "skip_weight", "skip_weights")
# the embedding class by name, likewise the model's to say; without a declaration, these
EMBEDDING_PATTERNS = ("tok_emb", "embed", "lm_head")
CLASSES = ("attention", "mlp", "embedding", "other")
ROW_STEPS = ("fisher", "flat", "sdclip")   # golf.run.config.QUANT_ROW_STEPS lists them again


@dataclass(frozen=True)
class ClipRule:
    """How the per-row step is chosen before rounding.

    kind: "std" (SDClip: step = value*std(row)/qmax), "percentile" (clip = quantile(|w|, value)),
    "absmax" (clip = max|w|) or "mse" (per-row search of the clip that minimises the
    (diag-Hessian weighted) squared error).
    """
    kind: str = "std"
    value: float = 12.0

    def __post_init__(self) -> None:
        if self.kind not in ("std", "percentile", "absmax", "mse"):
            raise ValueError(f"unknown clip rule {self.kind!r}; use std, percentile, absmax or mse")


# GPTQ damping (fraction of mean diag(H)) for the tied embedding. Its Hessian is the LM head's
# input, so plain GPTQ (1 %) cuts the head's error but moves rows far from their values, and the
# same rows are the input lookup, whose error is plain squared error. Damping is exactly that
# second term (+ lambda*I): 0.3 was the best of 0.01..10 on two trained checkpoints (tied
# embedding only: gap 0.0083 vs 0.0143 at 0.01 and 0.0131 for round-to-nearest).
TIED_EMBEDDING_DAMP = 0.3


@dataclass(frozen=True)
class ClassPolicy:
    bits: int = 6
    clip: ClipRule = ClipRule()
    damp: float = 0.01        # GPTQ damping: + damp * mean(diag H) * I before the solve

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be in 2..8, got {self.bits}")
        if not self.damp >= 0:
            raise ValueError(f"GPTQ damping must be >= 0, got {self.damp}")


@dataclass(frozen=True)
class QuantPolicy:
    """Bits and clip rule per tensor class, plus which tensors stay in floating point."""
    attention: ClassPolicy = ClassPolicy(6, ClipRule("std", 13.0))
    mlp: ClassPolicy = ClassPolicy(6, ClipRule("std", 12.0))
    embedding: ClassPolicy = ClassPolicy(7, ClipRule("std", 15.0), TIED_EMBEDDING_DAMP)
    other: ClassPolicy = ClassPolicy(6, ClipRule("std", 12.85))
    small_numel: int = SMALL_NUMEL
    keep_float: tuple[str, ...] = ()          # name substrings forced to fp16 passthrough
    control_patterns: tuple[str, ...] = CONTROL_PATTERNS  # passthrough in fp32
    embedding_patterns: tuple[str, ...] = EMBEDDING_PATTERNS  # the embedding class
    # the codecs quant/codec.py's REGISTRY marks as tried by default, in its order
    compressors: tuple[str, ...] = field(default_factory=default_compressors)
    shuffle_fp16: bool = True
    float_rung: bool = True   # the budget fitter may keep a whole tensor in fp16 when it pays
    # the fitter's per-row steps (gptq/rtn): "sdclip" = each row's own clip rule (rows of wider
    # spread get coarser steps), "flat" = one step per tensor (scalar.flat_steps, codes in the
    # full 8-bit range), "fisher" = flat, no rung clipping a row (scalar.clip_free_step), and
    # the embedding's rows (tokens) stepped by their Fisher row weights (scalar.fisher_steps;
    # flat without error weights). Fisher since 2026-12-07: at or under half the records' gap
    # at every budget measured on the 5,000-step mix model, where flat was not
    # (docs/rate-distortion.md). The records and int8 keep their own rules whatever this says
    row_steps: str = "fisher"

    def __post_init__(self) -> None:
        if self.row_steps not in ROW_STEPS:
            raise ValueError(f"unknown row_steps {self.row_steps!r}; use one of {ROW_STEPS}")

    def for_class(self, cls: str) -> ClassPolicy:
        return getattr(self, cls)


def is_control(name: str, patterns: tuple[str, ...] = CONTROL_PATTERNS) -> bool:
    return any(p in name for p in patterns)


def classify(name: str, numel: int, ndim: int, is_float: bool, policy: QuantPolicy) -> str:
    """Return 'small' (passthrough) or one of CLASSES for a state_dict entry."""
    if not is_float or numel <= policy.small_numel or ndim == 0:
        return "small"
    if any(p in name for p in policy.keep_float):
        return "small"
    if ".attn." in name or name.startswith("attn."):
        return "attention"
    if ".mlp." in name or name.startswith("mlp."):
        return "mlp"
    if any(p in name for p in policy.embedding_patterns):
        return "embedding"
    return "other"
