"""nnkit models, nnkit summary, nnkit crosscheck, and whole-network dwsep (called by `nnkit dwsep ARCH`)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from nnkit.cli.common import FormatOpt
from nnkit.render import OutputFormat, Tabular, emit


def models(
    pattern: Annotated[Optional[str], typer.Argument(help="Shell wildcard, e.g. 'resnet*' or '*_bn'.",
                                                     show_default=False)] = None,
    fmt: FormatOpt = None,
) -> None:
    """Every named architecture with its default input, parameters and MACs (no torch needed)."""
    from nnkit.archs import list_archs
    from nnkit.render.views import human

    archs = list_archs(pattern)
    doc = [{"name": a.name, "input": list(a.input), "params": a.params, "macs": a.macs} for a in archs]
    human_cells = fmt in (None, OutputFormat.table)
    rows = tuple((a.name, a.input, human(a.params) if human_cells else a.params,
                  human(a.macs) if human_cells else a.macs, a.family, ", ".join(a.options)) for a in archs)
    notes = () if archs else (f"no architecture matches '{pattern}'",)
    emit(doc, Tabular(columns=("name", "input", "params", "MACs", "family", "options"), rows=rows,
                      title=f"{len(archs)} architectures", notes=notes,
                      numeric=frozenset({"params", "MACs"})), fmt)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
