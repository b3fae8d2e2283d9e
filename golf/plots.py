"""PNG plots people would rather look at than read: the training loss curve.

matplotlib is imported lazily with the Agg backend so headless machines and the packed
submission (which never plots) do not pay for it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


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
    from golf.atomic import atomic_file
    with atomic_file(png_path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
    return Path(png_path)
