"""What is left for golfkit's fitter to gain on one trained checkpoint, measured (issue 27).

Two measurements, each against the default fitter on the same weights, Hessians and Fisher
weights (recollected with today's rule on the first 8 training batches):

* `refine`: the fitter's choice at a budget, then rounds of measured exchanges. Every
  quantized tensor is tried `stride` ladder rungs finer and coarser with the others held, its
  loss measured on held-out *training* batches (the 8 after the calibration ones); each tensor
  then takes the move (or none) that a Lagrangian over those measured losses and the predicted
  bytes prefers at no more predicted bytes than now; the proposal is built for real and kept
  only if it fits the budget and lowers the measured loss (else the up-move with the least
  measured gain per byte is dropped, up to 4 tries). Val_bpb of the full split before/after.
  It asks: is the Fisher-predicted allocation the bottleneck? (Not shipped: forward passes on
  training data after training would have to run inside the 600 s, as calibration does.)
* `rdo`: rate-aware rounding inside GPTQ. Each code is the one of floor / ceil / 0 of x = w/step
  minimising (x - q)^2 + mu * L(q), L(q) = -log2 p(q) from the tensor's own code histogram
  (two passes); mu = 2 ln 2 / 12 is the high-rate slope of error (in step^2) per bit. Per
  tensor, its H-weighted output error at equal order-0 entropy over the nearest-rounding
  error, interpolated on a 9-step sweep.

python -m bench.quant_headroom --checkpoint runs/rd_conv/ema.pt \
    --data data/datasets/embedded_sp1024 --tokenizer data/tokenizers/embedded_1024_bpe.model \
    --budgets 264567 --out bench/results/quant_headroom_conv1200
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import quant
from bench.rate_distortion import calibration_pairs, load_run
from bench.rd_frontier import Scorer
from golf.main import quant_policy
from quant import fitter
from quant.artifact import logical_streams, state_dict_from_tensors
from quant.gptq import GptqSolve, gptq_quantize
from quant.policy import classify
from quant.roworder import l1_chain_order
from quant.scalar import clip_step, order0_entropy

MU_HIGH_RATE = 2 * math.log(2) / 12     # d(error / step^2) / d(bits) at high rate
ENTROPIES = (2.5, 3.0, 3.5, 4.0)        # bits per weight at which rdo compares the two


@dataclass
class Fitted:
    """The default fitter's result at one budget (a quant.FitSession and its choice), and what
    a measured move needs."""
    session: quant.FitSession
    choice: list[int]

    @property
    def rate(self) -> np.ndarray:
        """Predicted bytes per (tensor, option)."""
        return np.stack([c.rate for c in self.session.curves])

    @property
    def budget(self) -> int:
        return self.session.budget_bytes

    def tensors(self, choice: list[int]) -> list:
        return self.session.build(choice).tensors

    def total_bytes(self, choice: list[int]) -> int:
        return self.session.build(choice).total_bytes


def fit_default(model: torch.nn.Module, cfg, hs: dict, om: dict, budget: int,
                row_steps: str) -> Fitted:
    """The fitter exactly as quantize_model runs it (Fisher weights), its session kept so
    other options can be realized."""
    policy = replace(quant_policy(cfg, model, "gptq"), row_steps=row_steps)
    session = quant.open_fit(model, hessians=hs, policy=policy,
                             fit=quant.BudgetFit(budget, error_weights=om))
    return Fitted(session, session.fit())


def exchange_round(f: Fitted, probe: Callable[[list], float], loss: float, stride: int
                   ) -> tuple[float, dict]:
    """One round of measured exchanges at `stride` rungs (see the module docstring); updates
    f.choice when a proposal is kept. Returns (loss now, what the round did)."""
    moves: list[dict[int, tuple[int, float, float]]] = [{}, {}]   # finer, coarser
    for i, j in enumerate(f.choice):
        for side, d in ((0, -stride), (1, stride)):
            if j != fitter.FLOAT and 1 <= j + d < fitter.N_OPTIONS:
                trial = list(f.choice)
                trial[i] = j + d
                moves[side][i] = (j + d, probe(f.tensors(trial)) - loss, f.rate[i, j + d] - f.rate[i, j])
    proposal = _lagrangian_moves(f.choice, moves)
    done = {"stride": stride, "probes": sum(len(m) for m in moves), "tries": []}
    for _ in range(4):
        nbytes = f.total_bytes(proposal)
        new = probe(f.tensors(proposal)) if nbytes <= f.budget else float("nan")
        done["tries"].append({"moves": sum(a != b for a, b in zip(proposal, f.choice)),
                              "bytes": nbytes, "loss": new})
        if nbytes <= f.budget and new < loss:
            f.choice, loss = proposal, new
            break
        ups = [(moves[0][i][1] / max(moves[0][i][2], 1e-9), i)
               for i in range(len(proposal)) if proposal[i] < f.choice[i]]
        if not ups:
            break
        proposal = list(proposal)
        proposal[max(ups)[1]] = f.choice[max(ups)[1]]
    return loss, done


def _lagrangian_moves(choice: list[int], moves: list[dict]) -> list[int]:
    """Per tensor the measured move (or none) minimising dloss + lam * dbytes, lam bisected
    (log scale) to the smallest value whose moves add no predicted bytes."""
    def pick(lam: float) -> tuple[list[int], float]:
        out, total = list(choice), 0.0
        for i in range(len(choice)):
            best = (0.0, 0.0, choice[i])
            for side in moves:
                if i in side and side[i][1] + lam * side[i][2] < best[0] + lam * best[1]:
                    best = (side[i][1], side[i][2], side[i][0])
            out[i], total = best[2], total + best[1]
        return out, total
    lo, hi = -14.0, 2.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if pick(10 ** mid)[1] > 0 else (lo, mid)
    return pick(10 ** hi)[0]


def refine(args: argparse.Namespace, model, cfg, hs: dict, om: dict, scorer: Scorer) -> list:
    """The `refine` measurement at every budget: probe and val gaps before and after."""
    pairs = calibration_pairs(cfg, args.data, 8 + args.probe_batches)[8:]
    from golf.model.gpt import GPT
    probe_model = GPT(cfg).eval()

    def probe_sd(sd: dict) -> float:
        probe_model.load_state_dict(sd)
        with torch.no_grad():
            return float(np.mean([float(probe_model(x, y)) for x, y in pairs]))

    def probe(tensors: list) -> float:
        return probe_sd(state_dict_from_tensors(tensors))

    def val(tensors: list) -> float:
        probe_model.load_state_dict(state_dict_from_tensors(tensors))
        return scorer.plain(probe_model)["bpb"]

    pre_probe = probe_sd(model.state_dict())
    pre_val = scorer.plain(model)["bpb"]
    rows = []
    for budget in args.budgets:
        t0 = time.perf_counter()
        f = fit_default(model, cfg, hs, om, budget, args.row_steps)
        start = list(f.choice)
        room = context(f)
        print(f"headroom:context {json.dumps(room)}", flush=True)
        loss0 = loss = probe(f.tensors(f.choice))
        rounds = []
        for stride in args.strides:
            loss, done = exchange_round(f, probe, loss, stride)
            rounds.append(done)
            print(f"headroom:refine budget:{budget} stride:{stride} probe_gap:{loss - pre_probe:.5f}",
                  flush=True)
        rows.append({"budget": budget, "bytes_before": f.total_bytes(start),
                     "bytes_after": f.total_bytes(f.choice),
                     "probe_gap_before": loss0 - pre_probe, "probe_gap_after": loss - pre_probe,
                     "val_gap_before": val(f.tensors(start)) - pre_val,
                     "val_gap_after": val(f.tensors(f.choice)) - pre_val,
                     "moved": sum(a != b for a, b in zip(start, f.choice)), "rounds": rounds,
                     "context": room,
                     "seconds": round(time.perf_counter() - t0, 1)})
    return rows


def rate_aware(mu: float, logp: torch.Tensor, qmax: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """GptqSolve.rounding: of floor(x), floor(x)+1 and 0, the code minimising
    (x - q)^2 + mu * (-log2 p(q)); logp indexed by code + qmax."""
    def rnd(x: torch.Tensor) -> torch.Tensor:
        lo = torch.clamp(torch.floor(x), -qmax, qmax)
        cands = torch.stack([lo, torch.clamp(lo + 1, -qmax, qmax), torch.zeros_like(lo)])
        cost = (x[None] - cands) ** 2 + mu * logp[(cands + qmax).long()]
        return cands.gather(0, cost.argmin(0, keepdim=True))[0]
    return rnd


def _entropy_error(w: torch.Tensor, h: torch.Tensor, step: torch.Tensor, qmax: int,
                   mu: float) -> tuple[float, float]:
    """(order-0 entropy in bits/weight, H-weighted output error) of GPTQ codes at `step`,
    nearest rounding (mu 0) or rate-aware with the histogram of the previous pass (2 passes)."""
    codes = gptq_quantize(w, h, step, qmax).float()
    for _ in range(2 if mu > 0 else 0):
        p = torch.bincount((codes.flatten() + qmax).long(), minlength=2 * qmax + 1).double()
        logp = -torch.log2((p / p.sum()).clamp_min(1e-6)).float()
        codes = gptq_quantize(w, h, step, qmax, GptqSolve(rounding=rate_aware(mu, logp, qmax))).float()
    d = (w - codes * step[:, None]).double()
    return order0_entropy(codes), float(torch.einsum("ri,ij,rj->", d, h.double(), d))


def rdo(args: argparse.Namespace, model, cfg, hs: dict) -> list:
    """The `rdo` measurement: per tensor, rate-aware over nearest error at equal entropy."""
    policy = replace(quant_policy(cfg, model, "gptq"), row_steps="sdclip")
    state, rows = dict(model.state_dict()), []
    for name, h in hs.items():
        w, h = state[name].float(), h.float()
        cls = classify(name, w.numel(), w.ndim, True, policy)
        if cls == "small" or w.ndim != 2:
            continue
        cp = policy.for_class(cls)
        base = clip_step(w, cp.bits, cp.clip.kind, cp.clip.value, torch.diagonal(h))
        curves = {mu: sorted(_entropy_error(w, h, base * m, 127, mu)
                             for m in np.geomspace(0.5, 3.0, 9)) for mu in (0.0, *args.mus)}
        row = {"tensor": name}
        for bits in ENTROPIES:
            at = {mu: math.exp(np.interp(bits, [e for e, _ in c], [math.log(x) for _, x in c]))
                  for mu, c in curves.items()}
            row[f"{bits}"] = {f"{mu:g}": at[mu] / at[0.0] for mu in args.mus}
        rows.append(row)
        print(f"headroom:rdo {name} " + " ".join(
            f"{b}:{row[f'{b}'][f'{args.mus[0]:g}']:.4f}" for b in ENTROPIES), flush=True)
    return rows


def _cond_entropy(x: torch.Tensor, ctx: torch.Tensor | None) -> float:
    """Plug-in H(X | ctx) in bits per symbol (codes offset to 0..255); biased low on few
    samples per context, so as a coder's target it is optimistic."""
    def h(v: torch.Tensor) -> float:
        c = torch.bincount(v).double()
        p = c[c > 0] / c.sum()
        return float(-(p * torch.log2(p)).sum())
    return h(x) if ctx is None else h(ctx * 256 + x) - h(ctx)


def context(f: Fitted) -> dict:
    """The coder's room on the fitter's codes at one budget: the codes' order-0 entropy, their
    entropy given the code to the left (same row) or above (same column, stored row order, and
    the L1 nearest-neighbour row order the records' container uses), against the bytes the
    artifact's code streams take. Totals in bits per code over every quantized tensor."""
    q = f.session.build(f.choice)
    coded = {n: st["length"] for n, st in logical_streams(q.streams).items()}
    keys = ("order0", "given_left", "given_above", "given_above_l1_rows", "coded")
    tot = dict.fromkeys(keys, 0.0) | {"codes": 0}
    for qt in q.tensors:
        if qt.kind != "quant":
            continue
        c = torch.from_numpy(qt.codes.astype(np.int64).reshape(qt.codes.shape[0], -1) + 128)
        s = c[torch.from_numpy(l1_chain_order(qt.codes.reshape(c.shape)).astype(np.int64))]
        bits = {"order0": _cond_entropy(c.flatten(), None),
                "given_left": _cond_entropy(c[:, 1:].flatten(), c[:, :-1].flatten()),
                "given_above": _cond_entropy(c[1:].flatten(), c[:-1].flatten()),
                "given_above_l1_rows": _cond_entropy(s[1:].flatten(), s[:-1].flatten()),
                "coded": 8 * coded[f"codes/{qt.name}"] / c.numel()}
        for k in keys:
            tot[k] += bits[k] * c.numel()
        tot["codes"] += c.numel()
    return {"budget": f.budget, "codes": tot["codes"],
            **{k: tot[k] / max(tot["codes"], 1) for k in keys}}


def table(res: dict) -> str:
    """The short table: refine per budget, rdo as the median ratio over tensors."""
    out = []
    if res.get("refine"):
        out += ["| budget | bytes before/after | probe gap before/after (nats) | "
                "val gap before/after (bpb) | tensors moved |", "|---:|---:|---:|---:|---:|"]
    for r in res.get("refine", []):
        out.append(f"| {r['budget']:,} | {r['bytes_before']:,} / {r['bytes_after']:,} | "
                   f"{r['probe_gap_before']:.5f} / {r['probe_gap_after']:.5f} | "
                   f"{r['val_gap_before']:+.5f} / {r['val_gap_after']:+.5f} | {r['moved']} |")
    rooms = [r["context"] for r in res.get("refine", []) if "context" in r] + res.get("context", [])
    if rooms:
        out += ["", "| budget | order-0 | given left | given above | above, L1 rows | coded |",
                "|---:|---:|---:|---:|---:|---:|"]
        out += [f"| {r['budget']:,} | " + " | ".join(f"{r[k]:.3f}" for k in (
            "order0", "given_left", "given_above", "given_above_l1_rows", "coded")) + " |"
            for r in rooms]
        out.append("")
    if res.get("rdo"):
        out += ["| mu | " + " | ".join(f"{b} bits" for b in ENTROPIES) + " |",
                "|---:|" + "---:|" * len(ENTROPIES)]
        for mu in res["mus"]:
            med = [float(np.median([r[f"{b}"][f"{mu:g}"] for r in res["rdo"]])) for b in ENTROPIES]
            out.append(f"| {mu:g} | " + " | ".join(f"{m:.4f}" for m in med) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a run's ema.pt (hessians.pt beside it)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--budgets", type=lambda s: [int(b) for b in s.split(",")], default=[],
                    help="comma-separated artifact budgets in bytes for `refine` (none: skip it)")
    ap.add_argument("--strides", type=lambda s: [int(b) for b in s.split(",")], default=[8, 4, 4, 2])
    ap.add_argument("--probe-batches", type=int, default=8)
    ap.add_argument("--mus", type=lambda s: [float(b) for b in s.split(",")],
                    default=[MU_HIGH_RATE, 2 * MU_HIGH_RATE], help="rdo's rate weights (none: skip)")
    ap.add_argument("--row-steps", default=quant.QuantPolicy().row_steps,
                    choices=quant.policy.ROW_STEPS, help="the fitter's row shape (default: "
                    "the default's) for refine and the coder's room; rdo always starts from "
                    "each row's SDClip step")
    ap.add_argument("--no-rdo", action="store_true")
    ap.add_argument("--no-refine", action="store_true",
                    help="at --budgets only the coder's room (context), no exchanges")
    ap.add_argument("--out", required=True, help="writes OUT.json")
    args = ap.parse_args(argv)
    from golf.eval.score import load_eval_data
    cfg, model, _state, hs, om = load_run(args.checkpoint, args.data, 8, fresh_weights=True)
    res = {"checkpoint": args.checkpoint, "mus": args.mus, "probe_batches": args.probe_batches,
           "strides": args.strides, "row_steps": args.row_steps}
    if not args.no_rdo:
        res["rdo"] = rdo(args, model, cfg, hs)
    if args.budgets and args.no_refine:
        res["context"] = [context(fit_default(model, cfg, hs, om, b, args.row_steps))
                          for b in args.budgets]
    elif args.budgets:
        data = load_eval_data(args.data, args.tokenizer, cfg.vocab_size, log=None)
        res["refine"] = refine(args, model, cfg, hs, om, Scorer(cfg, data, None))
    Path(args.out + ".json").write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k not in ("rdo",)}, default=str)[:2000])
    print(table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
