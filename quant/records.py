"""The records' quantizers, re-implemented from their published descriptions so anyone can measure their gap
on their own checkpoint with golfkit's artifact, loader and eval.

record_1060 (the 1.1122 record, R29, §3.5/§3.6): attention/MLP int6 full-Hessian GPTQ
  (act-order, block 128, ~2 % damping: 1 % at finalization + 1 % inside the solve), the per-row
  clip re-chosen among 5 percentiles of |w| (0.999 .. 1.0), the winner by unweighted MSE
  against W; embedding and other large tensors int8 per-row percentile (0.9999984);
  small tensors fp16 (control fp32); lzma.
record_1855 (the 1.0611 record, §3.11): SDClip GPTQ (step = k·std(row)/qmax, 1 % damping):
  attention int6 k=13, MLP int6 k=11.5, tied embedding int7 k=14 with the LM head's input
  Hessian, other large int6 k=12.85 (§3.8); LQER rank 4 on the 3 tensors with the largest
  ||W - Ŵ||_F, unweighted SVD, A int2 one scale, B int4 groups of 64; the codes in the record's
  per-group container v1 (quant/pergroup.py: role groups, L1 chain row order on tok_emb / c_q
  / mlp.fc, transposed, `lrzip -z -L 9` per group), everything else brotli-11.
record_2135 (the 1.0565 record, frontier §0 / §3.4 / §3.7): record_1855's quantizer with LQER B
  in groups of 32, the codes in container v2 (every tensor chain-sorted, one lrzip blob). Its
  other changes (MATRIX_LR, 32 calibration batches, no gate int8) are training and calibration
  settings, not the quantizer's.

Deviations kept on purpose: no absolute scale floor (§3.1's latent hazard), and the non-code
streams go into golfkit's container (independently compressed, restricted to the record's
coder) rather than one torch.save blob, so eval_bpb.py and pack.py read them like any artifact.
The per-group container needs the lrzip binary (`apt-get install lrzip`); without it these
methods stop with one line saying so.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping

import torch

from .baseline import CLIP_Q
from .gptq import GptqSolve, gptq_quantize
from .lqer import RECORD_FORMAT, LqerFormat, make_lqer
from .methods import METHODS, record_methods
from .policy import CLASSES, ClassPolicy, ClipRule, QuantPolicy, classify
from .scalar import as_rows, clip_step, dequantize, hessian_error, qmax_for, round_scale, rtn_codes
from .tensors import QTensor, alias_entry, dtype_name

RECORD_METHODS = record_methods()
# the SDClip + LQER records: their LQER packing (their coders: quant.methods.METHODS)
SDCLIP_RECORDS = {"record_1855": RECORD_FORMAT, "record_2135": LqerFormat(2, 0, 4, 32)}
PERCENTILES = (0.999, 0.9995, 0.9999, 0.99999, 1.0)
LQER_TOP_K, LQER_RANK = 3, 4


def record_policy(method: str, base: QuantPolicy, bits_offset: int = 0) -> QuantPolicy:
    """The record's classes and coder; passthrough threshold and control names from `base`.

    `bits_offset` adds to every class's bit width (kept in 2..8; the clip rule is unchanged,
    so SDClip's step k*std/qmax shrinks with qmax as the record's code defines it). Why: a
    record ships at one size, and this is the one knob that places it at other budgets for a
    rate-distortion comparison; 0 is the record as shipped."""
    return _offset_bits(_shipped_policy(method, base), bits_offset)


def _offset_bits(policy: QuantPolicy, offset: int) -> QuantPolicy:
    """Every class's bits + offset, clamped to the 2..8 that ClassPolicy accepts."""
    if not offset:
        return policy
    return replace(policy, **{c: replace(policy.for_class(c),
                                         bits=min(8, max(2, policy.for_class(c).bits + offset)))
                              for c in CLASSES})


def _shipped_policy(method: str, base: QuantPolicy) -> QuantPolicy:
    """The record's own classes and coder (record_policy with no offset)."""
    if method == "record_1060":
        return replace(base, attention=ClassPolicy(6, ClipRule("percentile", 1.0), 0.02),
                       mlp=ClassPolicy(6, ClipRule("percentile", 1.0), 0.02),
                       embedding=ClassPolicy(8, ClipRule("percentile", CLIP_Q)),
                       other=ClassPolicy(8, ClipRule("percentile", CLIP_Q)),
                       compressors=METHODS[method].record_coders, float_rung=False)
    if method in SDCLIP_RECORDS:
        return replace(base, attention=ClassPolicy(6, ClipRule("std", 13.0), 0.01),
                       mlp=ClassPolicy(6, ClipRule("std", 11.5), 0.01),
                       embedding=ClassPolicy(7, ClipRule("std", 14.0), 0.01),
                       other=ClassPolicy(6, ClipRule("std", 12.85), 0.01),
                       compressors=METHODS[method].record_coders, float_rung=False)
    raise ValueError(f"unknown record method {method!r}; use one of {RECORD_METHODS}")


@dataclass(frozen=True)
class RecordRun:
    """One run of a record's quantizer: its method, its policy (record_policy(method, ...)),
    where GPTQ solves and where it logs: the same for every tensor of the model."""
    method: str
    policy: QuantPolicy
    device: str
    log: Callable[[str], None]


@dataclass(frozen=True)
class Weight:
    """One large float tensor to quantize: its name, values, class and input Hessian (None =
    round-to-nearest)."""
    name: str
    t: torch.Tensor
    cls: str
    h: torch.Tensor | None


def _qtensor(wt: Weight, codes: torch.Tensor, step: torch.Tensor, bits: int,
             method: str) -> QTensor:
    w = as_rows(wt.t)
    std = w.std(dim=1, unbiased=False).clamp_min(1e-30)
    return QTensor(name=wt.name, shape=tuple(wt.t.shape), dtype=dtype_name(wt.t.dtype), cls=wt.cls,
                   kind="quant", codes=codes.numpy(), scales=step.to(torch.float16).numpy(),
                   bits=bits, method=method, k=round(float((step * qmax_for(bits) / std).mean()), 4),
                   error=hessian_error(w, dequantize(codes, step), wt.h),
                   error_kind="hessian" if wt.h is not None else "mse")


def _solve(w: torch.Tensor, h: torch.Tensor | None, step: torch.Tensor, qmax: int,
           solve: GptqSolve, device: str) -> torch.Tensor:
    if h is None:
        return rtn_codes(w, step, qmax)
    return gptq_quantize(w.to(device), h, step, qmax, solve)


def _gptq_percentile(w: torch.Tensor, h: torch.Tensor | None, bits: int, solve: GptqSolve,
                     device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """record_1060's sweep: one GPTQ pass per clip percentile, lowest plain MSE wins."""
    qmax = qmax_for(bits)
    best = None
    for p in PERCENTILES:
        step = round_scale(clip_step(w, bits, "percentile", p))
        codes = _solve(w, h, step, qmax, solve, device)
        mse = float(((w - dequantize(codes, step)) ** 2).sum())
        if best is None or mse < best[0]:
            best = (mse, codes, step)
    return best[1], best[2]


def record_tensor(run: RecordRun, wt: Weight) -> QTensor:
    """One large float tensor under the record's rule for its class."""
    w = as_rows(wt.t)
    cp = run.policy.for_class(wt.cls)
    h = None if wt.h is None else wt.h.detach().to(torch.float32).cpu()
    wt = replace(wt, h=h)
    solve = GptqSolve(damp=cp.damp, name=wt.name, log=run.log)
    solved = "gptq" if h is not None else "rtn"
    if run.method == "record_1060" and wt.cls in ("attention", "mlp"):
        codes, step = _gptq_percentile(w, h, cp.bits, solve, run.device)
        return _qtensor(wt, codes, step, cp.bits, solved)
    step = round_scale(clip_step(w, cp.bits, cp.clip.kind, cp.clip.value))
    if run.method == "record_1060":  # int8 percentile round-to-nearest (embedding, other)
        return _qtensor(wt, rtn_codes(w, step, qmax_for(cp.bits)), step, cp.bits, "rtn")
    codes = _solve(w, h, step, qmax_for(cp.bits), solve, run.device)
    return _qtensor(wt, codes, step, cp.bits, solved)


def add_record_lqer(tensors: list[QTensor], weights: Mapping[str, torch.Tensor],
                    fmt: LqerFormat = RECORD_FORMAT) -> list[str]:
    """The records' LQER: rank 4 on the top-3 quantized tensors by ||W - Ŵ||_F (in place)."""
    errs = []
    for qt in tensors:
        if qt.kind == "quant":
            w = as_rows(weights[qt.name])
            e = w - dequantize(torch.from_numpy(qt.codes.copy()), torch.from_numpy(
                qt.scales.astype("float32")))
            errs.append((float(e.norm()), qt, e))
    errs.sort(key=lambda x: -x[0])
    picked = []
    for _n, qt, e in errs[:LQER_TOP_K]:
        qt.lqer = make_lqer(e, LQER_RANK, fmt)
        picked.append(qt.name)
    return picked


def record_quantize(run: RecordRun, sd: Mapping[str, torch.Tensor], aliases: Mapping[str, str],
                    hessians: Mapping[str, torch.Tensor],
                    passthrough: Callable[[str, torch.Tensor, str, QuantPolicy], QTensor]
                    ) -> list[QTensor]:
    """Every state_dict entry under `run.method` (run.policy = record_policy(method, ...))."""
    out: list[QTensor] = []
    policy = run.policy
    for name, t in sd.items():
        if name in aliases:
            out.append(alias_entry(name, t, aliases[name]))
            continue
        cls = classify(name, t.numel(), t.ndim, t.is_floating_point(), policy)
        out.append(passthrough(name, t, cls, policy) if cls == "small" else
                   record_tensor(run, Weight(name, t, cls, hessians.get(name))))
    if run.method in SDCLIP_RECORDS:
        picked = add_record_lqer(out, sd, SDCLIP_RECORDS[run.method])
        run.log(f"quant:{run.method} lqer rank:{LQER_RANK} tensors:{','.join(picked)}")
    return out
