"""Statistics against the previous row: the practised rule and the README's rule, both shown.

Why: the README asks for 0.005 nats at p < 0.01, but the leaderboard was curated with a
one-sided Welch test at p < 0.25 on val_bpb against the previous chronological row (#1902);
fewer than 15 % of merged rows meet the README's bar (#2148). A reviewer needs both numbers.
The t tail is the exact Student-t CDF (regularized incomplete beta), no scipy.
"""
from __future__ import annotations

from golf.audit import facts
from golf.audit.context import Context
from golf.audit.folder import Folder
from golf.audit.report import FAIL, PASS, WARN, Verdict, na
from golf.submission.stats import RECORD_MARGIN_NATS, RECORD_P_VALUE, mean_std, welch_one_sided

PRACTISED_P = 0.25


def seed_scores(folder: Folder) -> list[tuple[float, float]]:
    """(val_loss, val_bpb) per seed: the logs' headline lines, else submission.json seed_results."""
    scores = [(s.val_loss, s.val_bpb) for log in folder.logs if (s := facts.headline_score(log))]
    if scores:
        return scores
    results = (folder.submission or {}).get("seed_results")
    if isinstance(results, dict):
        return [(float(r["val_loss"]), float(r["val_bpb"])) for r in results.values()
                if isinstance(r, dict) and "val_loss" in r and "val_bpb" in r]
    return []


def _vocab(folder: Folder) -> str | None:
    return next((log.header["vocab_size"][0] for log in folder.logs if "vocab_size" in log.header),
                None)


def check_significance(ctx: Context) -> Verdict:
    ours = seed_scores(ctx.folder)
    if not ctx.against and not ctx.against_values:
        claimed = (ctx.folder.submission or {}).get("p_value")
        note = f"; submission.json claims p_value {claimed}" if claimed is not None else ""
        return na("no --against FOLDER or --against-bpb values given" + note)
    if len(ours) < 2:
        return Verdict(FAIL, [f"{len(ours)} seed score(s) in the folder; a Welch test needs >= 2"])
    base = [x for f in ctx.against for x in seed_scores(f)] if ctx.against else \
        [(float("nan"), b) for b in ctx.against_values or []]
    if not base:
        return Verdict(FAIL, ["the --against folder(s) have no seed scores"])
    m, s = mean_std([b for _, b in ours])
    bm, bs = mean_std([b for _, b in base])
    if s == 0 and bs == 0:
        return na("both samples have zero variance; the t statistic is undefined")
    w = welch_one_sided(m, s, len(ours), bm, bs, len(base), margin=0.0)
    v = Verdict(PASS if w.p_value < PRACTISED_P else FAIL,
                [f"val_bpb ours {m:.8f} (std {s:.8f}, n={len(ours)}) vs previous {bm:.8f} "
                 f"(std {bs:.8f}, n={len(base)}, {max(len(ctx.against), 1)} folder(s) pooled): "
                 f"delta {w.delta_nats:+.8f}",
                 f"practised rule (#1902): one-sided Welch t={w.t:.3f} df={w.df:.2f} "
                 f"p={w.p_value:.4g} {'<' if w.p_value < PRACTISED_P else '>='} {PRACTISED_P}"])
    _readme_rule(ctx, ours, base, v)
    return v


def _readme_rule(ctx: Context, ours, base, v: Verdict) -> None:
    """The README's bar: val_loss (nats/token) better by 0.005 at p < 0.01 (WARN, not FAIL)."""
    if not ctx.against:
        v.evidence.append("README rule (0.005 nats, p < 0.01): N/A, --against-bpb gives no val_loss")
        return
    if any(_vocab(ctx.folder) != _vocab(f) for f in ctx.against):
        v.evidence.append("README rule: N/A, the tokenizers differ, so nats per token do not "
                          "compare")
        return
    m, s = mean_std([x for x, _ in ours])
    bm, bs = mean_std([x for x, _ in base])
    if s == 0 and bs == 0:
        v.evidence.append("README rule: N/A, zero variance in val_loss")
        return
    w = welch_one_sided(m, s, len(ours), bm, bs, len(base), margin=RECORD_MARGIN_NATS)
    ok = w.p_value < RECORD_P_VALUE
    v.add(PASS if ok else WARN, f"README rule: val_loss delta {w.delta_nats:+.6f} nats, "
          f"margin {RECORD_MARGIN_NATS}, t={w.t:.3f} df={w.df:.2f} p={w.p_value:.4g} "
          f"{'<' if ok else '>='} {RECORD_P_VALUE}")
