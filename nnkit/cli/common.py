"""Options spelled once for every command (STYLE.md, practice 6), and the error boundary's state."""

import math
import os
from typing import Annotated, Optional

import typer

from nnkit.render import OutputFormat

DEBUG = {"on": bool(os.environ.get("NNKIT_DEBUG"))}

FormatOpt = Annotated[
    Optional[OutputFormat],
    typer.Option("--format", "-f", help="table (on a terminal), tsv (when piped), json or csv.", show_default=False),
]
ExplainOpt = Annotated[
    bool, typer.Option("--explain", "-e", help="Show each formula with the numbers put in.")
]
InputOpt = Annotated[
    Optional[str],
    typer.Option("--input", "-i", help="Input shape CxHxW (or HxW, NxCxHxW) for a named or user model.",
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
DepthOpt = Annotated[
    Optional[int], typer.Option("--depth", help="Fold modules nested deeper than this (named models).")
]


def complete_target(incomplete: str) -> list[str]:
    """Architecture names for shell completion; pure Python, so completing never imports torch."""
    from nnkit.archs import arch_names

    return [n for n in arch_names() if n.startswith(incomplete.lower())]
