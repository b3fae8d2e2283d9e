"""golfkit's default fitter against the faithful records at equal bytes, 3 to 6 bits/param, with
post+TTT per point (issue 27 item 5, second half).

    python -m bench.rd_frontier --checkpoint runs/ID/ema.pt --data DIR --tokenizer MODEL \
        [--offsets record_1855=-1,0,1,2 record_2135=0 record_1060=-1,0] [--no-ttt] \
        [--row-steps fisher,flat[,flat+lqer]] [--diagnose record_1855+0] \
        [--bytes-from EARLIER.json] [--out bench/results/rd_frontier]
    python -m bench.rd_frontier --combine A.json B.json ... --out bench/results/rd_frontier

A record ships at one size. Its one knob here is `record_bits_offset` (quant.records.
record_policy): every class's bit width + offset, clip rule unchanged (record_1855/2135's
SDClip k, record_1060's percentiles), capped at 8 bits. For each (record, offset) the record's
artifact is built with the coders it shipped (record_1855 / 2135: the per-group lrzip container,
quant/pergroup.py), then golfkit's default fitter (QUANT_METHOD=gptq, Fisher error weights, log
scales, default coders; one line per --row-steps entry: QuantPolicy.row_steps "fisher" is today's
default (one step per tensor, no row clipped, the embedding's token rows stepped by their Fisher
weights), "flat" one step per tensor, "sdclip" each row's own step, "+lqer" adds LQER rungs) at
exactly that artifact's byte
count (--bytes-from reuses a record's bytes from an earlier run instead of rebuilding it;
--diagnose adds, for that record point, the fitter's model with one tensor at a time taken from
the record's artifact). Every artifact goes through a
file round trip and is scored pre / post / post+TTT on the same validation tokens, per-document
windows as run_eval scores a DOC_ATTENTION model. Noise: each number is also kept for the two
halves of the split (cut at the BOS nearest the middle) and as NLL sums per document, from which
each fitter point gets the paired excess over half its record's gap and its standard error over
documents (paired_excess). The JSON is rewritten after every point, so
an interrupted run keeps what it measured.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import quant
from bench.rate_distortion import file_round_trip, load_run, model_from
from golf.main import quant_policy
from quant.records import RECORD_METHODS

# TTT=lora as the 1.0611 record (PR #1855) ran it, its global phases scaled to a 341-document,
# 32,604-token split as docs/ttt.md measured: 3 phases over the first 150 scored documents
# (the record: 2,500 of ~50,000) in 2,048-token chunks of 8 sequences (the record: 32,768 / 32,
# one chunk would be the whole prefix and the last chunk is always skipped). Same for every point.
TTT_SCALED = {"mode": "lora", "phased_ttt_prefix_docs": 150, "global_ttt_chunk_tokens": 2048,
              "global_ttt_batch_seqs": 8}
DEFAULT_OFFSETS = ("record_1855=-1,0,1,2", "record_2135=0", "record_1060=-1,0")
LN2 = float(np.log(2.0))     # nats -> bits


class Scorer:
    """Pre / post / post+TTT on one fixed token set: full split, first and second half, and
    the NLL sum of each document (for paired_excess's standard errors)."""

    def __init__(self, cfg: Any, data: Any, ttt: dict | None):
        from golf.eval.bpb import range_bytes
        from golf.eval.score import Scoring, document_spans
        self.cfg, self.data = cfg, data
        self.scoring = Scoring(seq_len=cfg.effective_eval_seq_len, doc_bos=int(cfg.bos_id)
                               if getattr(cfg, "doc_attention", False) else None)
        n = data.n_targets
        spans = document_spans(data.tokens, n, int(cfg.bos_id))
        self.doc_starts = np.array([a for a, _b in spans], dtype=np.int64)
        self.doc_bytes = [range_bytes(data.tokens, a, b, data.lut) for a, b in spans]
        # the first half ends on the target that is the BOS nearest the middle (windows never
        # cross a BOS, so the halves' sums add up to the full split's)
        self.cut = min(self.doc_starts[1:].tolist() or [n // 2], key=lambda s: abs(s - n // 2))
        self.bytes, self.cut_bytes = sum(self.doc_bytes), range_bytes(data.tokens, 0, self.cut, data.lut)
        self.ttt = ttt

    def _summary(self, nll: np.ndarray) -> dict:
        """bpb of the full split and its halves from per-target NLL, plus per-document sums."""
        out = _bpbs(float(nll.sum()), self.bytes, float(nll[:self.cut].sum()), self.cut_bytes)
        out["doc_nats"] = np.add.reduceat(nll, self.doc_starts).tolist()
        return out

    def plain(self, model: torch.nn.Module) -> dict:
        """One scoring pass (golf.eval.score.evaluate_bpb) summarised by _summary."""
        from golf.eval.score import evaluate_bpb
        nll = np.full(self.data.n_targets, np.nan)
        r = evaluate_bpb(model, self.data.tokens, self.data.lut, self.scoring,
                         max_tokens=self.data.n_targets, per_target=nll)
        assert r.bytes == self.bytes and not np.isnan(nll).any()
        return self._summary(nll)

    def with_ttt(self, model: torch.nn.Module) -> dict:
        """post+TTT: golf.eval.ttt.run_ttt on a copy, its per-target NLL summarised alike."""
        from golf.eval.ttt import TTTPass, TTTSettings, run_ttt
        s = TTTSettings(**self.ttt).validated()
        t0 = time.perf_counter()
        r = run_ttt(model, self.data.tokens, self.data.lut, s,
                    TTTPass(self.scoring, max_tokens=self.data.n_targets,
                            bos_id=int(self.cfg.bos_id), record=True))
        out = self._summary(np.asarray(r.nll, dtype=np.float64))
        assert r.bytes == self.bytes
        out["ttt_seconds"] = round(time.perf_counter() - t0, 1)
        return out


def _bpbs(nats: float, nbytes: int, nats1: float, bytes1: int) -> dict:
    """val_bpb = nats / ln 2 / bytes for the full split and its two halves."""
    return {"bpb": nats / LN2 / nbytes, "half1": nats1 / LN2 / bytes1,
            "half2": (nats - nats1) / LN2 / (nbytes - bytes1)}


def _minus(a: dict, b: dict) -> dict:
    return {k: a[k] - b[k] for k in ("bpb", "half1", "half2")}


def doc_ratio_se(x: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Σx / Σw and its standard error with documents as the sampling unit (the linearised
    variance of a ratio estimator): a val split is a sample of documents and the tokens of one
    document are not independent, so documents are what another split would change."""
    x, w = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)
    n, ratio = len(x), float(x.sum() / w.sum())
    if n < 2:
        return ratio, float("nan")
    resid = x - ratio * w
    return ratio, float(np.sqrt(n / (n - 1) * np.square(resid).sum()) / w.sum())


def paired_excess(pre: list, fit: list, rec: list, doc_bytes: list, share: float = 0.5) -> dict:
    """The fitter's gap minus `share` x the record's, in bpb, with its paired standard error
    (same documents, so the documents' own difficulty cancels): excess <= 0 is "the fitter
    loses at most `share` of what the record loses"; z = excess / se says how surely."""
    p, f, r = (np.asarray(v, dtype=np.float64) for v in (pre, fit, rec))
    _g, gap_se = doc_ratio_se(f - p, doc_bytes)
    _r, rec_se = doc_ratio_se(r - p, doc_bytes)
    excess, se = doc_ratio_se((f - p) - share * (r - p), doc_bytes)
    return {"share": share, "excess": excess / LN2, "excess_se": se / LN2,
            "z": excess / se if se > 0 else float("nan"),
            "gap_se": gap_se / LN2, "record_gap_se": rec_se / LN2}


def parse_offsets(items: list[str]) -> list[tuple[str, int]]:
    """["record_1855=-1,0"] -> [("record_1855", -1), ("record_1855", 0)]; bad input: SystemExit."""
    out = []
    for item in items:
        name, _, offs = item.partition("=")
        if name not in RECORD_METHODS or not offs:
            raise SystemExit(f"--offsets {item!r}: want RECORD=OFFSET,... with RECORD one of "
                             f"{', '.join(RECORD_METHODS)}")
        out += [(name, int(o)) for o in offs.split(",")]
    return out


def run(args: argparse.Namespace, out: Path) -> dict:
    from golf.eval.score import load_eval_data
    cfg, model, state, hs, om = load_run(args.checkpoint, args.data, args.calib_batches,
                                         args.fresh_weights, args.calib_data)
    data = load_eval_data(args.data, args.tokenizer, cfg.vocab_size,
                          max_tokens=args.max_eval_tokens or None, log=None)
    scorer = Scorer(cfg, data, None if args.no_ttt else TTT_SCALED)
    params = sum(p.numel() for p in model.parameters())
    policy = quant_policy(cfg, model, "gptq")
    pre = scorer.plain(model)
    res = {"checkpoint": args.checkpoint, "fresh_weights": args.fresh_weights, "params": params,
           "calib_data": args.calib_data,
           "eval_tokens": data.n_targets, "half_cut": scorer.cut, "doc_bytes": scorer.doc_bytes,
           "pre": pre, "ttt": scorer.ttt,
           "points": []}
    if scorer.ttt and args.pre_ttt:
        res["pre_ttt"] = scorer.with_ttt(model)

    def measure(label: str, **kw) -> dict:
        t0 = time.perf_counter()
        q = quant.quantize_model(model, hessians=hs, **{"policy": policy, **kw})
        secs = time.perf_counter() - t0
        sd = file_round_trip(q)
        m = model_from(cfg, sd)
        post = scorer.plain(m)
        p = {"method": label, "bytes": q.total_bytes, "bits_per_param": 8 * q.total_bytes / params,
             "post": post, "gap": _minus(post, pre), "quant_seconds": round(secs, 1),
             "lqer_tensors": sum(1 for qt in q.tensors if qt.lqer is not None)}
        if scorer.ttt:
            p["post_ttt"] = scorer.with_ttt(m)
            p["ttt_gain"] = _minus(p["post_ttt"], post)
        print(f"rdf:{label} bytes:{p['bytes']} bpp:{p['bits_per_param']:.3f} "
              f"gap:{p['gap']['bpb']:+.6f} post_ttt:{p.get('post_ttt', {}).get('bpb', float('nan')):.6f}"
              f" quant_s:{secs:.1f}", flush=True)
        res["points"].append(p)
        _save(res, out)
        return p, sd, {qt.name: qt for qt in q.tensors}

    def scored(sd: dict) -> float:
        return scorer.plain(model_from(cfg, sd))["bpb"]

    known = {p["method"]: p["bytes"] for f in args.bytes_from
             for p in json.loads(Path(f).read_text())["points"] if not p["method"].startswith("fitter")}
    ranks = tuple(int(r) for r in args.lqer_ranks.split(","))
    for method, off in parse_offsets(args.offsets):
        label = f"{method}{off:+d}"
        if label in known:    # the record's bytes from an earlier run of this bench
            rec, rec_sd, rec_q = {"method": label, "bytes": known[label]}, None, None
        elif args.fitter_only:  # the record's bytes only (its scores come from another run)
            q = quant.quantize_model(model, hessians=hs, policy=policy, method=method,
                                     run=quant.QuantRun(record_bits_offset=off))
            rec, rec_sd, rec_q = {"method": label, "bytes": q.total_bytes}, None, None
        else:
            rec, rec_sd, rec_q = measure(label, method=method,
                                         run=quant.QuantRun(record_bits_offset=off))
        for line in filter(None, args.row_steps.split(",")):   # "": the records alone
            rows, lqer = line.split("+")[0], ranks if line.endswith("+lqer") else ()
            budget = quant.BudgetFit(int(rec["bytes"]), error_weights=om, lqer_ranks=lqer)
            fit, fit_sd, fit_q = measure(f"fitter[{line}]@{label}", method="gptq", fit=budget,
                                         policy=replace(policy, row_steps=rows))
            fit["vs"] = label
            if label in args.diagnose and rec_sd is not None:
                fit["swaps"] = swaps(scored, fit["post"]["bpb"], fit_sd, rec_sd, fit_q, rec_q)
            _save(res, out)
    return res


def swaps(scored, base: float, fit_sd: dict, rec_sd: dict, fit_q: dict, rec_q: dict) -> list:
    """Per tensor: the fitter's dequantized model with only that tensor taken from the record's
    artifact, scored; delta < 0 means the record's version of that tensor is better."""
    out = []
    for name in sorted(n for n, qt in rec_q.items() if qt.kind in ("quant", "pass")):
        if name not in fit_sd or torch.equal(fit_sd[name], rec_sd[name]):
            continue
        delta = scored({**fit_sd, name: rec_sd[name]}) - base
        f, r = fit_q.get(name), rec_q[name]
        out.append({"tensor": name, "delta": delta, "fitter": _levels(f), "record": _levels(r)})
        print(f"rdf:swap {name} delta:{delta:+.6f} fitter:{out[-1]['fitter']} "
              f"record:{out[-1]['record']}", flush=True)
    return sorted(out, key=lambda d: d["delta"])


def _levels(qt: Any) -> str:
    """'pass', or the number of code levels the tensor uses (2 max|code| + 1): the fitter keeps
    8-bit containers, so its QTensor.bits does not say how fine its grid is."""
    if qt is None or qt.kind != "quant":
        return "pass" if qt is not None else "-"
    return f"{2 * int(np.abs(qt.codes).max()) + 1} levels"


def combine(paths: list[str]) -> dict:
    """One result from runs of this bench on the same checkpoint and tokens (points joined)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    key = {(r["checkpoint"], r["eval_tokens"], r["half_cut"], r.get("fresh_weights", False),
            r.get("calib_data"))
           for r in parts}
    ttts = {json.dumps(r["ttt"]) for r in parts if r["ttt"]}
    if len(key) != 1 or len(ttts) > 1:
        raise SystemExit(f"--combine: {paths} are not runs on one checkpoint, token set, error "
                         "weights and TTT")
    res = dict(parts[0])
    best: dict[str, dict] = {}
    for p in (p for r in parts for p in r["points"]):
        if p["method"].startswith("fitter@"):   # runs before QuantPolicy.row_steps existed
            p["method"] = "fitter[sdclip]@" + p["method"][len("fitter@"):]
        had = best.get(p["method"])
        if had is None or ("post_ttt" in p and "post_ttt" not in had):
            best[p["method"]] = p             # the same point from two runs: the one with TTT
        if had is not None and "swaps" in (had, p)[best[p["method"]] is had]:
            best[p["method"]]["swaps"] = (had, p)[best[p["method"]] is had]["swaps"]
    res["points"] = list(best.values())
    res["ttt"] = next((r["ttt"] for r in parts if r["ttt"]), None)
    return res


def add_ratios(res: dict) -> None:
    """Each fitter point's gap / the gap of the record point it was sized to (same bytes), and,
    where per-document sums were kept, paired_excess (post) and the paired post+TTT difference
    (fitter - record, bpb, with its standard error)."""
    recs = {p["method"]: p for p in res["points"] if not p["method"].startswith("fitter")}
    pre, nb = res["pre"], res.get("doc_bytes")
    for p in res["points"]:
        rec = recs.get(p["method"].split("@")[-1]) if p["method"].startswith("fitter") else None
        if rec is None:
            continue
        p["gap_ratio"] = {k: p["gap"][k] / rec["gap"][k] if rec["gap"][k] else float("nan")
                          for k in rec["gap"]}
        if nb and "doc_nats" in p["post"] and "doc_nats" in rec["post"]:
            p["paired"] = paired_excess(pre["doc_nats"], p["post"]["doc_nats"],
                                        rec["post"]["doc_nats"], nb)
        if "post_ttt" in p and "post_ttt" in rec:
            p["ttt_gap_ratio"] = ((p["post_ttt"]["bpb"] - res["pre"]["bpb"])
                                  / (rec["post_ttt"]["bpb"] - res["pre"]["bpb"]))
            if nb and "doc_nats" in p["post_ttt"] and "doc_nats" in rec["post_ttt"]:
                d, se = doc_ratio_se(np.subtract(p["post_ttt"]["doc_nats"],
                                                 rec["post_ttt"]["doc_nats"]), nb)
                p["ttt_vs_record"] = {"diff": d / LN2, "se": se / LN2}


def _save(res: dict, out: Path) -> None:
    from golf.run.atomic import atomic_write_json
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out.with_suffix(".json"), res)


def table(res: dict) -> str:
    """One row per record point and its equal-bytes fitter point."""
    rows = ["| point | bytes | bits/param | post | gap | gap half1 / half2 | fitter/record gap | "
            "post+TTT | TTT gain |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in res["points"]:
        ttt = p.get("post_ttt", {}).get("bpb")
        gain = p.get("ttt_gain", {}).get("bpb")
        ratio = p.get("gap_ratio", {}).get("bpb")
        rows.append(f"| {p['method']} | {p['bytes']:,} | {p['bits_per_param']:.3f} | "
                    f"{p['post']['bpb']:.5f} | {p['gap']['bpb']:+.5f} | "
                    f"{p['gap']['half1']:+.5f} / {p['gap']['half2']:+.5f} | "
                    f"{'-' if ratio is None else f'{ratio:.2f}'} | "
                    f"{'-' if ttt is None else f'{ttt:.5f}'} | "
                    f"{'-' if gain is None else f'{gain:+.5f}'} |")
    return "\n".join(rows)


def pairs_table(res: dict) -> str:
    """One row per record point: its gap and post+TTT beside each fitter line's at its bytes
    (ratio = fitter gap / record gap, then fitter gap - 0.5 x record gap +- its paired standard
    error over documents; TTT columns are post+TTT - pre, then fitter - record +- se)."""
    lines = sorted({p["method"].split("@")[0] for p in res["points"] if "@" in p["method"]},
                   key=lambda ln: (ln != f"fitter[{quant.QuantPolicy().row_steps}]", len(ln), ln))  # the default first
    recs = sorted((p for p in res["points"] if "@" not in p["method"]),
                  key=lambda p: p["bits_per_param"])
    at = {p["method"]: p for p in res["points"]}
    pre = res["pre"]["bpb"]

    def ttt(p: dict | None) -> str:
        return f"{p['post_ttt']['bpb'] - pre:+.5f}" if p and "post_ttt" in p else "-"

    def gap_cell(f: dict, r: dict) -> str:
        """gap (ratio; paired excess over half the record's gap +- its standard error)"""
        e = f.get("paired")
        tail = f"; {e['excess']:+.5f} ± {e['excess_se']:.5f}" if e else ""
        return f"{f['gap']['bpb']:+.5f} ({f['gap']['bpb'] / r['gap']['bpb']:.2f}{tail})"

    def ttt_cell(f: dict | None) -> str:
        d = (f or {}).get("ttt_vs_record")
        return ttt(f) + (f" ({d['diff']:+.5f} ± {d['se']:.5f})" if d else "")
    with_ttt = any("post_ttt" in p for p in res["points"])
    head = (["record point", "bits/param", "bytes", "record gap"] + [f"{ln} gap (ratio)" for ln in lines]
            + (["record TTT"] + [f"{ln} TTT" for ln in lines] if with_ttt else []))
    rows = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in recs:
        fits = [at.get(f"{ln}@{r['method']}") for ln in lines]
        cells = [r["method"], f"{r['bits_per_param']:.2f}", f"{r['bytes']:,}", f"{r['gap']['bpb']:+.5f}"]
        cells += [gap_cell(f, r) if f else "-" for f in fits]
        cells += [ttt(r)] + [ttt_cell(f) for f in fits] if with_ttt else []
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def family(method: str) -> str:
    """A plot line: the fitter variant ("fitter[flat]") or the record ("record_1855")."""
    if method.startswith("fitter"):
        return method.split("@")[0]
    return method.rstrip("0123456789").rstrip("+-")


def plot(res: dict, path: Path) -> None:
    """Two panels, bits/param on x: the post-quant gap (with half of each record's, dotted: the
    issue's target), and post+TTT minus pre."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [("gap", "post - pre")] + ([("post_ttt", "post+TTT - pre")] if res.get("ttt") else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for fam in sorted({family(p["method"]) for p in res["points"]}):
            pts = sorted((p for p in res["points"] if family(p["method"]) == fam
                          and (key == "gap" or "post_ttt" in p)), key=lambda p: p["bits_per_param"])
            if not pts:
                continue
            ys = [p["gap"]["bpb"] if key == "gap" else p["post_ttt"]["bpb"] - res["pre"]["bpb"]
                  for p in pts]
            line = ax.plot([p["bits_per_param"] for p in pts], ys, "-o", label=fam, ms=5)[0]
            if key == "gap" and not fam.startswith("fitter"):    # the issue's target: half of it
                ax.plot([p["bits_per_param"] for p in pts], [0.5 * y for y in ys], ":",
                        color=line.get_color(), label=f"0.5 x {fam}")
        ax.set_xlabel("bits per parameter (artifact bytes x 8 / params)")
        ax.set_ylabel(f"val_bpb {title}")
        if key == "gap":  # gaps span decades (log); post+TTT - pre sits within one (linear)
            if all(p["gap"]["bpb"] > 0 for p in res["points"]):
                ax.set_yscale("log")
            else:  # symlog is linear below linthresh (it drew 5e-4 where log draws 3e-4)
                ax.set_yscale("symlog", linthresh=1e-4)
        ax.grid(alpha=0.3)
        ax.set_title(f"{title}; {res['params']:,} params, {res['eval_tokens']:,} val tokens",
                     fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.rd_frontier", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint")
    ap.add_argument("--data")
    ap.add_argument("--tokenizer")
    ap.add_argument("--pre-ttt", action="store_true", help="also TTT the full-precision model")
    ap.add_argument("--combine", nargs="+", default=[],
                    help="JSONs of earlier runs (same checkpoint and tokens) to join into --out")
    ap.add_argument("--offsets", nargs="+", default=list(DEFAULT_OFFSETS),
                    help="RECORD=OFFSET,...: the records' bit-width offsets to measure")
    ap.add_argument("--max-eval-tokens", type=int, default=0, help="0 = the whole val split")
    ap.add_argument("--no-ttt", action="store_true", help="skip post+TTT (pre/post only)")
    ap.add_argument("--fitter-only", action="store_true",
                    help="build each record only for its byte count and score the fitter there")
    ap.add_argument("--row-steps", default="fisher,flat",
                    help="fitter lines by QuantPolicy.row_steps, comma-separated (fisher: the "
                         "default; flat: one step per tensor; sdclip: each row's own step; a "
                         "+lqer suffix adds LQER rungs; empty: the records alone)")
    ap.add_argument("--lqer-ranks", default="2,4", help="the LQER ranks of a +lqer line")
    ap.add_argument("--bytes-from", nargs="*", default=[],
                    help="earlier JSONs of this bench: a record point found there is not rebuilt, "
                         "the fitter is sized to its bytes")
    ap.add_argument("--diagnose", nargs="*", default=[],
                    help="record points (e.g. record_1060+0) whose equal-bytes fitter point gets "
                         "the per-tensor swap table")
    ap.add_argument("--calib-batches", type=int, default=8,
                    help="training batches for Hessians / error weights missing from hessians.pt")
    ap.add_argument("--calib-data", default=None, metavar="DIR",
                    help="collect the Hessians and Fisher weights of every method on this dataset's "
                    "training split (text the checkpoint never saw) instead of the run's")
    ap.add_argument("--fresh-weights", action="store_true",
                    help="recollect the Fisher error weights with today's rule (on --calib-batches "
                         "training batches) instead of the run's saved ones")
    ap.add_argument("--out", default="bench/results/rd_frontier")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    out = Path(args.out)
    if args.combine:
        res = combine(args.combine)
    elif not (args.checkpoint and args.data and args.tokenizer):
        raise SystemExit("--checkpoint, --data and --tokenizer are needed (or --combine)")
    else:
        res = run(args, out)
    add_ratios(res)
    _save(res, out)
    plot(res, out.with_suffix(".png"))
    print(table(res))
    print(pairs_table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
