"""The frontier stack's building blocks (PR #1855 / #2135), free of any config.

Why a module of its own: these are pure functions of tensors and plain numbers (the depth
loop's layer plan, per-document attention, the gates, the two-lane step, the asymmetric
softcap), so golf.model.gpt wires them to ModelConfig fields and tests check each one against a
hand computation without building a model. Formulas: the records' forward pass (PR #1855).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

try:  # FA3's varlen kernel on Hopper when installed; masked SDPA otherwise
    from flash_attn_interface import flash_attn_varlen_func as _fa3_varlen  # type: ignore
except Exception:  # pragma: no cover - not installed on CPU machines
    _fa3_varlen = None

FINAL_LANES = ("mean", "lane0", "lane1")


def virtual_layers(num_layers: int, num_loops: int, loop_start: int, loop_end: int,
                   looping: bool) -> list[int]:
    """The physical layer run at each virtual position.

    Looping: [0..start-1] + (NUM_LOOPS+1) x [start..end] + [end+1..L-1] (17 entries for the
    records' 11 layers, loops 2, 3..5); otherwise (or NUM_LOOPS=0) simply 0..L-1."""
    if not looping or num_loops <= 0:
        return list(range(num_layers))
    seg = list(range(loop_start, loop_end + 1))
    return list(range(loop_start)) + seg * (num_loops + 1) + list(range(loop_end + 1, num_layers))


def encoder_decoder(layers: list[int]) -> tuple[list[int], list[int]]:
    """U-Net split of a virtual layer list: the first floor(n/2) entries encode, the rest decode."""
    n_enc = len(layers) // 2
    return layers[:n_enc], layers[n_enc:]


def skip_merge(target: torch.Tensor, skip: torch.Tensor, weight: torch.Tensor,
               gate: torch.Tensor | None) -> torch.Tensor:
    """Decoder skip: target + w*skip, or with a gate g = sigmoid(gate) (SKIP_GATES_ENABLED)
    g*target + (1-g)*w*skip, i.e. lerp(w*skip, target, g); g = 0.5 at the zero init."""
    scaled = weight.to(target.dtype) * skip
    if gate is None:
        return target + scaled
    return torch.lerp(scaled, target, torch.sigmoid(gate.to(target.dtype)))


def two_lane_update(lane0: torch.Tensor, lane1: torch.Tensor, a: torch.Tensor, m: torch.Tensor,
                    resid: torch.Tensor, post: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One parallel block's write: lane_j <- R[j]*lane_j + P[0,j]*a + P[1,j]*m.

    a, m: the scaled attention and MLP outputs; resid = parallel_resid_lambdas[l] (2,),
    post = parallel_post_lambdas[l] (2 sources x 2 destination lanes)."""
    r, p = resid.to(lane0.dtype), post.to(lane0.dtype)
    return (r[0] * lane0 + p[0, 0] * a + p[1, 0] * m,
            r[1] * lane1 + p[0, 1] * a + p[1, 1] * m)


def final_lane(lane0: torch.Tensor, lane1: torch.Tensor, mode: str) -> torch.Tensor:
    """PARALLEL_FINAL_LANE: the hidden state that leaves the two-lane region."""
    if mode == "mean":
        return 0.5 * (lane0 + lane1)
    if mode in FINAL_LANES:
        return lane0 if mode == "lane0" else lane1
    raise ValueError(f"PARALLEL_FINAL_LANE={mode!r}: use one of {', '.join(FINAL_LANES)}")


def input_smear(e: torch.Tensor, idx: torch.Tensor, gate_w: torch.Tensor, lam: torch.Tensor,
                bos_id: int | None) -> torch.Tensor:
    """The frontier SmearGate on the raw embedding (before the input norm), additive:
    e'_t = e_t + lam * sigmoid(w . e_t[:W]) * e_{t-1} * m_t for t >= 1, e'_0 = e_0.

    The gate reads the current token's first W dims; e_{t-1} is the raw predecessor. With
    `bos_id` (SMEAR_GATE_BOS_FIX) m_t = 0 where token t is a BOS, so no document leaks into
    the next through the gate; without it m_t = 1 (PR #2135 as it ran)."""
    window = gate_w.size(-1)
    g = lam.to(e.dtype) * torch.sigmoid(F.linear(e[:, 1:, :window], gate_w.to(e.dtype)))
    prev = e[:, :-1]
    if bos_id is not None:
        prev = prev * (idx[:, 1:] != bos_id).unsqueeze(-1).to(e.dtype)
    return torch.cat((e[:, :1], e[:, 1:] + g * prev), dim=1)


def sparse_gate(y: torch.Tensor, u: torch.Tensor, gate_w: torch.Tensor, scale: float) -> torch.Tensor:
    """SparseAttnGate: head h's output times sigmoid(scale * W[h] . u_t[:W]); y (B,T,H,D), u the
    normed attention input (B,T,d), gate_w (H,W). Zero init: every head at 0.5."""
    window = gate_w.size(-1)
    g = torch.sigmoid(scale * F.linear(u[..., :window], gate_w.to(u.dtype)))
    return y * g.unsqueeze(-1).to(y.dtype)


def asym_softcap(z: torch.Tensor, cap_pos: torch.Tensor, cap_neg: torch.Tensor) -> torch.Tensor:
    """ASYM_LOGIT_RESCALE: cap_pos*tanh(z/cap_pos) for z >= 0, cap_neg*tanh(z/cap_neg) below."""
    sp, sn = cap_pos.to(z.dtype), cap_neg.to(z.dtype)
    return torch.where(z >= 0, sp * torch.tanh(z / sp), sn * torch.tanh(z / sn))


def segment_ids(idx: torch.Tensor, bos_id: int, max_len: int | None = None) -> torch.Tensor:
    """Per position (B,T) the id of its attention segment, the records' rule: a BOS starts a
    segment, every row start is one, and a segment longer than `max_len` is cut every
    `max_len` tokens. Ids grow along the row, so equal id = same segment."""
    B, T = idx.shape
    starts = idx == bos_id
    starts[:, 0] = True
    doc = torch.cumsum(starts.long(), dim=1)
    if max_len is None or max_len >= T:
        return doc
    pos = torch.arange(T, device=idx.device).expand(B, T)
    doc_start = torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), dim=1).values
    return doc * T + (pos - doc_start) // max_len


def segment_mask(seg: torch.Tensor) -> torch.Tensor:
    """(B,1,T,T) bool: query i may attend key j iff j <= i and both lie in one segment."""
    T = seg.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=seg.device).tril()
    return (seg[:, :, None] == seg[:, None, :]).unsqueeze(1) & causal


def doc_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    """Causal attention that never crosses a segment boundary; (B,T,H,D) in and out, Hkv <= H.

    On CUDA with FA3 importable: its varlen kernel over the flattened segments (the records'
    path); otherwise SDPA with the boolean segment mask (CPU, or CUDA without FA3)."""
    if q.is_cuda and _fa3_varlen is not None:
        return _varlen(q, k, v, seg)
    if q.size(1) > BANDED_MIN_LEN:  # a packed row (DOC_PACKING): only the band can attend
        window = cu_seqlens(seg)[1]
        if 2 * window < q.size(1):
            return banded_doc_attention(q, k, v, seg, window)
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    gqa = k.size(2) != q.size(2)
    if gqa and q.is_cuda:  # as golf.model.gpt.sdpa_causal: repeated KV heads compile faster on CUDA
        rep = q.size(2) // k.size(2)
        kt, vt, gqa = kt.repeat_interleave(rep, dim=1), vt.repeat_interleave(rep, dim=1), False
    y = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=segment_mask(seg), enable_gqa=gqa)
    return y.transpose(1, 2)


# Rows longer than this go through banded_doc_attention when their segments are short: a dense
# mask over a packed row (8,192 tokens on CPU, 98,304 in the records) is quadratic in memory.
BANDED_MIN_LEN = 1024


def banded_doc_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seg: torch.Tensor,
                         window: int) -> torch.Tensor:
    """doc_attention for rows whose segments are at most `window` long, in O(T·window).

    The row is cut into blocks of `window` queries; a query's segment starts at most
    window-1 positions back, so its keys lie in its own block or the one before. Each block
    attends over those 2·window keys with the segment mask (tail padding gets its own segment)."""
    B, T, H, D = q.shape
    hkv, pad = k.size(2), (-T) % window
    n = (T + pad) // window
    q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v))
    seg = F.pad(seg, (0, pad), value=-1)

    def with_previous(t: torch.Tensor, fill: float) -> torch.Tensor:
        blocks = t.reshape(B, n, window, *t.shape[2:])
        prev = torch.cat((torch.full_like(blocks[:, :1], fill), blocks[:, :-1]), dim=1)
        return torch.cat((prev, blocks), dim=2).reshape(B * n, 2 * window, *t.shape[2:])

    seg_k = with_previous(seg, -2)                                # -2: before the row
    seg_q = seg.reshape(B * n, window)
    causal = torch.ones(window, 2 * window, dtype=torch.bool, device=q.device).tril(window)
    mask = ((seg_q[:, :, None] == seg_k[:, None, :]) & causal).unsqueeze(1)
    qt = q.reshape(B * n, window, H, D).transpose(1, 2)
    kt, vt = (with_previous(t, 0.0).transpose(1, 2) for t in (k, v))
    y = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, enable_gqa=hkv != H)
    return y.transpose(1, 2).reshape(B, T + pad, H, D)[:, :T]


def cu_seqlens(seg: torch.Tensor) -> tuple[torch.Tensor, int]:
    """FA3 varlen boundaries of the flattened (B*T) segments, int32, and the longest segment."""
    B, T = seg.shape
    flat = (seg + torch.arange(B, device=seg.device)[:, None] * (seg.max() + 1)).reshape(-1)
    new = torch.ones_like(flat, dtype=torch.bool)
    new[1:] = flat[1:] != flat[:-1]
    starts = torch.nonzero(new).flatten()
    cu = torch.cat((starts, starts.new_tensor([B * T]))).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max())


def _varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    B, T, H, D = q.shape
    cu, longest = cu_seqlens(seg)
    y = _fa3_varlen(q.reshape(B * T, H, D), k.reshape(B * T, k.size(2), D),
                    v.reshape(B * T, v.size(2), D), cu, cu, longest, longest, causal=True)
    y = y[0] if isinstance(y, tuple) else y
    return y.reshape(B, T, H, D)
