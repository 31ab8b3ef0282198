"""Pictures: of an Analysis (per-layer params and MACs, the receptive field growing through the network), of a
training run (curves.png: loss, accuracy and gradient norm per epoch; the loop writes it into the run directory)
and of an evaluation (the confusion matrix). matplotlib is imported only inside these functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nnkit.core.report import Analysis
from nnkit.errors import UsageError
from nnkit.train.checkpoint import atomic_write


def plot_analysis(a: Analysis, path: str) -> Path:
    out = Path(path)
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UsageError(f"--plot {path}: the file name must end in .png, .svg or .pdf")
    if not out.parent.is_dir():
        what = "is a file, not a directory" if out.parent.exists() else "no such directory"
        raise UsageError(f"--plot {path}: {out.parent} {what}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in a.layers if r.params or r.macs or r.rf is not None]
    x = list(range(1, len(rows) + 1))
    fig, axes = plt.subplots(3, 1, figsize=(max(8, len(rows) * 0.12), 9), sharex=True)
    axes[0].bar(x, [r.params for r in rows], color="tab:blue")
    axes[0].set_ylabel("parameters")
    axes[1].bar(x, [r.macs for r in rows], color="tab:orange")
    axes[1].set_ylabel("MACs")
    axes[2].plot(x, [r.rf.size[0] if r.rf else float("nan") for r in rows], color="tab:green", marker=".")
    axes[2].set_ylabel("receptive field (px)")
    axes[2].set_xlabel("layer")
    step = max(1, len(rows) // 40)
    axes[2].set_xticks(x[::step])
    axes[2].set_xticklabels([r.spec for r in rows][::step], rotation=90, fontsize=6)
    fig.suptitle(f"{a.source}: {a.params:,} parameters, {a.macs:,} MACs")
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=100)
    except OSError as exc:  # a read-only folder, a full disk: the user's file system, not a bug
        raise UsageError(f"--plot {path}: cannot write ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)
    return out


def plot_curves(path: Path, history: list[dict[str, Any]], title: str) -> None:
    """Loss and accuracy per epoch, train and validation, side by side, and the gradient norm (mean and max per
    epoch, log scale), where vanishing or exploding gradients show."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4))
    a.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    a.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation")
    a.set(xlabel="epoch", ylabel="loss", title="loss")
    b.plot(epochs, [r["train_accuracy"] for r in history], "o-", label="train")
    b.plot(epochs, [r["val_accuracy"] for r in history], "o-", label="validation")
    b.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    normed = [r for r in history if r.get("grad_norm_mean") is not None]  # runs from before nnkit recorded it
    c.plot([r["epoch"] for r in normed], [r["grad_norm_mean"] for r in normed], "o-", label="mean")
    c.plot([r["epoch"] for r in normed], [r["grad_norm_max"] for r in normed], "o-", label="max")
    c.set(xlabel="epoch", ylabel="gradient norm (L2, all parameters)", title="gradient norm")
    if normed and min(r["grad_norm_mean"] for r in normed) > 0:
        c.set_yscale("log")
    for ax in (a, b, c):
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
