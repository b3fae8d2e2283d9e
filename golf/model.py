"""The 11-layer XSA / QK-gain GPT (shapes and formulas: shared/reference/anchor_arch.md §1).

Every feature is switched by a Config field so ablations need no code edits. All large
matrices are bias-free nn.Linear so quant/ can hook them; the tied embedding is the head.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from golf.config import Config

try:  # FA3 on Hopper when installed; SDPA otherwise.
    from flash_attn_interface import flash_attn_func as _fa3  # type: ignore
except Exception:  # pragma: no cover - not installed on CPU machines
    _fa3 = None

# sigmoid(3.0) ~= 0.953: the gated variant starts close to plain XSA (gate ~1) but can open
# either way; 0 would start at half-strength XSA, which trains differently from XSA_GATE=0.
XSA_GATE_INIT = 3.0


def rms(x: torch.Tensor) -> torch.Tensor:
    """Weightless RMSNorm over the last dim (the stack has no norm weights anywhere)."""
    return F.rms_norm(x, (x.size(-1),))


def rope_tables(seq_len: int, rope_dims: int, base: float, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape (T, rope_dims/2) with inv_freq_j = base^(-2j/rope_dims); base used as given."""
    half = rope_dims // 2
    inv = base ** (-torch.arange(half, dtype=torch.float32, device=device) * 2.0 / rope_dims)
    ang = torch.arange(seq_len, dtype=torch.float32, device=device)[:, None] * inv[None, :]
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rope_dims: int) -> torch.Tensor:
    """Rotate-half RoPE on the first rope_dims dims of x (B,T,H,D); pairs are (i, i+rope_dims/2)."""
    if rope_dims <= 0:
        return x
    half = rope_dims // 2
    x1, x2, rest = x[..., :half], x[..., half:rope_dims], x[..., rope_dims:]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s, rest), dim=-1)


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


class Attention(nn.Module):
    def __init__(self, cfg: Config, use_xsa: bool):
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
        self.rope_dims, self.rope_base = cfg.rope_dims, cfg.rope_base

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        B, T, _ = u.shape
        q = rms(self.c_q(u).view(B, T, self.h, self.hd))
        k = rms(self.c_k(u).view(B, T, self.hkv, self.hd))
        v = self.c_v(u).view(B, T, self.hkv, self.hd)
        if self.rope_dims:
            cos, sin = rope_tables(T, self.rope_dims, self.rope_base, u.device, q.dtype)
            q, k = apply_rope(q, cos, sin, self.rope_dims), apply_rope(k, cos, sin, self.rope_dims)
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        if _fa3 is not None and u.is_cuda:
            y = _fa3(q, k, v, causal=True)
            y = y[0] if isinstance(y, tuple) else y
        else:
            y = sdpa_causal(q, k, v)
        if self.use_xsa:
            y = xsa(y, v, self.xsa_gate)
        return self.proj(y.reshape(B, T, self.h * self.hd))


class MLP(nn.Module):
    def __init__(self, cfg: Config):
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

    def __init__(self, cfg: Config, layer: int, use_xsa: bool):
        super().__init__()
        d = cfg.model_dim
        self.attn, self.mlp = Attention(cfg, use_xsa), MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(d))
        self.mlp_scale = nn.Parameter(torch.ones(d))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d))))
        self.s = 1.0 / math.sqrt(layer + 1) if cfg.ln_scale else 1.0

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(rms(x) * self.s)
        return x + self.mlp_scale.to(x.dtype) * self.mlp(rms(x) * self.s)


class TiedHead(nn.Module):
    """logits = h Eᵀ; a module so quant can hook its input (the final-normed hidden state)."""

    def __init__(self, emb: nn.Embedding):
        super().__init__()
        self._emb = [emb]  # list: do not register E twice

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self._emb[0].weight.to(h.dtype))


class GPT(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        L, d = cfg.num_layers, cfg.model_dim
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        xl = set(cfg.xsa_layers())
        self.blocks = nn.ModuleList(Block(cfg, i, i in xl) for i in range(L))
        self.n_enc = L // 2
        self.n_skip = min(self.n_enc, L - self.n_enc)
        self.skip_weights = nn.Parameter(torch.ones(self.n_skip, d))
        if cfg.tie_embeddings:
            self.lm_head: nn.Module = TiedHead(self.tok_emb)
        else:
            self.lm_head = nn.Linear(d, cfg.vocab_size, bias=False)
        self.softcap = cfg.logit_softcap
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        nn.init.normal_(self.tok_emb.weight, std=0.005)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                if name.endswith(".proj"):
                    nn.init.zeros_(m.weight)  # zero-init output projections: blocks start as identity
                elif m.weight.device.type != "meta":
                    nn.init.orthogonal_(m.weight)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """Final-normed hidden state (B,T,d): the lm_head input."""
        x = x0 = rms(self.tok_emb(idx))
        stack = []
        for i, blk in enumerate(self.blocks):
            if i >= self.n_enc and stack:
                x = x + self.skip_weights[i - self.n_enc].to(x.dtype) * stack.pop()
            x = blk(x, x0)
            if i < self.n_enc:
                stack.append(x)
        return rms(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        z = self.lm_head(self.hidden(idx)).float()
        if self.softcap > 0:
            z = self.softcap * torch.tanh(z / self.softcap)
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
