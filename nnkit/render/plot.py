"""Pictures of an Analysis: per-layer params and MACs, and the receptive field growing through the network."""

from __future__ import annotations

from pathlib import Path

from nnkit.core.report import Analysis
from nnkit.errors import UsageError


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
