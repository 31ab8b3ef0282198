"""Options spelled once for every command (STYLE.md, practice 6), and the error boundary's state."""

import os
from typing import Annotated, Optional

import typer

from nnkit.render import OutputFormat

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
DeviceOpt = Annotated[
    Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1, mps; default: the best available.")
]
NumClassesOpt = Annotated[Optional[int], typer.Option("--num-classes", help="Number of output classes.")]
InChannelsOpt = Annotated[Optional[int], typer.Option("--in-channels", help="Number of input channels.")]
WidthOpt = Annotated[Optional[float], typer.Option("--width",
                                                   help="Width multiplier (alpha) where it applies.")]
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


def complete_target(incomplete: str) -> list[str]:
    """Architecture names for shell completion; pure Python, so completing never imports torch."""
    from nnkit.archs import arch_names

    return [n for n in arch_names() if n.startswith(incomplete.lower())]
