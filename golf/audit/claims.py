"""Claim checks: README / submission.json phrases against what ran, and the launch knobs.

Why: #2135 says "BOS-fixed SmearGate" and launches with SMEAR_GATE_BOS_FIX=0 (also the code
default); #1855's README says "YaRN" with rope_yarn False; #86's log did not match the claimed
config. What ran is read from the log headers first, then the launch command, then the code
default; a launch knob the code never reads is reported, since it changes nothing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from golf.audit import facts
from golf.audit.context import Context
from golf.audit.folder import TextFile
from golf.audit.report import FAIL, NA, PASS, WARN, Verdict, na
from golf.audit.source import identifiers, strings

FALSY = ("0", "false", "no", "off", "", "none")
RUNTIME_ENV = ("NCCL_", "OMP_", "CUDA_", "TORCH", "PYTORCH_", "PYTHON", "HF_", "TRITON_",
               "NVIDIA_", "MKL_", "TOKENIZERS_", "WANDB_", "LD_", "MASTER_", "WORLD_SIZE",
               "RANK", "LOCAL_RANK", "NPROC", "PATH", "HOME", "CUBLAS_", "NCCL")
PER_RUN_ENV = ("SEED", "RUN_ID")


def truthy(value: str) -> bool:
    return value.strip().strip("'\"").lower() not in FALSY


def nonzero(value: str) -> bool:
    try:
        return float(value) != 0.0
    except ValueError:
        return truthy(value)


@dataclass(frozen=True)
class Claim:
    """A phrase, the settings that decide it, and which value contradicts it."""
    label: str
    phrase: re.Pattern[str]
    knobs: tuple[str, ...]
    contradicts: Callable[[str], bool]


CLAIMS = (
    Claim("BOS-fixed SmearGate", re.compile(r"(?i)\bBOS[- _]?(?:fix|mask)"),
          ("SMEAR_GATE_BOS_FIX",), lambda v: not truthy(v)),
    Claim("no TTT", re.compile(r"(?i)\b(?:no|without)[- ]TTT\b"), ("TTT_ENABLED",), truthy),
    Claim("no n-gram", re.compile(r"(?i)\b(?:no|without)[- _]n-?gram|\"no_ngram_cache\":\s*true"),
          ("NGRAM_TILT_ENABLED", "NGRAM_ENABLED"), truthy),
    Claim("token-only n-gram", re.compile(r"(?i)token[- ]only"),
          ("WITHIN_BOOST", "WORD_BOOST", "AGREE_ADD_BOOST"), nonzero),
    Claim("YaRN", re.compile(r"(?i)\byarn\b"), ("ROPE_YARN",), lambda v: not truthy(v)),
)
DEFAULTS_PHRASE = re.compile(r"(?i)defaults? (?:reproduce|settings reproduce)|"
                             r"no (?:env(?:ironment)? var|overrides?)")


def _texts(ctx: Context) -> list[TextFile]:
    return [tf for tf in (ctx.folder.readme, ctx.folder.submission_text) if tf]


def settings(ctx: Context, knob: str) -> list[tuple[str, str, str]]:
    """(value, source, file:line) for a knob: each log header, the launch command, and the code
    default when neither shows the value."""
    out = [(log.header[knob.lower()][0], "log header", log.at(log.header[knob.lower()][1]))
           for log in ctx.folder.logs if knob.lower() in log.header]
    env = ctx.folder.launch_env()
    if knob in env:
        out.append((env[knob][0], "launch command", env[knob][1]))
    elif not out and knob in ctx.env_defaults and ctx.env_defaults[knob][0] is not None:
        # the default decides only when no header shows what ran and no launch overrides it
        out.append((ctx.env_defaults[knob][0], "code default", ctx.env_defaults[knob][1]))
    return out


def check_phrases(ctx: Context) -> Verdict:
    v = Verdict(NA)
    for claim in CLAIMS:
        for tf in _texts(ctx):
            hit = tf.first(claim.phrase)
            if hit is None:
                continue
            where = f"{tf.at(hit[0])} says {hit[1].group(0)!r} ({claim.label})"
            found = [(k, s) for k in claim.knobs for s in settings(ctx, k)]
            bad = [(k, s) for k, s in found if claim.contradicts(s[0])]
            if bad:
                v.add(FAIL, f"{where}, but " + "; ".join(f"{k}={val} in the {src} ({w})"
                                                         for k, (val, src, w) in bad))
            elif found:
                v.add(PASS, f"{where}: consistent with " + "; ".join(
                    f"{k}={val} ({src}, {w})" for k, (val, src, w) in found[:3]))
            else:
                v.evidence.append(f"{where}: no setting ({', '.join(claim.knobs)}) in the "
                                  "logs, launch or code to check it against")
    _defaults_claim(ctx, v)
    return v if v.evidence else na("no checkable phrase in README.md or submission.json")


def _defaults_claim(ctx: Context, v: Verdict) -> None:
    """'defaults reproduce': every launch knob must equal the code default."""
    for tf in _texts(ctx):
        hit = tf.first(DEFAULTS_PHRASE)
        if hit is None:
            continue
        env = ctx.folder.launch_env()
        differ = [f"{k}={val} ({w}; default {ctx.env_defaults[k][0]})" for k, (val, w) in
                  env.items() if k in ctx.env_defaults and k not in PER_RUN_ENV
                  and not _same(val, ctx.env_defaults[k][0] or "")]
        v.add(FAIL if differ else PASS, f"{tf.at(hit[0])} says {hit[1].group(0)!r}; launch "
              "knobs that differ from the code defaults: " + (", ".join(differ) or "none"))


def _same(a: str, b: str) -> bool:
    a, b = a.strip().strip("'\""), b.strip().strip("'\"")
    if a.lower() in ("true", "false") or b.lower() in ("true", "false"):
        return truthy(a) == truthy(b)
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def _placeholder(value: str) -> bool:
    """A value the README leaves to the reader (`DATA_PATH=...`, `<path>`): not a setting."""
    v = value.strip().strip("'\"")
    return v in ("...", "…") or (v.startswith("<") and v.endswith(">"))


def check_launch_vs_header(ctx: Context) -> Verdict:
    env = ctx.folder.launch_env()
    if not env:
        return na("no launch command (VAR=value ... train_gpt.py) in README.md, logs or .sh")
    v = Verdict(PASS, [f"{len(env)} launch variables from " +
                       ", ".join(sorted({w.rsplit(':', 1)[0] for _, w in env.values()}))])
    for log in ctx.folder.logs:
        for k, (val, where) in env.items():
            if k in PER_RUN_ENV or k.lower() not in log.header or _placeholder(val):
                continue
            logged, line = log.header[k.lower()]
            if not _same(val, logged):  # paths differ in spelling (./data vs data): WARN
                v.add(WARN if "/" in val + logged else FAIL, f"{where} sets {k}={val} but "
                      f"{log.at(line)} ran with {k.lower()}: {logged}")
    return v


def check_unread_knobs(ctx: Context) -> Verdict:
    env = ctx.folder.launch_env()
    if not env:
        return na("no launch command found")
    if not ctx.trees:
        return na("no parseable Python code in the folder")
    known = set(ctx.env_defaults) | {s for t in ctx.trees.values() for s, _ in strings(t)}
    fields = {n for t in ctx.trees.values() for n in identifiers(t)}
    unread = [(k, w) for k, (_, w) in env.items() if k not in known
              and k.lower() not in fields and not k.startswith(RUNTIME_ENV)]
    v = Verdict(PASS, [f"{len(env) - len(unread)} of {len(env)} launch variables are read "
                       "by the code, name a settings field, or are runtime variables"])
    for k, where in unread:
        v.add(WARN, f"{where}: {k} is set but no code file of the folder reads it")
    return v


def check_reported_numbers(ctx: Context) -> Verdict:
    """submission.json's val_bpb against the mean of the logs' headline scores."""
    sub = ctx.folder.submission
    if sub is None:
        return na(ctx.folder.submission_note)
    scores = [s for log in ctx.folder.logs if (s := facts.headline_score(log))]
    claimed = sub.get("val_bpb", sub.get("mean_val_bpb"))
    if not scores or not isinstance(claimed, (int, float)):
        return na("no score line in the logs or no val_bpb in submission.json")
    mean = sum(s.val_bpb for s in scores) / len(scores)
    # equal to the coarser of the two precisions (golfkit's JSON keeps 16 digits, its log 6)
    decimals = min(len(repr(float(claimed)).split(".")[1]), max(s.digits for s in scores))
    ok = abs(mean - claimed) <= 0.5 * 10 ** -decimals * (1 + 1e-9) + 1e-12
    return Verdict(PASS if ok else FAIL,
                   [f"submission.json val_bpb {claimed} vs mean {mean:.8f} of {len(scores)} logs"
                    f" ({', '.join(f'{s.val_bpb} {s.where}' for s in scores)})"])
