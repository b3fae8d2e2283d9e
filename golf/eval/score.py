"""Scoring: exact val_bpb of a model over a token stream, chunked or sliding window.

Why this module exists: the challenge score is Σ NLL / (ln 2 · Σ bytes) over *every* validation
target, and the hand-rolled scripts get the bookkeeping subtly wrong (the baseline drops the
tail; the first sliding-window eval scored the tail up to 16 times). Here the set of scored
targets is planned by a pure function (`window_plan`), checked to cover each target exactly
once, and the byte denominator is checked against the decoded text (ground truth).

Stream convention: a stream of N+1 tokens gives N targets; target t (0-based) is token t+1,
predicted from tokens [.., t] and its byte count uses prev = token t.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

import quant
from golf.run import distributed
from golf.run import rundir as rd
from golf.run.atomic import atomic_write_json
from golf.eval.bpb import bpb_from_sums, check_bytes, range_bytes, val_byte_counter
from golf.run.checkpoint import load_torch_file
from golf.run.config import Config
from golf.data.inputs import check_dataset
from golf.data.shards import (check_token_range, dataset_text_transform, find_shards,
                              load_val_bytes, load_val_tokens, read_shard, train_pattern)
from golf.data.tokenizer import load_tokenizer
from golf.run.errors import EvalError
from golf.model.gpt import GPT
from golf.run.rules import eval_mode


@dataclass(frozen=True)
class Scoring:
    """How a stream is scored, besides the weights, the tokens and the byte counter: the window
    plan (seq_len, stride; doc_bos keeps each window inside one document), the batch size, and
    where (device, this rank of world_size). One value travels from the settings to every pass
    (pre, post, tilt, TTT), so they all score the same windows."""
    seq_len: int
    stride: int = 0
    batch_tokens: int = 65536
    device: str | torch.device = "cpu"
    rank: int = 0
    world_size: int = 1
    doc_bos: int | None = None


@dataclass(frozen=True)
class EvalRequest:
    """What a caller asks of an evaluation (eval_bpb.py's options); None = the run's config
    decides. ttt (a golf.eval.ttt.TTTSettings) and tilt (a golf.eval.tilt.TiltSettings) are passed in,
    never imported: golf.eval.ttt sits above this module and the packed script lacks it."""
    checkpoint: str | None = None
    artifact: str | None = None
    data: str | None = None
    tokenizer: str | None = None
    mode: str | None = None
    seq_len: int | None = None
    stride: int | None = None
    max_tokens: int | None = None
    batch_tokens: int | None = None
    device: str | None = None
    byte_check: bool = True
    doc_windows: bool | None = None
    ttt: Any = None
    tilt: Any = None


@dataclass
class EvalResult:
    """One scored pass. `partial` is True when max_tokens cut the val stream short."""
    val_loss: float
    val_bpb: float
    tokens: int
    bytes: int
    seconds: float
    tokens_per_s: float
    mode: str
    seq_len: int
    stride: int
    partial: bool
    decoded_bytes: int | None = None     # ground truth: UTF-8 length of the decoded scored text

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- planning
def window_plan(n_targets: int, seq_len: int, stride: int = 0) -> list[tuple[int, int, int]]:
    """Windows as (start, score_from, score_to): input tokens[start:score_to], targets
    tokens[start+1:score_to+1], of which targets [score_from, score_to) are scored.

    stride 0 (chunked): non-overlapping seq_len windows; the tail is a shorter last window,
    so all n_targets are scored (the baseline instead drops up to seq_len-1 tail targets).
    stride S (sliding): the first window scores all of its positions; each later window
    scores the next S targets with the seq_len-1 preceding tokens as context (the window
    ends at its last scored target). The tail window therefore still has a full window of
    context, and no target is scored twice.
    """
    if n_targets < 0:
        raise EvalError(f"n_targets must be >= 0, got {n_targets}")
    if seq_len <= 0:
        raise EvalError(f"seq_len must be > 0, got {seq_len}; set EVAL_SEQ_LEN / --seq-len")
    if stride < 0 or stride > seq_len:
        raise EvalError(f"stride must be in [0, seq_len={seq_len}], got {stride}; "
                        "set EVAL_STRIDE / --stride (0 = non-overlapping chunks)")
    plan: list[tuple[int, int, int]] = []
    if stride == 0:
        for s in range(0, n_targets, seq_len):
            plan.append((s, s, min(s + seq_len, n_targets)))
        return plan
    if n_targets == 0:
        return plan
    first = min(seq_len, n_targets)
    plan.append((0, 0, first))
    done = first
    while done < n_targets:
        end = min(done + stride, n_targets)
        plan.append((end - seq_len, done, end))  # end > done >= first == seq_len: a full window
        done = end
    return plan


def document_spans(tokens: np.ndarray, n: int, bos_id: int) -> list[tuple[int, int]]:
    """Target ranges [p_j, p_{j+1}) of the documents: p_j is a BOS position, so document j's
    inputs start at its BOS and its last target is the next BOS (as the records count them).
    Targets before the first BOS form a document of their own; bos_id < 0 = one document."""
    cuts = (np.flatnonzero(np.asarray(tokens[1:n]) == bos_id) + 1).tolist() if bos_id >= 0 else []
    bounds = [0, *cuts, n]
    return list(zip(bounds[:-1], bounds[1:]))


def document_window_plan(tokens: np.ndarray, n: int, seq_len: int, stride: int,
                         bos_id: int) -> list[tuple[int, int, int]]:
    """window_plan inside each document: no window's input crosses a BOS, so each document is
    scored as if it were alone (what a model with per-document attention sees). In target
    order, every target once."""
    plan: list[tuple[int, int, int]] = []
    for a0, b0 in document_spans(tokens, n, bos_id):
        plan.extend((a0 + s, a0 + a, a0 + e) for s, a, e in window_plan(b0 - a0, seq_len, stride))
    return plan


def plan_coverage(plan: Sequence[tuple[int, int, int]], n_targets: int) -> np.ndarray:
    """How many times each target is scored by `plan` (must be all ones)."""
    counts = np.zeros(n_targets, dtype=np.int64)
    for _, a, b in plan:
        counts[a:b] += 1
    return counts


def rank_slice(n_items: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous share of `n_items` for `rank` (shares differ by at most one)."""
    return n_items * rank // world_size, n_items * (rank + 1) // world_size


# ----------------------------------------------------------------------------- scoring
def _dist_active(world_size: int) -> bool:
    return world_size > 1 and dist.is_available() and dist.is_initialized()


def batch_nll(model: torch.nn.Module, stream: torch.Tensor, batch: Sequence[tuple[int, int, int]],
              dev: torch.device, tilt: Any = None) -> torch.Tensor:
    """Per-target NLL of one batch of windows (start, first scored, end): float32 cross-entropy
    over all V logits, targets a+1..e of each window. The one scoring rule of every eval mode
    (plain, sliding, and the score-first passes of TTT). `tilt` (a golf.eval.tilt.TokenTilt, built
    by its settings' `build`) renormalises it towards the n-gram hint: scored NLL only."""
    x = torch.stack([stream[s:e] for s, _, e in batch]).to(dev).long()
    logits = model(x)
    picked = torch.cat([logits[i, a - s:e - s] for i, (s, a, e) in enumerate(batch)]).float()
    tgt = torch.cat([stream[a + 1:e + 1] for _, a, e in batch]).to(dev).long()
    nll = F.cross_entropy(picked, tgt, reduction="none")
    if tilt is not None:
        nll = tilt.apply(nll, picked, tgt, [(a, e) for _, a, e in batch])
    return nll


def _batches(plan: Sequence[tuple[int, int, int]], rows: int) -> list[list[tuple[int, int, int]]]:
    """Consecutive windows of equal length, at most `rows` per batch."""
    out: list[list[tuple[int, int, int]]] = []
    for w in plan:
        if out and len(out[-1]) < rows and (out[-1][0][2] - out[-1][0][0]) == (w[2] - w[0]):
            out[-1].append(w)
        else:
            out.append([w])
    return out


def _autocast(dev: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA (the baseline's eval precision, for speed); float32 elsewhere, also
    inside a caller's CPU autocast (it is switched off), so a CPU score is reproducible."""
    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _score_windows(model: torch.nn.Module, stream: torch.Tensor, plan: Sequence[tuple[int, int, int]],
                   rows: int, dev: torch.device, tilt: Any = None,
                   per_target: np.ndarray | None = None) -> tuple[float, int]:
    """(Σ NLL in float64, targets scored) of `plan`'s windows, `rows` windows per batch;
    `per_target` (if given) receives each target's NLL at its position."""
    nll_sum = 0.0
    n_scored = 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _autocast(dev):
            for batch in _batches(plan, rows):
                nll = batch_nll(model, stream, batch, dev, tilt)
                if per_target is not None:
                    per_target[np.concatenate([np.arange(a, e) for _, a, e in batch])] = \
                        nll.double().cpu().numpy()
                nll_sum += float(nll.double().sum().item())
                n_scored += int(nll.numel())
    finally:
        model.train(was_training)
    return nll_sum, n_scored


def evaluate_bpb(model: torch.nn.Module, tokens: np.ndarray, lut: Any, scoring: Scoring, *,
                 max_tokens: int | None = None, tilt: Any = None,
                 per_target: np.ndarray | None = None) -> EvalResult:
    """val_loss (nats/token) and val_bpb of `model` over the stream `tokens`.

    Chunked mode (stride 0) scores the short tail window too, so tokens == N exactly; the
    challenge baseline drops up to seq_len-1 tail targets, so its count is a little lower.
    Sliding mode's tail window gets a full seq_len of context (the record scripts give it
    less), all other windows match the record scripts' `ws + ctx < N` form.
    NLL is float32 cross-entropy per scored target, summed in float64; bytes come from
    `golf.eval.bpb.range_bytes` (the piece table, or the byte sidecar when `lut` is a
    golf.eval.bpb.SidecarBytes); `tilt` (see batch_nll) tilts every scored NLL; `scoring.doc_bos`
    (a BOS id) keeps every window inside one document (document_window_plan); `per_target` (a
    float64 array of at least n entries) receives each scored target's NLL at its index, for
    per-document statistics (this rank's windows only). Every target is
    scored exactly once (raises otherwise). Under torch.distributed the windows are split
    across ranks and the three sums all-reduced, so every rank returns the same result.
    """
    t0 = time.perf_counter()
    seq_len, stride, doc_bos = scoring.seq_len, scoring.stride, scoring.doc_bos
    world_size = scoring.world_size
    toks = np.asarray(tokens)
    n_total = max(0, len(toks) - 1)
    n = n_total if max_tokens is None else min(n_total, int(max_tokens))
    partial = n < n_total
    if n <= 0:
        raise EvalError(f"no validation targets to score (stream of {len(toks)} tokens, "
                        f"max_tokens={max_tokens}); check DATA_PATH / --max-tokens")
    plan = (window_plan(n, seq_len, stride) if doc_bos is None
            else document_window_plan(toks, n, seq_len, stride, doc_bos))
    lo, hi = rank_slice(len(plan), scoring.rank, world_size)
    my_plan = plan[lo:hi]
    dev = torch.device(scoring.device)
    stream = torch.from_numpy(toks[: n + 1].astype(np.int32))   # int32 halves host memory
    rows = max(1, scoring.batch_tokens // max(1, world_size) // seq_len)
    by_len = my_plan if doc_bos is None else sorted(my_plan, key=lambda w: w[2] - w[0])
    nll_sum, n_scored = _score_windows(model, stream, by_len, rows, dev, tilt,   # batch equal lengths
                                       per_target)
    n_bytes = 0
    if my_plan:  # a rank's windows score one contiguous target range: count its bytes at once
        n_bytes = range_bytes(toks, my_plan[0][1], my_plan[-1][2], lut)

    if _dist_active(world_size):
        # on the scoring device: NCCL needs CUDA tensors, gloo takes CPU (and CUDA) ones
        sums = torch.tensor([nll_sum, float(n_scored), float(n_bytes)], dtype=torch.float64,
                            device=dev)
        dist.all_reduce(sums)
        nll_sum, n_scored, n_bytes = float(sums[0]), int(round(float(sums[1]))), int(round(float(sums[2])))
        world_plan_ok = True
    else:
        world_plan_ok = world_size == 1
    if world_plan_ok and n_scored != n:
        raise EvalError(f"scored {n_scored} targets but the stream has {n}: a window plan bug "
                        f"(seq_len={seq_len}, stride={stride}); please report it")
    if not world_plan_ok and (n_scored == 0 or n_bytes == 0):   # an empty simulated shard
        val_loss = val_bpb = float("nan")
    elif n_bytes <= 0:
        raise EvalError("the scored targets have 0 bytes: the byte LUT does not fit this "
                        "tokenizer (check TOKENIZER_PATH / --tokenizer)")
    else:
        val_loss, val_bpb = bpb_from_sums(nll_sum, n_scored, n_bytes)
    secs = time.perf_counter() - t0
    return EvalResult(val_loss=float(val_loss), val_bpb=float(val_bpb), tokens=n_scored,
                      bytes=n_bytes, seconds=secs, tokens_per_s=n_scored / max(secs, 1e-9),
                      mode=eval_mode(stride), seq_len=seq_len,
                      stride=stride, partial=partial)


# ----------------------------------------------------------------------------- loading
def _config_diff(a: dict, b: dict) -> list[str]:
    return [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _check_config(path: str, cfg: Any, expected: Any, what: str) -> None:
    """Refuse weights whose network-defining config differs from the expected one."""
    if expected is None:
        return
    if what == "artifact":
        try:
            quant.check_artifact_config({"config": cfg.to_dict()}, expected.model_dict(), path)
        except ValueError as exc:
            raise EvalError(f"{exc}") from None
        return
    diff = _config_diff(cfg.model_dict(), expected.model_dict())
    if diff:
        raise EvalError(f"{path}: {what} was built for another config ({'; '.join(diff)}); "
                        "evaluate it with its own run directory's config.json")


# The artifact's own model is built (on the meta device, no memory) only to read its shapes;
# the layer count bounds that build's time, so a forged meta cannot make it run for minutes.
MAX_ARTIFACT_LAYERS = 1024


def artifact_shapes(meta: dict) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of the model an artifact's meta["config"] describes, after the
    same checks as the settings (quant.load_artifact compares them with the header before it
    decodes anything; a problem here is reported as a corrupt artifact)."""
    raw = meta.get("config")
    if not isinstance(raw, dict):
        raise ValueError("no config in the artifact's meta; re-quantize it with this golfkit")
    cfg = Config.from_dict(raw)
    problems = cfg.model_problems()
    if problems:
        raise ValueError("; ".join(problems))
    if cfg.num_layers > MAX_ARTIFACT_LAYERS:
        raise ValueError(f"NUM_LAYERS={cfg.num_layers}: more than {MAX_ARTIFACT_LAYERS}")
    with torch.device("meta"):
        model = GPT(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_artifact(path: str | os.PathLike, blob: bytes | None = None
                  ) -> tuple[dict[str, torch.Tensor], dict]:
    """quant.load_artifact with the shapes checked against the artifact's own model."""
    return quant.load_artifact(path, blob, expect=artifact_shapes)


def load_eval_model(source: str | os.PathLike, cfg_override: Any = None,
                    device: str = "cpu", blob: bytes | None = None) -> tuple[torch.nn.Module, Any, str]:
    """(model, cfg, kind) from a checkpoint .pt ({"config","state_dict"}) or an artifact
    (decoded from `blob`, its bytes, when the caller has read them: see read_artifact).

    `cfg_override` is the config the caller expects (e.g. RUN_DIR/config.json); the weights'
    own network fields must match it, else one error lists the differing keys.
    """
    path = Path(source)
    if blob is None and not path.is_file():
        raise EvalError(f"{path}: file not found; pass an existing --checkpoint / --artifact")
    kind = "artifact"
    state: dict | None = None
    cfg_dict: dict | None = None
    if path.suffix == ".pt":
        obj = load_torch_file(path, "re-export it from training or pass another --checkpoint",
                              tensors=("state_dict",))
        if not isinstance(obj, dict) or "state_dict" not in obj or not isinstance(obj.get("config"), dict):
            raise EvalError(f"{path}: checkpoint lacks 'config'/'state_dict'; use model.pt / ema.pt "
                            "written by train_gpt.py")
        kind, state, cfg_dict = "checkpoint", obj["state_dict"], obj["config"]
    else:
        state, meta = load_artifact(path, blob)
        cfg_dict = (meta or {}).get("config")
        if cfg_dict is None:
            raise EvalError(f"{path}: artifact has no config in its metadata; re-quantize it with "
                            "this version of golfkit")
    cfg = Config.from_dict(cfg_dict)
    if cfg.model_problems():
        raise EvalError(f"{path}: its config is not a valid model ({'; '.join(cfg.model_problems())}); "
                        "use weights written by train_gpt.py")
    _check_config(str(path), cfg, cfg_override, kind)
    model = GPT(cfg)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                              strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise EvalError(f"{path}: weights do not fit the model of its config ({' '.join(first)}); "
                        "it was written by another version or config") from None
    return model.to(device), cfg, kind


@dataclass
class EvalData:
    """Validation tokens + byte counter (piece table or sidecar) + tokenizer, loaded once and
    shared by pre/post evaluation."""
    tokens: np.ndarray
    lut: Any
    sp: Any
    n_targets: int
    decoded_bytes: int | None


def load_eval_data(data_path: str, tokenizer_path: str, vocab_size: int, *,
                   max_tokens: int | None = None, byte_check: bool = True,
                   log: Callable[[str], None] | None = print, split: str = "val") -> EvalData:
    """Load val tokens (or, with split="train", the last training shard: for measurements that
    steer the artifact, which must not see validation data) and the tokenizer's byte LUT;
    run the ground-truth byte check."""
    sp = load_tokenizer(tokenizer_path, expected_vocab=vocab_size)
    if sp.get_piece_size() != vocab_size:
        raise EvalError(f"{tokenizer_path}: tokenizer has {sp.get_piece_size()} pieces but the model "
                        f"has vocab_size={vocab_size}; pass the tokenizer the model was trained with")
    check_dataset(data_path, tokenizer_path, vocab_size)
    sidecar = None
    if split == "val":
        tokens = load_val_tokens(str(data_path), vocab_size)
        sidecar = load_val_bytes(data_path)
    elif split == "train":
        last = find_shards(train_pattern(data_path))[-1]
        tokens = np.asarray(read_shard(last))
        check_token_range(tokens, vocab_size, last)
    else:
        raise EvalError(f"unknown split {split!r}; use val or train")
    lut = val_byte_counter(sp, vocab_size, tokens, sidecar, where=str(data_path),
                           text_transform=dataset_text_transform(data_path))
    n_total = max(0, len(tokens) - 1)
    n = n_total if not max_tokens else min(n_total, int(max_tokens))
    dec = check_bytes(sp, tokens, n, lut, log=log, source=str(data_path)) if byte_check else None
    return EvalData(tokens=tokens, lut=lut, sp=sp, n_targets=n, decoded_bytes=dec)


dist_info = distributed.rank_world          # (rank, world_size); kept for the callers' names
default_device = distributed.default_device


def evaluate_source(source: str | os.PathLike, request: EvalRequest,
                    log: Callable[[str], None] | None = None) -> EvalResult:
    """Load a checkpoint or artifact and score it on request.data with request.tokenizer
    (deterministic: same inputs, same bits on CPU); the request's other None fields come from
    the weights' own config."""
    rank, world_size = dist_info()
    device = request.device or default_device()
    model, cfg, _ = load_eval_model(source, device=device)
    data = load_eval_data(request.data, request.tokenizer, cfg.vocab_size,
                          max_tokens=request.max_tokens, byte_check=request.byte_check,
                          log=log if rank == 0 else None)
    # the packed script's round trip (EVAL_ONLY) must reproduce run_eval's windows
    doc_bos = window_bos(cfg, request.doc_windows)
    scoring = Scoring(seq_len=request.seq_len or cfg.effective_eval_seq_len,
                      stride=cfg.eval_stride if request.stride is None else request.stride,
                      batch_tokens=request.batch_tokens or cfg.val_batch_size, device=device,
                      rank=rank, world_size=world_size, doc_bos=doc_bos)
    return score_eval_data(model, data, scoring)


def score_eval_data(model: torch.nn.Module, data: "EvalData", scoring: Scoring,
                    tilt: Any = None) -> EvalResult:
    """evaluate_bpb on loaded val data, labelled partial and checked against the decoded bytes."""
    res = evaluate_bpb(model, data.tokens, data.lut, scoring, max_tokens=data.n_targets, tilt=tilt)
    return checked_against(res, data)


def checked_against(res: EvalResult, data: "EvalData", what: str = "") -> EvalResult:
    """Label `res` partial or not and hold its bytes to the decoded text's (ground truth)."""
    res.partial = data.n_targets < len(data.tokens) - 1
    res.decoded_bytes = data.decoded_bytes
    if data.decoded_bytes is not None and res.bytes != data.decoded_bytes:
        raise EvalError(f"{what}scored {res.bytes:,} bytes but the decoded text has "
                        f"{data.decoded_bytes:,}; please report this scorer bug")
    return res


# ----------------------------------------------------------------------------- run directory
def resolve_run_files(run_dir: str | os.PathLike | None, checkpoint: str | None,
                      artifact: str | None) -> tuple[Any, str | None, str | None]:
    """(expected cfg or None, checkpoint path, artifact path) from a run dir and/or explicit paths."""
    cfg = None
    if run_dir is not None:
        run = Path(run_dir)
        if not run.is_dir():
            raise EvalError(f"{run}: run directory not found; pass a folder written by train_gpt.py")
        if not (run / rd.CONFIG).is_file():
            raise EvalError(f"{run / rd.CONFIG}: missing; a run directory needs {rd.CONFIG} (or "
                            "pass --checkpoint/--artifact explicitly)")
        cfg = rd.load_config(run)  # paths absolute: works from any working directory
        if checkpoint is None:
            for name in (rd.EMA, rd.MODEL):
                if (run / name).is_file():
                    checkpoint = str(run / name)
                    break
        if artifact is None and (run / rd.ARTIFACT).is_file():
            artifact = str(run / rd.ARTIFACT)
        if checkpoint is None:
            raise EvalError(f"{run}: no {rd.EMA} or {rd.MODEL} (full-precision weights); finish "
                            "training there or pass --checkpoint PATH")
        if artifact is None:
            raise EvalError(f"{run}: no {rd.ARTIFACT} (quantized artifact); run quantization or "
                            "pass --artifact PATH")
    if checkpoint is None and artifact is None:
        raise EvalError("nothing to evaluate: pass RUN_DIR, --checkpoint or --artifact")
    return cfg, checkpoint, artifact



def format_table(rows: list[dict]) -> str:
    """Fixed-width table of EvalResult-like rows (label + fields)."""
    head = f"{'':<10} {'mode':<8} {'val_loss':>11} {'val_bpb':>11} {'tokens':>12} {'bytes':>13} {'tok/s':>10} {'s':>7}"
    lines = [head]
    for r in rows:
        tag = " (partial)" if r.get("partial") else ""
        lines.append(f"{r['label']:<10} {r['mode']:<8} {r['val_loss']:>11.6f} {r['val_bpb']:>11.6f} "
                     f"{r['tokens']:>12,} {r['bytes']:>13,} {r['tokens_per_s']:>10,.0f} "
                     f"{r['seconds']:>7.1f}{tag}")
    return "\n".join(lines)


def format_gap_table(report: dict) -> str:
    """pre, post and post+TTT val_bpb with the quantization gap and the TTT gain side by side
    (the gap is measured before TTT: TTT can more than recover it, as the TTT records show)."""
    rows = [("pre (full precision)", report.get("pre"), "", None),
            ("post (artifact)", report.get("post"), "quant gap", report.get("gap"))]
    k = report.get("post_tilt")
    if k:
        rows.append((f"{k['weights']}+tilt (n-gram)", k, "tilt gain", k.get("tilt_gain")))
    t = report.get("post_ttt")
    if t:
        plus = "+tilt" if t.get("tilt") else ""
        rows.append((f"post+TTT{plus} ({t['ttt']}, on {t['weights']})", t, "TTT gain", t.get("ttt_gain")))
    lines = [f"{'':<30} {'val_bpb':>11}  {'':<9} {'delta':>10}"]
    for name, r, what, delta in rows:
        if r:
            d = f"{delta:>+10.6f}" if delta is not None else ""
            lines.append(f"{name:<30} {r['val_bpb']:>11.6f}  {what:<9} {d}")
    return "\n".join(lines)


def eval_hardware(world: int) -> str:
    """e.g. '8xNVIDIA H100 80GB HBM3' or '1xCPU': pack's time checks scale by it (eval.json's
    and summary.json's)."""
    if torch.cuda.is_available():
        return f"{world}x{torch.cuda.get_device_name(0)}"
    return f"{world}xCPU"


def tilt_block(tilt: Any, models: dict[str, torch.nn.Module], ed: "EvalData", base: dict,
               scoring: Scoring, log: Callable[[str], None]) -> dict:
    """eval.json's post_tilt: the artifact (else the checkpoint) scored like `base` (the
    headline entry, in `scoring`'s windows) with its NLL tilted by `tilt` (a
    golf.eval.tilt.TokenTilt)."""
    label = "post" if "post" in models else "pre"
    res = score_eval_data(models[label], ed, scoring, tilt=tilt)
    out = {**res.to_dict(), "weights": label, "tilt": tilt.settings.knobs(), "gated": tilt.gated,
           "hint_seconds": tilt.seconds, "tilt_gain": res.val_bpb - base[label]["val_bpb"]}
    log(f"eval:tilt on:{label} gated:{tilt.gated}/{ed.n_targets} hint_seconds:{tilt.seconds:.1f} "
        f"{label}_tilt_val_bpb:{res.val_bpb:.8f} tilt_gain:{out['tilt_gain']:+.8f}")
    return out


def run_eval(run_dir: str | os.PathLike | None = None, request: EvalRequest = EvalRequest(), *,
             out: str | os.PathLike | None = None,
             log: Callable[[str], None] | None = print) -> dict:
    """Pre- (checkpoint) vs post-quant (artifact) val_bpb on the same tokens, same mode.

    request.mode: "chunked", "sliding" or "both" (default: sliding when stride > 0). Returns the
    eval.json dict; rank 0 writes it to `out` (default RUN_DIR/eval.json) and logs a table.
    request.ttt: when active, a third number `post_ttt` (score-first TTT of a copy of the chosen
    weights, in the headline window mode) is added beside pre and post. request.tilt: when
    enabled, `post_tilt` is added and post_ttt is tilted. request.doc_windows: keep every window
    inside one document (default: the model's DOC_ATTENTION).
    """
    t0 = time.perf_counter()
    rank, world = dist_info()
    say = log if (log and rank == 0) else (lambda _m: None)
    cfg, checkpoint, artifact = resolve_run_files(run_dir, request.checkpoint, request.artifact)
    device = request.device or default_device()
    models, cfg = load_models({"pre": checkpoint}, cfg, device)
    t_load = time.perf_counter()   # deserialization: what a submission pays before it scores
    blob = read_artifact(artifact) if artifact else None  # read once: scored and hashed
    post, cfg = load_models({"post": artifact}, cfg, device, {"post": blob})
    models.update(post)
    deserialize_seconds = time.perf_counter() - t_load if artifact else None
    seq_len = request.seq_len or cfg.effective_eval_seq_len
    stride = cfg.eval_stride if request.stride is None else request.stride
    max_tokens = request.max_tokens
    if max_tokens is None:
        max_tokens = cfg.max_eval_tokens or None
    mode, stride = resolve_mode(request.mode, stride, seq_len)
    data_path = request.data or cfg.data_path
    tok_path = request.tokenizer or cfg.tokenizer_path
    ed = load_eval_data(data_path, tok_path, cfg.vocab_size, max_tokens=max_tokens,
                        byte_check=request.byte_check, log=say)
    doc_bos = window_bos(cfg, request.doc_windows)
    doc_windows = doc_bos is not None
    scoring = Scoring(seq_len=seq_len, stride=stride,
                      batch_tokens=request.batch_tokens or cfg.val_batch_size, device=device,
                      rank=rank, world_size=world, doc_bos=doc_bos)
    modes, table = score_modes(models, ed, mode, scoring)
    headline = "sliding" if "sliding" in modes else "chunked"
    report: dict[str, Any] = {
        "pre": modes[headline].get("pre"), "post": modes[headline].get("post"),
        "gap": modes[headline]["gap"], "mode": headline, "seq_len": seq_len,
        "stride": stride if headline == "sliding" else 0,
        "partial": ed.n_targets < len(ed.tokens) - 1,
        "checkpoint": checkpoint, "artifact": artifact,
        # of the bytes scored, never the file read again (another command may have replaced it)
        "artifact_sha256": hashlib.sha256(blob).hexdigest() if blob is not None else None,
        "data": str(data_path), "tokenizer": str(tok_path), "world_size": world,
        "decoded_bytes": ed.decoded_bytes, "doc_windows": doc_windows,
        "deserialize_seconds": deserialize_seconds, "byte_check": request.byte_check,
    }
    if mode == "both":
        report["modes"] = modes
    as_headline = dataclasses.replace(scoring, stride=report["stride"])
    tt = request.tilt.build(ed.tokens, ed.n_targets) if request.tilt is not None else None
    if tt is not None:
        report["post_tilt"] = tilt_block(tt, models, ed, modes[headline], as_headline, say)
        table.append({"label": f"{report['post_tilt']['weights']}+tilt", **report["post_tilt"]})
    ttt = request.ttt
    if ttt is not None and getattr(ttt, "active", False):
        report["post_ttt"] = ttt.post_ttt(models, ed, modes[headline], as_headline, cfg, say, tt)
        table.append({"label": f"ttt:{ttt.mode}", **report["post_ttt"]})
    report["hardware"] = eval_hardware(world)
    report["wall_seconds"] = time.perf_counter() - t0
    target = out or (Path(run_dir) / rd.EVAL if run_dir is not None else None)
    report["artifact"] = rd.artifact_ref(artifact, target)
    publish_report(report, table, target if rank == 0 else None, say)
    return report


def read_artifact(path: str | os.PathLike) -> bytes:
    """An artifact's bytes, read once: eval.json's artifact_sha256 is their hash, and the model
    scored is decoded from them."""
    p = Path(path)
    if not p.is_file():
        raise EvalError(f"{p}: file not found; pass an existing --checkpoint / --artifact")
    return p.read_bytes()


def load_models(paths: dict[str, str | None], cfg: Any, device: str,
                blobs: dict[str, bytes | None] | None = None
                ) -> tuple[dict[str, torch.nn.Module], Any]:
    """The models of the paths given (label -> model, decoded from blobs[label] when given)
    and the config they are checked against: `cfg` (the run's), else the first one's own."""
    models: dict[str, torch.nn.Module] = {}
    for label, path in paths.items():
        if path is not None:
            models[label], wcfg, _ = load_eval_model(path, cfg_override=cfg, device=device,
                                                     blob=(blobs or {}).get(label))
            cfg = cfg or wcfg
    return models, cfg


def window_bos(cfg: Any, doc_windows: bool | None) -> int | None:
    """The BOS id that bounds every scored window, or None. A DOC_ATTENTION model is scored one
    document per window (what it trained on, and what eval.json reports) unless the request
    says otherwise (eval_bpb.py --doc-windows 0/1); every scoring path (eval, the packed round
    trip, sensitivity) asks here, so their numbers agree."""
    on = bool(getattr(cfg, "doc_attention", False)) if doc_windows is None else bool(doc_windows)
    return int(cfg.bos_id) if on else None


def resolve_mode(mode: str | None, stride: int, seq_len: int) -> tuple[str, int]:
    """(mode, sliding stride): sliding asked for with stride 0 slides by 64 (or seq_len // 2)."""
    mode = mode or eval_mode(stride)
    if mode not in ("chunked", "sliding", "both"):
        raise EvalError(f"unknown mode {mode!r}; use chunked, sliding or both")
    if mode in ("sliding", "both") and stride <= 0:
        stride = 64 if seq_len > 64 else max(1, seq_len // 2)
    return mode, stride


def score_modes(models: dict[str, torch.nn.Module], ed: EvalData, mode: str,
                scoring: Scoring) -> tuple[dict[str, dict], list[dict]]:
    """Every model in each window mode of `mode` (sliding by scoring.stride): ({mode: {label:
    result, "gap": post - pre}}, the table's rows)."""
    stride = scoring.stride
    mode_strides = {"chunked": [("chunked", 0)], "sliding": [("sliding", stride)],
                    "both": [("chunked", 0), ("sliding", stride)]}[mode]
    modes: dict[str, dict] = {}
    table: list[dict] = []
    for mname, mstride in mode_strides:
        entry: dict[str, Any] = {}
        for label, model in models.items():
            res = score_eval_data(model, ed, dataclasses.replace(scoring, stride=mstride))
            entry[label] = res.to_dict()
            table.append({"label": label, **res.to_dict()})
        entry["gap"] = (entry["post"]["val_bpb"] - entry["pre"]["val_bpb"]
                        if "pre" in entry and "post" in entry else None)
        modes[mname] = entry
    return modes, table


def publish_report(report: dict, table: list[dict], target: str | os.PathLike | None,
                   say: Callable[[str], None]) -> None:
    """Log the tables and the eval line; write eval.json to `target` (rank 0 passes one)."""
    say(format_table(table))
    say(format_gap_table(report))
    if report["gap"] is not None:
        say(f"eval:{report['mode']}{' PARTIAL' if report['partial'] else ''} "
            f"pre_val_bpb:{report['pre']['val_bpb']:.8f} "
            f"post_val_bpb:{report['post']['val_bpb']:.8f} gap:{report['gap']:+.8f}")
    if target is not None:
        atomic_write_json(target, report)
        say(f"eval:wrote {target}")
