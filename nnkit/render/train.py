"""What `nnkit train` and `nnkit eval` show: the progress bar, the run's summary, a checkpoint's and an ensemble's
evaluation (JSON, a contract: extend only, and tables).

  train {"val_accuracy", "best_epoch", "epochs_run", "test_accuracy", ..., "images_per_s", "seconds"}
  eval  {"accuracy", "top5", "loss", "images", "per_class", "confusion", "classes", "checkpoint", ...; an
         ensemble's "members" beside them}
"""

from __future__ import annotations

from typing import Any

from nnkit.render import Tabular


def train_progress(enabled: bool) -> tuple[Any, Any]:
    """Hooks for nnkit.train.loop that draw a rich progress bar on stderr (or only print notes, when stderr is
    not a terminal), and the Progress to enter (None without a bar)."""
    import sys

    from nnkit.train.loop import Hooks

    class Notes(Hooks):
        def note(self, text: str) -> None:
            sys.stderr.write(f"note: {text}\n")

    if not enabled:
        return Notes(), None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), TextColumn("{task.fields[last]}"),
                        console=Console(stderr=True), transient=False)

    class Bar(Notes):
        task: Any = None
        last = ""

        def epoch_start(self, epoch: int, epochs: int, steps: int, done: int) -> None:
            if self.task is None:
                self.task = progress.add_task("train", total=steps, epoch=f"{epoch}/{epochs}", last="")
            progress.reset(self.task, total=steps, completed=done, epoch=f"{epoch}/{epochs}", last=self.last)

        def step(self, epoch: int, step: int) -> None:
            progress.advance(self.task)

        def epoch_end(self, row: dict[str, Any]) -> None:
            self.last = f"loss {row['train_loss']:.4f}  val {row['val_accuracy']:.2%}"
            progress.update(self.task, last=self.last)

        def note(self, text: str) -> None:
            progress.console.print(f"note: {text}", markup=False, highlight=False)

    return Bar(), progress


def train_view(r: Any) -> tuple[dict[str, Any], Tabular]:
    """A TrainResult's summary."""
    last = r.history[-1] if r.history else {}
    doc = {"val_accuracy": r.val_accuracy, "best_epoch": r.best_epoch, "epochs_run": r.epochs_run,
           "test_accuracy": r.test_accuracy, "test_loss": r.test_loss, "stopped_early": r.stopped_early,
           "best_checkpoint": r.best_checkpoint, "last_checkpoint": r.last_checkpoint, "run_dir": r.run_dir,
           "arch": r.arch, "dataset": r.dataset, "params": r.params, "device": r.device,
           "world_size": r.world_size, "train_loss": last.get("train_loss"),
           "train_accuracy": last.get("train_accuracy"), "images_per_s": r.images_per_s, "seconds": r.seconds}
    pct = {"val_accuracy", "test_accuracy", "train_accuracy"}
    rows = tuple((k, f"{v:.2%}" if k in pct and v is not None else f"{v:,.0f}" if k == "images_per_s" else
                  (f"{v:.4g}" if isinstance(v, float) else v)) for k, v in doc.items())
    return doc, Tabular(("setting", "value"), rows, title=f"{r.arch} on {r.dataset}")


def eval_view(r: Any, plot: str | None = None) -> tuple[dict[str, Any], Tabular]:
    """An EvalResult: per-class accuracy, with the confusion matrix in JSON (and its picture's path noted)."""
    doc = {"accuracy": r.accuracy, "top5": r.top5, "loss": r.loss, "images": r.images,
           "per_class": {name: {"images": n, "accuracy": acc} for name, n, acc in r.per_class},
           "confusion": [list(row) for row in r.confusion], "classes": list(r.classes),
           "checkpoint": r.checkpoint, "arch": r.arch, "dataset": r.dataset, "split": r.split}
    notes = [f"loss {r.loss:.4f}, top-1 {r.accuracy:.2%}" + (", top-5 "
                                                             f"{r.top5:.2%}" if r.top5 is not None else "")
             + f" on {r.images} {r.split} images"]
    if plot:
        notes.append(f"confusion matrix: {plot}")
    tab = Tabular(("class", "images", "accuracy"),
                  tuple((name, n, "-" if acc is None else f"{acc:.2%}") for name, n, acc in r.per_class),
                  title=f"{r.arch} on {r.dataset} ({r.split})",
                  footer=(("all", r.images, f"{r.accuracy:.2%}"),), notes=tuple(notes),
                  numeric=frozenset({"images", "accuracy"}))
    return doc, tab


def ensemble_view(e: Any, plot: str | None = None) -> tuple[dict[str, Any], Tabular]:
    """An EnsembleResult with the same keys as one checkpoint's evaluation, and "members" beside it."""
    r = e.ensemble

    def scores(m: Any) -> dict[str, Any]:
        return {"checkpoint": m.checkpoint, "arch": m.arch, "accuracy": m.accuracy, "top5": m.top5, "loss": m.loss}

    doc = {"accuracy": r.accuracy, "top5": r.top5, "loss": r.loss, "images": r.images,
           "per_class": {name: {"images": n, "accuracy": acc} for name, n, acc in r.per_class},
           "confusion": [list(row) for row in r.confusion], "classes": list(r.classes), "checkpoint": r.checkpoint,
           "arch": r.arch, "dataset": r.dataset, "split": r.split, "members": [scores(m) for m in e.members]}
    best = max(m.accuracy for m in e.members)
    notes = [f"ensemble: the mean of {len(e.members)} members' probabilities on {r.images} {r.split} images; "
             f"top-1 {r.accuracy:.2%} against the best member's {best:.2%} ({r.accuracy - best:+.2%})"]
    if plot:
        notes.append(f"confusion matrix of the ensemble: {plot}")

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2%}"

    # the ensemble is a row, not a footer: TSV and CSV carry rows only
    rows = tuple((m.checkpoint, m.arch, pct(m.accuracy), pct(m.top5), f"{m.loss:.4f}") for m in (*e.members, r))
    tab = Tabular(("member", "arch", "accuracy", "top5", "loss"), rows,
                  title=f"ensemble of {len(e.members)} on {r.dataset} ({r.split})", notes=tuple(notes),
                  numeric=frozenset({"accuracy", "top5", "loss"}))
    return doc, tab
