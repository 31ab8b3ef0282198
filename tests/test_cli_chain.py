"""The arithmetic commands end to end, in-process: JSON contracts, explanations, formats, stdin, exit
codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LENET = "conv(6,5) maxpool(2) conv(16,5) maxpool(2) flatten fc(120) fc(84) fc(10)"
ROOT = Path(__file__).resolve().parents[1]


def test_shape_json_contract(nnkit):
    run = nnkit("shape", "3x32x32", LENET, "--format", "json")
    assert run.code == 0, run
    doc = run.json()
    assert doc["input"] == [3, 32, 32] and doc["output"] == [10]
    assert [layer["output"] for layer in doc["layers"]] == [
        [6, 28, 28], [6, 14, 14], [16, 10, 10], [16, 5, 5], [400], [120], [84], [10]]
    assert {"spec", "input", "output"} <= set(doc["layers"][0])
    assert doc["layers"][0]["spec"] == "conv(6,5)"


def test_layers_as_separate_words_or_one_string(nnkit):
    one = nnkit("params", "3x32x32", LENET, "-f", "json").json()
    many = nnkit("params", "3x32x32", *LENET.split(), "-f", "json").json()
    assert one == many
    assert one["total"] == one["trainable"] == 62006 == sum(x["params"] for x in one["layers"])


def test_params_of_the_classic_example_with_explain(nnkit):
    run = nnkit("params", "3x32x32", "conv(10,5)", "--explain", "-f", "json")
    doc = run.json()
    assert doc["total"] == 760
    assert "params: 10*5*5*3 + 10 = 760" in doc["layers"][0]["explain"]


def test_shape_explain_is_textbook_arithmetic(nnkit):
    run = nnkit("shape", "3x32x32", "conv(6,5,p=2)", "--explain", "-f", "tsv")
    assert "(32 - 5 + 2*2)/1 + 1 = 32" in run.out
    floored = nnkit("shape", "3x32x32", "conv(6,5,s=2)", "-e", "-f", "json").json()["layers"][0]
    assert "H, W: (32 - 5 + 2*0)/2 + 1 = 14.5 -> 14 (floor)" in floored["explain"]
    assert floored["notes"] == ["the last window leaves 1 input row and 1 input column out"]
    # ResNet's stem: what the last window misses is right-hand padding, not input
    stem = nnkit("shape", "3x224x224", "conv(64,7,s=2,p=3)", "-e", "-f", "json").json()["layers"][0]
    assert "notes" not in stem and "H, W: (224 - 7 + 2*3)/2 + 1 = 112.5 -> 112 (floor)" in stem["explain"]


def test_explain_of_a_ceil_mode_window_that_torch_drops(nnkit):
    """CONVENTIONS.md: MaxPool2d(3, stride=3, padding=1, ceil_mode=True) on 5 gives 2."""
    layer = nnkit("shape", "1x5x5", "maxpool(3,3,p=1,ceil=true)", "-e", "-f", "json").json()["layers"][0]
    assert layer["output"] == [1, 2, 2]
    assert layer["explain"] == ["H, W: (5 - 3 + 2*1)/3 + 1 = 2.3333 -> 3 (ceil); the last window would start "
                                "in the padding, so PyTorch drops it: 2"]
    assert "notes" not in layer


def test_explain_json_holds_only_the_view_formulas(nnkit):
    layer = nnkit("params", "3x32x32", "conv(6,5)", "-e", "-f", "json").json()["layers"][0]
    assert layer["explain"] == ["params: 6*5*5*3 + 6 = 456"]
    rf = nnkit("rf", "3x32x32", "conv(6,5)", "-e", "-f", "json").json()["layers"][0]
    assert rf["explain"] == ["rf: r = 1 + (5-1)*1 = 5, S = 1*1 = 1, P = 0 + 0*1 = 0"]


def test_flops_json_contract_and_invariants(nnkit):
    doc = nnkit("flops", "3x32x32", LENET, "-f", "json").json()
    assert doc["macs"] == sum(x["macs"] for x in doc["layers"]) == 651720
    assert doc["flops"] == 2 * doc["macs"]
    assert all(x["flops"] == 2 * x["macs"] for x in doc["layers"])


def test_rf_json_contract(nnkit):
    doc = nnkit("rf", "3x32x32", LENET, "-f", "json").json()
    assert (doc["size"], doc["stride"], doc["padding"]) == ([16, 16], [4, 4], [0, 0])
    assert doc["at"] == "maxpool(2)" and doc["covers_input"] is True
    assert [x["size"] for x in doc["layers"][:4]] == [[5, 5], [6, 6], [14, 14], [16, 16]]
    assert doc["layers"][-1]["global"] is True and doc["layers"][-1]["size"] is None


def test_rf_matches_araujo_formula_with_padding_and_dilation(nnkit):
    # r = 1 + (3-1)*1 + (5-1)*2 (dilated 3x3 with d=2 is 5 wide) = 11; S = 2; P = 1 + 2*2 = 5
    doc = nnkit("rf", "1x64x64", "conv(8,3,s=2,p=1) conv(8,3,d=2,p=2)", "-f", "json").json()
    assert (doc["size"], doc["stride"], doc["padding"]) == ([11, 11], [2, 2], [5, 5])


def test_tsv_when_piped_and_csv(nnkit):
    run = nnkit("shape", "3x32x32", "conv(6,5)")
    assert run.out.splitlines() == ["#\tlayer\tinput\toutput", "1\tconv(6,5)\t3x32x32\t6x28x28"]
    csv = nnkit("params", "3x32x32", "conv(6,5) fc(3)", "-f", "csv").out.splitlines()
    assert csv == ["#,layer,params", "1,\"conv(6,5)\",456", "2,fc(3),87"]  # no total row to count twice


def test_table_format_renders(nnkit):
    run = nnkit("params", "3x32x32", LENET, "-f", "table")
    assert run.code == 0 and "62,006" in run.out and "fc(120)" in run.out


def test_batch_from_stdin_json_lines_and_errors(nnkit):
    lines = "3x32x32 conv(6,5) maxpool(2)\n# a comment\n\n1x28x28 conv(8,3,q=1)\n3x4x4 conv(6,5)\n64 fc(10)\n"
    run = nnkit("params", "-", "-f", "json", input=lines)
    docs = [json.loads(x) for x in run.out.splitlines()]
    assert [d["line"] for d in docs] == [1, 6]
    assert [d["total"] for d in docs] == [456, 650]
    assert "line 4: layer 1 conv(8,3,q=1)" in run.err and "line 5: layer 1 conv(6,5)" in run.err
    assert run.code == 2  # the worst of the lines: a syntax error


def test_batch_tsv_streams_one_row_per_line(nnkit):
    run = nnkit("shape", "-", input="3x32x32 conv(6,5)\n8x3x224x224 conv(64,7,s=2,p=3)\n")
    assert run.code == 0
    assert run.out.splitlines() == ["line\tsource\tinput\toutput",
                                    "1\t3x32x32 conv(6,5)\t3x32x32\t6x28x28",
                                    "2\t8x3x224x224 conv(64,7,s=2,p=3)\t8x3x224x224\t8x64x112x112"]


def test_batch_lines_may_use_tabs_and_table_cells_are_not_markup(nnkit):
    run = nnkit("params", "-", "-f", "tsv", input="3x32x32\tconv(6,5)\n")
    assert run.code == 0 and run.out.splitlines()[1] == "1\t3x32x32 conv(6,5)\t456\t456"
    table = nnkit("params", "-", "-f", "table", input="1x28x28 [conv(8,3,p=1) relu]*2\n")
    assert table.code == 0 and "664" in table.out  # the line's own table, printed as soon as it is read
    import io

    from nnkit.render import Tabular
    from nnkit.render.table import print_table

    buf = io.StringIO()
    print_table(Tabular(("layer",), (("[conv(8,3) relu]*2",),), title="[b]x[/b]", notes=("[i]n[/i]",)), buf)
    assert "[conv(8,3) relu]*2" in buf.getvalue() and "[b]x[/b]" in buf.getvalue() \
        and "[i]n[/i]" in buf.getvalue()


def test_the_whole_chain_as_one_argument(nnkit):
    assert nnkit("params", "3x32x32 conv(6,5)", "-f", "json").json()["total"] == 456


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["shape", "3x32x32", "conv(6"], 2, "missing ')'"),
        (["shape", "3x32x32", "foo(3)"], 2, "unknown layer 'foo'"),
        (["shape", "3x4x4", "conv(6,5)"], 1,
         "layer 1 conv(6,5): input H=4 is smaller than the 5-wide window"),
        (["shape", "3x0x4", "conv(6,5)"], 2, "every size must be positive"),
        (["params", "3x32x32", "conv(6,3,g=4)"], 1, "groups=4 must divide"),
        (["shape", "3x32x32"], 2, "no layers given"),
        (["shape", "3x32x32", "conv(6,5)", "--depth", "2"], 2, "--depth applies to named and user models"),
        (["dwsep", "3x32x32"], 2, "needs --out N and -k K"),
        (["dwsep", "3x32x32", "--out", "8", "-k", "3,d=2"], 2, "-k 3,d=2: cannot read the value"),
        (["dwsep", "3x32x32", "--out", "0", "-k", "3"], 2, "--out 0: must be positive"),
        (["dwsep", "128", "--out", "8", "-k", "3"], 1, "needs a CxHxW input, got 128"),
        (["shape", "3x32x32", "upsample(1e400)"], 2, "positive number below a million"),
        (["shape", "3x32x32", "[[[relu]*1000]*1000]*1000"], 2, "more than 100,000 layers"),
        (["shape", "3x32x32", "relu(2)"], 2, "relu takes no arguments"),
    ],
)
def test_bad_input_one_line_and_exit_code(nnkit, args, code, fragment):
    run = nnkit(*args)
    assert run.code == code, run
    assert fragment in run.err
    assert run.err.count("\n") == 1 and run.err.startswith("nnkit: ")
    assert "Traceback" not in run.err + run.out


def test_debug_shows_the_traceback(nnkit):
    from typer.testing import CliRunner

    from nnkit.cli import app
    from nnkit.cli.common import DEBUG
    from nnkit.errors import GeometryError

    result = CliRunner().invoke(app, ["--debug", "shape", "3x4x4", "conv(6,5)"])
    DEBUG["on"] = False
    assert isinstance(result.exception, GeometryError)


def test_dwsep_layer_json_contract(nnkit):
    doc = nnkit("dwsep", "32x112x112", "--out", "64", "-k", "3", "-p", "1", "-f", "json").json()
    assert doc["standard"] == {"params": 64 * 3 * 3 * 32, "macs": 64 * 112 * 112 * 3 * 3 * 32}
    sep = doc["separable"]
    assert sep["params"] == 32 * 3 * 3 + 32 * 64
    assert sep["macs"] == 32 * 112 * 112 * 3 * 3 + 64 * 112 * 112 * 32
    assert doc["ratio"]["macs"] == pytest.approx(doc["theory"]) == pytest.approx(1 / 64 + 1 / 9)
    assert doc["ratio"]["params"] == pytest.approx(sep["params"] / doc["standard"]["params"])
    with_bias = nnkit("dwsep", "32x112x112", "--out", "64", "-k", "3", "--bias", "-f", "json").json()
    assert with_bias["standard"]["params"] == 64 * 3 * 3 * 32 + 64


def test_dwsep_agrees_with_params_and_flops(nnkit):
    doc = nnkit("dwsep", "16x20x20", "--out", "24", "-k", "5", "-s", "2", "--bias", "-f", "json").json()
    chain = nnkit("params", "16x20x20", "dwsep(24,5,s=2)", "-f", "json").json()
    flops = nnkit("flops", "16x20x20", "dwsep(24,5,s=2)", "-f", "json").json()
    assert doc["separable"]["params"] == chain["total"] and doc["separable"]["macs"] == flops["macs"]


def test_solve_same_map_undo(nnkit):
    same = nnkit("solve", "same", "-k", "5", "-f", "json").json()
    assert same["padding"] == [2, 2] and same["symmetric"]
    even = nnkit("solve", "same", "-k", "4", "-f", "json").json()
    assert even["padding"] == [1, 2] and not even["symmetric"]
    strided = nnkit("solve", "same", "-k", "3", "-s", "2", "--input", "224", "-f", "json").json()
    assert strided["output"] == 112 and strided["padding"] == [0, 1]
    mapping = nnkit("solve", "map", "224", "112", "-k", "7", "-f", "json").json()
    assert {"layer": "conv", "stride": 2, "padding": 3} .items() <= mapping["solutions"][0].items()
    up = nnkit("solve", "map", "56", "112", "-k", "4", "-f", "json").json()["solutions"][0]
    assert (up["layer"], up["stride"], up["padding"], up["output_padding"]) == ("tconv", 2, 1, 0)
    # solved, not searched
    far = nnkit("solve", "map", "100", "20000", "-k", "7", "-f", "json").json()["solutions"]
    assert all(s["layer"] == "tconv" for s in far) and any(s["stride"] == 202 for s in far)
    undo = nnkit("solve", "undo", "224", "-k", "3", "-s", "2", "-p", "1", "-f", "json").json()
    assert undo["conv_output"] == 112 and undo["output_padding"] == 1


@pytest.mark.torch
def test_solve_answers_hold_in_torch(nnkit):
    import torch

    for sol in nnkit("solve", "map", "224", "112", "-k", "7", "-f", "json").json()["solutions"]:
        conv = torch.nn.Conv2d(1, 1, 7, sol["stride"], sol["padding"])
        assert conv(torch.zeros(1, 1, 224, 224)).shape[-1] == 112
    for h in (223, 224, 225):
        op = nnkit("solve", "undo", str(h), "-k", "3", "-s", "2", "-p", "1", "-f",
                   "json").json()["output_padding"]
        x = torch.zeros(1, 1, h, h)
        y = torch.nn.Conv2d(1, 1, 3, 2, 1)(x)
        assert torch.nn.ConvTranspose2d(1, 1, 3, 2, 1, output_padding=op)(y).shape[-1] == h
    for k in range(1, 8):
        pad = nnkit("solve", "same", "-k", str(k), "-s", "2", "--input", "57", "-f", "json").json()["padding"]
        x = torch.nn.functional.pad(torch.zeros(1, 1, 57, 57), (pad[0], pad[1], pad[0], pad[1]))
        assert torch.nn.Conv2d(1, 1, k, 2)(x).shape[-1] == 29


def test_arithmetic_commands_never_import_torch():
    """A subprocess, since this pytest process has torch loaded: the fast path must stay torch-free."""
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from nnkit.cli import app\n"
        "r = CliRunner()\n"
        "for args in (['shape', '3x32x32', 'conv(6,5) maxpool(2) flatten fc(10)'], ['params', '128', "
        "'lstm(64)'],\n             ['rf', '3x32x32', 'conv(6,5)'], ['flops', '3x32x32', 'conv(6,5)', '-f', "
        "'json'],\n             ['dwsep', '32x56x56', '--out', '64', '-k', '3'], ['solve', 'map', '224', "
        "'112', '-k', '7'],\n             ['shape', '-'], ['shape', '16x100', 'conv1d(32,3,p=1) "
        "maxpool1d(2)'],\n             ['rf', '3x16x112x112', 'conv3d(64,3x7x7,s=1x2x2,p=1x3x3) gn(8) in'],\n"
        "             ['flops', '3x224x224', 'patch(768,16) cls pos [encoder(12,3072)]*2 ln token(0) "
        "fc(10)'],\n             ['params', '8x50x128', 'lstm(32,batch_first=true)']):\n"
        "    res = r.invoke(app, args, input='3x8x8 conv(2,3)\\n')\n"
        "    assert res.exit_code == 0, (args, res.output)\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'fvcore', 'torchinfo', 'matplotlib', 'sklearn', "
        "'numpy')\n               if m in sys.modules)\n"
        "print(','.join(heavy) or 'none')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "none"


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_WORDS = st.sampled_from(["conv(", "6", "5", ")", "maxpool", "(2)", "fc(10)", "x", ",", "=", "s", "p", "same",
                          "flatten", "lstm(4)", "tconv(2,2,s=2)", "-3", "0", "3x32x32", " ", "(", "gap", "k"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_WORDS, max_size=12).map("".join), st.sampled_from(["shape", "params", "flops", "rf"]))
def test_cli_fuzz_never_shows_a_traceback(nnkit, text, command):
    run = nnkit(command, "3x16x16", text, "-f", "json")
    assert run.code in (0, 1, 2), run
    assert "Traceback" not in run.err and "internal error" not in run.err
    if run.code:
        assert run.err.startswith("nnkit: ") and run.err.count("\n") == 1
    else:
        json.loads(run.out)


def test_command_groups_match_what_each_module_registers():
    """main() imports only the module that owns the command and builds only that command: the table in
    nnkit.cli must be the truth."""
    from importlib import import_module

    import typer
    from typer.main import get_command

    from nnkit.cli import GROUPS, build_app

    for group, commands in GROUPS.items():
        app = typer.Typer()
        import_module(f"nnkit.cli.{group}").register(app)
        assert {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups} == \
            set(commands), group
        for command in commands:
            assert set(get_command(build_app(command)).commands) == {command}
    assert set(get_command(build_app()).commands) == {c for cs in GROUPS.values() for c in cs}


_ND_WORDS = st.sampled_from(["conv1d(", "conv3d(", "tconv1d(2,2,s=2)", "maxpool3d", "(2)", "gn(", "ln", "in",
                             "attn(", "encoder(4,8)", "mlp(", "patch(8,4)", "cls", "pos", "token(", "6",
                             "3x3x3",
                             ")", ",", "=", "d", "p", " ", "(", "-1", "0", "batch_first=true", "lstm(4"])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_ND_WORDS, max_size=10).map("".join), st.sampled_from(["shape", "params", "flops", "rf"]),
       st.sampled_from(["16x100", "3x8x16x16", "196x64", "3x32x32"]))
def test_cli_fuzz_of_the_new_layers_never_shows_a_traceback(nnkit, text, command, shape):
    run = nnkit(command, shape, text, "-f", "json")
    assert run.code in (0, 1, 2), run
    assert "Traceback" not in run.err and "internal error" not in run.err
    if run.code:
        assert run.err.startswith("nnkit: ") and run.err.count("\n") == 1
    elif text.startswith("-") and "h" in text and "Usage:" in run.out:
        pass  # click reads '-1batch...' as a cluster of short options, -h among them: the help is the answer
    else:
        json.loads(run.out)


def test_issue_10_examples_as_written(nnkit):
    """The three examples of issue 10 and the ViT line, through the CLI."""
    assert nnkit("shape", "16x100", "conv1d(32,3,p=1) maxpool1d(2)", "-f",
                 "json").json()["output"] == [32, 50]
    stem = nnkit("shape", "3x16x112x112", "conv3d(64,3x7x7,s=1x2x2,p=1x3x3,bias=false)", "-f", "json").json()
    assert stem["output"] == [64, 16, 56, 56]
    tcn = nnkit("rf", "1x1000", "conv1d(16,2,d=1) conv1d(16,2,d=2) conv1d(16,2,d=4) conv1d(16,2,d=8)", "-f",
                "json")
    assert tcn.json()["size"] == [16] and tcn.json()["stride"] == [1] and tcn.json()["padding"] == [0]
    vit = "patch(768,16) cls pos [encoder(12,3072)]*12 ln token(0) fc(1000)"
    assert nnkit("params", "3x224x224", vit, "-f", "json").json()["total"] == 86_567_656
    flops = nnkit("flops", "3x224x224", vit, "-f", "tsv")
    assert "17.564 GMACs" in flops.out or "17.564 GMACs" in flops.err
    mixed = nnkit("shape", "3x32x32", "conv(8,3) conv1d(8,3)")
    assert mixed.code == 2 and mixed.err == ("nnkit: layer 2 conv1d(8,3): a 1-D layer in a 2-D chain (layer "
                                             "1 conv(8,3)); a chain keeps one dimensionality\n")


def test_solve_per_axis_keeps_each_axis_and_todays_scalar_form(nnkit):
    """-k 3x7x7 answers each axis as its own 1-D question: the same keys, lists over the axes."""
    same = nnkit("solve", "same", "-k", "3x7x7", "-f", "json").json()
    assert same["axes"] == ["D", "H", "W"] and same["padding"] == [[1, 1], [3, 3], [3, 3]]
    assert same["kernel"] == [3, 7, 7] and same["explain"][0] == "D: total padding = 1*(3-1) = 2"
    assert nnkit("solve", "same", "-k", "5", "-f", "json").json()["padding"] == [2, 2]  # one axis: as before
    undo = nnkit("solve", "undo", "16x112x112", "-k", "3x7x7", "-s", "1x2x2", "-p", "1x3x3", "-f",
                 "json").json()
    assert undo["conv_output"] == [16, 56, 56] and undo["output_padding"] == [0, 1, 1]
    mapping = nnkit("solve", "map", "16x112x112", "16x56x56", "-k", "3x7x7", "-f", "json").json()
    assert [m[0]["stride"] for m in mapping["solutions"]] == [1, 2, 2]
    bad = nnkit("solve", "same", "-k", "3x3", "-s", "2x2x2", "--input", "9")
    assert bad.code == 2 and "needs the same number of axes" in bad.err
    axis = nnkit("solve", "undo", "4x2", "-k", "3x5")
    assert axis.code == 1 and axis.err.startswith("nnkit: axis W: ")


@pytest.mark.torch
def test_solve_per_axis_answers_hold_in_torch(nnkit):
    import torch

    same = nnkit("solve", "same", "-k", "3x4x7", "-d", "1x1x2", "-f", "json").json()["padding"]
    pad = [x for before, after in reversed(same) for x in (before, after)]  # F.pad: last axis first
    x = torch.nn.functional.pad(torch.zeros(1, 1, 9, 10, 11), pad)
    assert torch.nn.Conv3d(1, 1, (3, 4, 7), dilation=(1, 1, 2))(x).shape[2:] == (9, 10, 11)
    op = nnkit("solve", "undo", "15x40", "-k", "3", "-s", "2x3", "-p", "1", "-f",
               "json").json()["output_padding"]
    y = torch.nn.Conv2d(1, 1, 3, (2, 3), 1)(torch.zeros(1, 1, 15, 40))
    assert torch.nn.ConvTranspose2d(1, 1, 3, (2, 3), 1, output_padding=tuple(op))(y).shape[2:] == (15, 40)


def _readme_examples() -> list[list[str]]:
    """The `$ nnkit ...` lines of the README's torch-free section, as a shell would split them."""
    import shlex

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## The arithmetic, without torch", 1)[1].split("\n## ", 1)[0]
    lines = [line[len("$ nnkit "):] for line in section.splitlines() if line.startswith("$ nnkit ")]
    return [shlex.split(line, comments=True) for line in lines]


@pytest.mark.parametrize("args", _readme_examples(), ids=" ".join)
def test_readme_arithmetic_examples_succeed(nnkit, args):
    run = nnkit(*args, "-f", "json")
    assert run.code == 0, run
    json.loads(run.out)
