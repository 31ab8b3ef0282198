"""Tables where notebook users look: text for print() and IPython, HTML for Jupyter, a rich renderable."""

from __future__ import annotations

import html
import io

from nnkit.render import Tabular, cell


def to_text(tab: Tabular) -> str:
    """The table as a terminal shows it, without colours."""
    from nnkit.render.table import print_table

    buf = io.StringIO()
    print_table(tab, buf)
    return buf.getvalue()


def to_rich(tab: Tabular):  # noqa: ANN201 - rich is imported lazily
    from rich.text import Text

    return Text(to_text(tab).rstrip("\n"))


def _html_cell(value: object, numeric: bool) -> str:
    text = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else cell(value)
    style = ' style="text-align:right"' if numeric else ""
    return f"<td{style}>{html.escape(text).replace(chr(10), '<br>')}</td>"


def to_html(tab: Tabular) -> str:
    """An HTML table (Jupyter's _repr_html_): title, header, rows, totals in bold, notes below."""
    numeric = [c in tab.numeric for c in tab.columns]
    parts = ["<div>", "<table>"]
    if tab.title:
        parts.append(f'<caption style="text-align:left">{html.escape(tab.title)}</caption>')
    parts.append("<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in tab.columns) + "</tr></thead>")
    parts.append("<tbody>")
    for row in tab.rows:
        parts.append("<tr>" + "".join(_html_cell(v, n) for v, n in zip(row, numeric)) + "</tr>")
    for row in tab.footer:
        parts.append('<tr style="font-weight:bold">' + "".join(_html_cell(v, n) for v, n in zip(row, numeric))
                     + "</tr>")
    parts += ["</tbody>", "</table>"]
    parts += [f"<p><small>note: {html.escape(note)}</small></p>" for note in tab.notes]
    parts.append("</div>")
    return "\n".join(parts)
