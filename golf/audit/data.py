"""Data checks: train shard count, val token count and coverage, the doubled path, overlap.

Why: a data-prep default (`--val-docs 10000`) put 80 % of the validation documents in the
training shards; its fingerprint is `train_shards: 1499` (#2127, #2130 excluded), while the
canonical exports have 80 train shards and fixed val token counts. Truncated or re-split val
shards changed the denominator (#1923, #2109, #1854). With --data DIR the shards themselves
are compared: no validation document may appear in a training shard.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from golf.audit import facts
from golf.audit.context import Context
from golf.audit.folder import LogFile
from golf.audit.report import FAIL, NA, PASS, WARN, Verdict, na
from golf.data.shards import find_shards, read_header, read_shard

CANONICAL_TRAIN_SHARDS = 80
LEAKY_TRAIN_SHARDS = 1499
BOS_ID = 1
# Dropped fraction of the split's targets: up to a partial last sequence is accepted practice
# (#1855/#2135 drop 1,823 of 47,853,343); up to 1 % is flagged; more is a truncated split
# (#1854 scored 17 %).
TAIL_OK = 1e-4
LEAK_FRACTION = 1e-2   # val documents also found in train shards above this: a leak
TRUNCATED = 1e-2


@dataclass(frozen=True)
class ValSplit:
    """A published validation export: the logged token counts and the full stream length."""
    name: str
    vocab: int
    logged: tuple[int, ...]
    full_tokens: int | None


CANONICAL_VAL = (
    ValSplit("sp1024", 1024, (62_021_632,), 62_021_846),
    ValSplit("sp1024 launch export (superseded, #837)", 1024, (63_779_840,), None),
    ValSplit("sp4096", 4096, (45_508_608, 45_514_752), None),
    ValSplit("sp8192", 8192, (40_540_160,), None),
    ValSplit("sp8192 CaseOps", 8192, (47_851_520, 47_853_343, 47_853_344), 47_853_344),
    ValSplit("byte260", 260, (151_130_112,), None),
)


def match_split(tokens: int) -> ValSplit | None:
    """The canonical export whose logged count, or whole stream (golfkit logs the stream it
    loaded), is within one token of `tokens` (+1 for BOS)."""
    return next((s for s in CANONICAL_VAL if any(abs(tokens - n) <= 1 for n in s.logged)
                 or (s.full_tokens is not None and abs(tokens - s.full_tokens) <= 1)), None)


def check_train_shards(ctx: Context) -> Verdict:
    v = Verdict(PASS)
    for log in ctx.folder.logs:
        hit = facts.number(log, facts.TRAIN_SHARDS, last=False)
        if not hit:
            continue
        n = int(hit[0])
        status = FAIL if n == LEAKY_TRAIN_SHARDS else PASS if n == CANONICAL_TRAIN_SHARDS else WARN
        why = {FAIL: " - the --val-docs 10000 leak fingerprint (#2127): validation documents "
               "in training", WARN: " - not the canonical export; reviewers rerun with the "
               "logged count (#1334)", PASS: ""}[status]
        v.add(status, f"{hit[1]}: train_shards {n} (canonical {CANONICAL_TRAIN_SHARDS}){why}")
    return v if v.evidence else na("no log prints train_shards")


def split_from_header(log: LogFile) -> ValSplit | None:
    """The export a log's header names (vocab_size, and CaseOps in a path or flag), if any;
    none when its data path names another corpus (golfkit's embedded_sp1024 is not FineWeb)."""
    data_path = log.header.get("data_path", ("",))[0]
    if data_path and "fineweb" not in data_path.lower():
        return None
    vocab = log.header.get("vocab_size", ("",))[0]
    caseops = any("caseops" in (k + v).lower() and v.lower() not in ("false", "0")
                  for k, (v, _) in log.header.items())
    name = {"1024": "sp1024", "4096": "sp4096", "8192": "sp8192 CaseOps" if caseops else "sp8192",
            "260": "byte260"}.get(vocab)
    return next((s for s in CANONICAL_VAL if s.name == name), None)


def logged_splits(ctx: Context) -> list[tuple[int, str, ValSplit | None, ValSplit | None]]:
    """(val token count, file:line, the export it matches, the export the header names)."""
    return [(int(h[0]), h[1], match_split(int(h[0])), split_from_header(log))
            for log in ctx.folder.logs if (h := facts.number(log, facts.VAL_TOKENS, last=False))]


def check_val_tokens(ctx: Context) -> Verdict:
    """FAIL only when the header names a canonical export and the count is not its count."""
    v = Verdict(PASS)
    for n, where, split, named in logged_splits(ctx):
        if split:
            v.add(PASS, f"{where}: val_tokens {n:,} = the canonical {split.name} export")
        elif named:
            v.add(FAIL, f"{where}: val_tokens {n:,} but the {named.name} export has "
                  f"{named.logged[0]:,}: truncated or re-split validation data (#1923, #2109)")
        else:
            v.add(WARN, f"{where}: val_tokens {n:,} matches no canonical export and the header "
                  "names none (custom tokenizer or corpus?): the README must prove the byte accounting")
    return v if v.evidence else na("no log prints val_tokens")


def check_coverage(ctx: Context) -> Verdict:
    """Targets the reported number scores vs the full split (truncated diagnostics flagged)."""
    v = Verdict(NA)
    for n, where, matched, named in logged_splits(ctx):
        split = matched or named
        if split is None or split.full_tokens is None:
            v.evidence.append(f"{where}: {n:,} tokens; the full split length of this export is "
                              "not known to the audit")
            continue
        full = split.full_tokens - 1
        scored = min(n, full)
        dropped = (full - scored) / full
        status = PASS if dropped <= TAIL_OK else WARN if dropped <= TRUNCATED else FAIL
        v.add(status, f"{where}: {scored:,} of {full:,} targets of the {split.name} split "
              f"scored ({full - scored:,} dropped, {100 * dropped:.4f} %)")
    _scored_rows(ctx, v)
    if not v.evidence:
        return na("no log prints val_tokens; the scored target count is unknown")
    for log in ctx.folder.logs:
        diag = [i for i, line in enumerate(log.lines, 1) if line.startswith("diagnostic")
                and "val_bpb" in line]
        if diag:
            v.evidence.append(f"{log.at(diag[0])}: diagnostic numbers print no target count; "
                              "they may cover fewer targets than the headline (batch truncation)")
            break
    return v


def _scored_rows(ctx: Context, v: Verdict) -> None:
    """golfkit prints the tokens each score covers: the headline's against the logged split."""
    for log in ctx.folder.logs:
        score, split = facts.headline_score(log), facts.number(log, facts.VAL_TOKENS, last=False)
        if score is None or score.tokens is None or split is None:
            continue
        full = int(split[0]) - 1   # targets: every token but the first
        dropped = max(full - score.tokens, 0) / full if full > 0 else 0.0
        status = PASS if dropped <= TAIL_OK else WARN if dropped <= TRUNCATED else FAIL
        v.add(status, f"{score.where}: the score ({score.label}) covers {score.tokens:,} of the "
              f"{full:,} targets of the logged split ({split[1]}), {100 * dropped:.4f} % dropped"
              + (" - the log marks it partial (MAX_EVAL_TOKENS)" if score.partial else ""))


def check_doubled_path(ctx: Context) -> Verdict:
    v = Verdict(PASS)
    sources = [*ctx.folder.logs, *([ctx.folder.readme] if ctx.folder.readme else [])]
    for tf in sources:
        for lineno, line in enumerate(tf.lines, 1):
            if "datasets/datasets" in line:
                v.add(WARN, f"{tf.at(lineno)}: doubled `datasets/datasets` data path (a #2127 "
                      "fingerprint; not proof alone - the HF layout has it too)")
                break
    return v if v.evidence else Verdict(PASS, ["no doubled datasets/datasets path"])


def doc_hashes(paths: list[Path]) -> Iterator[bytes]:
    """blake2b of every document ([BOS] + tokens) across the shards, joined over boundaries;
    a generator, so the training side (billions of tokens) is never held in memory."""
    carry = np.zeros(0, dtype=np.uint16)
    for p in paths:
        tokens = np.concatenate([carry, np.asarray(read_shard(p))])
        starts = np.flatnonzero(tokens == BOS_ID)
        for a, b in zip(starts[:-1], starts[1:]):
            if b - a > 1:  # a bare BOS is no document
                yield hashlib.blake2b(tokens[a:b].tobytes(), digest_size=16).digest()
        carry = tokens[starts[-1]:] if starts.size else np.zeros(0, dtype=np.uint16)
    if carry.size > 1:
        yield hashlib.blake2b(carry.tobytes(), digest_size=16).digest()


def check_disjoint(ctx: Context) -> Verdict:
    if ctx.data_dir is None:
        return na("no --data DIR given; train/val document overlap not computed")
    try:
        train = find_shards(str(ctx.data_dir / "fineweb_train_*.bin"))
        val = find_shards(str(ctx.data_dir / "fineweb_val_*.bin"))
        for p in train + val:
            read_header(p)
    except ValueError as exc:
        return Verdict(FAIL, [str(exc)])
    val_docs = set(doc_hashes(val))
    shared = len({h for h in doc_hashes(train) if h in val_docs})
    # A few exact duplicates can occur in any web crawl; the #2127 leak put 80 % of val in train.
    status = FAIL if shared > LEAK_FRACTION * len(val_docs) else WARN if shared else PASS
    return Verdict(status, [f"{ctx.data_dir}: {len(train)} train shards, {len(val)} val shards; "
                            f"{len(val_docs):,} distinct val documents, {shared:,} of them also "
                            "in train"])
