"""Import a record's checkpoint into a golfkit run directory.

    python -m golf.interop import CHECKPOINT --out runs/NAME [--stack pr2135|pr1855|r29|r23|r21|r20|p1125|baseline]
                           [--env "VAR=... VAR=..."] [--calibrate N]

CHECKPOINT is a challenge script's full-precision `final_model.pt` (a bare torch state dict,
per-layer like the root train_gpt.py / PR #1125 / R20-R21, or banked like R23+ and R29), the
root script's int8+zlib `final_model.int8.ptz` ("int8_clean_per_row_v1"), or a record's
int6 `.ptz` ({"w", "m"}, lzma / zstd / zlib). The run directory gets `config.json`, `ema.pt`,
`train.log`, `import.json` (provenance) and, with `--calibrate N`, `hessians.pt` from N
training batches; `QUANT_ONLY=runs/NAME python train_gpt.py` then quantizes, evaluates and
packs it like a trained run.

Shapes come from the tensors (vocab, width, layers, heads from q_gain, KV heads, MLP width,
bigram table, VE width and layer count); what they cannot tell (RoPE dims and base, XSA
layers, LN scale, activation, softcap, QK-gain init) comes from the `--stack` preset, then
`--env`. Formulas: the records' forward pass; the int8 format: the baseline's .ptz export.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import lzma
import math
import os
import re
import shlex
import shutil
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

import quant
from golf.model import gpt as golf_model
from golf.run import rundir
from golf.run.atomic import atomic_save, atomic_write_json, atomic_write_text, file_sha256
from golf.run.config import PRESETS, Config
from golf.data.loader import DistributedTokenLoader
from golf.run.errors import InteropError, user_errors
from golf.model.gpt import GPT, ModelConfig
from golf.train.loop import resolve_grad_accum


# ----------------------------------------------------------------------------- stacks
@dataclass(frozen=True)
class Stack:
    """What a record's shapes cannot tell: golfkit env defaults plus two forward-pass facts."""
    name: str
    about: str
    env: Mapping[str, str]
    rope_full: bool          # ROPE_DIMS = head_dim (the stack rotates every dim)
    ntk: bool                # the hidden rescale base*(T/1024)^(rd/(rd-2)) applies (anchor §1.4)
    ln_on_output: bool = False  # P1125 scales branch outputs, not normed inputs (anchor §1.3)
    seq_len: int = 2048


_COMMON = {"LOGIT_SOFTCAP": "30", "XSA_GATE": "0", "TIE_EMBEDDINGS": "1"}
STACKS: dict[str, Stack] = {s.name: s for s in (
    Stack("baseline", "the challenge's root train_gpt.py (9L, relu^2, full RoPE, no XSA, no LN scale)",
          {**_COMMON, "ROPE_BASE": "10000", "XSA_LAST_N": "0", "LN_SCALE": "0",
           "LEAKY_RELU_SLOPE": "0", "QK_GAIN_INIT": "1.5"}, rope_full=True, ntk=False, seq_len=1024),
    Stack("p1125", "PR #1125 (XSA all, QK gain 4, partial RoPE 16, LN scale on branch outputs)",
          {**_COMMON, "ROPE_DIMS": "16", "ROPE_BASE": "10000", "XSA_LAST_N": "-1", "LN_SCALE": "1",
           "LEAKY_RELU_SLOPE": "0.5", "QK_GAIN_INIT": "4.0"}, rope_full=False, ntk=False,
          ln_on_output=True),
    Stack("r20", "R20 (XSA last 4, full RoPE, relu^2, no LN scale, bigram + smear)",
          {**_COMMON, "XSA_LAST_N": "4", "LN_SCALE": "0", "LEAKY_RELU_SLOPE": "0",
           "QK_GAIN_INIT": "1.5"}, rope_full=True, ntk=True),
    Stack("r21", "R21 (XSA last 4, partial RoPE 16, relu^2, LN scale, bigram + smear)",
          {**_COMMON, "ROPE_DIMS": "16", "XSA_LAST_N": "4", "LN_SCALE": "1", "LEAKY_RELU_SLOPE": "0",
           "QK_GAIN_INIT": "1.5"}, rope_full=False, ntk=True),
    Stack("r23", "R23 (banked, XSA last 4, LeakyReLU(0.5)^2, bigram + smear + VE)",
          {**_COMMON, "ROPE_DIMS": "16", "XSA_LAST_N": "4", "LN_SCALE": "1", "LEAKY_RELU_SLOPE": "0.5",
           "QK_GAIN_INIT": "1.5"}, rope_full=False, ntk=True),
    Stack("r29", "R25/R29 (banked, XSA all 11, LeakyReLU(0.5)^2, bigram + smear + VE)",
          {**_COMMON, "ROPE_DIMS": "16", "XSA_LAST_N": "-1", "LN_SCALE": "1", "LEAKY_RELU_SLOPE": "0.5",
           "QK_GAIN_INIT": "1.5"}, rope_full=False, ntk=True),
)}
# The frontier records' forward-pass settings are their presets' (golf.run.config), minus the shapes
# the tensors give; the depth loop (NUM_LOOPS, LOOP_START/END), PARALLEL_START_LAYER and the
# BOS mask cannot be read off tensors, so they come from here or --env.
_SHAPE_FIELDS = ("vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads", "mlp_mult",
                 "tie_embeddings")


def _preset_stack(name: str, about: str) -> Stack:
    keep = (set(ModelConfig.model_field_names()) - set(_SHAPE_FIELDS)) | {"eval_seq_len", "enable_looping_at"}
    env = {k.upper(): ("1" if v else "0") if isinstance(v, bool) else str(v)
           for k, v in PRESETS[name].items() if k in keep}
    return Stack(name, about, env, rope_full=False, ntk=False)


STACKS.update({s.name: s for s in (
    _preset_stack("pr1855", "PR #1855, 1.0611 (banked; depth loop 3-5 x3, lanes from 8, gated skips, "
                            "SmearGate with BOS mask, sparse attention gate, per-document attention)"),
    _preset_stack("pr2135", "PR #2135, 1.0565 (#1855's model + AsymLogit caps; no BOS mask, as it ran)"),
)})
STACK_ALIASES = {"r25": "r29", "root": "baseline"}
NTK_REF_LEN = 1024  # the records' Rotary hard-codes train_seq_len=1024

# keys the layouts may hold that carry no weights golfkit needs
IGNORED = (
    (re.compile(r"^blocks\.\d+\.attn\.rotary\.inv_freq$"), "RoPE buffer (recomputed from ROPE_BASE)"),
    (re.compile(r"^mtp_heads\.\d+\.weight$"), "multi-token-prediction head (training only; R29 drops it on export)"),
)
# record options golfkit does not implement: name pattern -> the record switch that made it
UNSUPPORTED = (
    (re.compile(r"\.attn\.attn_gate\."), "GATED_ATTENTION=1"),
    (re.compile(r"\.attn\.vr_lambda$"), "VALUE_RESIDUAL=1"),
    (re.compile(r"\.dtg_gate\."), "DTG_ENABLED=1"),
    (re.compile(r"^value_embeds\."), "per-layer value embeddings (pre-R23 VE form)"),
)
RECORD_FEATURE_FIELDS = ("bigram_vocab_size", "bigram_dim", "smear_gate", "ve_dim", "ve_layers")


# ----------------------------------------------------------------------------- reading
def _decompress(raw: bytes, path: Path) -> bytes:
    if raw[:4] == b"PK\x03\x04" or raw[:1] == b"\x80":
        return raw  # torch zip (or legacy pickle) file
    if raw[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(raw)
    if raw[:4] == b"\x28\xb5\x2f\xfd":
        try:
            import zstandard  # type: ignore
        except ImportError:
            raise InteropError(f"{path}: zstd-compressed; `pip install zstandard` to read it") from None
        return zstandard.ZstdDecompressor().decompress(raw, max_output_size=1 << 34)
    if raw[:1] == b"\x78":
        try:
            return zlib.decompress(raw)
        except zlib.error:
            pass
    raise InteropError(f"{path}: not a torch file nor a zlib/lzma/zstd-compressed one; pass a "
                       "record's final_model.pt or final_model.int8.ptz / .int6.ptz")


def dequantize_int8(obj: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The baseline's int8_clean_per_row_v1: q*scale per row (fp16 scale) for tensors with a
    per-row scale, q*scale per tensor otherwise; passthrough cast back to its original dtype."""
    try:
        quantized, scales, dtypes = obj["quantized"], obj["scales"], obj["dtypes"]
        passthrough = obj["passthrough"]
    except KeyError as exc:
        raise InteropError(f"{path}: int8_clean_per_row_v1 object lacks {exc.args[0]!r}") from None
    qmeta = obj.get("qmeta") or {}
    orig = obj.get("passthrough_orig_dtypes") or {}
    out: dict[str, torch.Tensor] = {}
    for name, q in quantized.items():
        if name not in scales or name not in dtypes:
            raise InteropError(f"{path}: quantized tensor {name!r} has no scale or dtype entry")
        s = scales[name]
        dtype = getattr(torch, str(dtypes[name]))
        if (qmeta.get(name) or {}).get("scheme") == "per_row" or s.ndim > 0:
            if s.numel() != q.shape[0]:
                raise InteropError(f"{path}: {name!r} has {q.shape[0]} rows but {s.numel()} row scales")
            t = q.float() * s.float().view(q.shape[0], *([1] * (q.ndim - 1)))
        else:
            t = q.float() * float(s.item())
        out[name] = t.to(dtype)
    for name, t in passthrough.items():
        if name in out:
            raise InteropError(f"{path}: {name!r} is both quantized and passed through")
        od = orig.get(name)
        out[name] = t.to(getattr(torch, od)) if isinstance(od, str) else t
    return out


def dequantize_mixed(obj: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The records' int6/int8 mixed export {"w": tensors, "m": meta} (R20-R29, per-layer names):
    meta "passthrough*" -> w[name]; {"type": ...} -> w[name.q] * w[name.scale] (per row or scalar)."""
    w, meta = obj["w"], obj["m"]
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for name, info in meta.items():
        if isinstance(info, str):
            if name not in w:
                raise InteropError(f"{path}: {name!r} is marked {info!r} but has no tensor")
            out[name] = w[name]
            used.add(name)
            continue
        try:
            q, s = w[name + ".q"], w[name + ".scale"]
        except KeyError:
            raise InteropError(f"{path}: {name!r} ({info}) lacks its .q / .scale tensors") from None
        used.update((name + ".q", name + ".scale"))
        if s.ndim > 0:
            out[name] = q.float() * s.float().view(q.shape[0], *([1] * (q.ndim - 1)))
        else:
            out[name] = q.float() * float(s.item())
    extra = sorted(set(w) - used)
    if extra:
        raise InteropError(f"{path}: tensor {extra[0]!r} has no entry in the export's metadata")
    return out


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, format) from a record's file; format: state_dict | int8_clean_per_row_v1 | int6_mixed."""
    p = Path(path)
    if not p.is_file():
        raise InteropError(f"{p}: file not found; pass a record's final_model.pt or .ptz")
    data = _decompress(p.read_bytes(), p)
    try:  # weights_only: a published checkpoint is untrusted input
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InteropError(f"{p}: not a readable torch file ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    if not isinstance(obj, dict):
        raise InteropError(f"{p}: holds a {type(obj).__name__}, not a state dict")
    if "__quant_format__" in obj:
        fmt = obj["__quant_format__"]
        if fmt != "int8_clean_per_row_v1":
            raise InteropError(f"{p}: quant format {fmt!r} is unknown; only int8_clean_per_row_v1 is read")
        return dequantize_int8(obj, p), fmt
    if set(obj) == {"w", "m"} and isinstance(obj["w"], dict):
        return dequantize_mixed(obj, p), "int6_mixed"
    if "config" in obj and "state_dict" in obj:
        raise InteropError(f"{p}: already a golfkit checkpoint (config + state_dict); copy it into a "
                           "run directory as ema.pt with its config.json instead of importing it")
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise InteropError(f"{p}: entry {bad[0]!r} is a {type(obj[bad[0]]).__name__}, not a tensor; "
                           "expected a bare state dict (torch.save(model.state_dict()))")
    return dict(obj), "state_dict"


# ----------------------------------------------------------------------------- layouts
BANKS = ("qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank")
BLOCK_PARAMS = ("attn.c_q.weight", "attn.c_k.weight", "attn.c_v.weight", "attn.proj.weight",
                "attn.q_gain", "mlp.fc.weight", "mlp.proj.weight", "attn_scale", "mlp_scale",
                "resid_mix")
GLOBAL_PARAMS = ("tok_emb.weight", "skip_weights", "lm_head.weight", "bigram.embed.weight",
                 "bigram.proj.weight", "bigram.scale", "smear.gate", "ve_shared.embed.weight",
                 "ve_shared.proj.weight", "ve_shared.scale")
# the frontier records' tensors (PR #1855 / #2135 state dicts), each optional
FRONTIER_GLOBALS = ("skip_gates", "parallel_post_lambdas", "parallel_resid_lambdas",
                    "smear_gate.weight", "smear_lambda", "softcap_pos", "softcap_neg")
FRONTIER_BLOCK_PARAMS = ("attn.attn_gate_w",)
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")
_VE_SCALE_RE = re.compile(r"^ve_layer_scales\.(\d+)$")


def _strip_prefixes(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop torch.compile / DDP wrapper prefixes (`_orig_mod.`, `module.`) when every key has one."""
    out = dict(sd)
    for pre in ("_orig_mod.", "module."):
        if out and all(k.startswith(pre) for k in out):
            out = {k[len(pre):]: v for k, v in out.items()}
    return out


def detect_layout(sd: Mapping[str, torch.Tensor]) -> str:
    """"banked" (R23+: qo/kv/mlp banks) or "per_layer" (root, P1125, R20/R21, unbanked exports)."""
    banks = [b for b in BANKS if b in sd]
    if banks and len(banks) != len(BANKS):
        missing = [b for b in BANKS if b not in sd]
        raise InteropError(f"{missing[0]}: missing; a banked checkpoint has all of {', '.join(BANKS)}")
    if banks and any(k.startswith("blocks.") and k.endswith((".c_q.weight", ".fc.weight")) for k in sd):
        raise InteropError("checkpoint has both banks (qo_bank, ...) and per-layer matrices "
                           "(blocks.N.attn.c_q.weight, ...); expected one layout")
    if not banks and "tok_emb.weight" not in sd:
        raise InteropError("tok_emb.weight: missing; this is not a challenge GPT state dict")
    return "banked" if banks else "per_layer"


def _shape_error(name: str, t: torch.Tensor, expected: tuple, what: str) -> InteropError:
    return InteropError(f"{name}: shape {tuple(t.shape)} fits no known layout; expected "
                        f"{tuple(expected)} ({what})")


def unbank(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """R23+/R29 banks -> per-layer names: qo_bank[i] = Q_i, qo_bank[L+i] = O_i; kv_bank[i] = K_i,
    kv_bank[L+i] = V_i; mlp_up_bank[i] = fc_i; mlp_down_bank[i] = proj_i (R29 _unbank_state_dict)."""
    qo, kv, up, down = (sd[b] for b in BANKS)
    if qo.ndim != 3 or qo.shape[0] % 2 or qo.shape[1] != qo.shape[2]:
        raise InteropError(f"qo_bank: shape {tuple(qo.shape)} fits no known layout; expected "
                           "(2*num_layers, model_dim, model_dim) (Q for each layer, then O)")
    L, d = qo.shape[0] // 2, qo.shape[1]
    if kv.ndim != 3 or kv.shape[0] != 2 * L or kv.shape[2] != d:
        raise _shape_error("kv_bank", kv, (2 * L, "kv_dim", d), "K for each layer, then V")
    if up.ndim != 3 or up.shape[0] != L or up.shape[2] != d:
        raise _shape_error("mlp_up_bank", up, (L, "mlp_hidden", d), "one up projection per layer")
    if down.shape != (L, d, up.shape[1]):
        raise _shape_error("mlp_down_bank", down, (L, d, up.shape[1]), "one down projection per layer")
    out = {k: v for k, v in sd.items() if k not in BANKS}
    for i in range(L):
        out[f"blocks.{i}.attn.c_q.weight"] = qo[i]
        out[f"blocks.{i}.attn.proj.weight"] = qo[L + i]
        out[f"blocks.{i}.attn.c_k.weight"] = kv[i]
        out[f"blocks.{i}.attn.c_v.weight"] = kv[L + i]
        out[f"blocks.{i}.mlp.fc.weight"] = up[i]
        out[f"blocks.{i}.mlp.proj.weight"] = down[i]
    return out


@dataclass
class Shapes:
    """What the tensors say about the network (per-layer names)."""
    vocab_size: int
    model_dim: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    mlp_hidden: int
    tie_embeddings: bool
    bigram: tuple[int, int] | None = None   # (buckets B, dim d_b)
    smear: bool = False
    ve_dim: int = 0
    ve_count: int = 0
    skip_gates: bool = False                # the frontier records' tensors (golf.interop._infer_frontier)
    lanes: bool = False
    smear_window: int = 0
    sparse_window: int = 0
    asym: bool = False

    @property
    def frontier(self) -> bool:
        return self.skip_gates or self.lanes or bool(self.smear_window or self.sparse_window) or self.asym

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def mlp_mult(self) -> float:
        return self.mlp_hidden / self.model_dim

    def env(self) -> dict[str, str]:
        e = {"VOCAB_SIZE": str(self.vocab_size), "MODEL_DIM": str(self.model_dim),
             "NUM_LAYERS": str(self.num_layers), "NUM_HEADS": str(self.num_heads),
             "NUM_KV_HEADS": str(self.num_kv_heads), "MLP_MULT": repr(self.mlp_mult),
             "TIE_EMBEDDINGS": "1" if self.tie_embeddings else "0"}
        e.update({"BIGRAM_VOCAB_SIZE": str(self.bigram[0]) if self.bigram else "0",
                  "SMEAR_GATE": "1" if self.smear else "0", "VE_DIM": str(self.ve_dim)})
        if self.bigram:
            e["BIGRAM_DIM"] = str(self.bigram[1])
        if self.frontier:
            e.update({"SKIP_GATES_ENABLED": str(int(self.skip_gates)),
                      "SMEAR_GATE_ENABLED": str(int(bool(self.smear_window))),
                      "SPARSE_ATTN_GATE_ENABLED": str(int(bool(self.sparse_window))),
                      "ASYM_LOGIT_RESCALE": str(int(self.asym))})
            if self.smear_window or self.sparse_window:
                e["GATE_WINDOW"] = str(self.smear_window or self.sparse_window)
            if not self.lanes:
                e["PARALLEL_START_LAYER"] = "0"
        return e


def classify_keys(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(known tensors, ignored notes); an unknown or unsupported key raises naming it."""
    known: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for name, t in sd.items():
        why = next((w for rx, w in IGNORED if rx.search(name)), None)
        if why:
            ignored.append(f"{name}: {why}")
            continue
        switch = next((s for rx, s in UNSUPPORTED if rx.search(name)), None)
        if switch:
            raise InteropError(f"{name}: the record was trained with {switch}, which golfkit does not "
                               "implement; it cannot be imported faithfully")
        m = _BLOCK_RE.match(name)
        if (m and m.group(2) in BLOCK_PARAMS + FRONTIER_BLOCK_PARAMS) or name in GLOBAL_PARAMS \
                or name in FRONTIER_GLOBALS or _VE_SCALE_RE.match(name):
            known[name] = t
            continue
        raise InteropError(f"{name}: unknown tensor {tuple(t.shape)}; expected tok_emb.weight, "
                           "blocks.N.{" + ",".join(BLOCK_PARAMS) + "}, skip_weights, lm_head.weight, "
                           "bigram.*, smear.gate, ve_shared.*, ve_layer_scales.N, the frontier's "
                           f"{', '.join(FRONTIER_GLOBALS + FRONTIER_BLOCK_PARAMS)} or the banks "
                           f"({', '.join(BANKS)})")
    return known, ignored


def infer_shapes(sd: Mapping[str, torch.Tensor]) -> Shapes:
    """Read the network's sizes off per-layer tensors, checking every shape against them."""
    emb = sd["tok_emb.weight"]
    if emb.ndim != 2:
        raise _shape_error("tok_emb.weight", emb, ("vocab", "model_dim"), "token embedding")
    V, d = emb.shape
    layers = sorted({int(m.group(1)) for k in sd if (m := _BLOCK_RE.match(k))})
    if not layers:
        raise InteropError("blocks.0.attn.c_q.weight: missing; the checkpoint has no blocks")
    L = layers[-1] + 1
    for i in range(L):
        for p in BLOCK_PARAMS:
            if f"blocks.{i}.{p}" not in sd:
                raise InteropError(f"blocks.{i}.{p}: missing (the checkpoint has blocks 0..{L - 1})")
    g = sd["blocks.0.attn.q_gain"]
    if g.ndim != 1 or g.numel() == 0 or d % g.numel():
        raise _shape_error("blocks.0.attn.q_gain", g, ("num_heads",), f"one gain per head; {d} % heads == 0")
    H = g.numel()
    hd = d // H
    kv_dim = sd["blocks.0.attn.c_k.weight"].shape[0]
    if kv_dim % hd or H % (kv_dim // hd or 1) or kv_dim == 0:
        raise InteropError(f"blocks.0.attn.c_k.weight: {kv_dim} rows is not num_kv_heads x head_dim "
                           f"{hd} with num_kv_heads dividing num_heads {H}")
    F = sd["blocks.0.mlp.fc.weight"].shape[0]
    expect = {"attn.c_q.weight": (d, d), "attn.c_k.weight": (kv_dim, d), "attn.c_v.weight": (kv_dim, d),
              "attn.proj.weight": (d, d), "attn.q_gain": (H,), "mlp.fc.weight": (F, d),
              "mlp.proj.weight": (d, F), "attn_scale": (d,), "mlp_scale": (d,), "resid_mix": (2, d)}
    for i in range(L):
        for p, shape in expect.items():
            t = sd[f"blocks.{i}.{p}"]
            if tuple(t.shape) != shape:
                raise _shape_error(f"blocks.{i}.{p}", t, shape, f"from tok_emb {V}x{d}, {H} heads, "
                                   f"kv_dim {kv_dim}, MLP {F}")
    frontier = any(k in sd for k in FRONTIER_GLOBALS) or any(k.endswith(FRONTIER_BLOCK_PARAMS) for k in sd)
    sw = sd.get("skip_weights")
    # a depth loop sizes the skips by its virtual plan; the built model checks that count
    n_skip = sw.shape[0] if frontier and sw is not None and sw.ndim == 2 else min(L // 2, L - L // 2)
    _expect(sd, "skip_weights", (n_skip, d), f"U-Net skips for {L} layers")
    tied = "lm_head.weight" not in sd
    if not tied:
        _expect(sd, "lm_head.weight", (V, d), "untied output head")
    if int(F / d * d) != F:
        raise InteropError(f"blocks.0.mlp.fc.weight: MLP width {F} is not int(MLP_MULT * {d}) for any "
                           "float MLP_MULT golfkit can store")
    shapes = Shapes(V, d, L, H, kv_dim // hd, F, tied)
    _infer_extras(sd, shapes, kv_dim)
    if frontier:
        _infer_frontier(sd, shapes, n_skip)
    return shapes


def _infer_frontier(sd: Mapping[str, torch.Tensor], shapes: Shapes, n_skip: int) -> None:
    """The frontier records' gates, lanes and caps into `shapes` (their shapes as the records store them)."""
    d, L, H = shapes.model_dim, shapes.num_layers, shapes.num_heads
    if "skip_gates" in sd:
        _expect(sd, "skip_gates", (n_skip, d), "one sigmoid gate per skip weight")
        shapes.skip_gates = True
    if "parallel_post_lambdas" in sd or "parallel_resid_lambdas" in sd:
        _expect(sd, "parallel_post_lambdas", (L, 2, 2), "per layer: 2 sources x 2 lanes")
        _expect(sd, "parallel_resid_lambdas", (L, 2), "per layer: one residual scale per lane")
        shapes.lanes = True
    if "smear_gate.weight" in sd or "smear_lambda" in sd:
        w = sd.get("smear_gate.weight")
        if w is None or w.ndim != 2 or w.shape[0] != 1:
            raise InteropError("smear_gate.weight: missing or not (1, GATE_WINDOW)")
        _expect(sd, "smear_lambda", (1,), "SmearGate strength")
        shapes.smear_window = w.shape[1]
    gates = [sd.get(f"blocks.{i}.attn.attn_gate_w") for i in range(L)]
    if any(g is not None for g in gates):
        window = next(g for g in gates if g is not None).shape[-1]
        for i in range(L):
            _expect(sd, f"blocks.{i}.attn.attn_gate_w", (H, window), "sparse attention gate per head")
        if shapes.smear_window and window != shapes.smear_window:
            raise InteropError(f"blocks.0.attn.attn_gate_w: window {window} differs from smear_gate's "
                               f"{shapes.smear_window}; golfkit shares one GATE_WINDOW")
        shapes.sparse_window = window
    if "softcap_pos" in sd or "softcap_neg" in sd:
        _expect(sd, "softcap_pos", (), "AsymLogit cap for z >= 0")
        _expect(sd, "softcap_neg", (), "AsymLogit cap for z < 0")
        shapes.asym = True


def _infer_extras(sd: Mapping[str, torch.Tensor], shapes: Shapes, kv_dim: int) -> None:
    """The record stack's optional tables (BigramHash, SmearGate, value embedding) into `shapes`."""
    V, d, L = shapes.vocab_size, shapes.model_dim, shapes.num_layers
    if any(k.startswith("bigram.") for k in sd):
        e = sd.get("bigram.embed.weight")
        if e is None or e.ndim != 2:
            raise InteropError("bigram.embed.weight: missing or not 2-D; expected (buckets, bigram_dim)")
        B, db = e.shape
        if db != d or "bigram.proj.weight" in sd:
            _expect(sd, "bigram.proj.weight", (d, db), "bigram projection to model_dim")
        _expect(sd, "bigram.scale", (), "bigram scalar")
        shapes.bigram = (B, db)
    if "smear.gate" in sd:
        _expect(sd, "smear.gate", (d,), "smear gate per channel")
        shapes.smear = True
    ve_scales = sorted(int(m.group(1)) for k in sd if (m := _VE_SCALE_RE.match(k)))
    if any(k.startswith("ve_shared.") for k in sd) or ve_scales:
        e = sd.get("ve_shared.embed.weight")
        if e is None or e.ndim != 2 or e.shape[0] != V:
            raise InteropError("ve_shared.embed.weight: missing or not (vocab, ve_dim) "
                               f"with vocab {V}")
        ve = e.shape[1]
        if ve != kv_dim or "ve_shared.proj.weight" in sd:
            _expect(sd, "ve_shared.proj.weight", (kv_dim, ve), "value-embedding projection to kv_dim")
        _expect(sd, "ve_shared.scale", (), "value-embedding scalar")
        if not ve_scales or ve_scales != list(range(len(ve_scales))):
            raise InteropError(f"ve_layer_scales.{len(ve_scales)}: expected ve_layer_scales.0..N-1, "
                               f"one per VE layer; found {ve_scales}")
        for k in ve_scales:
            _expect(sd, f"ve_layer_scales.{k}", (1,), "per-layer VE scale")
        if len(ve_scales) > L:
            raise InteropError(f"ve_layer_scales.{L}: more VE layers than the {L} blocks")
        shapes.ve_dim, shapes.ve_count = ve, len(ve_scales)


def _expect(sd: Mapping[str, torch.Tensor], name: str, shape: tuple, what: str) -> None:
    t = sd.get(name)
    if t is None:
        raise InteropError(f"{name}: missing; expected {tuple(shape)} ({what})")
    if tuple(t.shape) != tuple(shape):
        raise _shape_error(name, t, shape, what)


# ----------------------------------------------------------------------------- config
def parse_env(spec: str | Mapping[str, str] | list[str] | None) -> dict[str, str]:
    """`--env "A=1 B=2"` (shell-quoted, repeatable) -> {"A": "1", "B": "2"}; names must be Config fields."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        items = [f"{k}={v}" for k, v in spec.items()]
    else:
        items = [w for s in ([spec] if isinstance(spec, str) else spec) for w in shlex.split(s)]
    names = {f.name.upper() for f in dataclasses.fields(Config)}
    out: dict[str, str] = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise InteropError(f"--env {item!r}: expected VAR=VALUE")
        if key not in names:
            raise InteropError(f"--env {key}: not a golfkit variable (see golf/run/config.py)")
        out[key] = val
    return out


def resolve_stack(name: str | None, layout: str, shapes: Shapes) -> tuple[Stack, str | None]:
    """(stack, note); per-layer checkpoints must name theirs (their shapes fit several stacks)."""
    if name:
        key = STACK_ALIASES.get(name.lower(), name.lower())
        if key not in STACKS:
            raise InteropError(f"--stack {name}: unknown; use one of {', '.join(STACKS)}")
        return STACKS[key], None
    if layout == "banked" and shapes.frontier:
        raise InteropError("a banked checkpoint with the frontier's tensors (skip_gates, lambdas, "
                           "smear_gate, ...): pass --stack pr1855 or --stack pr2135")
    if layout == "banked":
        return STACKS["r29"], ("no --stack: a banked checkpoint, assuming r29 (R25/R29: XSA on all "
                               "layers); pass --stack r23 for R23 (XSA on the last 4)")
    extras = "with bigram/smear/VE tensors" if (shapes.bigram or shapes.smear or shapes.ve_dim) else "without extras"
    raise InteropError(f"a per-layer checkpoint {extras} fits several stacks: pass --stack "
                       f"{'|'.join(STACKS)} ({'; '.join(f'{s.name}: {s.about}' for s in STACKS.values())})")


def effective_rope_base(base: float, rope_dims: int, seq_len: int) -> float:
    """The base the records' Rotary really uses at length T: base*(T/1024)^(rd/(rd-2)) above 1024."""
    if seq_len > NTK_REF_LEN and rope_dims > 2:
        return base * (seq_len / NTK_REF_LEN) ** (rope_dims / (rope_dims - 2))
    return base


def build_config(shapes: Shapes, stack: Stack, user_env: Mapping[str, str], run_id: str,
                 notes: list[str]) -> tuple[Config, bool]:
    """(config, fold_ln): field defaults <- stack <- shapes <- --env (which may not contradict the
    shapes). fold_ln: the record's LN scale sits on branch outputs (P1125) and must be folded."""
    fields = {f.name for f in dataclasses.fields(Config)}
    if (shapes.bigram or shapes.smear or shapes.ve_dim) and not set(RECORD_FEATURE_FIELDS) <= fields:
        raise InteropError("this checkpoint has bigram/smear/VE tensors but this golfkit's Config "
                           "has no BIGRAM_VOCAB_SIZE/SMEAR_GATE/VE_DIM fields; update golfkit")
    env: dict[str, str] = dict(stack.env)
    env["TRAIN_SEQ_LEN"] = str(stack.seq_len)
    env.update(shapes.env())
    if "ve_layers" in fields:
        env["VE_LAYERS"] = ",".join(str(shapes.num_layers - shapes.ve_count + k)
                                    for k in range(shapes.ve_count)) or "-2,-1"
    if "smear_bos_fix" in fields:
        env["SMEAR_BOS_FIX"] = "0"  # every record in scope smears across document boundaries
    if "rope_ntk_ref_len" in fields:
        env["ROPE_NTK_REF_LEN"] = "0"
    if stack.rope_full:
        env["ROPE_DIMS"] = str(shapes.head_dim)
    env = {k: v for k, v in env.items() if k.lower() in fields}
    env.update(user_env)
    env["RUN_ID"] = run_id
    cfg = Config.from_env(env, cpu_preset=False)
    for key, val in shapes.env().items():
        if key.lower() not in fields or key not in user_env:
            continue
        want = Config.from_env({key: val}, cpu_preset=False)
        if getattr(cfg, key.lower()) != getattr(want, key.lower()):
            raise InteropError(f"--env {key}={user_env[key]} contradicts the checkpoint, whose tensors "
                               f"give {key}={val}")
    fold_ln = stack.ln_on_output and cfg.ln_scale
    if fold_ln:
        cfg = cfg.replace(ln_scale=False)  # folded into attn_scale / mlp_scale by convert()
        notes.append("ln_scale: P1125 multiplies branch outputs by 1/sqrt(l+1); folded exactly "
                     "into blocks.l.attn_scale and mlp_scale, LN_SCALE=0 in golfkit's config")
    if stack.ntk and "ROPE_BASE" not in user_env and cfg.rope_dims > 2 and \
            getattr(cfg, "rope_ntk_ref_len", 0) == 0:
        t = cfg.effective_eval_seq_len
        base = effective_rope_base(10000.0, cfg.rope_dims, t)
        cfg = cfg.replace(rope_base=base)
        notes.append(f"rope_base: {base:.3f}, the records' effective base at T={t} (their Rotary "
                     f"rescales 10000*(T/1024)^(rd/(rd-2)) per call); evaluate at EVAL_SEQ_LEN={t}, "
                     "or import with --env \"ROPE_BASE=10000 ROPE_NTK_REF_LEN=1024\" for the per-call rescale"
                     if "rope_ntk_ref_len" in fields else
                     f"rope_base: {base:.3f}, the records' effective base at T={t}; evaluate at "
                     f"EVAL_SEQ_LEN={t} (at other lengths the record's own forward differs)")
    return cfg, fold_ln


# ----------------------------------------------------------------------------- conversion
def golf_rope_sign() -> int:
    """+1 if golf.model.gpt.apply_rope turns pairs by +pos*freq, -1 if by -pos*freq (the records').
    Measured on the module's current function (looked up at call time, so a changed rotation is
    what the conversion follows)."""
    cos, sin = golf_model.rope_tables(2, 2, 10000.0, "cpu", torch.float32)
    x = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2).expand(1, 2, 1, 2)
    y = golf_model.apply_rope(x, cos, sin, 2)
    # position 1, freq 1: (1, 0) -> (cos 1, +-sin 1)
    return 1 if float(y[0, 1, 0, 1]) > 0 else -1


RECORD_ROPE_SIGN = -1  # records: [x1 cos + x2 sin, -x1 sin + x2 cos] (the records' Rotary)


def convert(sd: Mapping[str, torch.Tensor], cfg: Config, fold_ln: bool,
            notes: list[str]) -> dict[str, torch.Tensor]:
    """Per-layer record tensors -> golfkit's (fp32): RoPE direction and LN-scale placement."""
    out = {k: v.detach().to(torch.float32).clone() for k, v in sd.items()}
    if cfg.rope_dims > 0 and golf_rope_sign() != RECORD_ROPE_SIGN:
        # R(-t) = P R(t) P with P negating the pair's second half; rms(P q) = P rms(q), so
        # negating those rows of W_q and W_k gives the same scores under golfkit's R(+t)
        half, rd, hd = cfg.rope_dims // 2, cfg.rope_dims, cfg.head_dim
        for i in range(cfg.num_layers):
            for p in ("c_q", "c_k"):
                w = out[f"blocks.{i}.attn.{p}.weight"]
                w.view(-1, hd, w.shape[1])[:, half:rd, :].neg_()
        notes.append("rope: golfkit turns pairs the other way than the records; negated rows "
                     f"[{half},{rd}) of every head in c_q and c_k (exact)")
    if fold_ln:
        for i in range(cfg.num_layers):
            s = 1.0 / math.sqrt(i + 1)
            out[f"blocks.{i}.attn_scale"].mul_(s)
            out[f"blocks.{i}.mlp_scale"].mul_(s)
    return out


def build_model(cfg: Config, state: Mapping[str, torch.Tensor], provenance: Mapping[str, str]):
    """golf.model.gpt.GPT(cfg) with `state` loaded strictly; any mismatch names the tensor."""
    try:
        model = GPT(cfg)
    except ValueError as exc:
        raise InteropError(f"golfkit cannot build this network: {exc}") from None
    want = model.state_dict()
    for name in state:
        if name not in want:
            raise InteropError(f"{provenance.get(name, name)}: golfkit's model for this config has no "
                               f"{name}; check --stack / --env (VE_LAYERS, BIGRAM_*, ...)")
    for name, t in want.items():
        if name not in state:
            raise InteropError(f"{name}: golfkit's model for this config needs it but the checkpoint "
                               "has none; check --stack / --env")
        if tuple(t.shape) != tuple(state[name].shape):
            raise InteropError(f"{provenance.get(name, name)}: shape {tuple(state[name].shape)} but "
                               f"golfkit expects {tuple(t.shape)} for {name}")
    model.load_state_dict(dict(state), strict=True)
    model.eval()
    with torch.no_grad():
        z = model(torch.zeros(1, 4, dtype=torch.long))
    if not torch.isfinite(z).all():
        raise InteropError("the imported model's logits are not finite; the checkpoint is damaged "
                           "or --stack / --env does not match it")
    return model


# ----------------------------------------------------------------------------- calibration
def calibrate(model, cfg: Config, n_batches: int, log: Callable[[str], None]) -> dict[str, Any]:
    """hessians.pt content from n_batches of training data, as golf/train/loop.py collects it."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    accum = resolve_grad_accum(cfg, 1)
    loader = DistributedTokenLoader(cfg.data_path, rank=0, world_size=1, seed=cfg.seed,
                                    vocab_size=cfg.vocab_size)
    t0 = time.perf_counter()
    batches = [loader.next_batch(cfg.train_batch_tokens, cfg.train_seq_len, accum)[0].to(dev)
               for _ in range(n_batches)]
    model = model.to(dev)
    ac = torch.autocast("cuda", dtype=torch.bfloat16) if dev == "cuda" else torch.autocast("cpu", enabled=False)
    with ac:
        hs = quant.collect_hessians(model, batches)
    hs = {k: v.float().cpu() for k, v in hs.items()}
    model.to("cpu")
    ms = 1000.0 * (time.perf_counter() - t0)
    n_tok = sum(b.numel() for b in batches)
    log(f"import:calibrated hessians:{len(hs)} batches:{n_batches} tokens:{n_tok} "
        f"elapsed_ms:{ms:.0f} data:{cfg.data_path}")
    # source "train": training shards only. No train_budget_ms: this ran after the record's
    # training, so pack reports calibration-in-budget as not shown (WARN), never as a PASS.
    return {"hessians": hs, "tokens": n_tok, "elapsed_ms": ms, "train_budget_ms": None,
            "source": "train", "collected_by": "golf.interop --calibrate"}


# ----------------------------------------------------------------------------- import
@dataclass
class ImportResult:
    out_dir: Path
    config: Config
    layout: str
    stack: str
    source_format: str
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InteropError(f"{out}: already exists and is not empty; pick a new --out (nothing was "
                           "written or overwritten)")


def _load_state(src: Path) -> tuple[dict[str, torch.Tensor], str, str, dict[str, str]]:
    """The checkpoint's tensors in per-layer form: (state, file format, layout, provenance),
    provenance naming the bank slice each unbanked matrix came from."""
    raw, fmt = read_checkpoint(src)
    sd = _strip_prefixes(raw)
    layout = detect_layout(sd)
    provenance: dict[str, str] = {}
    if layout == "banked":
        L = sd["qo_bank"].shape[0] // 2 if sd["qo_bank"].ndim == 3 else 0
        sd = unbank(sd)
        for i in range(L):
            provenance.update({f"blocks.{i}.attn.c_q.weight": f"qo_bank[{i}]",
                               f"blocks.{i}.attn.proj.weight": f"qo_bank[{L + i}]",
                               f"blocks.{i}.attn.c_k.weight": f"kv_bank[{i}]",
                               f"blocks.{i}.attn.c_v.weight": f"kv_bank[{L + i}]",
                               f"blocks.{i}.mlp.fc.weight": f"mlp_up_bank[{i}]",
                               f"blocks.{i}.mlp.proj.weight": f"mlp_down_bank[{i}]"})
    return sd, fmt, layout, provenance


def _import_warnings(shapes: "Shapes", stack: str) -> list[str]:
    """What the imported model does differently from the record's own run (said in train.log)."""
    warnings = ["numerics: the records run bf16 autocast with FlashAttention-3 on H100; golfkit's "
                "fp32 (CPU) or bf16-SDPA (GPU) val_bpb of the same weights differs in the last "
                "digits, not in the model"]
    if shapes.smear:
        warnings.append("smear: crosses document boundaries as in the record (SMEAR_BOS_FIX=0)")
    if shapes.frontier:
        warnings.append("looping: the imported model runs with the depth loop on (model.looping), "
                        "as the records evaluate; NUM_LOOPS/LOOP_START/LOOP_END/PARALLEL_START_LAYER "
                        "and SMEAR_GATE_BOS_FIX come from --stack / --env, not from tensors")
    if stack.startswith("r"):
        warnings.append("orth: R29's ORTH_LAST_N leaves no tensor; it is assumed 0 (its default)")
    return warnings


@dataclass(frozen=True)
class ImportSource:
    """Where imported weights came from: the file, its format and tensor layout, the stack
    chosen for it, the file's sha256 (train.log's first line and import.json's fields)."""
    path: Path
    format: str
    layout: str
    stack: str
    sha256: str


def _import_lines(source: ImportSource, shapes: "Shapes", cfg: Config, ignored: list[str],
                  notes: list[str], warnings: list[str]) -> list[str]:
    """The import's key:value lines: source, shapes, the config it chose, what it ignored."""
    lines = [f"import:source {source.path} format:{source.format} layout:{source.layout} "
             f"stack:{source.stack} sha256:{source.sha256}",
             f"import:shapes vocab:{shapes.vocab_size} layers:{shapes.num_layers} dim:{shapes.model_dim} "
             f"heads:{shapes.num_heads}/{shapes.num_kv_heads} mlp:{shapes.mlp_hidden} tied:{int(shapes.tie_embeddings)} "
             f"bigram:{'x'.join(map(str, shapes.bigram)) if shapes.bigram else 0} smear:{int(shapes.smear)} "
             f"ve:{shapes.ve_dim}x{shapes.ve_count}",
             "import:config " + " ".join(f"{k.upper()}={getattr(cfg, k)}" for k in (
                 "rope_dims", "rope_base", "xsa_last_n", "ln_scale", "leaky_relu_slope", "logit_softcap",
                 "qk_gain_init", "train_seq_len") + tuple(k for k in ("ve_layers",) if shapes.ve_count))]
    return (lines + [f"import:ignored {n}" for n in ignored] + [f"import:note {n}" for n in notes]
            + [f"import:warning {w}" for w in warnings])


def _write_run_dir(out: Path, cfg: Config, ema_sd: dict, hess: dict | None, info: dict,
                   lines: list[str]) -> None:
    """All files into a hidden sibling, then one rename: `out` appears complete or not at all."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.import-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        atomic_write_json(tmp / rundir.CONFIG, {**cfg.to_dict(), "world_size": 1, "cwd": os.getcwd()})
        atomic_save({"config": cfg.to_dict(), "state_dict": ema_sd}, tmp / rundir.EMA)
        if hess is not None:
            atomic_save(hess, tmp / rundir.HESSIANS)
        atomic_write_json(tmp / rundir.IMPORT_INFO, info)
        atomic_write_text(tmp / rundir.TRAIN_LOG, "\n".join(lines) + "\n")
        _check_out(out)
        os.rename(tmp, out)  # replaces an empty folder; fails (ENOTEMPTY) on a filled one
    except OSError as exc:
        raise InteropError(f"{out}: could not create the run directory ({exc}); nothing was "
                           "overwritten") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def import_checkpoint(src: str | os.PathLike, out: str | os.PathLike, *,
                      env: str | Mapping[str, str] | list[str] | None = None,
                      stack: str | None = None, calibrate_batches: int = 0,
                      log: Callable[[str], None] = print) -> ImportResult:
    """Convert a record checkpoint into the golfkit run directory `out` (created; must not hold files)."""
    src, out = Path(src), Path(out)
    _check_out(out)
    user_env = parse_env(env)
    sd, fmt, layout, provenance = _load_state(src)
    known, ignored = classify_keys(sd)
    shapes = infer_shapes(known)
    st, stack_note = resolve_stack(stack, layout, shapes)
    notes: list[str] = [stack_note] if stack_note else []
    cfg, fold_ln = build_config(shapes, st, user_env, out.name, notes)
    if "VE_LAYERS" not in user_env and shapes.ve_count:
        notes.append(f"ve_layers: {cfg.ve_layers} (the last {shapes.ve_count}, as in the records; "
                     "override with --env VE_LAYERS=...)")
    state = convert(known, cfg, fold_ln, notes)
    model = build_model(cfg, state, provenance)
    warnings = _import_warnings(shapes, st.name)
    source = ImportSource(src, fmt, layout, st.name, file_sha256(src))
    lines = _import_lines(source, shapes, cfg, ignored, notes, warnings)
    for line in lines:
        log(line)

    def say(msg: str) -> None:
        lines.append(msg)
        log(msg)

    hess = calibrate(model, cfg, calibrate_batches, say) if calibrate_batches > 0 else None
    if hess is None:
        say(f"import:hint no hessians.pt: QUANT_ONLY's GPTQ falls back to identity Hessians "
            f"(\"quant:warning no hessians.pt\"); re-import with --calibrate {cfg.gptq_calib_batches} "
            f"to collect training-data Hessians from DATA_PATH={cfg.data_path}")
    say(f"import:done {out} params:{sum(t.numel() for t in state.values())}")
    ema_sd = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    info = {"source": str(src), "source_sha256": source.sha256, "format": fmt, "layout": layout,
            "stack": st.name, "env": user_env, "ignored": ignored, "notes": notes,
            "warnings": warnings, "hessians": hess is not None}
    _write_run_dir(out, cfg, ema_sd, hess, info, lines)
    return ImportResult(out, cfg, layout, st.name, fmt, notes, warnings)


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m golf.interop",
                                 description="Import a Parameter Golf record checkpoint into a golfkit run directory.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    imp = sub.add_parser("import", help="final_model.pt / .ptz -> runs/NAME (config.json, ema.pt)")
    imp.add_argument("checkpoint", help="record final_model.pt, final_model.int8.ptz or .int6.ptz")
    imp.add_argument("--out", required=True, help="new run directory, e.g. runs/r29_seed1337")
    imp.add_argument("--stack", help="forward-pass defaults: " + "; ".join(
        f"{s.name}: {s.about}" for s in STACKS.values()) + " (default for a banked file: r29)")
    imp.add_argument("--env", action="append", default=[],
                     help='golfkit variables, e.g. --env "DATA_PATH=... EVAL_SEQ_LEN=2048" (repeatable)')
    imp.add_argument("--calibrate", type=int, default=0, metavar="N",
                     help="collect GPTQ Hessians from N training batches of DATA_PATH (hessians.pt)")
    args = ap.parse_args(argv)
    with user_errors():
        if args.calibrate < 0:
            raise InteropError("--calibrate N: N must be >= 0")
        res = import_checkpoint(args.checkpoint, args.out, env=args.env, stack=args.stack,
                                calibrate_batches=args.calibrate)
        print(f"next: QUANT_ONLY={res.out_dir} python train_gpt.py   "
              f"(pre-quant only: python eval_bpb.py --checkpoint {res.out_dir / 'ema.pt'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
