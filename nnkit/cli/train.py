"""nnkit train and nnkit eval: thin commands over nnkit.train (torch is imported only when they run)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from nnkit.cli.common import DeviceOpt, FormatOpt, WidthOpt
from nnkit.render import OutputFormat, Tabular, emit
from nnkit.train.config import AUGMENTS, Dataset, Freeze, Optimizer, Schedule, Split, TrainConfig, parse_augment

_D = TrainConfig()


def _complete_arch(incomplete: str) -> list[str]:
    from nnkit.archs import arch_names

    return [n for n in arch_names() if n.startswith(incomplete.lower())]


ArchArg = Annotated[
    Optional[str],
    typer.Argument(help="Architecture to train (nnkit models); optional with --resume.", show_default=False,
                   autocompletion=_complete_arch),
]
DatasetOpt = Annotated[
    Optional[Dataset],
    typer.Option("--dataset", "-d", help="Data set; digits (scikit-learn's, bundled) needs no download. "
                                         "(default: digits)", show_default=False),
]
DataDirOpt = Annotated[
    Optional[str], typer.Option("--data-dir", help="Folder holding the data set in its standard format.")
]


def _progress(enabled: bool) -> Any:
    """A rich progress bar on stderr, or silent hooks when stderr is not a terminal."""
    from nnkit.train.loop import Hooks

    if not enabled:
        return Hooks(), None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), TextColumn("{task.fields[last]}"),
                        console=Console(stderr=True), transient=False)

    class Bar(Hooks):
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

    return Bar(), progress


def _sigterm_as_ctrl_c() -> Any:
    """SIGTERM (torchrun stopping its workers, a batch scheduler's time limit) saves a resumable checkpoint too."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)  # the previous handler, restored after training


def train_cmd(
    arch: ArchArg = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    download: Annotated[bool, typer.Option("--download", help="Fetch the data set into --data-dir.")] = False,
    val_split: Annotated[float, typer.Option("--val-split", help="Fraction held out for validation where the "
                                                                  "data set has no validation set.")] = _D.val_split,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Run directory (default: runs/ARCH-DATASET)",
                                               show_default=False)] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Total epochs (with --resume too). "
                                                                    f"(default: {_D.epochs})",
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
    warmup_epochs: Annotated[float, typer.Option("--warmup-epochs", help="Linear warmup.")] = _D.warmup_epochs,
    seed: Annotated[int, typer.Option("--seed")] = _D.seed,
    augment: Annotated[Optional[str], typer.Option(
        "--augment", help=f"Comma-separated: {','.join(AUGMENTS)}, or none (default: crop for digits and "
                          f"(fashion-)mnist, flip,crop for cifar and imagefolder)", show_default=False)] = None,
    patience: Annotated[Optional[int], typer.Option("--patience", help="Stop after N epochs without a better "
                                                                       "validation accuracy.")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", help="Start from these weights (a local "
                                                                     "state dict or nnkit checkpoint).")] = None,
    freeze: Annotated[Freeze, typer.Option("--freeze", help="Train only the classifier head.")] = Freeze.none,
    width: WidthOpt = None,
    device: DeviceOpt = None,
    amp: Annotated[bool, typer.Option("--amp", help="Mixed precision (bf16, or fp16 on older GPUs).")] = False,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="NHWC memory format.")] = False,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    synthetic_size: Annotated[int, typer.Option("--synthetic-size", help="Images in --dataset synthetic.")
                              ] = _D.synthetic_size,
    stream: Annotated[Optional[bool], typer.Option(
        "--stream/--in-memory", help="imagefolder: decode images from disk every epoch in DataLoader workers, "
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
    from nnkit.errors import UsageError

    if resume:
        from nnkit.train.loop import resume_config

        from nnkit.archs import get_arch

        cfg, state = resume_config(resume, epochs, arch=get_arch(arch).name if arch else None, dataset=dataset)
        if data_dir:
            cfg = TrainConfig.from_dict({**cfg.to_dict(), "data_dir": data_dir})
    else:
        if arch is None:
            raise UsageError("train: name an architecture (nnkit models), or --resume a run")
        from nnkit.archs import get_arch

        cfg = TrainConfig(
            arch=get_arch(arch).name, dataset=dataset or Dataset.digits, data_dir=data_dir, download=download,
            val_split=val_split, out=out, epochs=_D.epochs if epochs is None else epochs, batch_size=batch_size,
            optimizer=optimizer,
            lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, label_smoothing=label_smoothing,
            schedule=schedule, warmup_epochs=warmup_epochs, seed=seed,
            augment=parse_augment(augment) if augment is not None else None, patience=patience, weights=weights,
            freeze=freeze, width=width, device=device, amp=amp, channels_last=channels_last, compile=compile_,
            synthetic_size=synthetic_size, stream=stream, workers=workers,
        ).validate()
        state = None
    from nnkit.train.loop import train

    import signal

    previous = _sigterm_as_ctrl_c()
    from nnkit.train.dist import from_env

    hooks, progress = _progress(sys.stderr.isatty() and from_env().main)  # one bar under torchrun, rank 0's
    try:
        if progress is not None:
            with progress:
                r = train(cfg, resume=state, hooks=hooks)
        else:
            r = train(cfg, resume=state, hooks=hooks)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if not from_env().main:
        return  # under torchrun, rank 0 speaks for all
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
    emit(doc, Tabular(("setting", "value"), rows, title=f"{r.arch} on {r.dataset}"), fmt)


def eval_cmd(
    checkpoint: Annotated[str, typer.Argument(help="A checkpoint (best.pt, last.pt) or a run directory "
                                                   "(its best.pt).", show_default=False)],
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
    from nnkit.train.loop import evaluate_checkpoint

    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        path = path / "best.pt"
    r = evaluate_checkpoint(str(path), dataset=dataset, data_dir=data_dir, split=split.value if split else None,
                            device=device, batch_size=batch_size)
    if plot:
        from nnkit.train.checkpoint import RunDirError
        from nnkit.train.metrics import plot_confusion

        try:
            plot_confusion(Path(plot).expanduser(), [list(row) for row in r.confusion], r.classes,
                           f"{r.arch} on {r.dataset} ({r.split}): {r.accuracy:.2%}")
        except OSError as exc:
            raise RunDirError(f"--plot {plot}: cannot write ({exc.strerror or exc})") from exc
    doc = {"accuracy": r.accuracy, "top5": r.top5, "loss": r.loss, "images": r.images,
           "per_class": {name: {"images": n, "accuracy": acc} for name, n, acc in r.per_class},
           "confusion": [list(row) for row in r.confusion], "classes": list(r.classes),
           "checkpoint": r.checkpoint, "arch": r.arch, "dataset": r.dataset, "split": r.split}
    notes = [f"loss {r.loss:.4f}, top-1 {r.accuracy:.2%}" + (f", top-5 {r.top5:.2%}" if r.top5 is not None else "")
             + f" on {r.images} {r.split} images"]
    if plot:
        notes.append(f"confusion matrix: {plot}")
    tab = Tabular(("class", "images", "accuracy"),
                  tuple((name, n, f"{acc:.2%}") for name, n, acc in r.per_class),
                  title=f"{r.arch} on {r.dataset} ({r.split})",
                  footer=(("all", r.images, f"{r.accuracy:.2%}"),), notes=tuple(notes),
                  numeric=frozenset({"images", "accuracy"}))
    emit(doc, tab, fmt)


def register(app: typer.Typer) -> None:
    app.command("train", help="Train an architecture into a run directory (checkpoints, metrics, curves).")(
        train_cmd)
    app.command("eval", help="Evaluate a checkpoint: loss, top-1/top-5, per-class accuracy, confusion matrix.")(
        eval_cmd)


__all__ = ["register", "OutputFormat"]
