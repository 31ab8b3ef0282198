"""Run directories side by side: `find_runs(paths)` -> RunInfo per run (issue 13, `nnkit runs`).

Reads only the JSON files a run writes (config.json, metrics.jsonl, summary.json, and trial.json in a study's
trials), so listing runs needs no torch; a run from before config.json carried its parameter count has it
counted from its checkpoint (torch, only then).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnkit.errors import RunDirError

__all__ = ["RunInfo", "find_runs"]

MAX_DEPTH = 3  # a parent folder is searched this deep: runs/, a study folder, runs/study/trial-0001


@dataclass(frozen=True)
class RunInfo:
    path: str
    arch: str | None
    dataset: str | None
    epochs_run: int
    epochs: int | None  # the run's --epochs (its total)
    best_val_accuracy: float | None
    test_accuracy: float | None
    params: int | None
    images_per_s: float | None
    seconds: float  # training time, the epochs' sum
    state: str  # done, stopped early, pruned, failed, incomplete (running or interrupted), empty
    history: tuple[dict[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "arch": self.arch, "dataset": self.dataset, "epochs_run": self.epochs_run,
                "epochs": self.epochs, "best_val_accuracy": self.best_val_accuracy,
                "test_accuracy": self.test_accuracy, "params": self.params, "images_per_s": self.images_per_s,
                "seconds": self.seconds, "state": self.state}


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _history(run: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        text = (run / "metrics.jsonl").read_text()
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # written atomically, but a file from elsewhere may be cut
    return rows


def _params_from_checkpoint(run: Path) -> int | None:
    for name in ("best.pt", "last.pt"):
        if (run / name).is_file():
            from nnkit.errors import CheckpointError
            from nnkit.train import checkpoint as ckpt

            try:
                state = ckpt.load(run / name)
            except CheckpointError:
                continue
            return int(sum(v.numel() for k, v in state["model"].items()
                           if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))))
    return None


def read_run(run: Path) -> RunInfo:
    config = _json(run / "config.json") or {}
    summary = _json(run / "summary.json")
    trial = _json(run / "trial.json")
    hist = _history(run)
    secs = sum(float(r.get("seconds", 0.0)) for r in hist)
    imgs = sum(float(r.get("images_per_s", 0.0)) * float(r.get("seconds", 0.0)) for r in hist)
    best = max((r["val_accuracy"] for r in hist if "val_accuracy" in r), default=None)
    params = config.get("params")
    if params is None and hist:
        params = _params_from_checkpoint(run)
    finished = summary is not None and summary.get("epochs_run") == len(hist)
    if trial is not None and trial.get("state") in ("PRUNED", "FAIL"):
        state = "pruned" if trial["state"] == "PRUNED" else "failed"
    elif finished and summary.get("stopped_early"):
        state = "stopped early"
    elif finished:
        state = "done"
    else:
        state = "incomplete" if hist else "empty"
    return RunInfo(path=str(run), arch=config.get("arch"), dataset=config.get("dataset"), epochs_run=len(hist),
                   epochs=config.get("epochs"), best_val_accuracy=best,
                   test_accuracy=summary.get("test_accuracy") if finished else None, params=params,
                   images_per_s=imgs / secs if secs else None, seconds=secs, state=state, history=tuple(hist))


def _is_run(p: Path) -> bool:
    return (p / "config.json").is_file()


def _natural(p: Path) -> list[Any]:
    import re

    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", str(p))]


def find_runs(paths: list[str]) -> list[RunInfo]:
    """Each path a run directory, or a folder holding runs (searched MAX_DEPTH deep); in the order given,
    each folder's runs in natural order (trial-2 before trial-10)."""
    found: list[Path] = []
    for text in paths:
        p = Path(text).expanduser()
        if not p.is_dir():
            raise RunDirError(f"{text}: no such directory")
        if _is_run(p):
            found.append(p)
            continue
        level, runs = [p], []
        for _ in range(MAX_DEPTH):
            nxt = []
            for d in level:
                try:
                    children = [c for c in d.iterdir() if c.is_dir()]
                except OSError:
                    continue
                for c in children:
                    (runs if _is_run(c) else nxt).append(c)
            level = nxt
        if not runs:
            raise RunDirError(f"{text}: holds no run directory (a folder with config.json, as nnkit train "
                              f"writes)")
        found += sorted(runs, key=_natural)
    seen, out = set(), []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append(read_run(p))
    return out
