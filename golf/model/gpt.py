"""The 11-layer XSA / QK-gain GPT and the record stack's extras (BigramHash, SmearGate, value
embedding); shapes and formulas are the records' (docs/stacks.md lists each difference).

Every feature is switched by a ModelConfig field (defined here, so a new variant is one
file: its field, its check and its code), and ablations need no code edits. All large matrices
are bias-free nn.Linear so quant/ can hook them; the tied embedding is the head.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from golf.model.layers import (FINAL_LANES, asym_softcap, doc_attention, encoder_decoder, final_lane,
                         input_smear, segment_ids, skip_merge, sparse_gate, two_lane_update,
                         virtual_layers)
from golf.run.settings import fields_table, register, setting, value_problems

try:  # FA3 on Hopper when installed; SDPA otherwise.
    from flash_attn_interface import flash_attn_func as _fa3  # type: ignore
except Exception:  # pragma: no cover - not installed on CPU machines
    _fa3 = None

# sigmoid(3.0) ~= 0.953: the gated variant starts close to plain XSA (gate ~1) but can open
# either way; 0 would start at half-strength XSA, which trains differently from XSA_GATE=0.
XSA_GATE_INIT = 3.0


@dataclass(frozen=True)
class ModelConfig:
    """The fields that define the network: its shapes and forward pass, nothing else.

    Why a class of its own: these fields *are* the artifact's model dict (`model_dict`), so a
    field added here is checked against every artifact without a hand-kept list. golf.run.config's
    Config extends it (same flat names, env variable = field name upper-cased). The defaults
    are the feature-less 11L stack (close to PR #1125), so an old config.json loads as the
    model it was."""
    vocab_size: int = setting(1024, "tokenizer vocabulary size (the shards' token range)", ge=1)
    num_layers: int = setting(11, "transformer blocks", ge=1)
    model_dim: int = setting(512, "residual width", ge=1)
    num_heads: int = setting(8, "attention heads (must divide MODEL_DIM)", ge=1)
    num_kv_heads: int = setting(4, "key/value heads (GQA; must divide NUM_HEADS)", ge=1)
    mlp_mult: float = setting(3.0, "MLP hidden width = MLP_MULT x MODEL_DIM", gt=0)
    qk_gain_init: float = setting(4.0, "initial per-head gain on q.k scores", gt=0)
    xsa_last_n: int = setting(-1, "XSA on the last N layers (-1 = all layers, 0 = off)", ge=-1)
    xsa_gate: bool = setting(False, "learned per-head gate on the part XSA removes")
    rope_dims: int = setting(16, "rotated dims per head (0 = no RoPE; even, <= head_dim)", ge=0)
    rope_base: float = setting(10000.0, "RoPE base, used as given (r29 sets the records' "
                               "effective 22,082)", gt=0)
    rope_ntk_ref_len: int = setting(0, ">0: base*(T/ref)^(rd/(rd-2)) when T > ref, the records' "
                                    "rescale; 0 = off", ge=0)
    logit_softcap: float = setting(30.0, "tanh soft cap on the logits (0 = off)", ge=0)
    ln_scale: bool = setting(True, "1/sqrt(layer+1) on normed branch inputs")
    leaky_relu_slope: float = setting(0.5, "MLP activation = leaky_relu(x, slope)^2")
    tie_embeddings: bool = setting(True, "the input embedding is the output head")
    bigram_vocab_size: int = setting(0, "hash buckets of BigramHash (0 = off, else >= 2)", ge=0)
    bigram_dim: int = setting(128, "bigram table width, projected to MODEL_DIM", ge=0)
    smear_gate: bool = setting(False, "x_t <- (1-g) x_t + g x_{t-1} after the input norm")
    smear_bos_fix: bool = setting(False, "a BOS token does not receive its predecessor")
    bos_id: int = setting(1, "the tokenizer's BOS id (the challenge's is 1)", ge=0)
    ve_dim: int = setting(0, "shared value-embedding width (0 = off)", ge=0)
    ve_layers: str = setting("-2,-1", "VE layers, comma-separated (negative count from the end)")
    # --- the frontier stack (PR #1855 / #2135, as their code runs); each off by default
    num_loops: int = setting(0, "depth loop: LOOP_START..LOOP_END run NUM_LOOPS+1 times while "
                             "looping (0 = off)", ge=0)
    loop_start: int = setting(3, "first physical layer of the loop", ge=0)
    loop_end: int = setting(5, "last physical layer of the loop, inclusive", ge=0)
    skip_gates_enabled: bool = setting(False, "skip merge g*x + (1-g)*w*skip, g = sigmoid(skip_gates)")
    parallel_start_layer: int = setting(0, "decoder layers >= it run the two-lane block (0 = off)",
                                        ge=0)
    parallel_final_lane: str = setting("mean", "what leaves the two lanes", choices=FINAL_LANES)
    smear_gate_enabled: bool = setting(False, "the frontier SmearGate: pre-norm, additive, "
                                       "input-gated (not SMEAR_GATE)")
    smear_gate_bos_fix: bool = setting(False, "a BOS does not receive its predecessor through "
                                       "SMEAR_GATE_ENABLED's gate")
    gate_window: int = setting(12, "input dims read by the SmearGate and the sparse attention gate",
                               ge=1)
    sparse_attn_gate_enabled: bool = setting(False, "per-head sigmoid gate on the attention output")
    sparse_attn_gate_scale: float = setting(0.5, "gate = sigmoid(scale * W . u[:GATE_WINDOW])")
    asym_logit_rescale: bool = setting(False, "softcap_pos for z >= 0, softcap_neg below; both "
                                       "start at LOGIT_SOFTCAP")
    asym_logit_train: bool = setting(False, "1: the two caps learn (AdamW at SCALAR_LR, no decay); "
                                     "0 = the records' inert caps")
    doc_attention: bool = setting(False, "attention never crosses a BOS_ID token: per-document "
                                  "logits")

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    def xsa_layers(self) -> list[int]:
        """Indices of the layers that apply XSA (the last XSA_LAST_N; -1 = all)."""
        n = self.num_layers if self.xsa_last_n < 0 else min(self.xsa_last_n, self.num_layers)
        return list(range(self.num_layers - n, self.num_layers))

    def layer_plan(self, looping: bool) -> tuple[list[int], list[int]]:
        """(encoder, decoder) physical layers for the loop state (golf.model.layers.virtual_layers)."""
        return encoder_decoder(virtual_layers(self.num_layers, self.num_loops, self.loop_start,
                                              self.loop_end, looping))

    def ve_layer_indices(self) -> list[int]:
        """VE_LAYERS resolved to layer indices, in the order given (negative = from the end).

        Empty when VE_DIM is 0. Raises ValueError naming VE_LAYERS on a bad entry."""
        if self.ve_dim <= 0:
            return []
        out: list[int] = []
        for part in (p.strip() for p in self.ve_layers.split(",")):
            try:
                i = int(part)
            except ValueError:
                raise ValueError(f"VE_LAYERS={self.ve_layers!r}: {part!r} is not a layer index; "
                                 "use comma-separated integers such as 9,10 or -2,-1") from None
            j = i + self.num_layers if i < 0 else i
            if not 0 <= j < self.num_layers or j in out:
                raise ValueError(f"VE_LAYERS={self.ve_layers!r}: layer {i} is out of range for "
                                 f"NUM_LAYERS={self.num_layers} or repeated; fix VE_LAYERS")
            out.append(j)
        if not out:
            raise ValueError("VE_LAYERS is empty while VE_DIM > 0; name the layers or set VE_DIM=0")
        return out

    @classmethod
    def model_field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(ModelConfig))

    def model_dict(self) -> dict[str, Any]:
        """The artifact's model dict: every ModelConfig field (of a Config too), nothing more."""
        return {k: getattr(self, k) for k in ModelConfig.model_field_names()}

    def model_problems(self) -> list[str]:
        """Every bad model setting, one line each naming the variable and the fix."""
        return [*_model_sign_problems(self), *_shape_problems(self), *_feature_problems(self),
                *_frontier_problems(self)]


MODEL_SETTINGS = fields_table(ModelConfig, "model")
register("model", MODEL_SETTINGS)


def _model_sign_problems(c: ModelConfig) -> Iterator[str]:
    yield from value_problems(c, MODEL_SETTINGS)


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def _shape_problems(c: ModelConfig) -> Iterator[str]:
    """Head split and RoPE: MODEL_DIM / NUM_HEADS / NUM_KV_HEADS / ROPE_DIMS agree."""
    if c.num_heads < 1:
        return
    if c.num_kv_heads >= 1 and c.num_heads % c.num_kv_heads:
        yield (f"NUM_KV_HEADS={c.num_kv_heads}: must divide NUM_HEADS={c.num_heads}; use one of "
               f"{_divisors(c.num_heads)}")
    if c.model_dim < 1:
        return
    if c.model_dim % c.num_heads:
        yield (f"MODEL_DIM={c.model_dim}: must be divisible by NUM_HEADS={c.num_heads}; use a "
               f"multiple of {c.num_heads} (e.g. {c.num_heads * max(1, c.model_dim // c.num_heads)})")
        return
    if c.rope_dims % 2 or c.rope_dims > c.head_dim:
        yield (f"ROPE_DIMS={c.rope_dims}: must be even and <= head_dim {c.head_dim} (MODEL_DIM/"
               f"NUM_HEADS); set an even value up to {c.head_dim} (0 = no RoPE)")
    elif c.rope_ntk_ref_len > 0 and 0 < c.rope_dims <= 2:
        yield f"ROPE_NTK_REF_LEN={c.rope_ntk_ref_len}: needs ROPE_DIMS > 2; raise ROPE_DIMS or set 0"


def _feature_problems(c: ModelConfig) -> Iterator[str]:
    """The record stack's tables: BigramHash and the shared value embedding."""
    if c.bigram_vocab_size == 1:
        yield "BIGRAM_VOCAB_SIZE=1: must be >= 2 hash buckets, or 0 = off"
    if c.bigram_vocab_size >= 2 and c.bigram_dim == 0:
        yield (f"BIGRAM_DIM=0 with BIGRAM_VOCAB_SIZE={c.bigram_vocab_size}: set BIGRAM_DIM > 0 "
               "or BIGRAM_VOCAB_SIZE=0")
    if c.ve_dim > 0 and c.num_layers >= 1:
        try:
            c.ve_layer_indices()
        except ValueError as exc:
            yield str(exc)


def _frontier_problems(c: ModelConfig) -> Iterator[str]:
    """The depth loop's range, the two-lane start, the gates' window."""
    L = c.num_layers
    if c.num_loops > 0 and not 0 <= c.loop_start <= c.loop_end < L:
        yield (f"LOOP_START={c.loop_start} / LOOP_END={c.loop_end}: need 0 <= LOOP_START <= LOOP_END"
               f" < NUM_LAYERS={L}; fix them or set NUM_LOOPS=0")
    if c.parallel_start_layer >= L >= 1:
        yield (f"PARALLEL_START_LAYER={c.parallel_start_layer}: must be < NUM_LAYERS={L}; "
               "lower it or set 0 (off)")
    elif c.num_loops > 0 and 0 < c.parallel_start_layer <= c.loop_end:
        yield (f"PARALLEL_START_LAYER={c.parallel_start_layer}: must be above LOOP_END={c.loop_end}"
               " (the looped layers run single-lane); raise it or set 0 (off)")
    if (c.smear_gate_enabled or c.sparse_attn_gate_enabled) and c.gate_window > c.model_dim >= 1:
        yield (f"GATE_WINDOW={c.gate_window}: must be in 1..MODEL_DIM={c.model_dim}; set e.g. 12")
    if c.asym_logit_rescale and not c.logit_softcap > 0:
        yield "ASYM_LOGIT_RESCALE=1 needs LOGIT_SOFTCAP > 0 (both caps start there); set e.g. 30"


def rms(x: torch.Tensor) -> torch.Tensor:
    """Weightless RMSNorm over the last dim (the stack has no norm weights anywhere)."""
    return F.rms_norm(x, (x.size(-1),))


def rope_base_for(seq_len: int, rope_dims: int, base: float, ntk_ref_len: int = 0) -> float:
    """The RoPE base a forward call of length `seq_len` uses.

    `base` as given unless `ntk_ref_len` > 0 and seq_len exceeds it: then the records' dynamic
    NTK rescale base * (T/ref)^(rd/(rd-2)) (their Rotary hard-codes ref = 1024, so at T = 2048
    and rd = 16 they really train with 10000 * 2**(16/14) ~= 22,082, as the R29 record's code shows).
    """
    if ntk_ref_len > 0 and seq_len > ntk_ref_len:
        if rope_dims <= 2:
            raise ValueError(f"ROPE_NTK_REF_LEN needs ROPE_DIMS > 2, got {rope_dims}")
        return base * (seq_len / ntk_ref_len) ** (rope_dims / (rope_dims - 2))
    return base


def rope_tables(seq_len: int, rope_dims: int, base: float, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape (T, rope_dims/2) with inv_freq_j = base^(-2j/rope_dims); base used as given."""
    half = rope_dims // 2
    inv = base ** (-torch.arange(half, dtype=torch.float32, device=device) * 2.0 / rope_dims)
    ang = torch.arange(seq_len, dtype=torch.float32, device=device)[:, None] * inv[None, :]
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rope_dims: int) -> torch.Tensor:
    """Rotate-half RoPE on the first rope_dims dims of x (B,T,H,D); pairs are (i, i+rope_dims/2).

    The records' direction: x' = [x1 cos + x2 sin, -x1 sin + x2 cos] (x1, x2 = first and second
    half of the rotated dims), i.e. each pair turns by -pos*inv_freq. Scores still depend only on
    the relative position; the sign matters for loading or matching record weights.
    """
    if rope_dims <= 0:
        return x
    half = rope_dims // 2
    x1, x2, rest = x[..., :half], x[..., half:rope_dims], x[..., rope_dims:]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat((x1 * c + x2 * s, x2 * c - x1 * s, rest), dim=-1)


def bigram_hash(idx: torch.Tensor, buckets: int) -> torch.Tensor:
    """BigramHash bucket of each position (int64, same shape as idx (..., T)).

    With M = buckets - 1: h_0 = M (reserved), h_j = (36313 t_j XOR 27191 t_{j-1}) mod M, in
    int32 like the records, within each row (so the previous token may be a BOS or the end of
    the previous document: the records hash across document boundaries).
    """
    t = idx.to(torch.int32)
    m = buckets - 1
    out = torch.full_like(t, m)
    out[..., 1:] = torch.bitwise_xor(36313 * t[..., 1:], 27191 * t[..., :-1]) % m
    return out.long()


def xsa(y: torch.Tensor, v: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
    """Remove from each head's output its component along the token's own value direction.

    y: (B,T,H,D), v: (B,T,Hkv,D); query head h uses KV head h // (H/Hkv), so y is viewed as
    (B,T,Hkv,group,D) and v̂ broadcast over the group (no repeat_interleave). With `gate` (H,)
    the removed component is scaled by sigmoid(gate_h).
    """
    B, T, H, D = y.shape
    hkv = v.size(2)
    yg = y.view(B, T, hkv, H // hkv, D)
    vhat = F.normalize(v, dim=-1).unsqueeze(3)
    proj = (yg * vhat).sum(-1, keepdim=True) * vhat
    if gate is not None:
        proj = proj * torch.sigmoid(gate).view(1, 1, hkv, H // hkv, 1).to(proj.dtype)
    return (yg - proj).view(B, T, H, D)


def sdpa_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention through SDPA on (B,T,H,D) tensors with Hkv <= H key/value heads.

    On CUDA the KV heads are repeated to H first. Measured on one H100 (torch 2.11, compiled
    11L, 786,432 tokens/step): 761 ms/step this way vs 823 ms with SDPA's native GQA flag,
    although eager SDPA alone is faster with the flag (cuDNN, 3.62 vs 3.91 ms fwd+bwd per
    call; bench/attention.py): under torch.compile the flag loses the fast kernel. On CPU the
    native GQA path avoids the copy.
    """
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if q.is_cuda and k.size(2) != q.size(2):
        rep = q.size(2) // k.size(2)
        kt, vt = kt.repeat_interleave(rep, dim=1), vt.repeat_interleave(rep, dim=1)
        return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True).transpose(1, 2)
    return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True,
                                          enable_gqa=k.size(2) != q.size(2)).transpose(1, 2)


class BigramHash(nn.Module):
    """scale * W_p * Emb_b[hash(t_{j-1}, t_j)]: a hashed bigram table added to the token embedding.

    Emb_b starts at zero and scale at 0.05, so the model starts as if it were absent; W_p is
    orthogonal (GPT._init_weights).
    """

    def __init__(self, buckets: int, dim: int, model_dim: int):
        super().__init__()
        if buckets < 2 or dim <= 0:
            raise ValueError(f"BIGRAM_VOCAB_SIZE={buckets} must be >= 2 (or 0 = off) and "
                             f"BIGRAM_DIM={dim} > 0; fix the environment variables")
        self.buckets = buckets
        self.embed = nn.Embedding(buckets, dim)
        self.proj = nn.Linear(dim, model_dim, bias=False)
        self.scale = nn.Parameter(torch.tensor(0.05))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.proj(self.embed(bigram_hash(idx, self.buckets)))
        return h * self.scale.to(h.dtype)


class SmearGate(nn.Module):
    """x_t <- (1-g) x_t + g x_{t-1} with g = sigmoid(gate) per channel (gate init 0: g = 0.5).

    x_{-1} = 0. With `bos_id` set (SMEAR_BOS_FIX) a token that IS a BOS does not receive its
    predecessor (x_{t-1} is taken as 0 there, as at position 0), so nothing crosses into a new
    document through the gate: the fix of the 2026-04-27 records (`not_bos` mask).
    """

    def __init__(self, dim: int, bos_id: int | None = None):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(dim))
        self.bos_id = bos_id

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        g = torch.sigmoid(self.gate.to(x.dtype))
        prev = F.pad(x[:, :-1], (0, 0, 1, 0))
        if self.bos_id is not None:
            if idx is None:
                raise ValueError("SMEAR_BOS_FIX needs the token ids")
            prev = prev * (idx != self.bos_id).unsqueeze(-1).to(x.dtype)
        return (1 - g) * x + g * prev


class ValueEmbedding(nn.Module):
    """The shared value embedding: scale * W_ve * Emb_ve[t], (B,T,kv_dim); each VE layer adds it
    to its v times its own scalar. Emb_ve ~ N(0, 0.01^2), W_ve orthogonal, scale 0.1."""

    def __init__(self, vocab: int, dim: int, kv_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.proj = nn.Linear(dim, kv_dim, bias=False)
        self.scale = nn.Parameter(torch.tensor(0.1))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.proj(self.embed(idx))
        return h * self.scale.to(h.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, use_xsa: bool):
        super().__init__()
        d, self.h, self.hkv, self.hd = cfg.model_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        if d % self.h or self.h % self.hkv:
            raise ValueError(f"MODEL_DIM={d} must divide by NUM_HEADS={self.h} and NUM_HEADS by "
                             f"NUM_KV_HEADS={self.hkv}; fix the environment variables")
        if cfg.rope_dims % 2 or cfg.rope_dims > self.hd:
            raise ValueError(f"ROPE_DIMS={cfg.rope_dims} must be even and <= head_dim {self.hd}")
        self.c_q = nn.Linear(d, self.h * self.hd, bias=False)
        self.c_k = nn.Linear(d, self.hkv * self.hd, bias=False)
        self.c_v = nn.Linear(d, self.hkv * self.hd, bias=False)
        self.proj = nn.Linear(self.h * self.hd, d, bias=False)
        self.q_gain = nn.Parameter(torch.full((self.h,), float(cfg.qk_gain_init)))
        self.use_xsa = use_xsa
        self.xsa_gate = nn.Parameter(torch.full((self.h,), XSA_GATE_INIT)) if (use_xsa and cfg.xsa_gate) else None
        if cfg.sparse_attn_gate_enabled:  # zero init: every head at sigmoid(0) = 0.5
            self.attn_gate_w = nn.Parameter(torch.zeros(self.h, cfg.gate_window))
            self.gate_scale = cfg.sparse_attn_gate_scale
        self.rope_dims, self.rope_base, self.ntk_ref = cfg.rope_dims, cfg.rope_base, cfg.rope_ntk_ref_len
        if self.ntk_ref > 0 and 0 < self.rope_dims <= 2:
            raise ValueError(f"ROPE_NTK_REF_LEN needs ROPE_DIMS > 2, got {self.rope_dims}")

    def forward(self, u: torch.Tensor, ve: torch.Tensor | None = None,
                seg: torch.Tensor | None = None) -> torch.Tensor:
        """u (B,T,d); ve (B,T,kv_dim) is added to u W_vᵀ before the head split (XSA sees it too);
        seg (B,T) segment ids (golf.model.layers.segment_ids) keep attention inside each document."""
        B, T, _ = u.shape
        q = rms(self.c_q(u).view(B, T, self.h, self.hd))
        k = rms(self.c_k(u).view(B, T, self.hkv, self.hd))
        v = self.c_v(u)
        if ve is not None:
            v = v + ve.to(v.dtype)
        v = v.view(B, T, self.hkv, self.hd)
        if self.rope_dims:
            base = rope_base_for(T, self.rope_dims, self.rope_base, self.ntk_ref)
            cos, sin = rope_tables(T, self.rope_dims, base, u.device, q.dtype)
            q, k = apply_rope(q, cos, sin, self.rope_dims), apply_rope(k, cos, sin, self.rope_dims)
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        if seg is not None:
            y = doc_attention(q, k, v, seg)
        elif _fa3 is not None and u.is_cuda:
            y = _fa3(q, k, v, causal=True)
            y = y[0] if isinstance(y, tuple) else y
        else:
            y = sdpa_causal(q, k, v)
        if self.use_xsa:
            y = xsa(y, v, self.xsa_gate)
        if hasattr(self, "attn_gate_w"):
            y = sparse_gate(y, u, self.attn_gate_w, self.gate_scale)
        return self.proj(y.reshape(B, T, self.h * self.hd))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = int(cfg.mlp_mult * cfg.model_dim)
        self.fc = nn.Linear(cfg.model_dim, hidden, bias=False)
        self.proj = nn.Linear(hidden, cfg.model_dim, bias=False)
        self.slope = cfg.leaky_relu_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.leaky_relu(self.fc(x), self.slope).square())


class Block(nn.Module):
    """resid_mix with x0, then attn and MLP branches on scaled, normed inputs.

    LN scale placement: s_l = 1/sqrt(l+1) multiplies the *normed input* of each branch (the
    records' placement). QK-norm re-normalises q and k, so s_l cancels there and in effect
    shrinks v (hence the attention output) and the MLP input of deep layers.
    """

    def __init__(self, cfg: ModelConfig, layer: int, use_xsa: bool):
        super().__init__()
        d = cfg.model_dim
        self.attn, self.mlp = Attention(cfg, use_xsa), MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(d))
        self.mlp_scale = nn.Parameter(torch.ones(d))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d))))
        self.s = 1.0 / math.sqrt(layer + 1) if cfg.ln_scale else 1.0

    def forward(self, x: torch.Tensor, x0: torch.Tensor, ve: torch.Tensor | None = None,
                seg: torch.Tensor | None = None) -> torch.Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(rms(x) * self.s, ve, seg)
        return x + self.mlp_scale.to(x.dtype) * self.mlp(rms(x) * self.s)

    def two_lane(self, lanes: tuple[torch.Tensor, torch.Tensor], x0: torch.Tensor,
                 resid: torch.Tensor, post: torch.Tensor, ve: torch.Tensor | None = None,
                 seg: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The parallel-residual form: attention reads resid_mix(lane0, x0), the MLP reads lane1
        (both from the block's input), and each output is written to both lanes
        (golf.model.layers.two_lane_update with this layer's lambdas)."""
        lane0, lane1 = lanes
        mix = self.resid_mix.to(lane0.dtype)
        a = self.attn_scale.to(lane0.dtype) * self.attn(rms(mix[0] * lane0 + mix[1] * x0) * self.s, ve, seg)
        m = self.mlp_scale.to(lane1.dtype) * self.mlp(rms(lane1) * self.s)
        return two_lane_update(lane0, lane1, a, m, resid, post)


class GateWeight(nn.Module):
    """The SmearGate's (1, GATE_WINDOW) weight, zero-initialised; a Parameter holder rather
    than an nn.Linear so no Linear rule (orthogonal init, Hessian hooks) reaches it, while the
    state-dict name stays the records' `smear_gate.weight`."""

    def __init__(self, window: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, window))


class TiedHead(nn.Module):
    """logits = h Eᵀ; a module so quant can hook its input (the final-normed hidden state)."""

    def __init__(self, emb: nn.Embedding):
        super().__init__()
        self._emb = [emb]  # list: do not register E twice

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self._emb[0].weight.to(h.dtype))


class GPT(nn.Module):
    """Token (+ bigram) embedding -> norm -> (smear) -> U-Net of blocks -> norm -> tied head.

    Optional record features (from the records' code), each off at 0/False: BigramHash
    (`bigram.*`), SmearGate (`smear.gate`) and the shared value embedding (`ve_shared.*`,
    `ve_layer_scales.<k>` for the k-th layer of VE_LAYERS). The names are the records'.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        L, d = cfg.num_layers, cfg.model_dim
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        if cfg.bigram_vocab_size > 0:
            self.bigram = BigramHash(cfg.bigram_vocab_size, cfg.bigram_dim, d)
        if cfg.smear_gate:
            self.smear = SmearGate(d, cfg.bos_id if cfg.smear_bos_fix else None)
        xl = set(cfg.xsa_layers())
        self.blocks = nn.ModuleList(Block(cfg, i, i in xl) for i in range(L))
        self.ve_layers = cfg.ve_layer_indices()
        if self.ve_layers:
            self.ve_shared = ValueEmbedding(cfg.vocab_size, cfg.ve_dim, cfg.num_kv_heads * cfg.head_dim)
            self.ve_layer_scales = nn.ParameterList(nn.Parameter(torch.ones(1)) for _ in self.ve_layers)
        # the loop state: training sets it at ENABLE_LOOPING_AT; a fresh model (eval, TTT,
        # calibration, import) starts with the loop on, as the trained model ends
        self.looping = cfg.num_loops > 0
        # the segment cut of DOC_ATTENTION: 0 = the row is the window (eval, TTT, (B,T) rows);
        # training on DOC_PACKING's packed rows sets TRAIN_SEQ_LEN or the TRAIN_SEQ_SCHEDULE stage
        self.doc_window = 0
        enc, dec = cfg.layer_plan(looping=True)
        self.n_skip = min(len(enc), len(dec))  # skip slots: sized for the looped plan
        self.skip_weights = nn.Parameter(torch.ones(self.n_skip, d))
        if cfg.skip_gates_enabled:  # zero init: g = 0.5
            self.skip_gates = nn.Parameter(torch.zeros(self.n_skip, d))
        if cfg.parallel_start_layer > 0:  # one row per physical layer; rows below the start unused
            self.parallel_post_lambdas = nn.Parameter(torch.ones(L, 2, 2))
            self.parallel_resid_lambdas = nn.Parameter(torch.full((L, 2), 1.1))
        if cfg.smear_gate_enabled:
            self.smear_gate = GateWeight(cfg.gate_window)
            self.smear_lambda = nn.Parameter(torch.zeros(1))
        if cfg.asym_logit_rescale:  # inert (no gradient) unless ASYM_LOGIT_TRAIN, as the records ran
            for name in ("softcap_pos", "softcap_neg"):
                self.register_parameter(name, nn.Parameter(torch.tensor(float(cfg.logit_softcap)),
                                                           requires_grad=cfg.asym_logit_train))
        if cfg.tie_embeddings:
            self.lm_head: nn.Module = TiedHead(self.tok_emb)
        else:
            self.lm_head = nn.Linear(d, cfg.vocab_size, bias=False)
        self.softcap = cfg.logit_softcap
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """tok_emb N(0, 0.005²); block output projections zero (blocks start as identity); every
        other Linear orthogonal (incl. bigram.proj, ve_shared.proj); bigram table zero, VE N(0, 0.01²)."""
        nn.init.normal_(self.tok_emb.weight, std=0.005)
        if hasattr(self, "bigram"):
            nn.init.zeros_(self.bigram.embed.weight)
        if hasattr(self, "ve_shared"):
            nn.init.normal_(self.ve_shared.embed.weight, std=0.01)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                if name.endswith((".attn.proj", ".mlp.proj")):
                    nn.init.zeros_(m.weight)
                elif m.weight.device.type != "meta":
                    nn.init.orthogonal_(m.weight)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """x0: rms(E[t] + bigram(t) smeared by SMEAR_GATE_ENABLED's gate), then SMEAR_GATE's."""
        e = self.tok_emb(idx)
        if hasattr(self, "bigram"):
            e = e + self.bigram(idx).to(e.dtype)
        if hasattr(self, "smear_gate"):
            bos = self.cfg.bos_id if self.cfg.smear_gate_bos_fix else None
            e = input_smear(e, idx, self.smear_gate.weight, self.smear_lambda, bos)
        x = rms(e)
        return self.smear(x, idx) if hasattr(self, "smear") else x

    def value_embeds(self, idx: torch.Tensor) -> list[torch.Tensor | None]:
        """Per layer the VE term added to v (None where the layer has no VE)."""
        out: list[torch.Tensor | None] = [None] * len(self.blocks)
        if self.ve_layers:
            base = self.ve_shared(idx)
            for k, layer in enumerate(self.ve_layers):
                out[layer] = self.ve_layer_scales[k].to(base.dtype) * base
        return out

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """Final-normed hidden state (B,T,d): the lm_head input.

        U-Net over the virtual layer plan of the loop state: encoder outputs are stacked, decoder
        position i < n_skip pops one (LIFO) into x, or into lane0 once the two lanes run."""
        x = x0 = self.embed(idx)
        ves = self.value_embeds(idx)
        seg = segment_ids(idx, self.cfg.bos_id, self.doc_window or None) if self.cfg.doc_attention else None
        enc, dec = self.cfg.layer_plan(self.looping)
        stack = []
        for layer in enc:
            x = self.blocks[layer](x, x0, ves[layer], seg)
            stack.append(x)
        lanes: tuple[torch.Tensor, torch.Tensor] | None = None
        start = self.cfg.parallel_start_layer
        for i, layer in enumerate(dec):
            if lanes is None and 0 < start <= layer:
                lanes = (x, x)
            if i < self.n_skip and stack:
                gate = self.skip_gates[i] if hasattr(self, "skip_gates") else None
                if lanes is None:
                    x = skip_merge(x, stack.pop(), self.skip_weights[i], gate)
                else:
                    lanes = (skip_merge(lanes[0], stack.pop(), self.skip_weights[i], gate), lanes[1])
            if lanes is None:
                x = self.blocks[layer](x, x0, ves[layer], seg)
            else:
                lanes = self.blocks[layer].two_lane(lanes, x0, self.parallel_resid_lambdas[layer],
                                                    self.parallel_post_lambdas[layer], ves[layer], seg)
        if lanes is not None:
            x = final_lane(*lanes, self.cfg.parallel_final_lane)
        return rms(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Head and softcap in fp32: LOGIT_SOFTCAP's tanh cap, or ASYM_LOGIT_RESCALE's two caps."""
        z = self.lm_head(h).float()
        if hasattr(self, "softcap_pos"):
            return asym_softcap(z, self.softcap_pos, self.softcap_neg)
        if self.softcap > 0:
            z = self.softcap * torch.tanh(z / self.softcap)
        return z

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        z = self.logits(self.hidden(idx))
        if targets is None:
            return z
        return F.cross_entropy(z.reshape(-1, z.size(-1)), targets.reshape(-1))

    def hessian_modules(self) -> dict[str, nn.Module]:
        """weight name -> module whose forward input X gives H = XᵀX for that weight."""
        out: dict[str, nn.Module] = {}
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                out[f"{name}.weight"] = m
        if self.cfg.tie_embeddings:
            out["tok_emb.weight"] = self.lm_head
        return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parameter_count(cfg: ModelConfig) -> int:
    """Parameters of the GPT `cfg` describes, built on the meta device (no memory, ~ms), so a
    rule that scales with model size (golf.run.rules.scaled_cap_bytes) never needs a typed count."""
    with torch.device("meta"):
        return count_parameters(GPT(cfg))


# ----------------------------------------------------------------------------- parameter roles
# Each parameter's role, declared once beside the parameters. Read by the optimizer's groups
# (golf/train/optim.py split_params), the quantizer (golf passes quant_roles() into quant.QuantPolicy:
# quant knows nothing of this model) and the import of record checkpoints (golf/interop.py).
#   matrix     a 2-D weight inside a block: Muon; the quantizer's attention / mlp / other class
#   embedding  a lookup table or an untied LM head: AdamW at TIED_EMBED_LR; the embedding class
#   control    gains, mixes, gates, scalar scales: AdamW at SCALAR_LR; kept in fp32 when packed
#   other      the rest (small projections outside the blocks): AdamW at SCALAR_LR
ROLES = ("matrix", "embedding", "control", "other")
# control parameters by name: the challenge baseline's nine, then the record stacks' additions
# (smear gate, bigram / value-embedding scales, per-layer VE scalars), golfkit's per-head XSA
# gate and the frontier stack's skip gates, lane lambdas, sparse attention gate and softcaps
CONTROL_PARAMS = ("attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix",
                  "resid_mixes", "q_gain", "skip_weight", "skip_weights",
                  "smear", "bigram.scale", "ve_shared.scale", "ve_layer_scales", "xsa_gate",
                  "skip_gates", "parallel_post_lambdas", "parallel_resid_lambdas", "attn_gate_w",
                  "softcap_pos", "softcap_neg")


def is_control(name: str) -> bool:
    return any(p in name for p in CONTROL_PARAMS)


def param_role(name: str, p: torch.Tensor, tables: set[int]) -> str:
    """One parameter's role; `tables` holds id() of every nn.Embedding weight (embedding_ids)."""
    if p.ndim == 2 and name.startswith("blocks.") and not is_control(name):
        return "matrix"
    if id(p) in tables or name.startswith("lm_head"):
        return "embedding"
    return "control" if is_control(name) else "other"


def embedding_ids(model: nn.Module) -> set[int]:
    return {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}


def param_roles(model: nn.Module) -> dict[str, str]:
    """name -> role for every parameter of `model` (trainable or not)."""
    tables = embedding_ids(model)
    return {name: param_role(name, p, tables) for name, p in model.named_parameters()}


def quant_roles(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """The roles in the quantizer's terms (QuantPolicy fields): names kept in fp32, and the
    names of the embedding class."""
    roles = param_roles(model)
    return {"control_patterns": CONTROL_PARAMS,
            "embedding_patterns": tuple(n for n, r in roles.items() if r == "embedding")}
