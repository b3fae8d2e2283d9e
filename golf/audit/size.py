"""Size checks: the model bytes, the code bytes three ways, helper files, script identity.

Why: the cap is code + compressed model <= 16,000,000 decimal bytes, and the disputes were all
about which code bytes: a raw figure logged over a shipped wrapper (#1835), an exec'd helper
left out (#1412), a computed pyminify+compress+b85 figure (#1855), helpers imported or compiled
at eval and not counted (#2135), and a committed script that is not the one that ran (#1855).
"""
from __future__ import annotations

import hashlib

from golf.audit import facts
from golf.audit.context import Context, needs_entry
from golf.audit.report import FAIL, NA, PASS, WARN, Verdict, na
from golf.audit.source import local_refs, unwrap
from golf.audit.wrapper import find_recipe, recompute
from golf.run.rules import CAP_BYTES

LOW_MARGIN = 10_000   # bytes: records ran 7-100 KB under the cap; less is a reproducibility risk


def counted_code(ctx: Context) -> tuple[int | None, str]:
    """The code bytes the submission counts: the logged counted figure, else the shipped file."""
    for log in ctx.folder.logs:
        hit = facts.number(log, facts.CODE_COUNTED)
        if hit:
            return int(hit[0]), f"logged counted figure ({hit[1]})"
    entry = ctx.folder.entry
    return (entry.size, f"shipped {entry.name}") if entry else (None, "no train_gpt.py")


def model_bytes(ctx: Context) -> list[tuple[int, str]]:
    return [(int(v), where) for log in ctx.folder.logs
            if (hit := facts.number(log, facts.MODEL_BYTES)) for v, where in [hit]]


def check_model(ctx: Context) -> Verdict:
    """Per log: its quantized model bytes + its counted code bytes against the cap."""
    if not model_bytes(ctx):
        return _from_submission(ctx) or na("no log prints a quantized model size (`Serialized "
                                           "model quantized+...: N bytes`), no submission.json bytes")
    fallback, fallback_from = counted_code(ctx)
    v, totals = Verdict(PASS), []
    for log in ctx.folder.logs:
        model = facts.number(log, facts.MODEL_BYTES)
        if model is None:
            continue
        own = facts.number(log, facts.CODE_COUNTED)
        code, code_from = (int(own[0]), own[1]) if own else (fallback or 0, fallback_from)
        total = int(model[0]) + code
        totals.append(total)
        status = FAIL if total > CAP_BYTES else WARN if CAP_BYTES - total < LOW_MARGIN else PASS
        v.add(status, f"{model[1]}: model {int(model[0]):,} + code {code:,} ({code_from}) = "
              f"{total:,} vs cap {CAP_BYTES:,} (margin {CAP_BYTES - total:,})")
        printed = facts.number(log, facts.TOTAL_BYTES)
        if printed and int(printed[0]) != total:
            v.add(WARN, f"{printed[1]}: printed total {int(printed[0]):,} != {total:,}")
    claimed = (ctx.folder.submission or {}).get("bytes_total")
    if isinstance(claimed, int) and claimed < max(totals):
        v.add(WARN, f"submission.json bytes_total {claimed:,} is below the largest logged "
              f"total {max(totals):,}")
    elif isinstance(claimed, int):
        v.evidence.append(f"submission.json bytes_total {claimed:,} (the largest logged total "
                          f"is {max(totals):,})")
    return v


def _from_submission(ctx: Context) -> Verdict | None:
    """submission.json's bytes_model + bytes_code when no log prints the sizes (a golfkit
    folder packed from a log that predates its budget table)."""
    sub = ctx.folder.submission or {}
    model, code = sub.get("bytes_model"), sub.get("bytes_code")
    if not (isinstance(model, int) and isinstance(code, int)):
        return None
    total = model + code
    status = FAIL if total > CAP_BYTES else WARN if CAP_BYTES - total < LOW_MARGIN else PASS
    v = Verdict(status, [f"submission.json: model {model:,} + code {code:,} = {total:,} vs cap "
                         f"{CAP_BYTES:,} (margin {CAP_BYTES - total:,}); no log prints the sizes"])
    entry = ctx.folder.entry
    if entry and entry.size != code:
        v.add(FAIL, f"submission.json bytes_code {code:,} but the shipped {entry.name} has "
              f"{entry.size:,} bytes")
    return v


@needs_entry
def check_code(ctx: Context) -> Verdict:
    """Shipped bytes, logged counted bytes, and the recipe recomputed from the script."""
    entry = ctx.folder.entry
    v = Verdict(PASS, [f"{entry.name}: shipped {entry.size:,} bytes"])
    logged, _ = counted_code(ctx)
    logged = logged if logged != entry.size else None
    if unwrap(entry.text):
        status = PASS if logged in (None, entry.size) else FAIL
        return v.add(status, f"{entry.name} is a self-extracting wrapper: the shipped size is "
                     f"the counted size" + (f"; the log counts {logged:,}" if logged else ""))
    tree = ctx.trees.get(entry.name)
    recipe = find_recipe(tree) if tree else None
    if logged is None:
        return v.add(PASS, "no separate counted figure is logged; the shipped file is the count")
    if recipe is None:
        return v.add(WARN, f"the log counts {logged:,} bytes but {entry.name} contains no "
                     "compress+b85 recipe that computes it")
    return _compare_recipe(v, entry, recipe, logged)


def _compare_recipe(v: Verdict, entry, recipe, logged: int) -> Verdict:
    where = f"{entry.name}:{recipe.line}"
    raw = entry.text.encode("utf-8")
    if recipe.minify:
        upper = recompute(recipe, raw)
        bound = f"; {recipe.codec} of the unminified source gives {upper:,} (an upper bound)" \
            if upper else ""
        v.evidence.append(f"N/A: {where}: recipe pyminify+{recipe.codec}+b85 vs logged "
                          f"{logged:,}: not recomputed (the audit cannot run the minifier){bound}")
        v.status = NA
        return v
    got = recompute(recipe, raw)
    if got is None:
        return v.add(NA, f"{where}: {recipe.codec} recipe has non-constant arguments or no "
                     f"stub text; logged {logged:,} not recomputed")
    diff = got - logged
    status = PASS if diff == 0 else WARN if abs(diff) <= 0.01 * logged else FAIL
    return v.add(status, f"{where}: recomputed {recipe.codec}+b85 wrapper = {got:,} bytes vs "
                 f"logged {logged:,} (difference {diff:+,})")


@needs_entry
def check_helpers(ctx: Context) -> Verdict:
    """Every local file the code imports/opens/compiles/execs, added to the total."""
    entry = ctx.folder.entry
    refs = local_refs(ctx.folder, ctx.trees, entry.name)
    if not refs:
        return Verdict(PASS, [f"{entry.name} pulls in no other file of the folder"])
    code, code_from = counted_code(ctx)
    extra = sum(ctx.folder.files[r.name].stat().st_size for r in refs)
    models = model_bytes(ctx)
    v = Verdict(PASS)
    for r in refs:
        size = ctx.folder.files[r.name].stat().st_size
        v.add(WARN, f"{r.where}: {r.how} {r.name} ({size:,} bytes) is not in the counted code")
    if models and code is not None:
        total = max(m for m, _ in models) + code + extra
        v.add(FAIL if total > CAP_BYTES else WARN,
              f"max model {max(m for m, _ in models):,} + code {code:,} ({code_from}) + helpers "
              f"{extra:,} = {total:,} vs cap {CAP_BYTES:,}")
    return v


@needs_entry
def check_identity(ctx: Context) -> Verdict:
    """The logged raw code size / hash against the committed file (#1855: 158,429 vs 157,868)."""
    entry = ctx.folder.entry
    inner = unwrap(entry.text)
    source = inner[1].encode("utf-8") if inner else entry.text.encode("utf-8")
    digest = hashlib.sha256(source).hexdigest()
    v = Verdict(NA)
    for log in ctx.folder.logs:
        raw = facts.number(log, facts.CODE_RAW, last=False)
        if raw:
            ok = int(raw[0]) == len(source)
            v.add(PASS if ok else FAIL, f"{raw[1]}: logged code {int(raw[0]):,} bytes vs "
                  f"committed {'inner source' if inner else entry.name} {len(source):,}")
        h = log.first(facts.CODE_HASH)
        if h:
            ok = digest.startswith(h[1].group(1).lower())
            v.add(PASS if ok else FAIL, f"{log.at(h[0])}: logged hash {h[1].group(1)} vs "
                  f"committed sha256 {digest[:16]}...")
        if entry.text.strip() and entry.text.strip() in log.text:
            v.add(PASS, f"{log.name} embeds the committed source verbatim")
    if not v.evidence:
        v.evidence.append("no log prints a code size, a code hash or the source")
    return v
