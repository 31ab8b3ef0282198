"""Options spelled once for every command (STYLE.md, practice 6), and the error boundary's state."""

import math
import os
from typing import Annotated, Any, Optional

import typer

from nnkit.render import OutputFormat
from nnkit.core.optim import Freeze, Head

DEBUG = {"on": bool(os.environ.get("NNKIT_DEBUG"))}

FormatOpt = Annotated[
    Optional[OutputFormat],
    typer.Option("--format", "-f", help="table (on a terminal), tsv (when piped), json or csv.",
                 show_default=False),
]
ExplainOpt = Annotated[
    bool, typer.Option("--explain", "-e", help="Show each formula with the numbers put in.")
]
InputOpt = Annotated[
    Optional[str],
    typer.Option("--input", "-i", help="Input shape CxHxW (or HxW, NxCxHxW) for a named or user model.",
                 show_default=False),
]
InputsOpt = Annotated[
    Optional[list[str]],
    typer.Option("--input", "-i",
                 help="A named or user model's input: CxHxW (or HxW, NxCxHxW), CxL for 1-D, CxTxHxW for video. "
                      "Written [NAME=][DTYPE:]SHAPE and given once per input: positional inputs in order "
                      "(--input 3x520x960 --input 3x520x960), keyword ones by name (--input mask=bool:50). "
                      "DTYPE: float (default), half, bfloat16, double, long, int, bool; long and int inputs "
                      "are ids from 0 to the first nn.Embedding's num_embeddings - 1 (0..1 without one), and "
                      "are taken as written (no channels, no batch).",
                 show_default=False),
]
BatchOpt = Annotated[
    Optional[int],
    typer.Option("--batch", "-b", help="Batch size N of a named or user model's inputs (default 1), as an "
                                       "input written NxCxHxW: MACs are the batch's, shapes show N first.",
                 show_default=False),
]
DeviceOpt = Annotated[
    Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1, mps; default: the best available.")
]
NumClassesOpt = Annotated[Optional[int], typer.Option("--num-classes", help="Number of output classes.")]
InChannelsOpt = Annotated[Optional[int], typer.Option("--in-channels", help="Number of input channels.")]
def _positive_finite(value: Optional[float]) -> Optional[float]:
    """typer reads 'nan' and 'inf' as floats; a multiplier must be a real positive number."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a positive finite number, got {value}")
    return value


WidthOpt = Annotated[Optional[float], typer.Option("--width", help="Width multiplier (alpha) where it applies.",
                                                    callback=_positive_finite)]
ColumnsOpt = Annotated[
    Optional[str],
    typer.Option("--columns",
                 help="Columns to show, comma-separated (e.g. params,MACs,type), or all; a terminal "
                                   "too narrow for every column leaves some out and says which.",
                 show_default=False),
]
DepthOpt = Annotated[
    Optional[int], typer.Option("--depth", help="Fold modules nested deeper than this (named models).")
]



def _complete_freeze(incomplete: str) -> list[str]:
    return [v.value for v in Freeze if v.value.startswith(incomplete)]


# The transfer-learning options, spelled once for nnkit train and nnkit summary (STYLE.md, practice 6).
FreezeOpt = Annotated[str, typer.Option(
    "--freeze", help="none; backbone (train only the classifier head); or a module (layer3): it and every "
                     "module before it stay as loaded, the rest trains.", autocompletion=_complete_freeze)]
TrainableOpt = Annotated[Optional[str], typer.Option(
    "--trainable", help="Comma-separated modules that train (layer4,fc); everything else stays as loaded.",
    show_default=False)]
HeadOpt = Annotated[Head, typer.Option(
    "--head", help="own: the architecture's classifier, sized to the data's classes; new: keep the loaded network "
                   "whole (its outputs too) and train one new fully connected layer on top of it only.")]


def complete_target(incomplete: str) -> list[str]:
    """Architecture names for shell completion; pure Python, so completing never imports torch."""
    from nnkit.archs import arch_names

    return [n for n in arch_names() if n.startswith(incomplete.lower())]


def target_arg(help: str) -> Any:
    """The target every analysis command takes first (its help says which forms that command reads): shell
    completion of architecture names, nothing shown as a default."""
    return Annotated[str, typer.Argument(help=help, autocompletion=complete_target, show_default=False)]
