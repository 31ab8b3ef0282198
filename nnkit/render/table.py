"""Rich tables for a terminal: the only module in nnkit that imports rich."""

from __future__ import annotations

import sys
from typing import TextIO

from nnkit.render import Tabular, cell


def console(out: TextIO | None = None, stderr: bool = False):  # noqa: ANN201 - rich is imported lazily
    from rich.console import Console

    return Console(file=out or (sys.stderr if stderr else sys.stdout), highlight=False, soft_wrap=False)


def _pretty(value: object) -> str:
    """Thousands separators for people (TSV, CSV and JSON keep plain digits); text is not rich markup."""
    from rich.markup import escape

    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return escape(cell(value))


def print_table(tab: Tabular, out: TextIO | None = None) -> None:
    from rich import box
    from rich.table import Table

    from rich.markup import escape

    table = Table(title=escape(tab.title) if tab.title else None, box=box.SIMPLE_HEAD, show_footer=False, title_justify="left")
    for col in tab.columns:
        table.add_column(col, justify="right" if col in tab.numeric else "left", overflow="fold")
    for row in tab.rows:
        table.add_row(*(_pretty(v) for v in row))
    if tab.footer:
        table.add_section()
        for row in tab.footer:
            table.add_row(*(_pretty(v) for v in row), style="bold")
    con = console(out)
    needed = con.measure(table, options=con.options.update_width(10_000)).maximum
    if needed > con.width:  # never fold or cut numbers: a wide table is printed whole (less -S reads it)
        con.width = needed
    con.print(table)
    for note in tab.notes:
        con.print(f"[dim]note:[/dim] {escape(note)}")
