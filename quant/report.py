"""Per-tensor report: where the bytes go and what each tensor's quantization costs.

Rows: class, shape, method, bits, k, bytes (its code stream plus its share of shared scale or
passthrough streams; scales as stored: fp16 or log-grid codes), share of the artifact, order-0 entropy of its codes, compressor overhead
over that entropy, weighted error, and each codec's size for its code stream.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .artifact import (logical_streams, lqer_stream_name, pass_stream_name, row_scales_name,
                       write_atomic)


def _entropy(codes: np.ndarray) -> float:
    counts = np.bincount(codes.reshape(-1).astype(np.int64) + 128, minlength=256)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum()) if p.size else 0.0


def build_report(qmodel) -> list[dict]:
    """One dict per state_dict entry, in state_dict order."""
    streams = logical_streams(qmodel.streams)
    total = qmodel.total_bytes
    rows = []
    for qt in qmodel.tensors:
        row = {"name": qt.name, "class": qt.cls, "shape": list(qt.shape), "kind": qt.kind,
               "method": qt.method, "bits": qt.bits or None, "k": qt.k,
               "params": qt.numel, "weighted_error": qt.error, "error_kind": qt.error_kind}
        row.update(qt.extra)
        nbytes = 0.0
        if qt.kind == "quant":
            cs = streams[f"codes/{qt.name}"]
            h = _entropy(qt.codes)
            scale_share = streams[row_scales_name(qt.name)]["length"]
            nbytes = cs["length"] + scale_share
            if qt.lqer is not None:
                lq_bytes = streams[lqer_stream_name(qt.name)]["length"]
                nbytes += lq_bytes
                row.update(lqer_rank=qt.lqer.rank, lqer_bytes=lq_bytes)
            row.update(code_bytes=cs["length"], scale_bytes=round(scale_share, 1),
                       codec=cs["codec"], codec_sizes=cs["sizes"], entropy_bits=round(h, 5),
                       bits_per_param=round(cs["length"] * 8 / qt.numel, 5),
                       overhead_vs_entropy=(round(cs["length"] * 8 / (qt.numel * h) - 1, 5)
                                            if h > 0 else None))
        elif qt.kind == "pass":
            ps = streams[pass_stream_name(qt)]
            nbytes = ps["length"] * qt.data.nbytes / max(ps["raw_length"], 1)
            row.update(codec=ps["codec"])
        else:
            row.update(alias_of=qt.alias_of)
        row["bytes"] = round(nbytes, 1)
        row["share"] = round(nbytes / total, 6) if total else 0.0
        rows.append(row)
    return rows


def summary(qmodel) -> dict:
    payload = sum(s["length"] for s in qmodel.streams)
    return {"total_bytes": qmodel.total_bytes, "header_bytes": qmodel.total_bytes - payload,
            "budget_bytes": qmodel.budget_bytes, "method": qmodel.method,
            "streams": [{k: s[k] for k in ("name", "codec", "length", "raw_length", "shuffle",
                                            "sizes")} for s in qmodel.streams]}


def format_report(qmodel) -> str:
    """A fixed-width table (one line per tensor) plus totals."""
    head = (f"{'tensor':<34} {'class':<9} {'method':<6} {'bits':>4} {'k':>7} {'bytes':>10} "
            f"{'share':>6} {'H':>6} {'b/p':>6} {'ovh%':>6} {'codec':<6} {'w.err':>9}")
    lines = [head, "-" * len(head)]
    for r in qmodel.report:
        ovh = r.get("overhead_vs_entropy")
        k = "" if r["k"] is None else f"{r['k']:.2f}"
        ent = f"{r['entropy_bits']:.3f}" if "entropy_bits" in r else ""
        bpp = f"{r['bits_per_param']:.3f}" if "bits_per_param" in r else ""
        ov = "" if ovh is None else f"{100 * ovh:.2f}"
        err = "" if r["weighted_error"] is None else f"{r['weighted_error']:.3e}"
        lines.append(
            f"{r['name'][:34]:<34} {r['class'][:9]:<9} {str(r['method'])[:6]:<6} "
            f"{(r['bits'] or ''):>4} {k:>7} {int(r['bytes']):>10,} {100 * r['share']:>5.2f}% "
            f"{ent:>6} {bpp:>6} {ov:>6} {str(r.get('codec', ''))[:6]:<6} {err:>9}")
    s = summary(qmodel)
    lines.append(f"total {s['total_bytes']:,} bytes (header {s['header_bytes']:,}; budget "
                 f"{s['budget_bytes'] if s['budget_bytes'] is not None else 'none'})")
    return "\n".join(lines)


def write_report(qmodel, json_path: str | os.PathLike, png_path: str | os.PathLike | None = None
                 ) -> None:
    """JSON (summary + per-tensor rows), and optionally a PNG of per-tensor bytes and error."""
    doc = {"summary": summary(qmodel), "tensors": qmodel.report}
    write_atomic(json_path, json.dumps(doc, indent=1, default=str).encode())
    if png_path is None:
        return
    import matplotlib  # optional for the artifact: plots only, and the packed script never plots
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in qmodel.report if r["kind"] == "quant"]
    fig = _bars(plt, rows, qmodel) if rows else _nothing_quantized(plt, qmodel)
    fig.tight_layout()
    png_path = Path(png_path)
    tmp = png_path.with_name(png_path.name + ".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, png_path)


def _bars(plt, rows: list[dict], qmodel):
    """Per quantized tensor: its bytes (top) and its weighted relative error (bottom)."""
    names = [r["name"] for r in rows]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.18 * len(rows) + 4), 8), sharex=True)
    axes[0].bar(range(len(rows)), [r["bytes"] for r in rows], color="tab:blue")
    axes[0].set_ylabel("bytes")
    axes[0].set_title(f"artifact {qmodel.total_bytes:,} bytes")
    axes[1].bar(range(len(rows)), [r["weighted_error"] or 0 for r in rows], color="tab:red")
    axes[1].set_ylabel("weighted rel. error")
    axes[1].set_xticks(range(len(rows)))
    axes[1].set_xticklabels(names, rotation=90, fontsize=6)
    return fig


def _nothing_quantized(plt, qmodel):
    """No bars to draw: say so in words rather than ship empty axes."""
    n = len(qmodel.report)
    fig = plt.figure(figsize=(8, 3))
    fig.text(0.5, 0.6, f"artifact {qmodel.total_bytes:,} bytes: no tensor was quantized",
             ha="center", fontsize=13)
    fig.text(0.5, 0.35, f"all {n} tensors are stored in floating point (the budget leaves room "
             "for that);\na smaller byte budget makes the fitter quantize and fills this plot",
             ha="center", fontsize=10)
    return fig
