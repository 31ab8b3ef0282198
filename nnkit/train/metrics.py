"""Per-epoch metrics files (metrics.jsonl, metrics.csv) of a run directory (its curves.png: nnkit.render.plot).

Both files are rewritten whole from the run's history after each epoch (atomically), so a resumed run never
holds a duplicate or half-written row.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from nnkit.core.numbers import finite_json
from nnkit.train.checkpoint import atomic_text

# Columns are only ever added at the end (scripts read them by position too).
COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "images_per_s", "seconds",
           "grad_norm_mean", "grad_norm_max")


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    # NaN and inf (a diverged epoch) as null: JSON lines that any parser reads
    atomic_text(run_dir / "metrics.jsonl", "".join(json.dumps(finite_json(row), allow_nan=False) + "\n"
                                                   for row in history))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(history)
    atomic_text(run_dir / "metrics.csv", buf.getvalue())
