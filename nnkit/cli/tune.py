"""nnkit tune and nnkit runs: thin commands over nnkit.train.tune and nnkit.train.runs (issue 13)."""

import contextlib
import sys
from dataclasses import replace
from typing import Annotated, Any, List, Optional

import typer

from nnkit.cli.common import DeviceOpt, FormatOpt, complete_target
from nnkit.cli.train import DataDirOpt, DatasetOpt
from nnkit.render import emit
from nnkit.train.config import Dataset, Freeze, TrainConfig
from nnkit.train.tune import Metric, Pruner, Sampler

_D = TrainConfig()
_SPACE = "a value, a list (a,b,c) or a range (low..high, low..high:log)"

Space = Optional[List[str]]
ArchArg = Annotated[Optional[str], typer.Argument(help="Architecture to train in every trial (nnkit models).",
                                                  show_default=False, autocompletion=complete_target)]


def _opt(flag: str, what: str) -> Any:
    return typer.Option(flag, help=f"{what}: {_SPACE}.", show_default=False)


def tune_cmd(
    arch: ArchArg = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    val_split: Annotated[Optional[float], typer.Option("--val-split", help="As nnkit train's.",
                                                       show_default=False)] = None,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Study folder: the SQLite study and a run "
                                               "directory per trial (default: runs/tune-ARCH-DATASET); the "
                                               "same command again continues it.", show_default=False)] = None,
    sampler: Annotated[Sampler, typer.Option("--sampler", help="tpe is Bayesian (Optuna's TPE).")
                       ] = Sampler.tpe,
    trials: Annotated[Optional[int], typer.Option("--trials", "-n", help="The study's total number of trials "
                                                  "(again with a larger N adds the missing ones; default: the "
                                                  "whole grid, or 20).", show_default=False)] = None,
    pruner: Annotated[Optional[Pruner], typer.Option("--pruner", help="Fed by each epoch's --metric "
                                                     "(default: median; none for a grid).",
                                                  show_default=False)] = None,
    metric: Annotated[Metric, typer.Option("--metric", help="val_accuracy is maximised, val_loss minimised.")
                      ] = Metric.val_accuracy,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Seconds after which no new trial "
                                                     "starts.", show_default=False)] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker processes on this machine.")] = 1,
    storage: Annotated[Optional[str], typer.Option("--storage", help="postgresql://..., mysql://..., "
                                                   "sqlite:///..., or journal:PATH (Optuna's journal file): "
                                                   "every nnkit tune pointed at it works on one study.",
                                                   show_default=False)] = None,
    study: Annotated[Optional[str], typer.Option("--study", help="The study's name in --storage (default: "
                                                 "the one it holds, or the --out folder's name).",
                                                 show_default=False)] = None,
    plot: Annotated[Optional[str], typer.Option("--plot", help="Write the optimisation history to this PNG "
                                                "and the parameter importances beside it (NAME-importances.png).",
                                                show_default=False)] = None,
    lr: Annotated[Space, _opt("--lr", "Peak learning rate")] = None,
    batch_size: Annotated[Space, _opt("--batch-size", "Batch size")] = None,
    optimizer: Annotated[Space, _opt("--optimizer", "sgd, adam, adamw")] = None,
    weight_decay: Annotated[Space, _opt("--weight-decay", "Weight decay")] = None,
    momentum: Annotated[Space, _opt("--momentum", "SGD momentum")] = None,
    width: Annotated[Space, _opt("--width", "Width multiplier where it applies")] = None,
    epochs: Annotated[Space, _opt("--epochs", "Epochs of each trial")] = None,
    schedule: Annotated[Space, _opt("--schedule", "cosine, step, onecycle, none")] = None,
    augment: Annotated[Space, typer.Option("--augment", help="Augmentation (flip,crop or none); given several "
                                           "times, each is one choice.", show_default=False)] = None,
    label_smoothing: Annotated[Space, _opt("--label-smoothing", "Label smoothing")] = None,
    dropout: Annotated[Space, _opt("--dropout", "Dropout probability (architectures with dropout)")] = None,
    warmup_epochs: Annotated[float, typer.Option("--warmup-epochs")] = _D.warmup_epochs,
    seed: Annotated[int, typer.Option("--seed", help="Every trial's seed, and the samplers'.")] = _D.seed,
    patience: Annotated[Optional[int], typer.Option("--patience", show_default=False)] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", show_default=False)] = None,
    freeze: Annotated[Freeze, typer.Option("--freeze")] = Freeze.none,
    device: DeviceOpt = None,
    amp: Annotated[bool, typer.Option("--amp")] = False,
    channels_last: Annotated[bool, typer.Option("--channels-last")] = False,
    synthetic_size: Annotated[int, typer.Option("--synthetic-size")] = _D.synthetic_size,
    workers: Annotated[Optional[int], typer.Option("--workers", show_default=False)] = None,
    fmt: FormatOpt = None,
) -> None:
    """Search hyper-parameters with Optuna: every trial an ordinary training run in the study folder."""
    from nnkit.render.tune import plot_study, tune_progress, tune_view
    from nnkit.train.tune import load_study, tune

    spec = _spec(dict(locals()))
    hooks, progress = tune_progress(sys.stderr.isatty())
    with progress if progress is not None else contextlib.nullcontext():
        r = tune(spec, hooks)
    doc, table = tune_view(r)
    if plot:
        written = plot_study(load_study(spec), plot)
        doc["plots"] = written
        table = replace(table, notes=table.notes + (f"plots: {', '.join(written)}",))
    emit(doc, table, fmt)


def _spec(p: dict[str, Any]) -> Any:
    from nnkit.archs import get_arch
    from nnkit.errors import UsageError
    from nnkit.train.tune import SPACE_OPTIONS, TuneSpec, parse_param

    if p["arch"] is None:
        raise UsageError("tune: name an architecture (nnkit models)")
    name = get_arch(p["arch"]).name
    ds = p["dataset"] or Dataset.digits
    fixed: dict[str, Any] = {}
    space = []
    for key in SPACE_OPTIONS:
        if p[key]:
            param, value = parse_param(key, p[key])
            if param is None:
                fixed[key] = value
            else:
                space.append(param)
    base = TrainConfig(arch=name, dataset=ds, data_dir=p["data_dir"], val_split=p["val_split"],
                       warmup_epochs=p["warmup_epochs"], seed=p["seed"], patience=p["patience"],
                       weights=p["weights"], freeze=p["freeze"], device=p["device"], amp=p["amp"],
                       channels_last=p["channels_last"], synthetic_size=p["synthetic_size"], workers=p["workers"],
                       **fixed)
    out = p["out"] or f"runs/tune-{name}-{ds.value}"
    return TuneSpec(base=base, space=tuple(space), out=out, sampler=p["sampler"].value,
                    pruner=p["pruner"].value if p["pruner"] else None, metric=p["metric"].value,
                    trials=p["trials"],
                    timeout=p["timeout"], jobs=p["jobs"], storage=p["storage"], study=p["study"])


def runs_cmd(
    dirs: Annotated[List[str], typer.Argument(help="Run directories, or folders holding them (a study "
                                                   "folder of nnkit tune, runs/).", show_default=False)],
    plot: Annotated[Optional[str], typer.Option("--plot", help="Overlay the runs' curves in this PNG.",
                                                show_default=False)] = None,
    fmt: FormatOpt = None,
) -> None:
    """Runs side by side: architecture, data set, epochs, accuracy, parameters, speed, time and state."""
    from nnkit.render.tune import plot_runs, runs_view
    from nnkit.train.runs import find_runs

    runs = find_runs(dirs)
    doc, table = runs_view(runs)
    if plot:
        doc["plot"] = plot_runs(runs, plot)
        table = replace(table, notes=table.notes + (f"curves: {doc['plot']}",))
    emit(doc, table, fmt)


def register(app: typer.Typer) -> None:
    app.command("tune", help="Search hyper-parameters (Optuna: grid, random, TPE; pruning), one run per trial.")(
        tune_cmd)
    app.command("runs", help="Show runs side by side (a study folder too); --plot overlays their curves.")(
        runs_cmd)
