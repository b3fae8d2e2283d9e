"""PNG plots people would rather look at than read: the training loss curve and the
per-tensor quantization sensitivity.

matplotlib is imported lazily with the Agg backend so headless machines and the packed
submission (which never plots) do not pay for it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from golf.run.atomic import atomic_file


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Rows of metrics.jsonl; a torn last line (run killed mid-write) is ignored."""
    rows: list[dict] = []
    p = Path(path)
    if not p.is_file():
        return rows
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_loss_curves(metrics_path: str | os.PathLike, png_path: str | os.PathLike,
                     title: str = "") -> Path | None:
    """Train loss and val loss/bpb against step; returns the PNG path (None without data)."""
    rows = read_metrics(metrics_path)
    train = [(r["step"], r["train_loss"]) for r in rows if r.get("train_loss") is not None]
    val = [(r["step"], r["val_loss"], r.get("val_bpb")) for r in rows if r.get("val_loss") is not None]
    if not train and not val:
        return None
    # imported here: matplotlib is optional in a submission's environment (the packed script
    # ships this module) and costs ~0.5 s; Agg must be chosen before pyplot is imported
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot([s for s, _ in train], [v for _, v in train], label="train loss", lw=1.2)
    if val:
        ax.plot([s for s, _, _ in val], [v for _, v, _ in val], "o-", label="val loss", lw=1.5)
        bpb = [(s, b) for s, _, b in val if b is not None]
        if bpb:
            ax2 = ax.twinx()
            ax2.plot([s for s, _ in bpb], [b for _, b in bpb], "s--", color="tab:red",
                     label="val bpb", lw=1.0)
            ax2.set_ylabel("val bpb", color="tab:red")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title or "training loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    with atomic_file(png_path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
    return Path(png_path)


def plot_sensitivity(report: dict, png_path: str | os.PathLike) -> Path:
    """Horizontal bar chart of Δbpb, largest at the top; written atomically."""
    import matplotlib  # optional dependency, Agg first: see plot_loss_curves
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.28 * len(rows) + 1.2)), dpi=110)
    names = [r["name"] for r in rows][::-1]
    vals = [r["delta_bpb"] for r in rows][::-1]
    ax.barh(range(len(vals)), vals, color=["#c0392b" if v > 0 else "#2e86c1" for v in vals])
    ax.set_yticks(range(len(vals)), names, fontsize=7)
    ax.set_xlabel("Δ val_bpb when only this is quantized")
    ax.axvline(0, color="k", lw=0.6)
    ax.set_title(f"quantization sensitivity by {report['by']}"
                 f"{' (partial)' if report['partial'] else ''}", fontsize=9)
    fig.tight_layout()
    try:
        with atomic_file(png_path, "wb") as fh:
            fig.savefig(fh, format="png")
    finally:
        plt.close(fig)
    return Path(png_path)
