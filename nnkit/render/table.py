"""Rich tables for a terminal: the only module in nnkit that imports rich.

A table that is wider than the terminal is made to fit it, in steps, each taken only when the ones before were
not enough (issue 12): text with spaces wraps at word boundaries; integers take their compact form (11.69 M);
grouped columns become one (the receptive field's 435/32/217); then columns are left out last-first, with a
note that names them. Numbers are never folded or cut: when even that is not enough, the table is printed
whole at its own width, as it always is when it is not going to a terminal (a pipe, a file), so that piped
output stays what it was.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from typing import Any, TextIO

from nnkit.render import Tabular, cell, compact

# A text column that may wrap keeps at least this many characters (or its widest cell, if narrower): a formula
# squeezed into a column of ten reads worse than a table that leaves out a column.
_WRAP_MIN = 24


def console(out: TextIO | None = None, stderr: bool = False):  # noqa: ANN201 - rich is imported lazily
    from rich.console import Console

    return Console(file=out or (sys.stderr if stderr else sys.stdout), highlight=False, soft_wrap=False)


def _pretty(value: object) -> str:
    """Thousands separators for people (TSV, CSV and JSON keep plain digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return cell(value)


@dataclass(frozen=True)
class _Shown:
    """The table as it will be drawn: header, text cells (not yet rich markup) and what was done to fit it."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    footer: tuple[tuple[str, ...], ...]
    numeric: frozenset[str]
    compact: bool = False
    merged: tuple[str, ...] = ()  # "header = what it holds" for each merged group
    dropped: tuple[str, ...] = ()

    def column(self, i: int) -> list[str]:
        return [self.columns[i], *(r[i] for r in self.rows), *(r[i] for r in self.footer)]


def _texts(tab: Tabular, short: bool) -> _Shown:
    def text(value: object, col: str) -> str:
        if short and col in tab.numeric and isinstance(value, int) and not isinstance(value, bool):
            return compact(value)
        return _pretty(value)

    def texts(rows: tuple[tuple[Any, ...], ...]) -> tuple[tuple[str, ...], ...]:
        return tuple(tuple(text(v, c) for v, c in zip(row, tab.columns)) for row in rows)

    return _Shown(tab.columns, texts(tab.rows), texts(tab.footer), tab.numeric, compact=short)


def _merge_cell(parts: list[str]) -> str:
    """'7x7', '2x2', '3x3' -> '7/2/3'; 'whole input', '-', '-' -> 'whole input'; '7x3', ... kept as
    written."""
    if all(p == "-" for p in parts[1:]):
        return parts[0]
    squares = []
    for p in parts:
        h, sep, w = p.partition("x")
        squares.append(h if sep and h == w else p)
    return "/".join(squares)


def _merge(shown: _Shown, tab: Tabular) -> _Shown:
    columns, rows, footer = list(shown.columns), [list(r) for r in shown.rows], \
        [list(r) for r in shown.footer]
    numeric = set(shown.numeric)
    merged = []
    for _, header, group in tab.merge:
        at = [columns.index(c) for c in group if c in columns]
        if len(at) < 2:  # --columns kept one of them: nothing to merge
            continue
        names = [columns[i] for i in at]
        common = os.path.commonprefix(names).rpartition(" ")[0]  # "rf size", "rf stride" -> "size", "stride"
        merged.append(f"{header} = {'/'.join(n[len(common):].strip() for n in names)}")
        for line in (*rows, *footer):
            line[at[0]] = _merge_cell([line[i] for i in at])
            for i in reversed(at[1:]):
                del line[i]
        columns[at[0]] = header
        numeric.add(header)
        for i in reversed(at[1:]):
            del columns[i]
    return replace(shown, columns=tuple(columns), rows=tuple(map(tuple, rows)),
                   footer=tuple(map(tuple, footer)),
                   numeric=frozenset(numeric), merged=tuple(merged))


def _drop(shown: _Shown, tab: Tabular, name: str) -> _Shown:
    """Leave out a column, or a merged group (by its name or any member's), whichever the table shows now."""
    gone = {name}
    for alias, header, group in tab.merge:
        if name == alias or name in group or name == header:
            gone = {header, *group}
            name = alias
    keep = [i for i, c in enumerate(shown.columns) if c not in gone]
    if len(keep) == len(shown.columns):
        return shown

    def cut(rows: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
        return tuple(tuple(r[i] for i in keep) for r in rows)

    return replace(shown, columns=tuple(shown.columns[i] for i in keep), rows=cut(shown.rows),
                   footer=cut(shown.footer), dropped=(name, *shown.dropped))


def _widths(shown: _Shown) -> list[tuple[int, int, bool]]:
    """Per column: the narrowest it may be, its natural width, and whether it wraps (text with spaces)."""
    from rich.cells import cell_len

    out = []
    for i, name in enumerate(shown.columns):
        texts = shown.column(i)
        widest = max(cell_len(line) for t in texts for line in t.split("\n"))
        words = max((cell_len(w) for t in texts for w in t.split()), default=0)
        wraps = name not in shown.numeric and words < widest
        narrowest = min(widest, max(words, _WRAP_MIN)) if wraps else widest
        out.append((narrowest, widest, wraps))
    return out


def _frame(n: int) -> int:
    """What rich's SIMPLE_HEAD box adds around n columns: one space of padding each side of every cell, the
    edge characters and the n - 1 column separators."""
    return 2 * n + 2 + (n - 1)


def _need(shown: _Shown) -> int:
    return sum(lo for lo, _, _ in _widths(shown)) + _frame(len(shown.columns))


def _fit(tab: Tabular, width: int, chosen: bool) -> tuple[_Shown, list[int | None]]:
    """The first of the steps (see the module's docstring) after which the table fits `width`."""
    shown = _texts(tab, short=False)
    if _need(shown) > width:
        shown = _texts(tab, short=True)
    if _need(shown) > width:
        shown = _merge(shown, tab)
    if _need(shown) > width and not chosen:  # columns the user asked for with --columns stay
        fewer = shown
        for name in tab.drop if tab.drop is not None else reversed(shown.columns[tab.key:]):
            fewer = _drop(fewer, tab, name)
            if _need(fewer) <= width:
                shown = fewer
                break
    if _need(shown) > width:
        return shown, [None] * len(shown.columns)
    # Text columns share what is left beyond their minimum, those that want least first, up to their natural
    # width.
    ranges = _widths(shown)
    sizes: list[int | None] = [lo if wraps else None for lo, _, wraps in ranges]
    spare = width - _need(shown)
    wrapping = sorted((i for i, r in enumerate(ranges) if r[2]), key=lambda i: ranges[i][1] - ranges[i][0])
    for k, i in enumerate(wrapping):
        grow = min(ranges[i][1] - ranges[i][0], spare // (len(wrapping) - k))
        sizes[i] = ranges[i][0] + grow
        spare -= grow
    return shown, sizes


def _note(shown: _Shown, width: int, key: int) -> str | None:
    if _need(shown) > width:
        return (f"wider than {width} columns even with rounded numbers: printed whole (less -S reads it); -f "
                "tsv gives every digit")
    merged = [m for m in shown.merged if m.partition(" = ")[0] in shown.columns]
    rounded = shown.compact and any(c in shown.numeric for c in shown.columns[key:])
    done = ["numbers rounded"] * rounded + merged
    if shown.dropped:
        done.append(f"{', '.join(shown.dropped)} left out")
    if not done:
        return None
    see = (f"--columns {','.join(shown.dropped)}, a wider terminal or -f tsv shows them" if shown.dropped
           else "a wider terminal or -f tsv shows every digit")
    return f"to fit {width} columns: {'; '.join(done)}; {see}"


def fits_terminal(con: Any) -> bool:
    """Fit the table to a terminal, or to the width a COLUMNS variable asks for; anything else (a pipe, a
    file) gets the whole table as before."""
    return bool(con.is_terminal) or os.environ.get("COLUMNS", "").isdigit()


def print_table(tab: Tabular, out: TextIO | None = None, chosen: bool = False) -> None:
    """`chosen`: the columns are the ones the user asked for (--columns), so none is left out to fit."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    con = console(out)
    notes = list(tab.notes)
    shown, sizes = _texts(tab, short=False), None
    if fits_terminal(con):
        natural = sum(hi for _, hi, _ in _widths(shown)) + _frame(len(shown.columns))
        if natural > con.width:
            shown, sizes = _fit(tab, con.width, chosen=chosen)
            note = _note(shown, con.width, tab.key)
            if note:
                notes.append(note)

    table = Table(title=escape(tab.title) if tab.title else None, box=box.SIMPLE_HEAD, show_footer=False,
                  title_justify="left")
    for i, col in enumerate(shown.columns):
        size = sizes[i] if sizes else None
        table.add_column(escape(col), justify="right" if col in shown.numeric else "left",
                         overflow="fold", width=size, no_wrap=size is None and sizes is not None)
    for row in shown.rows:
        table.add_row(*(escape(v) for v in row))
    if shown.footer:
        table.add_section()
        for row in shown.footer:
            table.add_row(*(escape(v) for v in row), style="bold")
    needed = con.measure(table, options=con.options.update_width(10_000)).maximum
    # never fold or cut numbers: a table that cannot fit is printed whole (less -S reads it)
    if needed > con.width:
        con.width = needed
    con.print(table)
    for note in notes:
        con.print(f"[dim]note:[/dim] {escape(note)}")
