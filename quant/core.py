"""quantize_model: state_dict -> QuantizedModel (codes + scales + passthrough), optionally fitted
to a byte budget. The artifact bytes are built once here and reused for size and saving."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from numbers import Integral
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from . import fitter
from .artifact import (SCALE_LOG, build_artifact, logical_streams, lqer_stream_name,
                       pass_stream_name, row_scales_name, state_dict_from_tensors)
from .baseline import baseline_keep_float, baseline_quantize_tensor
from .codec import JOINT, StreamCache, codec_ratio
from .errors import BudgetError, QuantError
from .gptq import GptqSolve, gptq_factor, gptq_quantize
from .logscale import packed_cost
from .lqer import FITTER_FORMAT, make_lqer
from .policy import CLASSES, QuantPolicy, classify, is_control
from .methods import METHODS, record_methods
from .records import RecordRun, record_policy, record_quantize
from .report import build_report
from .scalar import (LOG_SCALE_R, SCALE_FORMATS, as_rows, clip_free_step, clip_step, dequantize,
                     fisher_steps, flat_steps, hessian_error, qmax_for, round_log_scale,
                     round_scale, rtn_codes)
from .tensors import QTensor, alias_entry, dtype_name



class QuantizedModel:
    """Quantized tensors + meta; `.to_bytes()` is exactly what save_artifact writes."""

    def __init__(self, tensors: list[QTensor], meta: Mapping[str, Any], policy: QuantPolicy,
                 method: str, cache: StreamCache | None = None, budget_bytes: int | None = None):
        self.tensors = tensors
        self.method = method
        self.policy = policy
        self.budget_bytes = budget_bytes
        self.meta = dict(meta)
        self._blob, self.streams = build_artifact(tensors, self.meta, policy.compressors,
                                                  cache or StreamCache(), policy.shuffle_fp16)
        self.report = build_report(self)

    @property
    def total_bytes(self) -> int:
        return len(self._blob)

    def to_bytes(self) -> bytes:
        return self._blob

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The dequantized tensors exactly as load_artifact returns them."""
        return state_dict_from_tensors(self.tensors)


def _as_state_dict(obj: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict())
    if isinstance(obj, Mapping):
        return dict(obj)
    raise QuantError(f"quantize_model takes an nn.Module or a state_dict, got {type(obj).__name__}")


def _alias_map(sd: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """name -> earlier name for tensors that share storage (e.g. a tied head), stored once."""
    seen: dict[tuple, str] = {}
    out: dict[str, str] = {}
    for name, t in sd.items():
        if t.numel() == 0:
            continue
        key = (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if key in seen:
            out[name] = seen[key]
        else:
            seen[key] = name
    return out


def _passthrough(name: str, t: torch.Tensor, cls: str, policy: QuantPolicy) -> QTensor:
    t = t.detach().cpu().contiguous()
    if t.is_floating_point():
        stored = t.float() if is_control(name, policy.control_patterns) else t.to(torch.float16)
        err = float(((stored.float() - t.float()) ** 2).sum() / (t.float() ** 2).sum().clamp_min(1e-30))
    else:
        stored, err = t, 0.0
    return QTensor(name=name, shape=tuple(t.shape), dtype=dtype_name(t.dtype), cls=cls, kind="pass",
                   method="fp32" if stored.dtype == torch.float32 else dtype_name(stored.dtype),
                   data=stored.numpy().reshape(-1), error=err, error_kind="mse")


def _int8_baseline(sd: Mapping[str, torch.Tensor], aliases: dict[str, str],
                   policy: QuantPolicy) -> list[QTensor]:
    out: list[QTensor] = []
    for name, t in sd.items():
        t = t.detach().cpu().contiguous()
        if name in aliases:
            out.append(alias_entry(name, t, aliases[name]))
        elif not t.is_floating_point():
            out.append(_passthrough(name, t, "small", policy))
        elif t.numel() <= policy.small_numel:
            kept, _ = baseline_keep_float(name, t, policy.control_patterns)
            out.append(QTensor(name=name, shape=tuple(t.shape), dtype=dtype_name(t.dtype),
                               cls="small", kind="pass", method=dtype_name(kept.dtype),
                               data=kept.numpy().reshape(-1), error_kind="mse"))
        else:
            q, s = baseline_quantize_tensor(t)
            codes = q.reshape(q.shape[0], -1) if q.ndim == 2 else q.reshape(1, -1)
            scales = s.reshape(-1)
            w = as_rows(t)
            err = hessian_error(w, dequantize(codes, scales.float()), None)
            cls = classify(name, t.numel(), t.ndim, True, policy)
            out.append(QTensor(name=name, shape=tuple(t.shape), dtype=dtype_name(t.dtype), cls=cls,
                               kind="quant", codes=codes.numpy(), scales=scales.numpy(), bits=8,
                               method="int8", k=None, error=err, error_kind="mse"))
    return out


class _Item:
    """One tensor to quantize with the scalar/GPTQ path, and its realizations per ladder step."""

    def __init__(self, name: str, t: torch.Tensor, cls: str, h: torch.Tensor | None,
                 job: _Job):
        policy, method, log, device = job.policy, job.method, job.log, job.device
        lqer_ranks, scales = job.lqer_ranks, job.scales
        self.device = device
        self.log_scales = scales == "log"
        self.name, self.cls, self.shape, self.dtype = name, cls, tuple(t.shape), dtype_name(t.dtype)
        self.w = as_rows(t)
        cp = policy.for_class(cls)
        self.bits, self.damp = cp.bits, cp.damp
        if h is not None and tuple(h.shape) != (self.w.shape[1], self.w.shape[1]):
            raise QuantError(f"Hessian for {name} has shape {tuple(h.shape)} but the weight has "
                             f"{self.w.shape[1]} input columns; recollect hessians for this model")
        self.h = None if h is None else h.detach().to(torch.float32).cpu()
        self.col_weight = None if self.h is None else torch.diagonal(self.h).clone()
        self.base_step = clip_step(self.w, cp.bits, cp.clip.kind, cp.clip.value, self.col_weight)
        # flat and fisher: one step for all rows, so no row's range fits the class's qmax:
        # 8-bit codes. fisher: no rung clips a row, and the embedding's rows are shaped by
        # their Fisher weights once the fit has them (_shape_rows)
        if policy.row_steps in ("flat", "fisher"):
            self.base_step, self.bits = flat_steps(self.base_step), 8
        self.min_step = (clip_free_step(self.w, qmax_for(8)) if policy.row_steps == "fisher"
                         else None)
        self.std = self.w.std(dim=1, unbiased=False).clamp_min(1e-30)
        self.method = "gptq" if (method == "gptq" and self.h is not None) else "rtn"
        self.log = log
        self.lqer_ranks = lqer_ranks
        self.cache: dict[int, QTensor] = {}
        self._factor: tuple | None = None

    def realize(self, j: int) -> QTensor:
        """The tensor at fitter option j: fp16 (option 0), codes at ladder step j, or (j >=
        N_OPTIONS) codes at a ladder step plus an LQER correction of their error."""
        if j >= fitter.N_OPTIONS:
            return self._realize_lqer(j)
        if j == fitter.FLOAT and j not in self.cache:
            stored = self.w.to(torch.float16)
            self.cache[j] = QTensor(
                name=self.name, shape=self.shape, dtype=self.dtype, cls=self.cls, kind="pass",
                method="float16", data=stored.numpy().reshape(-1),
                error=hessian_error(self.w, stored.float(), self.h),
                error_kind="hessian" if self.h is not None else "mse", extra={"ladder": None})
        if j not in self.cache:
            bits = fitter.bits_for(self.bits, j)
            qmax = qmax_for(bits)
            step, scale_codes = self._round(fitter.rung_step(self.base_step, j, self.min_step))
            if self.method == "gptq":
                if self._factor is None:  # H's factor does not depend on the step
                    self._factor = gptq_factor(self.h, self.damp, log=self.log, name=self.name,
                                               device=self.device)
                solve = GptqSolve(damp=self.damp, name=self.name, log=self.log)
                codes = gptq_quantize(self.w.to(self.device), self.h, step, qmax, solve,
                                      self._factor)
            else:
                codes = rtn_codes(self.w, step, qmax)
            err = hessian_error(self.w, dequantize(codes, step), self.h)
            self.cache[j] = QTensor(
                name=self.name, shape=self.shape, dtype=self.dtype, cls=self.cls, kind="quant",
                codes=codes.numpy(), scales=step.to(torch.float16).numpy(), bits=bits,
                scale_codes=scale_codes, scale_r=LOG_SCALE_R if self.log_scales else 0,
                method=self.method, k=round(float((step * qmax / self.std).mean()), 4), error=err,
                error_kind="hessian" if self.h is not None else "mse",
                extra={"ladder": int(fitter.LADDER[j - 1]), "step_over_std":
                       round(float((step / self.std).mean()), 5)})
        return self.cache[j]

    def _round(self, step: torch.Tensor) -> tuple[torch.Tensor, np.ndarray | None]:
        """The steps as stored, before any code is computed against them: on the log grid
        (with their codes) or plain fp16 (QUANT_SCALES)."""
        if self.log_scales:
            return round_log_scale(step, LOG_SCALE_R)
        return round_scale(step), None

    def scale_row_bytes(self) -> float:
        """First guess of stored bytes per row scale: the rANS estimate of the log codes at the
        policy step (a ladder step only shifts them), or fp16's 2 raw bytes."""
        if not self.log_scales:
            return 2.0
        _v, c = round_log_scale(self.base_step, LOG_SCALE_R)
        return packed_cost(c, LOG_SCALE_R) / max(len(c), 1)

    def _realize_lqer(self, o: int) -> QTensor:
        if o not in self.cache:
            j, ri = fitter.decode_option(o)
            base = self.realize(j)
            w_hat = dequantize(torch.from_numpy(base.codes.copy()),
                               torch.from_numpy(base.scales.astype(np.float32)))
            lq = make_lqer(self.w - w_hat, self.lqer_ranks[ri], FITTER_FORMAT, self.col_weight)
            err = hessian_error(self.w, w_hat + lq.correction(), self.h)
            self.cache[o] = replace(base, lqer=lq, error=err,
                                    extra={**base.extra, "lqer_rank": lq.rank})
        return self.cache[o]


def loss_slopes(weights: Mapping[str, torch.Tensor], dequantized: Mapping[str, torch.Tensor],
                hessians: Mapping[str, torch.Tensor] | None,
                delta_loss: Mapping[str, float]) -> dict[str, float]:
    """Measured loss increase per unit of relative weighted error, per tensor.

    delta_loss[name] is the loss (e.g. val_bpb) increase measured with only that tensor replaced
    by its `dequantized` version (eval_bpb.py --sensitivity); its relative Hessian-weighted error
    (the report's weighted_error) is recomputed here, so slope = delta / error. Tensors with no
    error (kept in floating point) or no measurement are left out."""
    hessians = hessians or {}
    out: dict[str, float] = {}
    for name, delta in delta_loss.items():
        if name not in weights or name not in dequantized:
            continue
        w = as_rows(weights[name])
        err = hessian_error(w, as_rows(dequantized[name]), hessians.get(name))
        if err > 1e-12:
            out[name] = max(float(delta), 0.0) / err
    return out


def _weighted_norm(it: "_Item", elem_weight: torch.Tensor | None) -> float:
    """||W||^2 weighted as the item's curve weights its squared error (fitter.error_weight: the
    Fisher weights when given, else diag(H) per column, else ones), so a multiplier divided by
    it makes the curve's distortion a *relative* error whatever the weights' own scale."""
    cw = fitter.error_weight(*it.w.shape, it.col_weight, elem_weight).double()
    return float(((it.w.double() ** 2) * cw).sum())


def _norm_multipliers(items: list["_Item"], alpha: float,
                      error_weights: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """(median norm / ||W||^2_weights)^alpha per tensor: alpha 0 keeps the absolute weighted
    error, 1 makes it relative (every tensor's relative error equally costly, like one k per
    class), 0.5 is between. Why: absolute error under-prices small-norm tensors whose output
    is scaled up downstream (e.g. projections behind a learned residual scale)."""
    if not alpha or not items:
        return {}
    norms = {it.name: max(_weighted_norm(it, error_weights.get(it.name)), 1e-30) for it in items}
    med = float(np.median(list(norms.values())))
    return {n: (med / v) ** alpha for n, v in norms.items()}


def _slope_multipliers(items: list["_Item"], slopes: Mapping[str, float],
                       error_weights: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Distortion multipliers that turn each tensor's predicted weighted squared error into a
    predicted loss increase: slope / ||W||^2 under the same weights as its curve. A slope is
    loss per unit of *relative* error (loss_slopes), so dividing by the diag(H) norm while the
    curve weights by Fisher would scale each tensor's price by its Fisher/diag(H) ratio a
    second time (on the 5,000-step mix model that turned a 0.046 bpb gap at 2.7 bits/param
    into 0.355). Tensors without a slope get the median slope; slopes are clamped to
    [median/20, 20*median] so a noisy measurement (a tiny or negative delta) cannot make a
    tensor free or untouchable."""
    got = {it.name: float(slopes[it.name]) for it in items if it.name in slopes}
    if not got:
        return {}
    med = float(np.median([v for v in got.values() if v > 0] or [1.0]))
    out = {}
    for it in items:
        norm = _weighted_norm(it, error_weights.get(it.name))
        if norm > 0:
            out[it.name] = float(np.clip(got.get(it.name, med), med / 20, med * 20)) / norm
    return out


@dataclass(frozen=True)
class BudgetFit:
    """Fit the artifact to a byte budget, and how the fitter prices each tensor's error (see
    quantize_model): what only a fitted quantization reads."""
    budget_bytes: int
    sensitivity: Mapping[str, float] | None = None
    loss_slopes: Mapping[str, float] | None = None
    lqer_ranks: tuple[int, ...] = ()
    error_norm: float = 0.0
    error_weights: Mapping[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.budget_bytes, bool) or not isinstance(self.budget_bytes, Integral):
            raise QuantError(f"BudgetFit takes a budget in whole bytes, got "
                             f"{self.budget_bytes!r}; pass fit=None to quantize without one")


@dataclass(frozen=True)
class QuantRun:
    """How a quantization runs, the same for every tensor: the seed it records, the device the
    GPTQ sweeps run on, the row scales' format (QUANT_SCALES) and where it logs (None:
    nowhere)."""
    seed: int = 0
    device: str = "cpu"
    scales: str = "log"
    log: Callable[[str], None] | None = None
    record_bits_offset: int = 0   # a record method's bit widths shifted, to place it at other sizes


@dataclass(frozen=True)
class _Job:
    """One quantize_model call's choices as its steps read them: the same for every tensor."""
    method: str
    policy: QuantPolicy
    meta: dict
    log: Callable[[str], None]
    device: str = "cpu"
    scales: str = "log"
    lqer_ranks: tuple[int, ...] = ()
    cache: StreamCache = field(default_factory=StreamCache)


def quantize_model(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor], *,
                   hessians: Mapping[str, torch.Tensor] | None = None, method: str = "gptq",
                   policy: QuantPolicy | None = None, meta: Mapping[str, Any] | None = None,
                   fit: BudgetFit | None = None, run: QuantRun = QuantRun()) -> QuantizedModel:
    """Quantize every tensor of a model (see QuantPolicy); fit to `fit.budget_bytes` when given.

    The fields of `fit` (BudgetFit) and `run` (QuantRun) read as follows.
    budget_bytes bounds the exact artifact size (header + streams). method "int8" reproduces
    the challenge baseline and is never fitted (a budget it exceeds raises BudgetError).
    `seed` is recorded; the algorithms themselves use no randomness. `sensitivity` scales each
    tensor's predicted loss increase (name -> weight). `loss_slopes` (from `loss_slopes()`:
    measured loss per unit of relative weighted error) puts every tensor's predicted error in
    loss units, so the fitter trades bytes by measured effect. `device="cuda"` runs the GPTQ sweeps
    on the GPU (faster; codes may differ from a CPU run in rare rounding ties). `lqer_ranks`
    offers the fitter, per tensor, each step plus a rank-r LQER correction (quant/lqer.py) as
    further options, weighed by predicted bytes and error like any other (budget only).
    `error_norm` alpha divides each tensor's predicted error by its ||W||^2^alpha, weighted as
    its error is (see _norm_multipliers; measured `loss_slopes` take precedence). `error_weights` (from
    `collect_error_weights`: name -> Omega, rows x cols) weights each entry's squared error by
    its per-token Fisher diagonal instead of diag(H), so the predicted distortion is the
    second-order loss increase in nats per token (see _error_weights). `scales` ("log" or
    "fp16", QUANT_SCALES) rounds each per-row step, before its codes are computed, to the log
    grid fp16(2^(c/R)) (scalar.round_log_scale; the artifact stores c when that is smaller)
    or to plain fp16; int8 and the records' methods keep fp16 scales whatever it says.
    `record_bits_offset` shifts a record method's bit widths (quant.records.record_policy), to
    place a record at other sizes; the other methods refuse anything but 0.
    """
    budget_bytes = None if fit is None else fit.budget_bytes
    job = _job_for(method, policy, meta, fit, run)
    sd = _as_state_dict(model_or_state_dict)
    aliases = _alias_map(sd)
    hessians = dict(hessians or {})
    if not METHODS[method].fits_budget:
        if METHODS[method].is_record:
            job = replace(job, policy=record_policy(method, job.policy, run.record_bits_offset))
            if run.record_bits_offset:  # the artifact says it is not the record as shipped
                job.meta["record_bits_offset"] = run.record_bits_offset
        return _unfitted(job, sd, aliases, hessians, budget_bytes)
    if fit is None:
        slots, items = _plan_items(sd, aliases, hessians, job)
        q = QuantizedModel(_assemble(slots, items, [fitter.J0] * len(items)), job.meta,
                           job.policy, method, job.cache, None)
    else:
        session = _open_fit(job, sd, aliases, hessians, fit)
        q = session.build(session.fit())
        if q.total_bytes > fit.budget_bytes:  # cannot happen; guard anyway
            raise BudgetError(f"internal error: artifact {q.total_bytes} > budget {fit.budget_bytes}")
    _log_scales(q, run.scales, job.log)
    return q


def _job_for(method: str, policy: QuantPolicy | None, meta: Mapping[str, Any] | None,
             fit: BudgetFit | None, run: QuantRun) -> _Job:
    """One call's _Job, every argument checked first (one readable error naming the setting)."""
    if method not in METHODS:
        raise QuantError(f"unknown quant method {method!r}; set QUANT_METHOD to one of "
                         f"{', '.join(METHODS)}")
    if run.scales not in SCALE_FORMATS:
        raise QuantError(f"unknown scale format {run.scales!r}; set QUANT_SCALES to one of "
                         f"{', '.join(SCALE_FORMATS)}")
    if run.record_bits_offset and not METHODS[method].is_record:
        raise QuantError(f"record_bits_offset={run.record_bits_offset} applies to the records' "
                         f"methods ({', '.join(record_methods())}), not {method!r}")
    meta = dict(meta or {})
    # not the budget itself: the (compressed) header would then change size with the budget
    # asked for, and the "smallest reachable size" an impossible budget reports would drift
    meta.update(quant_method=method, quant_seed=run.seed)
    return _Job(method, policy or QuantPolicy(), meta, run.log or (lambda s: None), run.device,
                run.scales, fit.lqer_ranks if fit else ())


def _log_scales(q: QuantizedModel, scales: str, log: Callable[[str], None]) -> None:
    """One line: the scale format asked for, the layout the builder kept, the bytes it took."""
    held = {st["name"] for st in q.streams for p in st.get("parts", [])
            if p["name"].startswith("rowscales/")}
    stored = "log" if held & {"codes", SCALE_LOG} else "fp16"
    nbytes = sum(r.get("scale_bytes", 0.0) for r in q.report)
    log(f"quant:scales format:{scales} stored:{stored} bytes:{nbytes:.0f} "
        f"streams:{','.join(sorted(held)) or 'none'}")


def _unfitted(job: _Job, sd: Mapping[str, torch.Tensor], aliases: dict[str, str],
              hessians: dict[str, torch.Tensor], budget_bytes: int | None) -> QuantizedModel:
    """The int8 baseline or a record's quantizer (`job.policy` already the record's, from
    record_policy): its size is set by its own rule, never fitted, so a budget it exceeds is
    an error naming the method that can fit one."""
    method, meta, policy, cache, device, log = (job.method, job.meta, job.policy, job.cache,
                                                job.device, job.log)
    if method == "int8":
        tensors = _int8_baseline(sd, aliases, policy)
        q = QuantizedModel(tensors, meta, policy, method, cache, budget_bytes)
        if budget_bytes is not None and q.total_bytes > budget_bytes:
            raise BudgetError(f"int8 baseline artifact is {q.total_bytes:,} bytes, over the budget "
                              f"of {budget_bytes:,}; use QUANT_METHOD=gptq or rtn to fit a budget")
        return q
    tensors = record_quantize(RecordRun(method, policy, device, log), sd, aliases, hessians,
                              _passthrough)
    q = QuantizedModel(tensors, meta, policy, method, cache, budget_bytes)
    if budget_bytes is not None and q.total_bytes > budget_bytes:
        raise BudgetError(f"{method} artifact is {q.total_bytes:,} bytes, over the budget of "
                          f"{budget_bytes:,}; the record's quantizer is not fitted to a "
                          "budget: use QUANT_METHOD=gptq to fit one")
    return q


def _plan_items(sd: Mapping[str, torch.Tensor], aliases: dict[str, str],
                hessians: dict[str, torch.Tensor], job: _Job
                ) -> tuple[list[QTensor | _Item], list[_Item]]:
    """One slot per tensor in state_dict order: aliases and small tensors as they are stored,
    the rest as _Items to quantize (also returned alone, in the same order)."""
    method, policy, log = job.method, job.policy, job.log
    slots: list[QTensor | _Item] = []
    items: list[_Item] = []
    for name, t in sd.items():
        if name in aliases:
            slots.append(alias_entry(name, t, aliases[name]))
            continue
        cls = classify(name, t.numel(), t.ndim, t.is_floating_point(), policy)
        if cls == "small":
            slots.append(_passthrough(name, t, cls, policy))
            continue
        item = _Item(name, t, cls, hessians.get(name), job)
        slots.append(item)
        items.append(item)
    paths: dict[str, int] = {}
    for it in items:
        paths[f"{it.cls}:{it.method}"] = paths.get(f"{it.cls}:{it.method}", 0) + 1
    log("quant:paths " + " ".join(f"{k}={v}" for k, v in sorted(paths.items()))
        + f" passthrough={sum(1 for s in slots if isinstance(s, QTensor) and s.kind == 'pass')}")
    if method == "gptq" and any(it.method == "rtn" for it in items):
        log(f"quant:warning {sum(it.method == 'rtn' for it in items)} tensors have no Hessian: "
            "round-to-nearest for those")
    return slots, items


def _assemble(slots: list[QTensor | _Item], items: list[_Item], choice: list[int]
              ) -> list[QTensor]:
    """Every slot as a QTensor, each item realized at its chosen fitter option."""
    it_index = {id(it): i for i, it in enumerate(items)}
    return [s if isinstance(s, QTensor) else s.realize(choice[it_index[id(s)]]) for s in slots]


def _error_weights(items: list[_Item], omega: Mapping[str, torch.Tensor] | None,
                   log: Callable[[str], None]) -> dict[str, torch.Tensor]:
    """Each item's Fisher error weights (collect_error_weights); an item without them (or of
    another shape) gets diag(H) per column times the median over the others of
    mean(Omega) / mean(diag H), so all distortions stay in one unit. Empty without any."""
    if not omega:
        return {}
    got = {it.name: omega[it.name].float() for it in items
           if it.name in omega and tuple(omega[it.name].shape) == tuple(it.w.shape)}
    if not got:
        return {}
    cws = {it.name: fitter.error_weight(*it.w.shape, it.col_weight, None)[0] for it in items}
    med = float(np.median([float(v.mean()) / max(float(cws[n].mean()), 1e-30)
                           for n, v in got.items()]))
    if len(got) < len(items):
        log(f"quant:error_weights fisher:{len(got)} of {len(items)} tensors (others: diag(H) "
            "times the median ratio)")
    return {it.name: got[it.name] if it.name in got
            else (med * cws[it.name])[None, :].expand(it.w.shape[0], -1) for it in items}


def _shape_rows(items: list[_Item], policy: QuantPolicy,
                error_weights: Mapping[str, torch.Tensor]) -> None:
    """QUANT_ROW_STEPS=fisher: each row of an embedding-class tensor (a token) gets a step
    shaped by its row of error weights (_error_weights: Fisher, or diag(H) expanded, which is
    the same in every row and so leaves the step flat; scalar.fisher_steps), before any curve
    or code reads the steps. Only the embedding: its rows' weights span ~190x (AM/GM) on the
    5,000-step mix model, the matrices' 1.05-3x, and shaping every tensor lost at 3.7
    bits/param there (0.00865 against 0.00767 bpb) while one table per tensor codes the mixed
    widths."""
    if policy.row_steps != "fisher":
        return
    for it in items:
        if it.cls == "embedding" and it.name in error_weights:
            assert not it.cache, "rows are shaped before any option is realized"
            it.base_step = fisher_steps(it.base_step, error_weights[it.name].sum(dim=1))


def _curves(items: list[_Item], policy: QuantPolicy, sensitivity: Mapping[str, float] | None,
            loss_slopes: Mapping[str, float] | None, error_norm: float,
            error_weights: Mapping[str, torch.Tensor], log: Callable[[str], None]
            ) -> list[fitter.Curve]:
    """Each item's predicted rate/distortion curve, its error weighted by sensitivity times the
    measured loss slope (or, without slopes, the error-norm multiplier)."""
    sens = dict(sensitivity or {})
    measured = _slope_multipliers(items, loss_slopes or {}, error_weights)
    if measured:
        log(f"quant:loss_slopes measured:{sum(n in (loss_slopes or {}) for n in measured)} "
            f"of {len(items)} tensors (others use the median)")
    else:
        measured = _norm_multipliers(items, error_norm, error_weights)
    return [fitter.predict_curve(it.w, it.base_step, it.bits, it.col_weight, fitter.CurveOptions(
                float(sens.get(it.name, 1.0)) * measured.get(it.name, 1.0),
                policy.float_rung, it.lqer_ranks, error_weights.get(it.name),
                it.scale_row_bytes(), it.min_step))
            for it in items]


@dataclass
class FitSession:
    """A budget fit opened up: every tensor's predicted curve, the fitter run on those curves
    (or on curves a caller corrected), and any choice of options built into a QuantizedModel.
    quantize_model's fitted path is `session.build(session.fit())`; benches that measure the
    fitter's choices (bench.quant_headroom, bench.measured_prices) use the same object instead
    of replaying its steps."""
    job: _Job
    slots: list[QTensor | _Item]
    items: list[_Item]
    curves: list[fitter.Curve]
    budget_bytes: int

    @property
    def names(self) -> list[str]:
        return [it.name for it in self.items]

    def build(self, choice: list[int]) -> QuantizedModel:
        """The model with item i at fitter option choice[i] (may exceed the budget)."""
        return QuantizedModel(_assemble(self.slots, self.items, choice), self.job.meta,
                              self.job.policy, self.job.method, self.job.cache, self.budget_bytes)

    def fit(self, curves: list[fitter.Curve] | None = None) -> list[int]:
        """The fitter's option per item under `curves` (default: the predicted ones), with
        exact artifact builds as its measurement of bytes."""
        return _fit_to_budget(self.job, self.slots, self.items, curves or self.curves,
                              self.budget_bytes)


def open_fit(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor], *,
             hessians: Mapping[str, torch.Tensor] | None = None, policy: QuantPolicy | None = None,
             fit: BudgetFit, run: QuantRun = QuantRun()) -> FitSession:
    """The FitSession quantize_model(method="gptq", fit=fit, ...) would run, for a caller that
    measures or corrects its curves before fitting."""
    job = _job_for("gptq", policy, None, fit, run)
    sd = _as_state_dict(model_or_state_dict)
    return _open_fit(job, sd, _alias_map(sd), dict(hessians or {}), fit)


def _open_fit(job: _Job, sd: Mapping[str, torch.Tensor], aliases: dict[str, str],
              hessians: dict[str, torch.Tensor], fit: BudgetFit) -> FitSession:
    slots, items = _plan_items(sd, aliases, hessians, job)
    weights = _error_weights(items, fit.error_weights, job.log)
    _shape_rows(items, job.policy, weights)
    curves = _curves(items, job.policy, fit.sensitivity, fit.loss_slopes, fit.error_norm,
                     weights, job.log)
    return FitSession(job, slots, items, curves, int(fit.budget_bytes))


def _fit_to_budget(job: _Job, slots: list[QTensor | _Item], items: list[_Item],
                   curves: list[fitter.Curve], budget_bytes: int) -> list[int]:
    """Run the fitter with exact artifact builds as its measurement; the chosen options."""
    meta, policy, cache, log = job.meta, job.policy, job.cache, job.log
    winners: dict[str, tuple[str, ...]] = {}

    def measure(choice: list[int]) -> tuple[int, list[int]]:
        tensors = _assemble(slots, items, choice)
        blob, streams = build_artifact(tensors, meta, policy.compressors, cache,
                                       policy.shuffle_fp16, winners)
        logical = logical_streams(streams)
        for name, st in logical.items():  # later rounds try only the codec that won
            if name.startswith("codes/") and st["standalone_codec"] not in ("raw", *JOINT):
                winners.setdefault(name, (st["standalone_codec"],))
        by_name = {name: st["length"] for name, st in logical.items()}
        own = []  # each tensor's own bytes: codes, row scales as stored, LQER factors
        for qt in tensors:
            if qt.cls in CLASSES:
                own.append(by_name[pass_stream_name(qt)] if qt.kind == "pass"
                           else by_name[f"codes/{qt.name}"] + by_name[row_scales_name(qt.name)]
                           + (by_name[lqer_stream_name(qt.name)] if qt.lqer else 0))
        return len(blob), own

    fixed_guess = 4096 + sum(
        s.data.nbytes for s in slots if isinstance(s, QTensor) and s.kind == "pass")
    choice, _total = fitter.fit_budget(curves, budget_bytes, lambda i, j: items[i].realize(j),
                                       measure, fixed_guess, fitter.FitSearch(
                                           log=log, initial_ratio=codec_ratio(policy.compressors)))
    return choice
