"""Legal (score-first) test-time training at evaluation: the third number, post+TTT.

Why this module exists: the April records' headline is a model adapted *while* it is scored,
and the illegal variants (training on validation text before scoring it, rescoring after an
update, multi-epoch passes scored on the last epoch) differ from the legal ones only in the
order of two lines. Here the order is fixed by construction and checked by tests
(tests/test_ttt.py perturbs the stream after position t and asserts no score up to t moves;
tests/test_ttt_phased.py does the same for `lora` in its own processing order, see below):

- `chunk` (R23 / PR #549): the stream is cut into chunks of
  TTT_CHUNK_TOKENS targets; every window of the usual plan (`golf.eval.score.window_plan`,
  chunked or sliding) belongs to the chunk holding its first scored target. Per chunk: score
  all its windows under no_grad, *then* SGD (momentum, epochs, clip) on that chunk's targets,
  all parameters, LR cosine across chunks; the last chunk is never trained on.
- `lora` (the records' phased score-first LoRA: PR #1855, with #2014's and #2135's knobs):
  documents from BOS to BOS, sorted by length and cut into TTT_BATCH_SIZE batches, the longest
  batch first; every document of a batch has its own adapters per virtual layer (golf.eval.lora:
  Q, K, V, the O and MLP bypasses, the head); step k scores chunk k (TTT_CHUNK_SIZE targets,
  a window of the seq_len tokens before the chunk's end inside the document), then one AdamW
  step for the documents with a later chunk. A is warm-started across batches, B zeroed. At
  each PHASED_TTT_* boundary the base model takes SGD on the documents already scored.
  Causal in that processing order (a permutation fixed by document lengths), as the records
  ran, not in stream order: docs/ttt.md says what that concedes.
- `lora_golf` (golfkit's earlier reading of the same record): stream-order segments, adapters
  on every nn.Linear (not per virtual layer), Adam, per-document clipping, A seeded by each
  document's start; optional global phases (TTT_LORA_PHASES) in stream order.

No compile and no warm-up step exist here, so no validation token is ever seen before it is
scored. The caller's model is deep-copied; its weights never change. Settings come from
environment variables (`TTTSettings.from_env`), defaults are the records' where they are known.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from golf.eval.bpb import bpb_from_sums, bytes_at
from golf.eval.score import (
    EvalData,
    EvalError,
    EvalResult,
    Scoring,
    _batches,
    _dist_active,
    batch_nll,
    checked_against,
    document_spans,
    document_window_plan,
    rank_slice,
    window_plan,
)
from golf.eval.lora import BLOCK_TARGETS, DocLoRA
from golf.run.settings import fields_table, parse_env, register, setting, value_problems

Window = tuple[int, int, int]          # (start, score_from, score_to) as in golf.eval.score


# ----------------------------------------------------------------------------- settings
def _ttt_env_name(name: str) -> str:
    """TTT_ + the field upper-cased; the records' PHASED_TTT_* / GLOBAL_TTT_* fields as they are."""
    if name.startswith(("phased_ttt_", "global_ttt_")):
        return name.upper()
    return {"mode": "TTT", "on": "TTT_ON"}.get(name, "TTT_" + name.upper())


@dataclass(frozen=True)
class TTTSettings:
    """TTT knobs; env name = TTT_ + field name upper-cased (mode is `TTT`, on is `TTT_ON`;
    the phased_ttt_* / global_ttt_* fields are upper-cased as they are, the records' names)."""
    mode: str = setting("off", "test-time training at evaluation (the modes of golf.eval.ttt.TTT_MODES)",
                        aliases=(("0", "off"), ("none", "off")))
    on: str = setting("post", "post = the dequantized artifact, pre = full precision",
                      choices=("post", "pre"))
    chunk_tokens: int = setting(32_768, "targets per chunk (chunk mode; R23)", gt=0)
    lr: float = setting(0.002, "SGD lr of chunk mode and of lora_golf's global phases (R23)", ge=0)
    epochs: int = setting(3, "SGD epochs per chunk (R23)", ge=0)
    momentum: float = setting(0.9, "SGD momentum (R23)", ge=0, lt=1)
    grad_clip: float = setting(1.0, "gradient clip (per document in lora_golf; 0 = off)", ge=0)
    batch_seqs: int = setting(32, "sequences per SGD step, split over ranks (R23)", gt=0)
    golf_lora_rank: int = setting(8, "lora_golf: adapter rank", gt=0)
    golf_lora_lr: float = setting(0.01, "lora_golf: Adam lr of the adapters", ge=0)
    lora_chunk: int = setting(48, "lora_golf: targets per LoRA step", gt=0)
    lora_batch_docs: int = setting(64, "lora_golf: documents (adapter sets) per batch", gt=0)
    lora_targets: str = setting("all", "lora_golf: all nn.Linear, or comma-separated name parts")
    lora_phases: int = setting(0, "lora_golf: global SGD phases", ge=0)
    lora_prefix_docs: int = setting(2500, "lora_golf: documents covered by the phases", ge=0)
    lora_phase_epochs: int = setting(1, "lora_golf: SGD epochs per global phase (ours)", ge=0)
    lora_sort: bool = setting(True, "lora_golf: length-sort documents within a segment (padding)")
    bos_id: int = setting(-1, "document separator; -1 = the model's BOS_ID", ge=-1)
    seed: int = setting(0, "LoRA adapter init (never from tokens)", ge=0)
    # --- TTT=lora, the records' phased score-first LoRA (PR #1855; #2014, #2135): their own
    # variable names, #1855's launch values as defaults.
    lora_rank: int = setting(80, "lora: adapter rank", gt=0)
    lora_lr: float = setting(1e-4, "lora: AdamW lr of the adapters (#2135: 8e-5)", ge=0)
    batch_size: int = setting(64, "lora: documents per batch (#2014: 24)", gt=0)
    chunk_size: int = setting(48, "lora: targets scored, then trained, per step", gt=0)
    eval_seq_len: int = setting(0, "lora: scoring window (0 = the eval's EVAL_SEQ_LEN)", ge=0)
    lora_alpha: float = setting(144.0, "lora: adapter delta scale alpha / rank", gt=0)
    weight_decay: float = setting(0.5, "lora: AdamW weight decay (#2135: 2.0)", ge=0)
    beta1: float = setting(0.0, "lora: AdamW beta1", ge=0, lt=1)
    beta2: float = setting(0.99, "lora: AdamW beta2", ge=0, lt=1)
    grad_steps: int = setting(1, "lora: AdamW steps per chunk", ge=1)
    local_lr_mult: float = setting(1.0, "lora: adapter lr = TTT_LORA_LR x this (#2014: 0.75)", ge=0)
    q_lora: bool = setting(True, "lora: adapt Q")
    k_lora: bool = setting(True, "lora: adapt K (#2135: 0)")
    v_lora: bool = setting(True, "lora: adapt V")
    o_lora: bool = setting(True, "lora: the O bypass from the attention input")
    mlp_lora: bool = setting(True, "lora: the MLP bypass from the MLP input")
    mask: str = setting("", "lora: no_qv switches Q and V off (#2014)", choices=("", "no_qv"))
    warm_start_a: bool = setting(True, "lora: keep A across the batches of a phase (B = 0)")
    short_score_first_enabled: bool = setting(False, "lora: #2014's short-document chunks")
    short_score_first_steps: str = setting("256:8,2000:24", "lora: doc_len:chunk steps (#2014)")
    phased_ttt_num_phases: int = setting(3, "lora: global SGD phases (#2014, #2135: 1)", ge=0)
    phased_ttt_prefix_docs: int = setting(2500, "lora: scored documents the phases train on", ge=0)
    global_ttt_lr: float = setting(0.001, "lora: global phase SGD lr (cosine over chunks)", ge=0)
    global_ttt_momentum: float = setting(0.9, "lora: global phase SGD momentum", ge=0, lt=1)
    global_ttt_epochs: int = setting(1, "lora: global phase passes over each chunk", ge=0)
    global_ttt_chunk_tokens: int = setting(32_768, "lora: global phase chunk (the last is skipped)", gt=0)
    global_ttt_batch_seqs: int = setting(32, "lora: global phase sequences per step per rank", gt=0)
    global_ttt_grad_clip: float = setting(1.0, "lora: global phase gradient clip", ge=0)

    @property
    def active(self) -> bool:
        return self.mode != "off"

    @staticmethod
    def env_name(name: str) -> str:
        return _ttt_env_name(name)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "TTTSettings":
        """Read TTT* variables (unset or empty = default); `overrides` (CLI flags) win."""
        vals, bad = parse_env(TTT_SETTINGS, os.environ if env is None else env, full=False)
        if bad:
            raise EvalError(f"{bad[0]}; fix the environment variable")
        vals.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**vals).validated()

    def validated(self) -> "TTTSettings":
        """Spellings resolved (mode LoRA -> lora, 0/none -> off); a value out of its declared
        range is an EvalError naming the variable."""
        mode_setting = TTT_SETTINGS[0]
        s = dataclasses.replace(self, mode=mode_setting.parse_type(self.mode or "off"),
                                on=self.on.lower(), mask=self.mask.lower())
        bad = value_problems(s, TTT_SETTINGS) + s._own_problems()
        if bad:
            raise EvalError(f"{bad[0]}; fix the environment variable or the --ttt flag")
        return s

    def _own_problems(self) -> list[str]:
        """What the table's per-field rules cannot say: the syntax of the short-document steps."""
        if short_steps(self.short_score_first_steps) is None:
            return [f"TTT_SHORT_SCORE_FIRST_STEPS={self.short_score_first_steps!r}: not "
                    "distinct doc_len:chunk pairs such as 256:8,2000:24"]
        return []

    def post_ttt(self, models: dict[str, nn.Module], ed: EvalData, base: dict, scoring: Scoring,
                 cfg: Any, log: Callable[[str], None], tilt: Any = None) -> dict:
        """eval.json's post_ttt entry; golf.eval.score.run_eval calls it on the settings it was
        given, with the headline's windows (`scoring`) and the model's config (its BOS_ID
        splits documents when TTT_BOS_ID is -1)."""
        s = self
        if s.bos_id < 0 and getattr(cfg, "bos_id", None) is not None:
            s = dataclasses.replace(s, bos_id=int(cfg.bos_id))   # documents split at BOS
        return ttt_block(s, models, ed, base, scoring, log, tilt)

    def knobs(self) -> dict[str, Any]:
        """The settings that shaped this mode's result (for eval.json and submission.json)."""
        spec = TTT_MODES[self.mode]
        return {**{k: getattr(self, k) for k in spec.knobs}, **spec.fixed}

    def env(self) -> dict[str, Any]:
        """The variables that re-create this mode's result, under their env names (TTT, TTT_ON
        and the mode's knobs): what submission.json and the generated README state."""
        names = ("mode", "on") + tuple(TTT_MODES[self.mode].knobs)
        return {_ttt_env_name(k): getattr(self, k) for k in names}


@dataclass(frozen=True)
class TTTPass:
    """One score-first pass besides the model and its settings: the windows and where they run
    (a golf.eval.score.Scoring, as the plain score uses; doc_bos keeps chunk mode's windows
    inside documents), how many targets (None = all), the model's BOS id (splits documents
    when TTT_BOS_ID is -1), the tilt of the scores (a golf.eval.tilt.TokenTilt; the adaptation
    losses stay untilted), and whether to keep every target's NLL and count (the tests)."""
    scoring: Scoring
    max_tokens: int | None = None
    bos_id: int | None = None
    tilt: Any = None
    record: bool = False

    @property
    def dev(self) -> torch.device:
        return torch.device(self.scoring.device)


@dataclass(frozen=True)
class SpanSGD:
    """How train_span trains on a span: lr, passes over it, sequences per step (split over the
    ranks) and the gradient clip (0 = off)."""
    lr: float
    epochs: int
    batch_seqs: int
    clip: float


# ----------------------------------------------------------------------------- result
@dataclass
class TTTResult(EvalResult):
    """An EvalResult (mode = the window mode: chunked | sliding) plus what adapted it."""
    ttt: str = "chunk"
    weights: str = "post"
    knobs: dict = field(default_factory=dict)
    score_first: bool = True      # every update uses only targets already scored (by construction)
    units: int = 0                # chunks (chunk mode) or documents (lora mode)
    adapt_steps: int = 0          # optimizer steps taken
    nll: np.ndarray | None = field(default=None, repr=False)      # per target (record=True)
    counts: np.ndarray | None = field(default=None, repr=False)   # times each target was scored

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("nll", "counts")}


class _Tally:
    """Σ NLL, targets and bytes of what was scored; per target NLL and counts when recording
    (the tests' C1-C4 checks). Bytes come from golf.eval.bpb.bytes_at of the scored targets."""

    def __init__(self, toks: np.ndarray, n: int, lut: Any, record: bool, tilt: Any = None):
        self.toks, self.lut, self.tilt = toks, lut, tilt     # tilt: a golf.eval.tilt.TokenTilt or None
        self.nll_sum, self.tokens, self.bytes = 0.0, 0, 0
        self.per = np.full(n, np.nan) if record else None
        self.counts = np.zeros(n, dtype=np.int64) if record else None

    def add(self, spans: Sequence[tuple[int, int]], nll: torch.Tensor) -> None:
        """nll: per-target NLL of the target ranges `spans`, concatenated in order."""
        self.nll_sum += float(nll.double().sum().item())
        self.tokens += int(nll.numel())
        idx = np.concatenate([np.arange(a, b) for a, b in spans])
        self.bytes += int(np.asarray(bytes_at(self.toks, idx, self.lut), dtype=np.int64).sum())
        if self.per is not None:
            self.per[idx] = nll.detach().float().cpu().numpy()
            np.add.at(self.counts, idx, 1)


def _autocast(dev: torch.device):
    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _finish(tally: _Tally, *, n: int, t0: float, dev: torch.device, world: int,
            **fields: Any) -> TTTResult:
    """All-reduce the sums (and records), check that every target was scored once, wrap up."""
    nll_sum, tokens, nbytes, secs = tally.nll_sum, tally.tokens, tally.bytes, time.perf_counter() - t0
    if _dist_active(world):
        red = dev if dist.get_backend() == "nccl" else torch.device("cpu")
        sums = torch.tensor([nll_sum, float(tokens), float(nbytes)], dtype=torch.float64, device=red)
        dist.all_reduce(sums)
        top = torch.tensor([secs], dtype=torch.float64, device=red)
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
        nll_sum, tokens, nbytes = float(sums[0]), int(round(float(sums[1]))), int(round(float(sums[2])))
        secs = float(top[0])
        if tally.per is not None:
            for arr in (tally.counts, tally.per):
                t = torch.from_numpy(np.nan_to_num(arr) if arr.dtype.kind == "f" else arr).to(red)
                dist.all_reduce(t)
                arr[...] = t.cpu().numpy()
    if tokens != n:
        raise EvalError(f"TTT scored {tokens} targets but the stream has {n}: a plan bug; "
                        "please report it")
    if nbytes <= 0:
        raise EvalError("the scored targets have 0 bytes: the byte LUT does not fit this tokenizer")
    val_loss, val_bpb = bpb_from_sums(nll_sum, tokens, nbytes)
    return TTTResult(val_loss=float(val_loss), val_bpb=float(val_bpb), tokens=tokens, bytes=nbytes,
                     seconds=secs, tokens_per_s=tokens / max(secs, 1e-9), nll=tally.per,
                     counts=tally.counts, **fields)


# ----------------------------------------------------------------------------- shared steps
def score_windows(model: nn.Module, stream: torch.Tensor, windows: Sequence[Window], rows: int,
                  dev: torch.device, tally: _Tally) -> None:
    """Score windows exactly as golf.eval.score.evaluate_bpb does (same batching rule, float32
    cross-entropy over all V logits), under no_grad: nothing here can change the model."""
    with torch.no_grad(), _autocast(dev):
        for batch in _batches(windows, rows):
            tally.add([(a, e) for _, a, e in batch], batch_nll(model, stream, batch, dev, tally.tilt))


def _sync_grads(params: Sequence[nn.Parameter], world: int) -> None:
    """Sum gradients over ranks (each rank's loss is pre-weighted by its share of tokens)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if not _dist_active(world):
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    off = 0
    for p in params:
        p.grad.copy_(flat[off:off + p.numel()].view_as(p))
        off += p.numel()


def train_span(model: nn.Module, opt: torch.optim.Optimizer, stream: torch.Tensor,
               span: tuple[int, int], sgd: SpanSGD, place: Scoring) -> int:
    """`sgd.epochs` SGD passes over the targets [lo, hi) = `span`, which the caller has already
    scored.

    The span is cut into place.seq_len sequences (the tail shorter), `sgd.batch_seqs` per
    step; each step's sequences are split over the ranks of `place` and every rank weighs its
    mean loss by its share of the step's tokens, so the summed gradient is the global mean
    whatever the world size. Returns the number of optimizer steps.
    """
    (lo, hi), seq_len, batch_seqs, clip = span, place.seq_len, sgd.batch_seqs, sgd.clip
    dev, rank, world = torch.device(place.device), place.rank, place.world_size
    for g in opt.param_groups:
        g["lr"] = sgd.lr
    params = [p for g in opt.param_groups for p in g["params"]]
    seqs = [(s, s, min(s + seq_len, hi)) for s in range(lo, hi, seq_len)]
    steps = 0
    model.train()
    try:
        for _ in range(sgd.epochs):
            for batch in _batches(seqs, batch_seqs):
                total = sum(e - s for s, _, e in batch)
                a, b = rank_slice(len(batch), rank, world)
                opt.zero_grad(set_to_none=True)
                if b > a:
                    mine = batch[a:b]
                    x = torch.stack([stream[s:e] for s, _, e in mine]).to(dev).long()
                    y = torch.stack([stream[s + 1:e + 1] for s, _, e in mine]).to(dev).long()
                    with _autocast(dev):
                        loss = model(x, y)
                    (loss.float() * (sum(e - s for s, _, e in mine) / total)).backward()
                _sync_grads(params, world)
                if clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, clip)
                opt.step()
                steps += 1
    finally:
        model.eval()
    return steps


# ----------------------------------------------------------------------------- chunk mode
def chunk_ttt(model: nn.Module, toks: np.ndarray, lut: Any, s: TTTSettings, n: int,
              p: TTTPass) -> TTTResult:
    """R23's score-first TTT on `model` in place (callers pass a copy; see run_ttt) over the
    first n targets; with p.scoring.doc_bos its windows stay inside documents
    (golf.eval.score.document_window_plan)."""
    t0 = time.perf_counter()
    sc, dev = p.scoring, p.dev
    seq_len, stride, doc_bos = sc.seq_len, sc.stride, sc.doc_bos
    rank, world = sc.rank, sc.world_size
    stream = torch.from_numpy(toks[: n + 1].astype(np.int32))
    n_chunks = -(-n // s.chunk_tokens)
    by_chunk: list[list[Window]] = [[] for _ in range(n_chunks)]
    plan = (window_plan(n, seq_len, stride) if doc_bos is None
            else document_window_plan(toks, n, seq_len, stride, doc_bos))
    for w in plan:
        by_chunk[w[1] // s.chunk_tokens].append(w)
    rows = max(1, sc.batch_tokens // max(1, world) // seq_len)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum)
    tally = _Tally(toks, n, lut, p.record, p.tilt)
    steps = 0
    model.eval()
    for ci, wins in enumerate(by_chunk):
        lo, hi = rank_slice(len(wins), rank, world)
        score_windows(model, stream, wins[lo:hi], rows, dev, tally)      # 1. score (no_grad)
        if ci == n_chunks - 1:
            break                                                        # last chunk: never trained
        lr = s.lr * 0.5 * (1.0 + math.cos(math.pi * ci / max(1, n_chunks - 1)))
        span = (ci * s.chunk_tokens, min((ci + 1) * s.chunk_tokens, n))
        steps += train_span(model, opt, stream, span,                    # 2. then train on it
                            SpanSGD(lr, s.epochs, s.batch_seqs, s.grad_clip), sc)
    return _finish(tally, n=n, t0=t0, dev=dev, world=world, mode="sliding" if stride else "chunked",
                   seq_len=seq_len, stride=stride, partial=False, ttt="chunk", knobs=s.knobs(),
                   units=n_chunks, adapt_steps=steps)


# ----------------------------------------------------------------------------- LoRA mode
class BatchedLoRA(nn.Module):
    """base(x) + (x Aᵀ) Bᵀ with one (A, B) pair per slot; `rows` maps batch rows to slots.

    A separate adapter per document (not one shared one) is what makes documents of one batch
    independent: a document's gradient only reaches its own slot. With rows None it is the
    base layer exactly (global phases and scoring-only use)."""

    def __init__(self, base: nn.Linear, slots: int, rank: int):
        super().__init__()
        self.base = base
        w = base.weight
        self.A = nn.Parameter(torch.zeros(slots, rank, base.in_features, device=w.device))
        self.B = nn.Parameter(torch.zeros(slots, base.out_features, rank, device=w.device))
        self.rows: torch.Tensor | None = None

    @property
    def weight(self) -> torch.Tensor:          # code that reads .weight of the Linear still works
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.rows is None:
            return y
        a = self.A.index_select(0, self.rows).to(x.dtype)
        b = self.B.index_select(0, self.rows).to(x.dtype)
        h = torch.bmm(x.reshape(x.size(0), -1, x.size(-1)), a.transpose(1, 2))
        return y + torch.bmm(h, b.transpose(1, 2)).reshape(y.shape)


def attach_lora(model: nn.Module, slots: int, rank: int, targets: str = "all") -> list[BatchedLoRA]:
    """Wrap every nn.Linear whose name contains one of `targets` (comma-separated; "all" =
    every Linear) in place: the model stays a black box `model(idx) -> logits`."""
    want = [t.strip() for t in targets.split(",") if t.strip()]
    chosen = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)
              and ("all" in want or any(t in name for t in want))]
    if not chosen:
        raise EvalError(f"TTT_LORA_TARGETS={targets!r} matches no nn.Linear of the model; use "
                        "'all' or parts of names such as 'attn,mlp'")
    out = []
    for name, lin in chosen:
        parent_name, _, child = name.rpartition(".")
        wrapped = BatchedLoRA(lin, slots, rank)
        setattr(model.get_submodule(parent_name) if parent_name else model, child, wrapped)
        out.append(wrapped)
    return out


def reset_adapters(adapters: Sequence[BatchedLoRA], doc_starts: Sequence[int], seed: int) -> None:
    """B = 0 (so a fresh adapter is the base model exactly); A uniform ±1/sqrt(in), drawn from
    a generator seeded by (seed, the document's start position): never from any token."""
    with torch.no_grad():
        for ad in adapters:
            ad.A.zero_()
            ad.B.zero_()
        for slot, start in enumerate(doc_starts):
            g = torch.Generator().manual_seed(seed * 1_000_003 + int(start))
            for ad in adapters:
                bound = 1.0 / math.sqrt(ad.A.size(-1))
                ad.A[slot].copy_((torch.rand(ad.A.shape[1:], generator=g) * 2 - 1) * bound)


split_documents = document_spans       # documents as TTT and the per-document eval cut them


def chunk_windows(a0: int, b0: int, k: int, chunk: int, seq_len: int, stride: int) -> list[Window]:
    """Windows scoring chunk k of the document with targets [a0, b0), context in-document only.

    Sliding (stride > 0): up to seq_len tokens back from each scored target, never before a0.
    Chunked (stride 0): the document is cut into seq_len blocks from its start, as the
    non-overlapping eval cuts the stream; a chunk crossing a block edge becomes two windows.
    """
    a, b = a0 + k * chunk, min(a0 + (k + 1) * chunk, b0)
    out: list[Window] = []
    while a < b:
        if stride > 0:
            e = min(b, a + seq_len)
            out.append((max(a0, e - seq_len), a, e))
        else:
            blk = a0 + (a - a0) // seq_len * seq_len
            e = min(b, blk + seq_len)
            out.append((blk, a, e))
        a = e
    return out


def _clip_per_slot(adapters: Sequence[BatchedLoRA], clip: float) -> None:
    """Clip each document's adapter gradient on its own (a global norm would couple them)."""
    grads = [p.grad for ad in adapters for p in (ad.A, ad.B) if p.grad is not None]
    if clip <= 0 or not grads:
        return
    sq = sum(g.flatten(1).pow(2).sum(1) for g in grads)
    scale = (clip / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))


def _window_logits(model: nn.Module, stream: torch.Tensor, rows: Sequence[tuple[int, Window]],
                   dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 logits over all V, targets) at the scored positions of the rows' windows,
    right-padded with id 0 into one batch; the model is causal, so padding is unseen."""
    T = max(e - s for _, (s, _, e) in rows)
    x = torch.zeros(len(rows), T, dtype=torch.long)
    for i, (_, (s, _, e)) in enumerate(rows):
        x[i, : e - s] = stream[s:e]
    logits = model(x.to(dev))
    picked = [logits[i, a - s:e - s] for i, (_, (s, a, e)) in enumerate(rows)]
    tgt = torch.cat([stream[a + 1:e + 1] for _, (_, a, e) in rows]).to(dev).long()
    return torch.cat(picked).float(), tgt


@dataclass(frozen=True)
class _AdapterUpdate:
    """How a LoRA step updates the adapters: `route` points batch rows at their documents'
    adapters (None after), `opt` takes `steps` steps, `clip` (if any) runs before each."""
    route: Callable[[torch.Tensor | None], None]
    opt: torch.optim.Optimizer
    clip: Callable[[], None] | None = None
    steps: int = 1


def _lora_step(model: nn.Module, update: _AdapterUpdate, stream: torch.Tensor,
               rows: Sequence[tuple[int, Window]], train: set[int], dev: torch.device,
               tally: _Tally) -> int:
    """One forward over this step's windows: record every NLL (the score, taken before any
    update that could have seen it), then update.steps optimizer steps for the documents in
    `train` on the very targets just scored (the first reuses the scoring forward). Returns
    the steps taken."""
    route, opt, clip, steps = update.route, update.opt, update.clip, update.steps
    slots = torch.tensor([slot for slot, _ in rows], device=dev)
    route(slots)
    try:
        with torch.set_grad_enabled(bool(train)), _autocast(dev):
            flat, tgt = _window_logits(model, stream, rows, dev)
            nll = F.cross_entropy(flat, tgt, reduction="none")
        spans = [(a, e) for _, (_, a, e) in rows]
        scored = nll.detach()
        if tally.tilt is not None:             # the score is tilted, the training loss is not
            scored = tally.tilt.apply(scored, flat.detach(), tgt, spans)
        tally.add(spans, scored)
        if not train:
            return 0
        lens = torch.tensor([e - a for _, (_, a, e) in rows], device=dev)
        tok_slot = torch.repeat_interleave(slots, lens)           # the document of each target
        n_slot = torch.bincount(tok_slot).clamp(min=1).float()
        on = torch.zeros(len(n_slot), device=dev)
        on[sorted(train)] = 1.0
        weight = (on / n_slot)[tok_slot]                          # Σ over documents of their mean NLL
        for k in range(steps):
            if k:
                with _autocast(dev):
                    nll = F.cross_entropy(*_window_logits(model, stream, rows, dev), reduction="none")
            opt.zero_grad(set_to_none=True)
            (nll * weight).sum().backward()
            if clip is not None:
                clip()
            opt.step()
        return steps
    finally:
        route(None)


def _golf_route(adapters: Sequence[BatchedLoRA]) -> Callable[[torch.Tensor | None], None]:
    def route(rows: torch.Tensor | None) -> None:
        for ad in adapters:
            ad.rows = rows
    return route


def _lora_batch(model: nn.Module, adapters: Sequence[BatchedLoRA], stream: torch.Tensor,
                docs: Sequence[tuple[int, int]], s: TTTSettings, p: TTTPass,
                tally: _Tally) -> int:
    """One batch of documents, slot i = docs[i], with fresh adapters and a fresh Adam state.
    Step k scores chunk k of every document that has one, then trains those not at their end."""
    seq_len, stride, dev = p.scoring.seq_len, p.scoring.stride, p.dev
    reset_adapters(adapters, [a for a, _ in docs], s.seed)
    opt = torch.optim.Adam([q for ad in adapters for q in (ad.A, ad.B)], lr=s.golf_lora_lr)
    update = _AdapterUpdate(_golf_route(adapters), opt,
                            clip=lambda: _clip_per_slot(adapters, s.grad_clip))
    n_chunks = [-(-(b - a) // s.lora_chunk) for a, b in docs]
    steps = 0
    for k in range(max(n_chunks)):
        rows = [(slot, w) for slot, (a, b) in enumerate(docs) if k < n_chunks[slot]
                for w in chunk_windows(a, b, k, s.lora_chunk, seq_len, stride)]
        train = {slot for slot, nc in enumerate(n_chunks) if k < nc - 1}
        steps += _lora_step(model, update, stream, rows, train, dev, tally)
    return steps


def phase_segments(n_docs: int, phases: int, prefix_docs: int) -> list[tuple[int, int, bool]]:
    """(first doc, end doc, train the base model afterwards) in stream order: `phases` equal
    parts of the first `prefix_docs` documents, each followed by a global SGD phase on it, then
    the rest. The cuts depend on prefix_docs only, never on how many documents the stream
    has (that count depends on later tokens: a C1 leak the causality test caught). The final
    segment is never followed by training (nothing is left to score)."""
    if phases <= 0 or n_docs == 0:
        return [(0, n_docs, False)]
    cuts = [min(n_docs, prefix_docs * i // phases) for i in range(phases + 1)]
    segs = [(cuts[i], cuts[i + 1], True) for i in range(phases) if cuts[i + 1] > cuts[i]]
    if cuts[-1] < n_docs:
        segs.append((cuts[-1], n_docs, False))
    d0, d1, _ = segs[-1]
    segs[-1] = (d0, d1, False)
    return segs


def _rank_docs(docs: Sequence[tuple[int, int]], rank: int, world: int) -> list[tuple[int, int]]:
    """This rank's documents: those starting in its equal share of the segment's targets."""
    if not docs:
        return []
    lo, hi = docs[0][0], docs[-1][1]
    a, b = lo + (hi - lo) * rank // world, lo + (hi - lo) * (rank + 1) // world
    return [d for d in docs if a <= d[0] < b]


def lora_golf_ttt(model: nn.Module, toks: np.ndarray, lut: Any, s: TTTSettings, n: int,
                  p: TTTPass) -> TTTResult:
    """golfkit's earlier per-document LoRA TTT (TTT=lora_golf) on `model` in place (callers
    pass a copy; see run_ttt) over the first n targets. p.scoring's batch_tokens and doc_bos
    are unused: TTT_LORA_BATCH_DOCS sets the batch, and every window lies inside one document
    anyway."""
    t0 = time.perf_counter()
    sc, dev = p.scoring, p.dev
    seq_len, stride, rank, world = sc.seq_len, sc.stride, sc.rank, sc.world_size
    stream = torch.from_numpy(toks[: n + 1].astype(np.int32))
    docs = split_documents(toks, n, s.bos_id)
    base_params = list(model.parameters())
    for q in base_params:
        q.requires_grad_(False)
    adapters = attach_lora(model, s.lora_batch_docs, s.golf_lora_rank, s.lora_targets)
    base_opt = torch.optim.SGD(base_params, lr=s.lr, momentum=s.momentum) if s.lora_phases else None
    tally = _Tally(toks, n, lut, p.record, p.tilt)
    steps = 0
    model.eval()
    for d0, d1, train_after in phase_segments(len(docs), s.lora_phases, s.lora_prefix_docs):
        mine = _rank_docs(docs[d0:d1], rank, world)
        if s.lora_sort:     # legal in any order: a document's score depends only on itself
            mine.sort(key=lambda d: (d[0] - d[1], d[0]))
        for i in range(0, len(mine), s.lora_batch_docs):
            steps += _lora_batch(model, adapters, stream, mine[i:i + s.lora_batch_docs], s, p,
                                 tally)
        if train_after and base_opt is not None:    # global phase on documents just scored
            for q in base_params:
                q.requires_grad_(True)
            steps += train_span(model, base_opt, stream, (docs[d0][0], docs[d1 - 1][1]),
                                SpanSGD(s.lr, s.lora_phase_epochs, s.batch_seqs, s.grad_clip), sc)
            for q in base_params:
                q.requires_grad_(False)
    return _finish(tally, n=n, t0=t0, dev=dev, world=world, mode="sliding" if stride else "chunked",
                   seq_len=seq_len, stride=stride, partial=False, ttt="lora_golf",
                   knobs=s.knobs(), units=len(docs), adapt_steps=steps)


# ----------------------------------------------------------------------------- records' phased LoRA
ADAM_EPS = 1e-10                                            # the records' AdamW eps for the adapters
MASKS: dict[str, tuple[str, ...]] = {"": (), "no_qv": ("q", "v")}   # TTT_MASK -> targets switched off


def short_steps(raw: str) -> list[tuple[int, int]] | None:
    """TTT_SHORT_SCORE_FIRST_STEPS "256:8,2000:24" -> [(256, 8), (2000, 24)]; None if malformed
    (not positive doc_len:chunk pairs, or a bound twice)."""
    try:
        pairs = sorted((int(a), int(b)) for a, b in (p.split(":") for p in raw.split(",") if p.strip()))
    except ValueError:
        return None
    ok = all(a > 0 and b > 0 for a, b in pairs) and len({a for a, _ in pairs}) == len(pairs)
    return pairs if ok else None


def record_targets(s: TTTSettings) -> tuple[str, ...]:
    """The block adapters on: TTT_Q/K/V/O/MLP_LORA, minus what TTT_MASK switches off."""
    on = {"q": s.q_lora, "k": s.k_lora, "v": s.v_lora, "o": s.o_lora, "mlp": s.mlp_lora}
    return tuple(t for t in BLOCK_TARGETS if on[t] and t not in MASKS[s.mask])


def record_batches(docs: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Document indices per batch, in processing order: sorted by length ascending (ties in
    stream order), cut into batch_size from the short end, the longest batch first (so the
    first batch holds the remainder: 50,000 docs by 64 give 16 then 781 x 64)."""
    order = sorted(range(len(docs)), key=lambda j: (docs[j][1] - docs[j][0], j))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)][::-1]


def phase_boundaries(phases: int, prefix_docs: int) -> list[int]:
    """Cumulative scored-document counts that end each global phase (2500 / 3: 833, 1666, 2500)."""
    return [prefix_docs * (i + 1) // phases for i in range(phases)] if phases > 0 else []


def batch_chunk(s: TTTSettings, docs: Sequence[tuple[int, int]]) -> int:
    """TTT_CHUNK_SIZE, or with TTT_SHORT_SCORE_FIRST_ENABLED (#2014) the chunk of the first
    step (TTT_SHORT_SCORE_FIRST_STEPS) whose doc_len bound covers the batch's longest document
    (doc_len = targets + 1)."""
    if s.short_score_first_enabled:
        longest = max(b - a for a, b in docs) + 1
        for limit, size in short_steps(s.short_score_first_steps) or []:
            if longest <= limit:
                return size
    return s.chunk_size


def _record_batch(model: nn.Module, bank: DocLoRA, stream: torch.Tensor,
                  docs: Sequence[tuple[int, int]], s: TTTSettings, p: TTTPass,
                  tally: _Tally) -> int:
    """One batch, slot i = docs[i], with a fresh AdamW state: step k scores chunk k of every
    document that has one in a window of the seq_len tokens (TTT_EVAL_SEQ_LEN, else the
    eval's) ending at the chunk's end (never before the document's BOS), then trains the
    documents that have a later chunk."""
    seq_len, dev = s.eval_seq_len or p.scoring.seq_len, p.dev
    chunk = batch_chunk(s, docs)
    opt = torch.optim.AdamW(bank.parameters(), lr=s.lora_lr * s.local_lr_mult,
                            betas=(s.beta1, s.beta2), eps=ADAM_EPS, weight_decay=s.weight_decay)
    n_chunks = [-(-(b - a) // chunk) for a, b in docs]
    steps = 0
    for k in range(max(n_chunks)):
        rows = [(slot, w) for slot, (a, b) in enumerate(docs) if k < n_chunks[slot]
                for w in chunk_windows(a, b, k, chunk, seq_len, stride=1)]
        train = {slot for slot, nc in enumerate(n_chunks) if k < nc - 1}
        steps += _lora_step(model, _AdapterUpdate(bank.route, opt, steps=s.grad_steps), stream,
                            rows, train, dev, tally)
    return steps


def _global_phase(model: nn.Module, params: Sequence[nn.Parameter], stream: torch.Tensor,
                  docs: Sequence[tuple[int, int]], prefix: Sequence[int], s: TTTSettings,
                  place: Scoring) -> int:
    """SGD of the base model on already-scored documents (in processing order), concatenated
    BOS to BOS: GLOBAL_TTT_CHUNK_TOKENS chunks, the last one skipped, lr cosine over chunks,
    place.seq_len sequences, GLOBAL_TTT_BATCH_SEQS per rank per step, clip, the training loss."""
    world = place.world_size
    last_end = docs[prefix[-1]][1]
    cat = torch.cat([stream[docs[j][0]:docs[j][1]] for j in prefix] + [stream[last_end:last_end + 1]])
    total, size = len(cat) - 1, s.global_ttt_chunk_tokens
    n_chunks = -(-total // size)
    opt = torch.optim.SGD(params, lr=s.global_ttt_lr, momentum=s.global_ttt_momentum)
    for p in params:
        p.requires_grad_(True)
    steps = 0
    try:
        for ci in range(n_chunks - 1):
            lr = s.global_ttt_lr * 0.5 * (1.0 + math.cos(math.pi * ci / max(1, n_chunks - 1)))
            sgd = SpanSGD(lr, s.global_ttt_epochs, s.global_ttt_batch_seqs * world,
                          s.global_ttt_grad_clip)
            steps += train_span(model, opt, cat, (ci * size, min((ci + 1) * size, total)), sgd,
                                place)
    finally:
        for p in params:
            p.requires_grad_(False)
    return steps


def phased_lora_ttt(model: nn.Module, toks: np.ndarray, lut: Any, s: TTTSettings, n: int,
                    p: TTTPass) -> TTTResult:
    """TTT=lora: the records' phased score-first LoRA on `model` in place (callers pass a
    copy) over the first n targets.

    Batches (record_batches) go round-robin to the ranks; after each round every rank knows
    how many documents are scored, and at each phase boundary all of them run the same global
    phase on the first boundary-many documents in processing order. A is drawn afresh (from a
    generator seeded by TTT_SEED and the batch index, never from tokens) for the first batch, after a
    batch of another size, after a phase, and for every batch without TTT_WARM_START_A;
    otherwise only B is zeroed. p.tilt tilts the scores, never the adaptation losses. p.scoring's
    stride, batch_tokens and doc_bos are unused (per-document chunk windows)."""
    t0 = time.perf_counter()
    sc, dev = p.scoring, p.dev
    seq_len, rank, world = sc.seq_len, sc.rank, sc.world_size
    stream = torch.from_numpy(toks[: n + 1].astype(np.int64))
    docs = split_documents(toks, n, s.bos_id)
    T = s.eval_seq_len or seq_len
    params = [q for q in model.parameters() if q.requires_grad]   # what a global phase trains
    for q in params:
        q.requires_grad_(False)
    batches = record_batches(docs, s.batch_size)
    bank = DocLoRA(model, max(len(b) for b in batches), s.lora_rank, s.lora_alpha, record_targets(s))
    bounds = phase_boundaries(s.phased_ttt_num_phases, s.phased_ttt_prefix_docs)
    tally = _Tally(toks, n, lut, p.record, p.tilt)
    steps, phase, prev_size = 0, 0, 0
    model.eval()
    for r0 in range(0, len(batches), world):
        if r0 + rank < len(batches):
            batch = [docs[j] for j in batches[r0 + rank]]
            if not s.warm_start_a or len(batch) != prev_size:     # seeded by the batch index
                bank.fresh_A(torch.Generator().manual_seed(s.seed * 1_000_003 + r0 + rank))
            else:
                bank.zero_B()
            prev_size = len(batch)
            steps += _record_batch(model, bank, stream, batch, s, p, tally)
        done = min(r0 + world, len(batches))
        scored = sum(len(b) for b in batches[:done])
        while phase < len(bounds) and scored >= bounds[phase] and done < len(batches):
            prefix = [j for b in batches[:done] for j in b][:bounds[phase]]
            steps += _global_phase(model, params, stream, docs, prefix, s, sc)
            phase, prev_size = phase + 1, 0                        # a fresh A after a phase
    return _finish(tally, n=n, t0=t0, dev=dev, world=world, mode="sliding", seq_len=T,
                   stride=s.chunk_size, partial=False, ttt="lora", knobs=s.knobs(),
                   units=len(docs), adapt_steps=steps)


# ----------------------------------------------------------------------------- the modes
@dataclass(frozen=True)
class TTTMode:
    """One TTT mode: its runner, one line for --help, and the TTTSettings fields that shape its
    result (eval.json's knobs) plus constants it reports."""
    run: Callable[..., TTTResult]
    about: str
    knobs: tuple[str, ...]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    documents: bool = False        # splits the stream at BOS (needs the model's BOS_ID)


_PHASED_KNOBS = ("lora_rank", "lora_alpha", "lora_lr", "local_lr_mult", "weight_decay", "beta1",
                 "beta2", "grad_steps", "batch_size", "chunk_size", "eval_seq_len", "mask",
                 "q_lora", "k_lora", "v_lora", "o_lora", "mlp_lora", "warm_start_a",
                 "short_score_first_enabled", "short_score_first_steps", "phased_ttt_num_phases",
                 "phased_ttt_prefix_docs", "global_ttt_lr", "global_ttt_momentum",
                 "global_ttt_epochs", "global_ttt_chunk_tokens", "global_ttt_batch_seqs",
                 "global_ttt_grad_clip", "bos_id", "seed")
_GOLF_KNOBS = ("grad_clip", "golf_lora_rank", "golf_lora_lr", "lora_chunk", "lora_batch_docs",
               "lora_targets", "lora_phases", "lora_prefix_docs", "lora_phase_epochs", "lr",
               "momentum", "batch_seqs", "bos_id", "seed")

TTT_MODES: dict[str, TTTMode] = {
    "chunk": TTTMode(chunk_ttt, "R23 per-chunk SGD of all weights",
                     ("grad_clip", "chunk_tokens", "lr", "epochs", "momentum", "batch_seqs"),
                     fixed={"schedule": "cosine"}),
    "lora": TTTMode(phased_lora_ttt, "the records' phased score-first LoRA (PR #1855 / #2014 / #2135)",
                    _PHASED_KNOBS, fixed={"optimizer": "adamw", "eps": ADAM_EPS, "global": "sgd"},
                    documents=True),
    "lora_golf": TTTMode(lora_golf_ttt, "golfkit's earlier per-document LoRA on every nn.Linear",
                         _GOLF_KNOBS, fixed={"optimizer": "adam"}, documents=True),
}


class _ModeNames:
    """"off" and TTT_MODES' names, read when asked (TTT's choices): a mode added to the table
    is accepted, listed by --help and parsed without a second list to edit."""

    def __iter__(self):
        return iter(("off", *TTT_MODES))

    def __contains__(self, name: object) -> bool:
        return name == "off" or name in TTT_MODES

    def __len__(self) -> int:
        return 1 + len(TTT_MODES)


MODES = _ModeNames()
TTT_SETTINGS = tuple(dataclasses.replace(st, choices=MODES) if st.field == "mode" else st
                     for st in fields_table(TTTSettings, "ttt", _ttt_env_name))
register("ttt", TTT_SETTINGS)


# ----------------------------------------------------------------------------- entry point
def run_ttt(model: nn.Module, tokens: np.ndarray, lut: Any, settings: TTTSettings,
            p: TTTPass) -> TTTResult:
    """Score-first TTT of a *copy* of `model` over the stream; the caller's weights never change.

    Same stream convention, window plan and byte accounting as golf.eval.score.evaluate_bpb.
    Under torch.distributed, ranks split the windows (chunk) or documents (lora), gradients of
    shared weights are all-reduced, and every rank returns the same sums. p.tilt (a
    golf.eval.tilt.TokenTilt) tilts every scored NLL; the adaptation losses stay untilted.
    p.scoring.doc_bos keeps chunk mode's windows inside documents (LoRA mode scores per
    document anyway). The result's `weights` is settings.on.
    """
    world_size, max_tokens, bos_id = p.scoring.world_size, p.max_tokens, p.bos_id
    settings = settings.validated()         # idempotent: spellings resolved, ranges checked
    if not settings.active:
        raise EvalError(f"TTT is off: set TTT to one of {', '.join(TTT_MODES)} (or pass --ttt)")
    if world_size > 1 and not _dist_active(world_size):
        raise EvalError("TTT with world_size > 1 needs an initialized process group (torchrun)")
    toks = np.asarray(tokens)
    n_total = max(0, len(toks) - 1)
    n = n_total if max_tokens is None else min(n_total, int(max_tokens))
    if n <= 0:
        raise EvalError(f"no validation targets to score (stream of {len(toks)} tokens)")
    spec = TTT_MODES[settings.mode]
    if spec.documents and settings.bos_id < 0:
        settings = dataclasses.replace(settings, bos_id=-1 if bos_id is None else int(bos_id))
    work = copy.deepcopy(model).to(p.dev)
    res = spec.run(work, toks, lut, settings, n, p)
    res.partial = n < n_total
    res.weights = settings.on
    return res


def ttt_block(settings: TTTSettings, models: dict[str, nn.Module], ed: EvalData, base: dict,
              scoring: Scoring, log: Callable[[str], None], tilt: Any = None) -> dict:
    """eval.json's post_ttt: golf.eval.ttt.run_ttt on a copy of the `settings.on` weights, scored on
    the same tokens and windows (`scoring`) as `base` (the headline entry), bytes checked like
    pre/post; with `tilt` (a golf.eval.tilt.TokenTilt) its scored NLL is tilted, its training loss
    not."""
    label = settings.on
    if label not in models:
        raise EvalError(f"TTT on {label!r} weights needs the "
                        f"{'artifact (--artifact)' if label == 'post' else 'checkpoint (--checkpoint)'}")
    log(f"ttt:start mode:{settings.mode} on:{label} knobs:{settings.knobs()}")
    res = run_ttt(models[label], ed.tokens, ed.lut, settings,
                  TTTPass(scoring, max_tokens=ed.n_targets, tilt=tilt))
    checked_against(res, ed, "TTT ")
    out = res.to_dict()
    out["tilt"] = tilt.settings.knobs() if tilt is not None else None
    out["env"] = settings.env()
    ref = base.get(label)
    out["ttt_gain"] = out["val_bpb"] - ref["val_bpb"] if ref else None
    log(f"eval:ttt:{res.ttt} on:{label} post_ttt_val_loss:{res.val_loss:.8f} "
        f"post_ttt_val_bpb:{res.val_bpb:.8f} ttt_gain:{(out['ttt_gain'] or 0.0):+.8f} "
        f"seconds:{res.seconds:.1f}")
    return out
