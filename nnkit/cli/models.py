"""nnkit models, nnkit summary, nnkit crosscheck, and whole-network dwsep (called by `nnkit dwsep ARCH`)."""

from dataclasses import replace
from typing import Annotated, Any, Optional

import typer

from nnkit.cli.common import (
    ColumnsOpt,
    DepthOpt,
    ExplainOpt,
    FormatOpt,
    FreezeOpt,
    HeadOpt,
    InChannelsOpt,
    InputsOpt,
    NumClassesOpt,
    TrainableOpt,
    WidthOpt,
    target_arg,
)
from nnkit.errors import UsageError
from nnkit.core.optim import Optimizer
from nnkit.render import OutputFormat, Tabular, emit
from nnkit.train.config import Head

TargetArg = target_arg("An architecture (nnkit models), a user model file.py:Class or package.module:name, or "
                       "an input shape followed by layers.")


def models(
    pattern: Annotated[Optional[str], typer.Argument(help="Shell wildcard, e.g. 'resnet*' or '*_bn'.",
                                                     show_default=False)] = None,
    task: Annotated[Optional[str], typer.Option("--task", help="Only architectures for this task: classification, "
                                                               "segmentation, video, detection or flow.",
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
    input: InputsOpt = None,
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
    memory: Annotated[Optional[str], typer.Option(
        "--memory", help="With --train: the largest batch whose training memory fits in this much, e.g. 8GiB, "
                         "24GB, 512MiB.", show_default=False)] = None,
    amp: Annotated[bool, typer.Option("--amp", help="With --train: mixed precision (bf16/fp16 activations), as "
                                                    "nnkit train --amp.")] = False,
    freeze: FreezeOpt = "none",
    trainable: TrainableOpt = None,
    head: HeadOpt = Head.own,
    columns: ColumnsOpt = None,
) -> None:
    """Every column at once: output shape, params, trainable, MACs, receptive field, activation memory."""
    from nnkit.api import analyze_target, training_target
    from nnkit.render.views import view

    input = input or None  # --input given once or more: a list of words, each an input (nnkit.introspect.inputs)
    if (batch is not None or optimizer is not None or memory is not None or amp) and not train:
        raise UsageError("--batch, --memory, --amp and --optimizer describe training memory; add --train")
    if batch is not None and batch <= 0:
        raise UsageError(f"--batch must be positive, got {batch}")
    if batch is not None and memory is not None:
        raise UsageError("--batch gives the batch, --memory finds the largest one that fits; give one of them")
    budget = None if memory is None else parse_bytes(memory)
    transfer = freeze != "none" or trainable is not None or head is Head.new
    t = None
    if transfer or train:
        t = training_target(" ".join([target, *(layers or [])]), input=input, num_classes=num_classes,
                            in_channels=in_channels, width=width, freeze=freeze, trainable=trainable,
                            head=head.value)
    if transfer:
        from nnkit.introspect import analyze_model

        a = analyze_model(t.model, t.given, source=t.name, depth=depth, batch=t.batch, min_input=t.min_input,
                          rebuild=t.rebuild, explain=explain)
    else:
        a = analyze_target(target, layers, input=input, depth=depth, num_classes=num_classes,
                           in_channels=in_channels, width=width, explain=explain)
    doc, tab = view(a, "summary", explain)
    if train:
        from nnkit.introspect.memory import estimate, largest_batch
        from nnkit.render.views import memory_doc, memory_note

        opt = optimizer or Optimizer.sgd
        if budget is not None:
            fit = largest_batch(t.model, t.given, memory=budget, optimizer=opt, amp=amp)
            doc["fits"] = {"memory_bytes": budget, "batch": fit.batch, "fixed_bytes": fit.estimate.fixed,
                           "saved_bytes_per_item": fit.estimate.saved_bytes_per_item, "amp": amp,
                           "error": fit.error}
            tab = replace(tab, notes=(*tab.notes, _fits(fit, memory)))
        b = batch or (fit.batch if budget is not None and fit.batch else None) or t.batch or 1
        m = estimate(t.model, t.given, batch=b, optimizer=opt, amp=amp)
        doc["memory"] = memory_doc(m)
        tab = replace(tab, notes=(*tab.notes, memory_note(m)))
    if plot:
        from nnkit.render.plot import plot_analysis

        path = plot_analysis(a, plot)
        tab = replace(tab, notes=(*tab.notes, f"plot written to {path}"))
        doc["plot"] = str(path)
    emit(doc, tab, fmt, columns=columns)


def _fits(fit: Any, given: str) -> str:
    from nnkit.render.views import human

    m = fit.estimate
    if fit.batch == 0:
        return (f"--memory {given}: not even batch 1 fits: it needs {human(m.total, 'B')} "
                f"(fixed {human(m.fixed, 'B')} + {human(m.saved_bytes_per_item, 'B')} per item); {fit.error}")
    return (f"--memory {given}: the largest batch that fits is {fit.batch} "
            f"({human(m.total, 'B')} = fixed {human(m.fixed, 'B')} + {fit.batch} x "
            f"{human(m.saved_bytes_per_item, 'B')} per item{', with --amp' if m.amp else ''}); {fit.error}")


def parse_bytes(text: str) -> int:
    """'8GiB', '8 GiB', '24GB', '512MiB', '1e9' -> bytes (KiB/MiB/GiB/TiB: 1024-based; kB/MB/GB/TB: 1000-based)."""
    import re

    units = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40, "kb": 10 ** 3,
             "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?(?:e\d+)?)\s*([a-z]*)\s*", text.lower())
    value = float(m.group(1)) * units.get(m.group(2), 0) if m else 0.0
    if not m or m.group(2) not in units or not 0 < value < 2**63:  # 1e999 is infinite: no int of it
        raise UsageError(f"--memory {text}: expected a size such as 8GiB, 24GB or 512MiB")
    return int(value)


def crosscheck(
    target: TargetArg,
    input: InputsOpt = None,
    fmt: FormatOpt = None,
    num_classes: NumClassesOpt = None,
    in_channels: InChannelsOpt = None,
    width: WidthOpt = None,
    columns: ColumnsOpt = None,
) -> None:
    """nnkit, fvcore, torchinfo and torchvision's metadata side by side, with every difference named."""
    from nnkit.introspect.backends import crosscheck as check
    from nnkit.introspect.target import is_user_model, resolve

    t = resolve(target, input=input or None, num_classes=num_classes, in_channels=in_channels, width=width)
    info = None
    if not is_user_model(target) and num_classes is None and in_channels is None and width is None:
        from nnkit.archs import get_arch

        info = get_arch(target)
    c = check(t, info)
    tools = ("nnkit", "fvcore", "torchinfo", "torchvision")
    doc = {"name": c.name, "input": list(c.input), "params": c.params, "macs": c.macs,
           "differences": list(c.differences)}
    if c.given is not None:  # several inputs, or another dtype: every one, as --input words
        doc["inputs"] = c.given
    if c.parts:  # detectors and flow models (nnkit.introspect.detection)
        doc["parts"] = [{"name": p.name, "role": p.role, "modules": list(p.modules), "runs_on": p.runs_on,
                         "params": p.params, "macs": p.macs} for p in c.parts]
    rows = tuple((tool, c.params.get(tool), c.macs.get(tool),
                  None if c.macs.get(tool) is None or c.macs["nnkit"] is None
                  else c.macs[tool] - c.macs["nnkit"]) for tool in tools)  # type: ignore[operator]
    emit(doc, Tabular(columns=("tool", "params", "MACs", "MACs - nnkit"), rows=rows,
                      title=f"{c.name} on {c.given or 'x'.join(map(str, c.input))}", notes=c.differences,
                      numeric=frozenset({"params", "MACs", "MACs - nnkit"})), fmt, columns=columns)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
    app.command("summary", context_settings={"ignore_unknown_options": True})(summary)
    app.command("crosscheck")(crosscheck)
