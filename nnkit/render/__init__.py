"""The one output layer: every command hands a JSON document and a Tabular view to `emit`.

Data goes to stdout; a rich table on a terminal, TSV when piped, JSON/CSV on request (STYLE.md, practice 7).
Only nnkit.render.table imports rich, and only when a table is drawn.
"""

from __future__ import annotations

import io
import re
import sys
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, TextIO

from nnkit.core.numbers import finite_json

__all__ = ["DELIMITERS", "OutputFormat", "Tabular", "cell", "emit", "finite_json", "resolve", "to_delimited",
           "to_json"]


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    tsv = "tsv"


DELIMITERS = {OutputFormat.csv: ",", OutputFormat.tsv: "\t"}


@dataclass(frozen=True)
class Tabular:
    """A table as plain data: header, rows of cells, and optional footer rows (totals)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    title: str = ""
    footer: tuple[tuple[Any, ...], ...] = ()
    notes: tuple[str, ...] = ()  # shown under a terminal table; on stderr for csv/tsv
    numeric: frozenset[str] = field(default_factory=frozenset)  # right-aligned columns
    key: int = 1  # the leading columns that name a row: a terminal too narrow for the rest never loses them
    # Columns a narrow terminal shows as one: (the name --columns knows them by, its header, the columns)
    merge: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    # The columns a narrow terminal may leave out, first to last; None: every one after the key, right to left
    drop: tuple[str, ...] | None = None


def resolve(fmt: OutputFormat | None, stream: TextIO | None = None) -> OutputFormat:
    """No --format: a table on a terminal, TSV in a pipe."""
    if fmt is not None:
        return fmt
    stream = stream or sys.stdout
    return OutputFormat.table if stream.isatty() else OutputFormat.tsv


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "x".join(str(v) for v in value)
    return str(value)


def compact(n: int) -> str:
    """11689512 -> '11.69 M', 1814073344 -> '1.81 G', 512 -> '512': a number that fits a narrow terminal."""
    if abs(n) < 1000:
        return str(n)
    for factor, prefix in ((1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T")):
        if round(abs(n) / factor, 2) < 1000:  # 999,999 is 1.00 M, not 1000.00 k
            return f"{n / factor:.2f} {prefix}"
    return f"{n / 1e15:.2f} P"


def select(tab: Tabular, spec: str) -> Tabular:
    """--columns: the key columns and the named ones (comma-separated, any case; a merged group by its name,
    e.g. rf), in the table's own order; 'all' is every column."""
    from nnkit.errors import UsageError

    names = [n.strip().lower() for n in spec.split(",") if n.strip()]
    if not names or names == ["all"]:
        return tab
    groups = {alias.lower(): set(cols) for alias, _, cols in tab.merge}
    known = {c.lower() for c in tab.columns}
    wanted: set[str] = set()
    for name in names:
        if name in groups:
            wanted |= {c.lower() for c in groups[name]}
        elif name in known:
            wanted.add(name)
        else:
            choices = [*tab.columns[tab.key:], *(alias for alias, _, _ in tab.merge)]
            raise UsageError(f"--columns {spec}: this table has no column '{name}'; it has "
                             f"{', '.join(choices)} (or all)")
    keep = [i for i, c in enumerate(tab.columns) if i < tab.key or c.lower() in wanted]

    def pick(rows: tuple[tuple[Any, ...], ...]) -> tuple[tuple[Any, ...], ...]:
        return tuple(tuple(row[i] for i in keep) for row in rows)

    return replace(tab, columns=tuple(tab.columns[i] for i in keep), rows=pick(tab.rows),
                   footer=pick(tab.footer))


_FLAT_LIST = re.compile(r"\[\s*([-\d.eE+]+(?:,\s*[-\d.eE+]+)*)\s*\]")


def to_json(doc: Any) -> str:
    """Indented JSON, with lists of numbers (shapes, fields) kept on one line: [3, 32, 32]."""
    import json  # here, as csv below: a start-up that prints a table or TSV needs neither (1.2 ms)

    text = json.dumps(finite_json(doc), indent=2, ensure_ascii=False, allow_nan=False)
    return _FLAT_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def to_delimited(tab: Tabular, delimiter: str, header: bool = True) -> str:
    """CSV or TSV of the data rows only: totals (the footer) are for people, and JSON carries them for
    scripts, so that a script summing a column does not count them twice."""
    buf = io.StringIO()
    if delimiter == ",":
        import csv

        writer = csv.writer(buf, lineterminator="\n")
        if header:
            writer.writerow(tab.columns)
        for row in tab.rows:
            writer.writerow([cell(v) for v in row])
    else:  # TSV: tabs and newlines inside cells would break the format, so they become "; " and spaces
        lines = [tab.columns] if header else []
        lines += [[cell(v) for v in row] for row in tab.rows]
        for line in lines:
            buf.write("\t".join(str(c).replace("\t", " ").replace("\n", "; ") for c in line) + "\n")
    return buf.getvalue()


def emit(doc: Any, tab: Tabular, fmt: OutputFormat | None, out: TextIO | None = None,
         columns: str | None = None) -> None:
    """`columns` (--columns) picks the columns of a table, CSV or TSV; JSON is always the whole document."""
    out = out or sys.stdout
    fmt = resolve(fmt, out)
    if columns:
        tab = select(tab, columns)
    if fmt is OutputFormat.json:
        out.write(to_json(doc) + "\n")
    elif fmt is OutputFormat.table:
        from nnkit.render.table import print_table

        print_table(tab, out, chosen=bool(columns))
    else:
        out.write(to_delimited(tab, DELIMITERS[fmt]))
        for note in tab.notes:
            sys.stderr.write(f"note: {note}\n")
    out.flush()
