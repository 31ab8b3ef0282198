"""nnkit train and nnkit eval: thin commands over nnkit.train (torch is imported only when they run)."""

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from nnkit.cli.common import DeviceOpt, FormatOpt, FreezeOpt, HeadOpt, TrainableOpt, WidthOpt, complete_target
from nnkit.render import OutputFormat, emit
from nnkit.train.config import AUGMENTS, Dataset, Freeze, Head, Optimizer, Schedule, Split, TrainConfig, parse_augment

_D = TrainConfig()


ArchArg = Annotated[
    Optional[str],
    typer.Argument(help="Architecture to train (nnkit models), or a chain in the layer language as one quoted "
                        "argument, e.g. \"1x8x8 conv(8,3,p=1) relu flatten fc(10)\"; optional with --resume.",
                   show_default=False, autocompletion=complete_target),
]


DatasetOpt = Annotated[
    Optional[Dataset],
    typer.Option("--dataset", "-d", help="Data set; digits (scikit-learn's, bundled) needs no download. "
                                         "(default: digits)", show_default=False),
]
DataDirOpt = Annotated[
    Optional[str], typer.Option("--data-dir", help="Folder holding the data set in its standard format.")
]


# What may be given again with --resume: it does not change what is trained (arch and dataset are checked
# against the run). Every other training option is refused rather than silently ignored.
RESUME_OPTIONS = frozenset({"ctx", "arch", "dataset", "resume", "epochs", "device", "data_dir", "workers",
                            "stream", "fmt"})


def _resume_config(ctx: typer.Context, p: dict[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
    from dataclasses import replace

    from nnkit.errors import UsageError
    from nnkit.train.loop import resume_config

    given = [q for q in ctx.command.params if q.name not in RESUME_OPTIONS
             and getattr(ctx.get_parameter_source(q.name), "name",
                         "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")]
    if given:
        flags = ", ".join(q.opts[0] for q in given)
        raise UsageError(f"--resume continues a run with its own settings; {flags} cannot change them (only "
                         f"--epochs, --device, --data-dir, --workers, --stream and --format may be given; "
                         f"start a new run with --out to change the others)")
    cfg, state = resume_config(p["resume"], p["epochs"], arch=_arch_name(p["arch"]) if p["arch"] else None,
                               dataset=p["dataset"])
    moved = {k: p[k] for k in ("data_dir", "device", "workers", "stream") if p[k] is not None}
    return (replace(cfg, **moved).validate() if moved else cfg), state


def _arch_name(text: str) -> str:
    """A registered name as the registry spells it, or a chain as nnkit writes it (its layers checked)."""
    from nnkit.archs import get_arch
    from nnkit.core.torchplan import is_chain, plan

    return plan(text).source if is_chain(text) else get_arch(text).name


def _new_config(p: dict[str, Any]) -> TrainConfig:
    from nnkit.errors import UsageError
    from nnkit.train.transfer import parse_modules

    if p["arch"] is None:
        raise UsageError("train: name an architecture (nnkit models), or --resume a run")
    return TrainConfig(
        arch=_arch_name(p["arch"]), dataset=p["dataset"] or Dataset.digits, data_dir=p["data_dir"],
        download=p["download"], val_split=p["val_split"], out=p["out"],
        epochs=_D.epochs if p["epochs"] is None else p["epochs"], batch_size=p["batch_size"],
        optimizer=p["optimizer"], lr=p["lr"], momentum=p["momentum"], nesterov=p["nesterov"],
        weight_decay=p["weight_decay"], label_smoothing=p["label_smoothing"], schedule=p["schedule"],
        warmup_epochs=p["warmup_epochs"], seed=p["seed"],
        augment=parse_augment(p["augment"]) if p["augment"] is not None else None, patience=p["patience"],
        weights=p["weights"], freeze=p["freeze"], trainable=parse_modules(p["trainable"]), head=p["head"],
        clip_grad=p["clip_grad"], width=p["width"], device=p["device"], amp=p["amp"],
        channels_last=p["channels_last"], compile=p["compile_"], synthetic_size=p["synthetic_size"],
        stream=p["stream"], workers=p["workers"], dropout=p["dropout"],
    ).validate()


def train_cmd(
    ctx: typer.Context,
    arch: ArchArg = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    download: Annotated[bool, typer.Option("--download", help="Fetch the data set into --data-dir.")] = False,
    val_split: Annotated[Optional[float], typer.Option(
        "--val-split", help="Fraction of the training set held out for validation where the data set has no "
                            "validation set (default 0.1; mnist, fashion-mnist, cifar10/100, imagefolder "
                            "without val/).",
        show_default=False)] = _D.val_split,
    out: Annotated[Optional[str], typer.Option("--out", "-o",
                                               help="Run directory (default: runs/ARCH-DATASET)",
                                               show_default=False)] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Total epochs (with --resume too: a run "
                                                   "extended this way continues its schedule stretched to "
                                                   "the new total, so a cosine schedule's learning rate "
                                                   f"rises again). (default: {_D.epochs})",
                                                  show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Global batch size.")] = _D.batch_size,
    optimizer: Annotated[Optimizer, typer.Option("--optimizer")] = _D.optimizer,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate (default: sgd 0.1, adam and "
                                                            "adamw 0.003)", show_default=False)] = None,
    momentum: Annotated[float, typer.Option("--momentum", help="SGD momentum.")] = _D.momentum,
    nesterov: Annotated[bool, typer.Option("--nesterov", help="Nesterov momentum (sgd).")] = False,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = _D.weight_decay,
    label_smoothing: Annotated[float, typer.Option("--label-smoothing")] = _D.label_smoothing,
    schedule: Annotated[Schedule, typer.Option("--schedule", help="Learning-rate schedule.")] = _D.schedule,
    warmup_epochs: Annotated[float, typer.Option("--warmup-epochs",
                                                 help="Linear warmup.")] = _D.warmup_epochs,
    seed: Annotated[int, typer.Option("--seed")] = _D.seed,
    augment: Annotated[Optional[str], typer.Option(
        "--augment", help=f"Comma-separated: {','.join(AUGMENTS)}, or none (default: crop for digits and "
                          f"(fashion-)mnist, flip,crop for cifar and imagefolder)",
        show_default=False)] = None,
    patience: Annotated[Optional[int], typer.Option("--patience", help="Stop after N epochs without a better "
                                                                       "validation accuracy.")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", help="Start from these weights (a local "
                                                                     "state dict or nnkit checkpoint).")] = None,
    freeze: FreezeOpt = Freeze.none.value,
    trainable: TrainableOpt = None,
    head: HeadOpt = Head.own,
    clip_grad: Annotated[Optional[float], typer.Option(
        "--clip-grad", help="Clip the gradients' total L2 norm to this each step (exploding gradients); the norm "
                            "is recorded per epoch either way (grad_norm_mean, grad_norm_max).",
        show_default=False)] = None,
    width: WidthOpt = None,
    dropout: Annotated[Optional[float], typer.Option("--dropout", help="Every dropout layer's probability "
                                                     "(architectures that have dropout).", show_default=False)
                       ] = None,
    device: DeviceOpt = None,
    amp: Annotated[bool, typer.Option("--amp",
                                      help="Mixed precision (bf16, or fp16 on older GPUs).")] = False,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="NHWC memory format.")] = False,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    synthetic_size: Annotated[int, typer.Option("--synthetic-size", help="Images in --dataset synthetic.")
                              ] = _D.synthetic_size,
    stream: Annotated[Optional[bool], typer.Option(
        "--stream/--in-memory",
        help="imagefolder: decode images from disk every epoch in DataLoader workers, "
                                     "or hold them in memory (default: stream above 4 GiB decoded)",
        show_default=False)] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="DataLoader workers for --stream "
                                                                     "(default: up to 8)", show_default=False)
                       ] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue the run in this directory or "
                                                                   "checkpoint.", show_default=False)] = None,
    fmt: FormatOpt = None,
) -> None:
    """Train an architecture (default: on digits, bundled, no download) into a run directory."""
    p = dict(locals())  # the options as typer converted them (enums), by parameter name
    from nnkit.render.train import train_progress, train_view
    from nnkit.train.dist import from_env
    from nnkit.train.loop import train

    cfg, state = _resume_config(ctx, p) if resume else (_new_config(p), None)
    main = from_env().main
    hooks, progress = train_progress(sys.stderr.isatty() and main)  # one bar under torchrun, rank 0's
    with progress if progress is not None else contextlib.nullcontext():
        r = train(cfg, resume=state, hooks=hooks)  # Ctrl-C and SIGTERM: a resumable checkpoint, Interrupted
    if main:  # under torchrun, rank 0 speaks for all
        emit(*train_view(r), fmt)


def eval_cmd(
    checkpoints: Annotated[list[str], typer.Argument(
        help="A checkpoint (best.pt, last.pt) or a run directory (its best.pt); several: their ensemble (the mean "
             "of their probabilities) beside each one's own accuracy.", show_default=False)],
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    split: Annotated[Optional[Split], typer.Option("--split", help="Which split (default: the one the "
                                                                   "checkpoint was validated on, val)",
                                                   show_default=False)] = None,
    device: DeviceOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b")] = 256,
    plot: Annotated[Optional[str], typer.Option("--plot", help="Write the confusion matrix as a PNG here.",
                                                show_default=False)] = None,
    fmt: FormatOpt = None,
) -> None:
    """Evaluate a checkpoint: loss, top-1, top-5, per-class accuracy and the confusion matrix."""
    from nnkit.errors import UsageError
    from nnkit.render.train import eval_view
    from nnkit.train.evaluation import evaluate_checkpoint, evaluate_ensemble

    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    paths = []
    for checkpoint in checkpoints:
        path = Path(checkpoint).expanduser()
        paths.append(str(path / "best.pt" if path.is_dir() else path))
    where = {"dataset": dataset, "data_dir": data_dir, "split": split.value if split else None, "device": device,
             "batch_size": batch_size}
    if len(paths) > 1:
        _ensemble(evaluate_ensemble(paths, **where), plot, fmt)
        return
    r = evaluate_checkpoint(paths[0], **where)
    if plot:
        _plot(Path(plot).expanduser(), r)
    emit(*eval_view(r, plot), fmt)


def _ensemble(e: Any, plot: str | None, fmt: Any) -> None:
    from nnkit.render.train import ensemble_view

    if plot:
        _plot(Path(plot).expanduser(), e.ensemble)
    emit(*ensemble_view(e, plot), fmt)


def _plot(path: Path, r: Any) -> None:
    from nnkit.errors import RunDirError
    from nnkit.render.plot import plot_confusion

    for parent in path.parents:  # the nearest existing folder above must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise RunDirError(f"--plot {path}: {parent} is a file, not a directory")
            break
    try:
        plot_confusion(path, [list(row) for row in r.confusion], r.classes,
                       f"{r.arch} on {r.dataset} ({r.split}): {r.accuracy:.2%}")
    except OSError as exc:
        raise RunDirError(f"--plot {path}: cannot write ({exc.strerror or exc})") from exc


def register(app: typer.Typer) -> None:
    app.command("train", help="Train an architecture into a run directory (checkpoints, metrics, curves).")(
        train_cmd)
    app.command("eval",
                help="Evaluate a checkpoint: loss, top-1/top-5, per-class accuracy, confusion matrix.")(
        eval_cmd)


__all__ = ["register", "OutputFormat"]
