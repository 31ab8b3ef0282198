"""The one output layer: every command hands a JSON document and a Tabular view to `emit`.

Data goes to stdout; a rich table on a terminal, TSV when piped, JSON/CSV on request (STYLE.md, practice 7).
Only nnkit.render.table imports rich, and only when a table is drawn.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from dataclasses import dataclass, field
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


_FLAT_LIST = re.compile(r"\[\s*([-\d.eE+]+(?:,\s*[-\d.eE+]+)*)\s*\]")


def to_json(doc: Any) -> str:
    """Indented JSON, with lists of numbers (shapes, fields) kept on one line: [3, 32, 32]."""
    text = json.dumps(finite_json(doc), indent=2, ensure_ascii=False, allow_nan=False)
    return _FLAT_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def to_delimited(tab: Tabular, delimiter: str, header: bool = True) -> str:
    """CSV or TSV of the data rows only: totals (the footer) are for people, and JSON carries them for scripts,
    so that a script summing a column does not count them twice."""
    buf = io.StringIO()
    if delimiter == ",":
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


def emit(doc: Any, tab: Tabular, fmt: OutputFormat | None, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    fmt = resolve(fmt, out)
    if fmt is OutputFormat.json:
        out.write(to_json(doc) + "\n")
    elif fmt is OutputFormat.table:
        from nnkit.render.table import print_table

        print_table(tab, out)
    else:
        out.write(to_delimited(tab, DELIMITERS[fmt]))
        for note in tab.notes:
            sys.stderr.write(f"note: {note}\n")
    out.flush()
