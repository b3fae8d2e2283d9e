"""Coders on the same codes: order-0 entropy, golfkit's rANS, the records' per-group lrzip
container (v1 and v2) and golfkit's context rANS, in bits per code and encode/decode seconds.

    python -m bench.container --checkpoint runs/ID/ema.pt [--method record_1855]
        [--budget BYTES] [--fit-times] [--v2] [--by-group] [--small-numel N]
        [--out bench/results/container]

The codes are `--method`'s (default record_1855: SDClip GPTQ with the run's hessians.pt
beside the checkpoint, round-to-nearest without one) on every quantized tensor; a fitted
method (gptq) is fitted to `--budget` bytes with the run's Hessians and Fisher weights, as the
main job does. Each coder stores all of them: the per-group v1 frame holds those in its role
groups and the rest go to brotli-11 (the record's remainder coder), v2 (with --v2) and the
rANS coders hold them all. "artifact" rows are whole .gkq files of the same tensors (scales,
LQER factors, passthrough and header included): the record's container (record methods),
golfkit's default coders without the context rANS (today) and with it (new: per tensor, the
smaller). --fit-times times the fitter three ways (without the context rANS, with it and no
row-order memo, with it). Writes <out>.json and prints a table. Needs lrzip
(`apt-get install lrzip`).
"""
from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import quant
from quant import ctxrans, pergroup, rans, roworder
from quant.artifact import build_artifact, decode_tensors, parse_artifact
from quant.codec import compress, decompress
from quant.core import METHODS
from quant.policy import SMALL_NUMEL


def load_codes(ckpt: str, method: str, small_numel: int | None, budget: int | None = None,
               compressors: tuple[str, ...] | None = None):
    """(quantized model, [(name, int8 codes)], whether GPTQ had Hessians, fit seconds) of the
    checkpoint under `method` (fitted to `budget` bytes when the method fits one)."""
    from golf.run import rundir
    from golf.run.checkpoint import load_torch_file
    from golf.run.config import Config
    from golf.model.gpt import GPT, quant_roles
    ck = load_torch_file(ckpt, "pass runs/<ID>/ema.pt", keys=("config", "state_dict"))
    sd = {k: v.float() if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
    hpath = Path(ckpt).with_name(rundir.HESSIANS)
    saved = (load_torch_file(hpath, "delete it", keys=("hessians",),
                             tensors=("hessians", "error_weights")) if hpath.is_file() else {})
    hs = saved.get("hessians")
    numel = small_numel or int(ck["config"].get("quant_small_numel", SMALL_NUMEL))
    with torch.device("meta"):  # the model's parameter roles (control / embedding names) only
        roles = quant_roles(GPT(Config.from_dict(ck["config"])))
    pol = quant.QuantPolicy(small_numel=numel, **roles)
    if compressors is not None:
        pol = replace(pol, compressors=compressors)
    t0 = time.perf_counter()
    q = quant.quantize_model(sd, hessians=hs, method=method, policy=pol,
                             fit=quant.BudgetFit(budget, error_weights=saved.get("error_weights"))
                             if METHODS[method].fits_budget else None)
    return q, [(qt.name, np.ascontiguousarray(qt.codes, np.int8)) for qt in q.tensors
               if qt.kind == "quant"], hs is not None, round(time.perf_counter() - t0, 2)


def order0_bits(mats: list[tuple[str, np.ndarray]]) -> float:
    """Sum over tensors of n * H0(tensor codes): the bound of a coder with one ideal table each."""
    total = 0.0
    for _n, m in mats:
        c = np.bincount(m.reshape(-1).view(np.uint8), minlength=256).astype(np.float64)
        c = c[c > 0]
        total += float(-(c * np.log2(c / c.sum())).sum())
    return total


def timed(enc: Callable[[], bytes], dec: Callable[[bytes], bytes], want: bytes) -> dict:
    t0 = time.perf_counter()
    blob = enc()
    t1 = time.perf_counter()
    out = dec(blob)
    t2 = time.perf_counter()
    if out != want:
        raise SystemExit("a coder did not round-trip the codes bit-exactly")
    return {"bytes": len(blob), "encode_s": round(t1 - t0, 3), "decode_s": round(t2 - t1, 3)}


def coders(mats: list[tuple[str, np.ndarray]], v2: bool = True) -> dict[str, dict]:
    """Every coder's bytes and seconds on the same codes (each checked bit-exact); the records'
    v2 container only with `v2` (one lrzip call over every matrix: minutes on large models)."""
    want = b"".join(m.tobytes() for _n, m in mats)
    grouped = [(n, m) for n, m in mats if pergroup.group_of(n) is not None]
    rest = [(n, m) for n, m in mats if pergroup.group_of(n) is None]

    def v1() -> bytes:  # frame + the remainder's codes under brotli, length-prefixed
        frame = pergroup.encode_v1(grouped)
        return len(frame).to_bytes(8, "little") + frame + _framed_brotli(rest)

    def v1_dec(blob: bytes) -> bytes:
        k = int.from_bytes(blob[:8], "little")
        parts = dict(zip([n for n, _m in grouped], _split(pergroup.decode(blob[8:8 + k]), grouped)))
        parts.update(zip([n for n, _m in rest], _split(_unframed_brotli(blob[8 + k:], rest), rest)))
        return b"".join(parts[n] for n, _m in mats)

    lengths = [m.size for _n, m in mats]
    out = {
        "golfkit joint rANS (today's code stream)": timed(lambda: rans.encode(want, lengths),
                                                          rans.decode, want),
        "brotli-11 per tensor (record_1855 before)": timed(
            lambda: _framed_brotli(mats), lambda b: _unframed_brotli(b, mats), want),
        "lrzip per-group v1 (+ brotli rest)": timed(v1, v1_dec, want),
        "golfkit context rANS (new)": timed(lambda: ctxrans.encode(mats), ctxrans.decode, want),
    }
    if v2:
        out["lrzip per-group v2"] = timed(lambda: pergroup.encode_v2(mats), pergroup.decode, want)
    return out


def _framed_brotli(mats: list[tuple[str, np.ndarray]]) -> bytes:
    return b"".join(len(t).to_bytes(8, "little") + t
                    for t in (compress(m.tobytes(), "brotli") for _n, m in mats))


def _unframed_brotli(blob: bytes, mats: list[tuple[str, np.ndarray]]) -> bytes:
    out, pos = [], 0
    for _n, m in mats:
        j = int.from_bytes(blob[pos:pos + 8], "little")
        out.append(decompress(blob[pos + 8:pos + 8 + j], "brotli", m.size))
        pos += 8 + j
    return b"".join(out)


def _split(data: bytes, mats: list[tuple[str, np.ndarray]]) -> list[bytes]:
    out, off = [], 0
    for _n, m in mats:
        out.append(data[off:off + m.size])
        off += m.size
    return out


def artifacts(q) -> dict[str, dict]:
    """Whole artifacts of q's tensors: codes in the record's container (record methods), under
    golfkit's default coders without the context rANS (today), and with it (new)."""
    out = {}
    record = next((c for c in q.policy.compressors if c.startswith("pergroup")), None)
    new = quant.QuantPolicy().compressors  # golfkit's default coders: best of, per stream
    today = tuple(c for c in new if c != "ctxrans")
    for label, codecs in (("artifact, record's container", q.policy.compressors),
                          ("artifact, golfkit today (default coders before)", today),
                          ("artifact, golfkit new (default coders, context rANS per tensor)", new)):
        if label.endswith("container") and record is None:
            continue
        t0 = time.perf_counter()
        blob, streams = build_artifact(q.tensors, q.meta, codecs, None, q.policy.shuffle_fp16)
        t1 = time.perf_counter()
        decode_tensors(*parse_artifact(blob))
        out[label] = {"bytes": len(blob), "encode_s": round(t1 - t0, 3),
                      "decode_s": round(time.perf_counter() - t1, 3),
                      "codecs": sorted({st["codec"] for st in streams})}
    return out


def by_group(mats: list[tuple[str, np.ndarray]]) -> dict[str, dict]:
    """Per v1 role group: the records' frame of that group alone (lrzip, its permutations and
    manifest) against the context rANS frame of the same matrices: where each one wins."""
    out = {}
    for group, _suffix in pergroup.GROUPS:
        sub = [(n, m) for n, m in mats if pergroup.group_of(n) == group]
        if sub:
            out[group] = {"codes": int(sum(m.size for _n, m in sub)),
                          "lrzip_v1": len(pergroup.encode_v1(sub)),
                          "ctxrans": len(ctxrans.encode(sub))}
    return out


@contextmanager
def no_order_memo():
    """Every row order and mode search computed afresh (what the fitter paid before the memo)."""
    keep = roworder.OrderMemo.lookup
    roworder.OrderMemo.lookup = lambda self, kind, codes, compute: compute()
    try:
        yield
    finally:
        roworder.OrderMemo.lookup = keep


def fit_times(ckpt: str, method: str, small_numel: int | None, budget: int) -> dict[str, dict]:
    """The fitter's seconds and bytes at `budget`: without the context rANS, with it but no
    row-order memo, with it (each a fresh fit; wall and CPU seconds, the machine's load varies)."""
    new = quant.QuantPolicy().compressors
    out = {}
    for label, codecs, memo in (("without context rANS", tuple(c for c in new if c != "ctxrans"), True),
                                ("context rANS, no order memo", new, False),
                                ("context rANS, order memo", new, True)):
        c0 = time.process_time()
        if memo:
            q, _m, _g, wall = load_codes(ckpt, method, small_numel, budget, codecs)
        else:
            with no_order_memo():
                q, _m, _g, wall = load_codes(ckpt, method, small_numel, budget, codecs)
        out[label] = {"fit_wall_s": wall, "fit_cpu_s": round(time.process_time() - c0, 2),
                      "bytes": q.total_bytes}
    return out


def table(res: dict) -> str:
    """Markdown: bits per code (all coded matrices) and per parameter (every tensor's)."""
    n, p = res["codes"], res.get("params") or res["codes"]
    lines = ["| coder | bytes | bits/code | bits/param | encode s | decode s |",
             "|---|---:|---:|---:|---:|---:|",
             f"| order-0 entropy (one ideal table per tensor) | {res['order0_bytes']:,.0f} | "
             f"{8 * res['order0_bytes'] / n:.4f} | {8 * res['order0_bytes'] / p:.4f} | - | - |"]
    for label, r in {**res["coders"], **res["artifacts"]}.items():
        lines.append(f"| {label} | {r['bytes']:,} | {8 * r['bytes'] / n:.4f} | "
                     f"{8 * r['bytes'] / p:.4f} | {r['encode_s']} | {r['decode_s']} |")
    if res.get("by_group"):
        lines += ["", "| v1 group | codes | lrzip v1 bytes | context rANS bytes | difference |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {g} | {v['codes']:,} | {v['lrzip_v1']:,} | {v['ctxrans']:,} | "
                  f"{v['ctxrans'] - v['lrzip_v1']:+,} ({100 * (v['ctxrans'] / v['lrzip_v1'] - 1):+.2f} %) |"
                  for g, v in res["by_group"].items()]
    if res.get("fit_times"):
        lines += ["", "| fitter | artifact bytes | wall s | CPU s |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {v['bytes']:,} | {v['fit_wall_s']} | {v['fit_cpu_s']} |"
                  for k, v in res["fit_times"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.container", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--method", default="record_1855", choices=METHODS)
    ap.add_argument("--budget", type=int, default=0,
                    help="artifact bytes a fitted method (gptq) is fitted to")
    ap.add_argument("--fit-times", action="store_true",
                    help="also time the fitter without/with the context rANS (fitted methods)")
    ap.add_argument("--v2", action="store_true", help="also the records' v2 container")
    ap.add_argument("--by-group", action="store_true",
                    help="also each v1 role group alone: lrzip against the context rANS")
    ap.add_argument("--small-numel", type=int, default=0,
                    help="passthrough threshold (default: the run's QUANT_SMALL_NUMEL)")
    ap.add_argument("--out", default="bench/results/container")
    args = ap.parse_args(argv)
    fitted = METHODS[args.method].fits_budget
    if fitted and args.budget <= 0:
        ap.error(f"--method {args.method} fits a budget: pass --budget BYTES (e.g. the record's "
                 "artifact size from a record_1855 run of this bench)")
    torch.manual_seed(0)
    pergroup.lrzip_binary()  # one line naming `apt-get install lrzip` when it is missing
    numel = args.small_numel or None
    q, mats, gptq, fit_s = load_codes(args.checkpoint, args.method, numel, args.budget or None)
    res = {"checkpoint": args.checkpoint, "method": args.method, "gptq": gptq,
           "budget": args.budget or None, "quantize_s": fit_s,
           "tensors": len(mats), "codes": int(sum(m.size for _n, m in mats)),
           "params": int(sum(int(np.prod(qt.shape)) for qt in q.tensors if qt.kind != "alias")),
           "order0_bytes": order0_bits(mats) / 8, "coders": coders(mats, args.v2),
           "artifacts": artifacts(q),
           "modes": {n: ctxrans.choose_mode(m) for n, m in mats}}
    if args.by_group:
        res["by_group"] = by_group(mats)
    if args.fit_times and fitted:
        res["fit_times"] = fit_times(args.checkpoint, args.method, numel, args.budget)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from golf.run.atomic import atomic_write_json
    atomic_write_json(out.with_suffix(".json"), res)
    print(table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
