"""What `nnkit tune` and `nnkit runs` show: their JSON and tables, the progress bar, and the plots.

JSON (a contract, extend only):
  tune {"study", "best", "trials": [{"number", "state", "params": {"lr", ...}, "value", ...}], ...}
  runs {"runs": [{"path", "arch", "dataset", "epochs_run", "best_val_accuracy", "test_accuracy", ...}]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nnkit.errors import RunDirError, UsageError
from nnkit.render import Tabular


def _pct(v: float | None) -> str | None:
    return None if v is None else f"{v:.2%}"


def _num(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.4g}"
    return v


def _secs(v: float | None) -> str | None:
    return None if v is None else f"{v:.1f}"


def tune_view(r: Any) -> tuple[dict[str, Any], Tabular]:
    names = [p.name for p in r.space] or sorted({k for t in r.trials for k in t.params})
    doc = {"study": r.study, "storage": r.storage, "out": r.out, "sampler": r.sampler, "pruner": r.pruner,
           "metric": r.metric, "direction": r.direction, "trials_total": r.total, "epochs_spent": r.epochs_spent,
           "best": r.best.to_dict() if r.best else None, "trials": [t.to_dict() for t in r.trials]}
    acc = r.metric == "val_accuracy"
    rows = tuple((t.number, t.state.lower(), *(_num(t.params.get(n)) for n in names),
                  _pct(t.value) if acc else _num(t.value), _pct(t.best_val_accuracy), t.epochs_run,
                  _secs(t.seconds)) for t in r.trials)
    counts: dict[str, int] = {}
    for t in r.trials:
        counts[t.state.lower()] = counts.get(t.state.lower(), 0) + 1
    done = counts.get("complete", 0) + counts.get("pruned", 0)
    notes = [f"{done} of {r.total} trials done ("
             + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"); {r.epochs_spent} epochs trained"]
    if r.best is not None:
        notes.append(f"best: trial {r.best.number}, {r.metric} "
                     f"{_pct(r.best.value) if acc else _num(r.best.value)}, "
                     + ", ".join(f"{k} {_num(v)}" for k, v in r.best.params.items())
                     + f"; checkpoint {r.best.checkpoint}")
    else:
        notes.append("no trial has completed yet")
    failed = [t for t in r.trials if t.state == "FAIL" and t.error]
    notes += [f"trial {t.number} failed: {t.error}" for t in failed[-3:]]
    cols = ("#", "state", *names, r.metric, "best val", "epochs", "seconds")
    return doc, Tabular(columns=cols, rows=rows, title=f"study {r.study} ({r.sampler}, pruner {r.pruner})",
                        notes=tuple(notes), numeric=frozenset({"#", r.metric, "best val", "epochs", "seconds"}))


def runs_view(runs: list[Any]) -> tuple[dict[str, Any], Tabular]:
    doc = {"runs": [r.to_dict() for r in runs]}
    rows = tuple((r.path, r.arch, r.dataset, f"{r.epochs_run}/{r.epochs}" if r.epochs else r.epochs_run,
                  _pct(r.best_val_accuracy), _pct(r.test_accuracy), r.params,
                  None if r.images_per_s is None else f"{r.images_per_s:,.0f}", _secs(r.seconds), r.state)
                 for r in runs)
    cols = ("run", "arch", "dataset", "epochs", "best val", "test", "params", "images/s", "seconds", "state")
    return doc, Tabular(columns=cols, rows=rows, title=f"{len(runs)} run{'s' * (len(runs) != 1)}",
                        numeric=frozenset({"epochs", "best val", "test", "params", "images/s", "seconds"}))


# ---------------------------------------------------------------------------------------------- progress


def tune_progress(enabled: bool) -> tuple[Any, Any]:
    """Hooks for nnkit.train.tune that draw a rich progress bar on stderr (or only print notes), and the
    Progress to enter (None without a bar)."""
    import sys

    class Notes:
        def start(self, total: int, done: int) -> None: ...

        def trial_start(self, number: int, params: dict[str, Any]) -> None: ...

        def epoch_end(self, number: int, row: dict[str, Any], epochs: int) -> None: ...

        def trial_end(self, row: Any, done: int) -> None: ...

        def note(self, text: str) -> None:
            sys.stderr.write(f"note: {text}\n")

    if not enabled:
        return Notes(), None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[now]}"), console=Console(stderr=True), transient=False)

    class Bar(Notes):
        task: Any = None
        best = ""

        def start(self, total: int, done: int) -> None:
            self.task = progress.add_task("tune", total=total, completed=min(done, total), now="")

        def trial_start(self, number: int, params: dict[str, Any]) -> None:
            progress.update(self.task, now=f"trial {number}{self.best}")

        def epoch_end(self, number: int, row: dict[str, Any], epochs: int) -> None:
            progress.update(self.task, now=f"trial {number} epoch {row['epoch']}/{epochs} "
                                           f"val {row['val_accuracy']:.2%}{self.best}")

        def trial_end(self, row: Any, done: int) -> None:
            if row.best_val_accuracy is not None and row.state == "COMPLETE":
                self.best = f"  (trial {row.number}: {row.best_val_accuracy:.2%})"
            progress.update(self.task, completed=done, now=f"trial {row.number} {row.state.lower()}{self.best}")

        def note(self, text: str) -> None:
            progress.console.print(f"note: {text}", markup=False, highlight=False)

    return Bar(), progress


# ---------------------------------------------------------------------------------------------- plots


def _plot_path(path: str) -> Path:
    out = Path(path).expanduser()
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UsageError(f"--plot {path}: the file name must end in .png, .svg or .pdf")
    if not out.parent.is_dir():
        raise RunDirError(f"--plot {path}: no such directory {out.parent}")
    return out


def _save(fig: Any, out: Path) -> None:
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        fig.savefig(out, dpi=100)
    except OSError as exc:
        raise RunDirError(f"--plot {out}: cannot write ({exc.strerror or exc})") from exc
    finally:
        plt.close(fig)


def plot_study(study: Any, path: str) -> list[str]:
    """Optuna's optimisation history at PATH and its parameter importances (fANOVA) at PATH-importances.EXT;
    the importances need two completed trials with different values."""
    out = _plot_path(path)
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import optuna
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = ovm.plot_optimization_history(study)
        _save(ax.figure, out)
        written.append(str(out))
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(done) >= 2 and len({t.value for t in done}) > 1:
            imp = out.with_name(f"{out.stem}-importances{out.suffix}")
            ax = ovm.plot_param_importances(study)
            _save(ax.figure, imp)
            written.append(str(imp))
    return written


def plot_runs(runs: list[Any], path: str) -> str:
    """Every run's validation accuracy and training loss per epoch, overlaid."""
    out = _plot_path(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    for r in runs:
        if not r.history:
            continue
        name = Path(r.path).name
        ep = [h["epoch"] for h in r.history]
        a.plot(ep, [h["val_accuracy"] for h in r.history], marker=".", label=name)
        b.plot(ep, [h["train_loss"] for h in r.history], marker=".", label=name)
    a.set(xlabel="epoch", ylabel="validation accuracy", title="validation accuracy")
    b.set(xlabel="epoch", ylabel="training loss", title="training loss", yscale="log")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    if len(runs) <= 20:
        a.legend(fontsize=7)
    _save(fig, out)
    return str(out)
