"""Human tables: golden files at fixed widths, and the invariants of fitting a table to a terminal (issue 12).

Golden files live in tests/golden/; `pytest --overwrite-golden` rewrites them (review the diff before
committing).
"""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnkit.render import Tabular, compact, emit, OutputFormat

LENET = "conv(6,5) maxpool(2) conv(16,5) maxpool(2) flatten fc(120) fc(84) fc(10)"

# Torch-free commands whose human table is pinned, at one fixed width.
TABLES = {
    "shape-lenet": ["shape", "3x32x32", LENET],
    "params-explain": ["params", "3x32x32", "conv(10,5)", "--explain"],
    "rf-vgg-block": ["rf", "3x224x224", "[conv(64,3,p=1) relu]*2 maxpool(2)", "-e"],
    "summary-lenet": ["summary", "3x32x32", LENET],
    "dwsep-layer": ["dwsep", "32x112x112", "--out", "64", "-k", "3", "-p", "1"],
    "solve-map": ["solve", "map", "224", "112", "-k", "7"],
    "models-resnet": ["models", "resnet*"],
}


def table(nnkit, args: list[str], width: int | None) -> str:
    """A command's table as a terminal of `width` columns shows it (COLUMNS is what rich reads)."""
    from typer.testing import CliRunner

    from nnkit.cli import app

    env = {"COLUMNS": str(width)} if width else {"COLUMNS": None}
    result = CliRunner().invoke(app, [*args, "-f", "table"], env=env)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def lines_fit(text: str, width: int) -> bool:
    return all(len(line.rstrip()) <= width for line in text.splitlines())


@pytest.mark.parametrize("name", TABLES)
def test_human_tables_match_their_golden_files(nnkit, golden, name):
    golden(f"{name}-100", table(nnkit, TABLES[name], 100))


@pytest.mark.torch
@pytest.mark.parametrize("width", [80, 100, 160])
def test_resnet18_summary_fits_80_100_and_160_columns(nnkit, golden, width):
    text = table(nnkit, ["summary", "resnet18", "--depth", "1"], width)
    golden(f"summary-resnet18-depth1-{width}", text)
    assert lines_fit(text, width), text


@pytest.mark.torch
def test_a_narrow_terminal_rounds_merges_and_names_what_it_left_out(nnkit):
    text = table(nnkit, ["summary", "resnet18", "--depth", "1"], 80)
    assert "11.69 M" in text and "1.81 G" in text and "435/32/217" in text  # the issue's examples
    assert "activations, type left out; --columns activations,type, a wider terminal or -f tsv" in \
        " ".join(text.split())
    wide = table(nnkit, ["summary", "resnet18", "--depth", "1"], 160)
    assert "11,689,512" in wide and "435x435" in wide and "note: to fit" not in wide


@pytest.mark.torch
def test_fitting_leaves_pipes_json_and_tsv_as_they_were(nnkit):
    from typer.testing import CliRunner

    from nnkit.cli import app

    args = ["summary", "resnet18", "--depth", "1"]
    for fmt in ("tsv", "json", "csv"):
        plain = CliRunner().invoke(app, [*args, "-f", fmt], env={"COLUMNS": None}).stdout
        narrow = CliRunner().invoke(app, [*args, "-f", fmt], env={"COLUMNS": "60"}).stdout
        assert plain == narrow
    piped = table(nnkit, args, None)  # no terminal and no COLUMNS: the whole table, every digit
    assert "11,689,512" in piped and "AdaptiveAvgPool2d" in piped and "note: to fit" not in piped


def test_explain_keeps_the_formulas_and_wraps_them_at_spaces(nnkit):
    text = table(nnkit, ["summary", "3x224x224", "conv(64,7,s=2,p=3) maxpool(3,2,p=1)", "-e"], 80)
    assert lines_fit(text, 80), text
    # wrapped at spaces only
    assert "formula" in text and "(224 - 7 + 2*3)/2" in text and "118,013,952" in text
    note = " ".join(text.split("note: to fit")[1].split())
    assert note.startswith("80 columns: params, MACs, rf, activations left out;"), note


def test_columns_picks_columns_for_tables_and_tsv(nnkit):
    run = nnkit("summary", "3x32x32", LENET, "--columns", "params,RF", "-f", "tsv")
    assert run.code == 0, run
    assert run.out.splitlines()[0] == "#\tlayer\tparams\trf size\trf stride\trf padding"
    shown = table(nnkit, ["summary", "3x32x32", LENET, "--columns", "activations"], 40)
    header = next(line for line in shown.splitlines() if line.strip().startswith("#"))
    assert header.split() == ["#", "layer", "activations"] and "left out" not in shown
    bad = nnkit("summary", "3x32x32", LENET, "--columns", "parms")
    assert bad.code == 2 and bad.err.startswith("nnkit: --columns parms: this table has no column 'parms'; "
                                                "it has input, output, params, MACs"), bad
    assert len(bad.err.strip().splitlines()) == 1
    assert nnkit("params", "-", "--columns", "params", input="3x32x32 conv(6,5)\n").code == 2


def test_compact_numbers():
    numbers = (0, 999, 1000, 9408, 999_994, 999_999, 11_689_512, 1_814_073_344, -12_544)
    assert [compact(n) for n in numbers] == \
        ["0", "999", "1.00 k", "9.41 k", "999.99 k", "1.00 M", "11.69 M", "1.81 G", "-12.54 k"]


def _draw(tab: Tabular, width: int) -> str:
    import os

    buf = io.StringIO()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        emit({}, tab, OutputFormat.table, buf)
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return buf.getvalue()


_names = st.text(alphabet="abcdefghij", min_size=1, max_size=12)
_words = st.lists(st.text(alphabet="klmnopq", min_size=1, max_size=9), min_size=1, max_size=6).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), width=st.integers(30, 200))
def test_a_fitted_table_never_cuts_a_number(data, width):
    """Any table, any width: it fits, or says that it is printed whole; every number of every column it shows
    is there in full, with its digits or its compact form; a column it does not show is named in its note."""
    ncols = data.draw(st.integers(2, 7))
    kinds = data.draw(st.lists(st.sampled_from(["int", "text"]), min_size=ncols, max_size=ncols))
    columns = tuple(f"c{i}{data.draw(_names)}" for i in range(ncols))
    cells = {"int": st.integers(-10**13, 10**13), "text": _words}
    rows = tuple(tuple(data.draw(cells[k]) for k in kinds) for _ in range(data.draw(st.integers(1, 5))))
    tab = Tabular(columns=columns, rows=rows,
                  numeric=frozenset(c for c, k in zip(columns, kinds) if k == "int"))
    text = _draw(tab, width)
    lines = text.splitlines()
    whole = "printed whole" in " ".join(text.split())
    assert whole or lines_fit(text, width), text
    header = lines[next(i for i, line in enumerate(lines) if line.strip().startswith("─")) - 1]
    body = text.split("note:")[0]
    note = "".join(text.split("note: to fit")[1].split()) if "note: to fit" in text else ""
    for col, kind in zip(columns, kinds):
        if col not in header.split():
            assert col in note and f"{col}" not in body, (col, text)  # left out, and said so
            continue
        for row in rows:
            value = row[columns.index(col)]
            if kind == "int":
                assert f"{value:,}" in body or compact(value) in body, (value, text)


@pytest.mark.torch
def test_a_bad_column_in_stdin_table_mode_is_one_lines_error(nnkit):
    """--columns is checked against each line's own table: a column a model has and a chain lacks fails the
    chain's line only, in one line naming it, and the batch goes on (exit 2 at the end, as for any bad line)."""
    run = nnkit("shape", "-", "--columns", "type", "-f", "table", input="3x32x32 conv(6,5)\nlenet5\n")
    assert run.code == 2, run
    assert run.err == ("nnkit: line 1: --columns type: this table has no column 'type'; it has input, output "
                       "(or all)\n"), run
    assert "Conv2d" in run.out and "lenet5" in run.out
