"""Per-epoch metrics files (metrics.jsonl, metrics.csv) and the curves.png plot of a run directory.

Both files are rewritten whole from the run's history after each epoch (atomically), so a resumed run never
holds a duplicate or half-written row.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from nnkit.train.checkpoint import atomic_text, atomic_write

COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "images_per_s",
           "seconds")


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    atomic_text(run_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(history)
    atomic_text(run_dir / "metrics.csv", buf.getvalue())


def plot_curves(path: Path, history: list[dict[str, Any]], title: str) -> None:
    """Loss and accuracy per epoch, train and validation, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    a.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation")
    a.set(xlabel="epoch", ylabel="loss", title="loss")
    b.plot(epochs, [r["train_accuracy"] for r in history], "o-", label="train")
    b.plot(epochs, [r["val_accuracy"] for r in history], "o-", label="validation")
    b.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def plot_confusion(path: Path, confusion: list[list[int]], classes: tuple[str, ...], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    size = min(4 + 0.4 * n, 24)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(confusion, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
        if n <= 12:
            top = max(max(r) for r in confusion) or 1
            for i, row in enumerate(confusion):
                for j, v in enumerate(row):
                    ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)
