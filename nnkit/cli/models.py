"""nnkit models, nnkit summary, nnkit crosscheck, and whole-network dwsep (called by `nnkit dwsep ARCH`)."""

from dataclasses import replace
from typing import Annotated, Optional

import typer

from nnkit.cli.common import (
    ColumnsOpt,
    DepthOpt,
    ExplainOpt,
    FormatOpt,
    InChannelsOpt,
    InputOpt,
    NumClassesOpt,
    WidthOpt,
    complete_target,
)
from nnkit.errors import UsageError
from nnkit.introspect.memory import Optimizer  # pure Python: an Enum, no torch
from nnkit.render import OutputFormat, Tabular, emit


TargetArg = Annotated[str, typer.Argument(help="An architecture (nnkit models), a user model file.py:Class "
                                               "or package.module:name, or an input shape followed by "
                                               "layers.",
                                          autocompletion=complete_target, show_default=False)]


def models(
    pattern: Annotated[Optional[str], typer.Argument(help="Shell wildcard, e.g. 'resnet*' or '*_bn'.",
                                                     show_default=False)] = None,
    task: Annotated[Optional[str], typer.Option("--task", help="Only architectures for this task: "
                                                               "classification or segmentation.",
                                                show_default=False)] = None,
    fmt: FormatOpt = None,
    columns: ColumnsOpt = None,
) -> None:
    """Every named architecture with its default input, parameters and MACs (no torch needed)."""
    from nnkit.archs import list_archs
    from nnkit.render.views import human

    archs = list_archs(pattern, task=task)
    doc = [{"name": a.name, "input": list(a.input), "params": a.params, "macs": a.macs, "task": a.task}
           for a in archs]
    human_cells = fmt in (None, OutputFormat.table)
    rows = tuple((a.name, a.input, human(a.params) if human_cells else a.params,
                  human(a.macs) if human_cells else a.macs, a.family, ", ".join(a.options),
                  a.task) for a in archs)
    wanted = " and ".join(x for x in (f"'{pattern}'" if pattern else "", f"task {task}" if task else "") if x)
    notes = () if archs else (f"no architecture matches {wanted}",)
    emit(doc, Tabular(columns=("name", "input", "params", "MACs", "family", "options", "task"), rows=rows,
                      title=f"{len(archs)} architectures", notes=notes,
                      numeric=frozenset({"params", "MACs"})), fmt, columns=columns)


def summary(
    target: TargetArg,
    layers: Annotated[Optional[list[str]], typer.Argument(help="Layers, when TARGET is an input shape.",
                                                          show_default=False)] = None,
    input: InputOpt = None,
    fmt: FormatOpt = None,
    explain: ExplainOpt = False,
    depth: DepthOpt = None,
    num_classes: NumClassesOpt = None,
    in_channels: InChannelsOpt = None,
    width: WidthOpt = None,
    plot: Annotated[Optional[str], typer.Option("--plot", help="Also draw params, MACs and the receptive "
                                                               "field per layer into FILE.png.")] = None,
    batch: Annotated[Optional[int], typer.Option("--batch", "-b", help="Batch size for --train.")] = None,
    train: Annotated[bool, typer.Option("--train", help="Estimate training memory: parameters, gradients, "
                                                        "optimizer state and saved activations.")] = False,
    optimizer: Annotated[Optional[Optimizer], typer.Option("--optimizer",
                                                           help="Optimizer state for --train: sgd "
                                                                               "(with momentum), adam or "
                                                                               "adamw [default: sgd].",
                                                           show_default=False)] = None,
    columns: ColumnsOpt = None,
) -> None:
    """Every column at once: output shape, params, trainable, MACs, receptive field, activation memory."""
    from nnkit.api import analyze_target
    from nnkit.render.views import view

    if (batch is not None or optimizer is not None) and not train:
        raise UsageError("--batch and --optimizer describe training memory; add --train")
    if batch is not None and batch <= 0:
        raise UsageError(f"--batch must be positive, got {batch}")
    a = analyze_target(target, layers, input=input, depth=depth, num_classes=num_classes,
                       in_channels=in_channels, width=width, explain=explain)
    doc, tab = view(a, "summary", explain)
    if train:
        from nnkit.core.spec import looks_like_shape

        if looks_like_shape(target):
            raise UsageError("--train measures a model's saved activations; give an architecture or "
                             "file.py:Class")
        from nnkit.api import memory
        from nnkit.render.views import memory_doc, memory_note

        m = memory(target, input, batch=batch, optimizer=(optimizer or Optimizer.sgd).value,
                   num_classes=num_classes, in_channels=in_channels, width=width).estimate
        doc["memory"] = memory_doc(m)
        tab = replace(tab, notes=(*tab.notes, memory_note(m)))
    if plot:
        from nnkit.render.plot import plot_analysis

        path = plot_analysis(a, plot)
        tab = replace(tab, notes=(*tab.notes, f"plot written to {path}"))
        doc["plot"] = str(path)
    emit(doc, tab, fmt, columns=columns)


def crosscheck(
    target: TargetArg,
    input: InputOpt = None,
    fmt: FormatOpt = None,
    num_classes: NumClassesOpt = None,
    in_channels: InChannelsOpt = None,
    width: WidthOpt = None,
    columns: ColumnsOpt = None,
) -> None:
    """nnkit, fvcore, torchinfo and torchvision's metadata side by side, with every difference named."""
    from nnkit.introspect.backends import crosscheck as check
    from nnkit.introspect.target import is_user_model, resolve

    t = resolve(target, input=input, num_classes=num_classes, in_channels=in_channels, width=width)
    info = None
    if not is_user_model(target) and num_classes is None and in_channels is None and width is None:
        from nnkit.archs import get_arch

        info = get_arch(target)
    c = check(t, info)
    tools = ("nnkit", "fvcore", "torchinfo", "torchvision")
    doc = {"name": c.name, "input": list(c.input), "params": c.params, "macs": c.macs,
           "differences": list(c.differences)}
    rows = tuple((tool, c.params.get(tool), c.macs.get(tool),
                  None if c.macs.get(tool) is None or c.macs["nnkit"] is None
                  else c.macs[tool] - c.macs["nnkit"]) for tool in tools)  # type: ignore[operator]
    emit(doc, Tabular(columns=("tool", "params", "MACs", "MACs - nnkit"), rows=rows,
                      title=f"{c.name} on {'x'.join(map(str, c.input))}", notes=c.differences,
                      numeric=frozenset({"params", "MACs", "MACs - nnkit"})), fmt, columns=columns)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
    app.command("summary", context_settings={"ignore_unknown_options": True})(summary)
    app.command("crosscheck")(crosscheck)
