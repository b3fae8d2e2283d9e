"""Hyperparameters, read from the challenge's environment-variable names.

One frozen dataclass is the single source of truth: train_gpt.py, eval_bpb.py and
pack.py all build it with `Config.from_env()` and persist it as `config.json` in the
run directory, so a run can be re-created exactly from that file.

Each field declares its environment variable with golf.run.settings.setting (meaning, range,
choices): that table is --help, docs/settings.md and the validation, so a new setting is one
field here. The field defaults are the feature-less 11L stack (close to PR #1125, "p1125"), so a
config.json written before a feature existed loads as the model it was. Presets
(`PRESET=...`, see PRESETS) are layered on top; explicit environment variables still win.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch

from golf.run.errors import ConfigError
from golf.model.gpt import ModelConfig, parameter_count
from golf.train.muon import NS_COEFF_SETS
from golf.train.seq_schedule import parse_seq_schedule
from golf.run.settings import fields_table, parse_env, register, setting, value_problems
from golf.run.rules import CAP_BYTES, TRAIN_LIMIT_S, scaled_cap_bytes
from quant.methods import METHODS as QUANT_METHODS, budget_methods, default_method

# The records' effective RoPE base. Their Rotary is built with a hard-coded train_seq_len of
# 1024 and rescales base' = base * (T/1024)^(rd/(rd-2)) above it, so at T = 2048 with 16
# rotated dims they train with 10000 * 2**(16/14) ~= 22,082 (visible in the R29 record's code).
R29_ROPE_BASE: float = 10000.0 * 2.0 ** (16 / 14)

# The 1.1122 record (R29): model knobs plus the loop knobs it
# changes from golfkit's defaults. Shapes (11L/512/8H/4KV/MLP 3x) are the field defaults.
R29_PRESET: dict[str, Any] = {
    "qk_gain_init": 1.5,
    "xsa_last_n": -1,
    "bigram_vocab_size": 2816,
    "bigram_dim": 112,
    "smear_gate": True,
    "smear_bos_fix": False,          # R29 predates the 2026-04-27 BOS fix
    "ve_dim": 128,
    "ve_layers": "-2,-1",            # the last two layers: 9,10 at 11 layers
    "rope_dims": 16,
    "rope_base": R29_ROPE_BASE,
    "rope_ntk_ref_len": 0,
    "warmdown_iters": 3500,
    "gptq_reserve_seconds": 14.0,
    "ema_decay": 0.997,
}

# golfkit's pre-record stack (close to P1125): QK gain 4.0, RoPE base 10000, no bigram, smear
# or VE. Optimizer and loop values stay golfkit's (the records' ones), so r29 vs p1125 is an
# A/B of the model alone.
P1125_PRESET: dict[str, Any] = {
    "qk_gain_init": 4.0,
    "xsa_last_n": -1,
    "bigram_vocab_size": 0,
    "smear_gate": False,
    "smear_bos_fix": False,
    "ve_dim": 0,
    "rope_dims": 16,
    "rope_base": 10000.0,
    "rope_ntk_ref_len": 0,
    "warmdown_iters": 3500,
    "gptq_reserve_seconds": 8.0,
    "ema_decay": 0.997,
}

# Sizes for a machine without CUDA: the same architecture, shrunk so the main job trains on
# 2 CPU cores in a few minutes.
CPU_SIZES: dict[str, Any] = {
    "data_path": "./data/datasets/embedded_sp1024",
    "tokenizer_path": "./data/tokenizers/embedded_1024_bpe.model",
    "num_layers": 4,
    "model_dim": 128,
    "num_heads": 4,
    "num_kv_heads": 2,
    "train_seq_len": 256,
    "train_batch_tokens": 8192,
    "grad_accum_steps": 1,
    "iterations": 400,
    "warmdown_iters": 120,
    # a safety cap only: the CPU demo is bounded by ITERATIONS, so a slow machine still does all
    # 400 steps and gets the same weights (the 240 s cap stopped a busy machine at step 248)
    "max_wallclock_seconds": 3600.0,
    "val_loss_every": 100,
    "train_log_every": 10,
    "warmup_steps": 0,
    "ema_decay": 0.99,
    "val_batch_size": 32768,
    "compile": False,
    "eval_seq_len": 256,
    "eval_stride": 0,
    "gptq_calib_batches": 8,
    # Hessians for every block matrix (the scaled cap quantizes them all) took 20 s on two busy
    # cores: the reserve keeps calibration inside the wallclock budget the pack check enforces
    "gptq_reserve_seconds": 30.0,
    # the small model's block matrices are below the challenge's 65,536-element passthrough
    # threshold; quantize them anyway so the CPU demo exercises GPTQ and shows a real gap
    "quant_small_numel": 4096,
}

# The CPU preset: R29's features at small sizes (bigram 512x32, VE 32 on the last two layers).
CPU_PRESET: dict[str, Any] = {**R29_PRESET, **CPU_SIZES, "bigram_vocab_size": 512,
                              "bigram_dim": 32, "ve_dim": 32}
CPU_P1125_PRESET: dict[str, Any] = {**P1125_PRESET, **CPU_SIZES}
# --- the frontier stack (issue 29: PR #1855 and #2135) ---------------------------------------
# PR #1855 (the 1.0611 record) as it ran: its launch command / log header values wherever golfkit
# has the setting, with its DocumentPackingLoader (DOC_PACKING). Not reproduced: its LoRA TTT;
# LQER is record_1855's (groups of 64).
PR1855_PRESET: dict[str, Any] = {
    "data_path": "./data/datasets/fineweb10B_sp8192_lossless_caps_caseops_v1_reserved",
    "tokenizer_path": "./data/tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model",
    "vocab_size": 8192, "mlp_mult": 4.0, "qk_gain_init": 5.0, "xsa_last_n": -1,
    "rope_dims": 16, "rope_base": 10000.0, "rope_ntk_ref_len": 0,        # ROPE_YARN=0: no rescale
    "bigram_vocab_size": 0, "smear_gate": False, "smear_bos_fix": False, "ve_dim": 0,
    "num_loops": 2, "loop_start": 3, "loop_end": 5, "enable_looping_at": 0.35,
    "skip_gates_enabled": True, "parallel_start_layer": 8, "parallel_final_lane": "mean",
    "smear_gate_enabled": True, "smear_gate_bos_fix": True, "gate_window": 12,
    "sparse_attn_gate_enabled": True, "sparse_attn_gate_scale": 0.5,
    "asym_logit_rescale": False, "asym_logit_train": False, "doc_attention": True, "doc_packing": True,
    "train_seq_len": 2048, "train_batch_tokens": 786_432, "warmup_steps": 20,
    "warmdown_frac": 0.85, "min_lr": 0.1, "val_loss_every": 0,
    "muon_ns_coeffs": "polar_express", "muon_row_normalize": True, "embed_wd": 0.085,
    "matrix_lr": 0.026, "tied_embed_lr": 0.03, "scalar_lr": 0.02, "muon_momentum": 0.97,
    "muon_momentum_warmup_start": 0.92, "muon_momentum_warmup_steps": 1500, "muon_ns_steps": 5,
    "muon_wd": 0.095, "adam_wd": 0.02, "beta1": 0.9, "beta2": 0.99, "grad_clip_norm": 0.3,
    "ema_decay": 0.9965, "ema_warmup": False, "gptq_reserve_seconds": 0.5,
    "eval_seq_len": 2048, "quant_method": "record_1855", "gptq_calib_batches": 16,
}
# PR #2135 (the 1.0565 record) as it ran: #1855 plus MATRIX_LR 0.028, 32 calibration batches,
# EVAL_SEQ_LEN 2560, validation every 4000 steps, AsymLogit's two caps (inert: never trained),
# and SMEAR_GATE_BOS_FIX=0 (its launch command; the README claims the fix). Its LQER groups of 32,
# n-gram tilt and one-phase TTT are not golfkit settings.
PR2135_PRESET: dict[str, Any] = {
    **PR1855_PRESET, "matrix_lr": 0.028, "gptq_calib_batches": 32, "eval_seq_len": 2560,
    "val_loss_every": 4000, "smear_gate_bos_fix": False,
    "asym_logit_rescale": True, "asym_logit_train": False,
}
# golfkit's frontier: #2135 with its two bugs fixed. The BOS mask is on (no document reaches the
# next through the SmearGate, as in #1855), and the AsymLogit caps really train: the training loss
# goes through them (golfkit has no fused scalar-cap loss) and they join AdamW at SCALAR_LR
# without weight decay (golf.train.optim.NO_DECAY).
FRONTIER_PRESET: dict[str, Any] = {**PR2135_PRESET, "smear_gate_bos_fix": True,
                                   "asym_logit_train": True}
# The CPU default (issue 29): the frontier's model features, shrunk so the CPU main job costs about
# what `cpu` does (at cpu's 4 x 128 with MLP 4x it took ~2x cpu's time per step): 3 layers x 128,
# MLP 3x, layer 1 looped once from 35 % of training (virtual 0,1,1,2), two lanes on layer 2,
# per-document attention on TRAIN_SEQ_LEN rows (DOC_PACKING off: the seeded row loader, and no
# banded attention over 8,192-token rows), golfkit's EMA warm-up (a fixed 0.99 would keep 67 % of
# the initial weights after 40 steps). Measurements: docs/frontier.md, docs/ablations.md.
CPU_FRONTIER_PRESET: dict[str, Any] = {
    **FRONTIER_PRESET, **CPU_SIZES, "vocab_size": 1024, "num_layers": 3, "mlp_mult": 3.0,
    "loop_start": 1, "loop_end": 1, "num_loops": 1, "parallel_start_layer": 2,
    "doc_packing": False, "ema_warmup": True, "quant_method": "gptq", "eval_seq_len": 256,
    "gptq_calib_batches": 8, "val_loss_every": 125,
    # half cpu's batch, more steps: its step costs ~1.4x cpu's at equal tokens (elementwise ops of
    # the gates, lanes and loop), and the main job must stay under ~4 minutes on 2 cores
    "train_batch_tokens": 4096, "iterations": 500, "warmdown_iters": 150,
}
FRONTIER_PRESETS: dict[str, dict[str, Any]] = {
    "pr1855": PR1855_PRESET, "pr2135": PR2135_PRESET, "frontier": FRONTIER_PRESET,
    "cpu_frontier": CPU_FRONTIER_PRESET,
}

# Presets whose default BUDGET_BYTES is the scaled cap (golf.run.rules.scaled_cap_bytes) of the model
# actually configured (NUM_LAYERS=6 under PRESET=cpu gets its own cap); BUDGET_BYTES set wins.
SCALED_CAP_PRESETS = ("cpu", "cpu_p1125", "cpu_frontier")

PRESETS: dict[str, dict[str, Any]] = {
    "r29": R29_PRESET, "p1125": P1125_PRESET, "cpu": CPU_PRESET, "cpu_p1125": CPU_P1125_PRESET,
    **FRONTIER_PRESETS,
}
# PRESET=11l was the name of the GPU stack before the record stack existed: it stays p1125
# What a machine gets without PRESET (issue 29: the board's stack; PRESET=r29 / cpu keep R29's)
DEFAULT_GPU_PRESET, DEFAULT_CPU_PRESET = "frontier", "cpu_frontier"
PRESET_ALIASES: dict[str, str] = {"11l": "p1125"}
CPU_EQUIVALENT: dict[str, str] = {"r29": "cpu", "p1125": "cpu_p1125", "pr1855": "cpu_frontier",
                                  "pr2135": "cpu_frontier", "frontier": "cpu_frontier"}
OPTIM_GROUPS = ("records", "legacy")
QUANT_SCALES = ("log", "fp16")  # quant.SCALE_FORMATS (golf does not import quant here)
QUANT_ROW_STEPS = ("fisher", "flat", "sdclip")  # quant.policy.ROW_STEPS, likewise

@dataclass(frozen=True)
class Config(ModelConfig):
    """Every setting of a run: the model's fields (inherited from golf.model.gpt.ModelConfig, the
    artifact's model dict) and the data, training, optimizer, eval and quantization ones."""
    # --- data -------------------------------------------------------------------
    data_path: str = setting("./data/datasets/fineweb10B_sp1024", "folder of the dataset's shards")
    tokenizer_path: str = setting("./data/tokenizers/fineweb_1024_bpe.model", "SentencePiece model")
    # --- training -----------------------------------------------------------------
    train_seq_len: int = setting(2048, "training sequence length", ge=1)
    train_batch_tokens: int = setting(786_432, "tokens per optimizer step (global)", ge=1)
    grad_accum_steps: int = setting(0, "micro-batches per step (0 = 8 // world_size, min 1)", ge=0)
    iterations: int = setting(20_000, "optimizer steps (upper bound; on GPU the wallclock cap "
                              "usually stops first)", ge=0)
    warmup_steps: int = setting(20, "compile priming steps, state restored after", ge=0)
    warmdown_iters: int = setting(3500, "steps' worth of LR decay to 0 at the end", ge=0)
    enable_looping_at: float = setting(0.0, "training fraction (max of steps/ITERATIONS and "
                                       "time/cap) at which NUM_LOOPS's loop turns on, one-way; 0 "
                                       "= from the start", ge=0, le=1)
    max_wallclock_seconds: float = setting(TRAIN_LIMIT_S, "training + calibration wallclock cap "
                                           "(0 = no cap; cpu: a safety cap)", ge=0)
    val_loss_every: int = setting(4000, "steps between validations (0 = only at the end)", ge=0)
    train_log_every: int = setting(100, "steps between train-loss log lines", ge=0)
    checkpoint_every: int = setting(0, "steps between resumable checkpoints (0 = only on "
                                    "SIGINT/SIGTERM)", ge=0)
    seed: int = setting(1337, "seed of the weights and the data order", ge=0)
    run_id: str = setting("", "run folder name under RUNS_DIR (default: timestamp)")
    runs_dir: str = setting("./runs", "parent of the run folders")
    resume: str = setting("", "a run folder or checkpoint.pt to continue")
    overwrite: bool = setting(False, "reuse a RUN_ID folder, its earlier run's files removed")
    # --- optimizer ----------------------------------------------------------------
    matrix_lr: float = setting(0.025, "Muon learning rate (block matrices)", gt=0)
    tied_embed_lr: float = setting(0.035, "Adam learning rate of the tied embedding", gt=0)
    scalar_lr: float = setting(0.025, "Adam learning rate of gains, scales, mixes", gt=0)
    muon_momentum: float = setting(0.99, "Muon momentum after warm-up", ge=0, lt=1)
    muon_momentum_warmup_start: float = setting(0.92, "Muon momentum at step 0", ge=0, lt=1)
    muon_momentum_warmup_steps: int = setting(1500, "steps of the momentum warm-up", ge=0)
    muon_ns_steps: int = setting(5, "Newton-Schulz iterations per Muon step", ge=1)
    muon_wd: float = setting(0.04, "decoupled weight decay of Muon", ge=0)
    adam_wd: float = setting(0.04, "decoupled weight decay of Adam", ge=0)
    beta1: float = setting(0.9, "Adam beta1", ge=0, lt=1)
    beta2: float = setting(0.95, "Adam beta2", ge=0, lt=1)
    adam_eps: float = setting(1e-8, "Adam epsilon", gt=0)
    # the 2026-04 records' optimizer and schedule options (PR #1855 / #2135); off by default
    muon_ns_coeffs: str = setting("classic", "classic: (3.4445, -4.775, 2.0315) each step; "
                                  "polar_express: the records' five tuples",
                                  choices=tuple(NS_COEFF_SETS))
    muon_row_normalize: bool = setting(False, "each row of the Nesterov update / its L2 norm "
                                       "before Newton-Schulz")
    embed_wd: float = setting(-1.0, "AdamW decay of the embedding group (-1 = ADAM_WD)", ge=-1)
    warmdown_frac: float = setting(0.0, ">0: LR 1 until the last fraction of training, then "
                                   "linear to MIN_LR; replaces WARMDOWN_ITERS", ge=0, lt=1)
    min_lr: float = setting(0.0, "the LR factor's floor under WARMDOWN_FRAC", ge=0, le=1)
    # --- the 2026-04 records' loader and #2014's progressive context (golf.data.packing, golf.train.seq_schedule)
    doc_packing: bool = setting(False, "records' document-packing loader: sequential packed rows "
                                "of TRAIN_BATCH_TOKENS/(ranks x accum) tokens, attention cut at BOS "
                                "and every TRAIN_SEQ_LEN; needs DOC_ATTENTION=1")
    train_seq_schedule: str = setting("", "#2014's progressive context: len@fraction,... e.g. "
                                      "1024@0.1,2048@0.7,3072@1.0 (the last length = "
                                      "TRAIN_SEQ_LEN; empty = off)")
    seq_change_warmup_steps: int = setting(0, "LR x (step-s0+1)/N for N steps after each "
                                           "TRAIN_SEQ_SCHEDULE change (0 = none)", ge=0)
    optim_groups: str = setting("records", "records: only block matrices in Muon; legacy: every "
                                "2-D block tensor", choices=OPTIM_GROUPS)
    grad_clip_norm: float = setting(0.3, "clip of the all-reduced gradient norm (0 = off)", ge=0)
    muon_sharded: bool = setting(True, "each rank orthogonalises its share of the banks (0 = "
                                 "every rank all)")
    muon_reduce_bf16: bool = setting(True, "bank gradients reduced in bf16 on NCCL (fp32 on gloo)")
    ema_decay: float = setting(0.997, "EMA of the weights, which are exported (0 = off)", ge=0, lt=1)
    ema_warmup: bool = setting(True, "decay min(EMA_DECAY, (1+t)/(10+t)); 0 = fixed decay")
    # --- runtime --------------------------------------------------------------------
    compile: bool = setting(True, "torch.compile on CUDA (ignored on CPU)")
    # --- evaluation -------------------------------------------------------------------
    val_batch_size: int = setting(524_288, "tokens per eval forward (global)", ge=1)
    eval_seq_len: int = setting(0, "eval window (0 = TRAIN_SEQ_LEN)", ge=0)
    eval_stride: int = setting(64, "sliding-window stride (0 = non-overlapping only)", ge=0)
    max_eval_tokens: int = setting(0, "0 = the whole val split; >0 = partial, labelled", ge=0)
    # --- quantization / packing ---------------------------------------------------------
    # choices: a live view of quant.methods.METHODS, so a method added there is accepted here
    quant_method: str = setting(default_method(), f"quantizer ({' and '.join(budget_methods())} "
                                "fit BUDGET_BYTES)", choices=QUANT_METHODS.keys())
    quant_error_norm: float = setting(0.0, "fitter: error / ||W||^2_H^alpha (0 = absolute, 1 = "
                                      "relative)", ge=0, le=1)
    quant_fisher: int = setting(1, "1: the fitter prices errors by Fisher weights; 0: diag(H)",
                                choices=(0, 1))
    quant_lqer_ranks: str = setting("", "comma-separated LQER ranks the fitter may add (e.g. "
                                    "2,4; empty = off)")
    quant_scales: str = setting("log", "log: log-grid row scales, entropy-coded when smaller; "
                                "fp16: plain fp16", choices=QUANT_SCALES)
    quant_row_steps: str = setting("fisher", "fitter's row steps: fisher = flat, but no row "
                                   "clipped and the embedding's token rows stepped by their "
                                   "Fisher weights; flat = one step per tensor; sdclip = each "
                                   "row's own SDClip step", choices=QUANT_ROW_STEPS)
    gptq_calib_batches: int = setting(16, "training batches for the Hessians", ge=0)
    gptq_reserve_seconds: float = setting(8.0, "seconds of the wallclock kept for calibration",
                                          ge=0)
    quant_small_numel: int = setting(65_536, "tensors this small stay fp16/fp32", ge=0)
    quant_sensitivity: str = setting("", "sensitivity.json (eval_bpb.py --sensitivity) weighting "
                                     "the fitter")
    budget_bytes: int = setting(CAP_BYTES, "code + model cap, decimal bytes (cpu: the scaled "
                                "cap)", ge=1)
    budget_margin_bytes: int = setting(2_000, "safety margin under the cap", ge=0)
    # --- provenance -------------------------------------------------------------------------
    preset: str = ""                     # the PRESET from_env applied (golf.run.settings declares PRESET)

    # ------------------------------------------------------------------------------------
    @property
    def effective_eval_seq_len(self) -> int:
        return self.eval_seq_len or self.train_seq_len

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def problems(self) -> list[str]:
        """Every bad setting, one line each naming the variable and the fix (empty = valid)."""
        return self.model_problems() + config_problems(self)

    def validate(self, extra: Sequence[str] = ()) -> "Config":
        """Raise one ConfigError listing every problem (plus `extra` ones found by the caller,
        e.g. the byte budget against the shipped code), so a run fails before it reads data or
        writes anything, and the user fixes all settings in one go. Returns self when valid."""
        found = self.problems() + [p for p in extra if p]
        if found:
            raise ConfigError(found)
        return self

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Config":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Config":
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def from_preset(cls, name: str, base: "Config | None" = None) -> "Config":
        """`base` (default: the field defaults) with preset `name` applied; unknown -> ConfigError."""
        return _scaled_cap(_with_preset(base or cls(), name))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, cpu_preset: bool | None = None,
                 base: "Config | None" = None) -> "Config":
        """Build a Config from environment variables named like the fields, upper-cased.

        PRESET picks the starting point (default: frontier with CUDA, cpu_frontier without).
        `cpu_preset=True` forces the CPU form of the chosen preset (r29 -> cpu, p1125 -> cpu_p1125,
        the frontier presets -> cpu_frontier);
        `cpu_preset=False` applies no preset (`base` as is, e.g. a saved config.json). Any
        variable that is set explicitly overrides the preset. Values that do not parse raise one
        ConfigError listing all of them.
        """
        env = os.environ if env is None else env
        cfg = base or cls()
        name = _choose_preset(env.get("PRESET", ""), cpu_preset)
        if name:
            cfg = _with_preset(cfg, name)  # its scaled cap once, below, for the model as overridden
        changes, bad = parse_env(CONFIG_TABLE, env, full=False)
        if bad:
            raise ConfigError(bad)
        cfg = dataclasses.replace(cfg, **changes)
        # a preset applied now sets the cap for the model as overridden; a saved config keeps its own
        return _scaled_cap(cfg) if name and "budget_bytes" not in changes else cfg


def preset_columns() -> dict[str, dict[str, Any]]:
    """The defaults --help and docs/settings.md show beside the declared ones: the presets a
    machine gets without PRESET (without CUDA and with it), by variable name."""
    cpu = {k.upper(): v for k, v in PRESETS[DEFAULT_CPU_PRESET].items()}
    cpu["BUDGET_BYTES"] = "scaled cap"  # golf.run.rules.scaled_cap_bytes of the configured model
    gpu = {k.upper(): v for k, v in PRESETS[DEFAULT_GPU_PRESET].items()}
    return {f"cpu ({DEFAULT_CPU_PRESET})": {**cpu, "PRESET": DEFAULT_CPU_PRESET},
            f"gpu ({DEFAULT_GPU_PRESET})": {**gpu, "PRESET": DEFAULT_GPU_PRESET}}


def _with_preset(cfg: Config, name: str) -> Config:
    key = _preset_name(name)
    return dataclasses.replace(cfg, **PRESETS[key], preset=key)


def _scaled_cap(cfg: Config) -> Config:
    """Under a SCALED_CAP_PRESETS preset, BUDGET_BYTES = the scaled cap of cfg's own model
    (left as is while the model fields are invalid: validate() reports those)."""
    if cfg.preset not in SCALED_CAP_PRESETS or cfg.model_problems():
        return cfg
    return cfg.replace(budget_bytes=scaled_cap_bytes(parameter_count(cfg)))


def config_problems(c: Config) -> list[str]:
    """All problems of `c` (see Config.validate); each check only looks at fields that are
    themselves valid, so one bad value gives one line, not a cascade."""
    return [*value_problems(c, CONFIG_SETTINGS), *_loop_problems(c), *_lqer_problems(c),
            *_embed_wd_problems(c), *_packing_problems(c)]


def _embed_wd_problems(c: Config) -> Iterator[str]:
    if -1 < c.embed_wd < 0:  # below -1 the table's rule already said so
        yield f"EMBED_WD={c.embed_wd}: must be >= 0, or -1 (= ADAM_WD)"


def _loop_problems(c: Config) -> Iterator[str]:
    """Batch split, the wallclock cap against the GPTQ reserve, the eval window."""
    seqs = c.train_seq_len * max(c.grad_accum_steps, 1)
    if c.train_seq_len >= 1 and c.train_batch_tokens >= 1 and c.grad_accum_steps >= 0 \
            and c.train_batch_tokens % seqs:
        yield (f"TRAIN_BATCH_TOKENS={c.train_batch_tokens}: must be a multiple of TRAIN_SEQ_LEN"
               f" x GRAD_ACCUM_STEPS = {seqs}; set a multiple of {seqs}")
    cap, reserve = c.max_wallclock_seconds, c.gptq_reserve_seconds
    if 0 < cap <= reserve:
        yield (f"MAX_WALLCLOCK_SECONDS={cap:g} is not above GPTQ_RESERVE_SECONDS={reserve:g}: the "
               f"training loop would get {cap - reserve:g} s; raise MAX_WALLCLOCK_SECONDS above "
               f"{reserve:g}, lower GPTQ_RESERVE_SECONDS, or set MAX_WALLCLOCK_SECONDS=0 (no cap)")
    window = c.effective_eval_seq_len
    if c.eval_seq_len >= 0 and window >= 1 and c.eval_stride > window:
        yield (f"EVAL_STRIDE={c.eval_stride}: must be <= the eval window {window} (EVAL_SEQ_LEN, "
               f"0 = TRAIN_SEQ_LEN); set 0 (non-overlapping) or at most {window}")


def _packing_problems(c: Config) -> Iterator[str]:
    """DOC_PACKING needs per-document attention; TRAIN_SEQ_SCHEDULE parses and ends at TRAIN_SEQ_LEN."""
    if c.doc_packing and not c.doc_attention:
        yield ("DOC_PACKING=1 needs DOC_ATTENTION=1: a packed row without it is one causal "
               "sequence across every document; set DOC_ATTENTION=1 or DOC_PACKING=0")
    try:
        stages = parse_seq_schedule(c.train_seq_schedule)
    except ValueError as exc:
        yield str(exc)
        return
    if stages and max(s.seq_len for s in stages) != c.train_seq_len:
        yield (f"TRAIN_SEQ_SCHEDULE={c.train_seq_schedule!r}: its longest length must equal "
               f"TRAIN_SEQ_LEN={c.train_seq_len} (the model's context after training); set one to the other")


def _lqer_problems(c: Config) -> Iterator[str]:
    try:
        lqer_ranks(c.quant_lqer_ranks)
    except ValueError as exc:
        yield str(exc)


def lqer_ranks(raw: str) -> tuple[int, ...]:
    """QUANT_LQER_RANKS parsed: sorted distinct ranks >= 1 (empty or 0 = LQER off)."""
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    try:
        ranks = sorted({int(p) for p in parts})
    except ValueError:
        ranks = [-1]
    if ranks == [0]:
        return ()
    if any(r < 1 or r > 64 for r in ranks):
        raise ValueError(f"QUANT_LQER_RANKS={raw!r}: must be comma-separated ranks in 1..64 "
                         "(e.g. 4 or 2,4); empty or 0 = off")
    return tuple(ranks)


def _preset_name(raw: str) -> str:
    """Canonical preset name; an unknown one is a ConfigError naming PRESET and the choices."""
    key = raw.strip().lower()
    key = PRESET_ALIASES.get(key, key)
    if key not in PRESETS:
        raise ConfigError([f"PRESET={raw!r}: not a preset; use one of {', '.join(PRESETS)} "
                           "(or unset it)"])
    return key


def _choose_preset(raw: str, cpu_preset: bool | None) -> str:
    """The preset from_env applies: PRESET if set, else frontier with CUDA and cpu_frontier
    without (issue 29: the board's stack is the default; PRESET=r29 / cpu keep the R29 ones)."""
    if cpu_preset is False:
        return ""
    key = _preset_name(raw) if raw.strip() else (
        DEFAULT_CPU_PRESET if cpu_preset or not _cuda_available() else DEFAULT_GPU_PRESET)
    return CPU_EQUIVALENT.get(key, key) if cpu_preset else key


def _cuda_available() -> bool:
    return torch.cuda.is_available()


# Every field declared with setting(): the model's (golf.model.gpt) and the run's, in field order.
CONFIG_TABLE = fields_table(Config, "run")
CONFIG_SETTINGS = tuple(s for s in CONFIG_TABLE if s.field not in ModelConfig.model_field_names())
register("run", CONFIG_SETTINGS)
