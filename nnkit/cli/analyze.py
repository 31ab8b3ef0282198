"""nnkit shape | params | flops | rf, nnkit dwsep and nnkit solve: the arithmetic commands.

A target whose first word is a shape is a chain, analysed by nnkit.core without torch; anything else is a
named architecture or a user model, analysed by nnkit.introspect (torch, imported only then). '-' reads one
target per line from stdin and answers line by line.
"""

import sys
from typing import Annotated, Callable, Optional

import typer

from nnkit.cli.common import (
    DEBUG,
    BatchOpt,
    ColumnsOpt,
    DepthOpt,
    ExplainOpt,
    FormatOpt,
    InChannelsOpt,
    InputOpt,
    InputsOpt,
    NumClassesOpt,
    WidthOpt,
    target_arg,
)
from nnkit.api import Backend, analyze_target
from nnkit.core.report import Analysis
from nnkit.core.spec import looks_like_shape
from nnkit.errors import ExitCode, NnkitError, UsageError, one_line
from nnkit.render import DELIMITERS, OutputFormat, Tabular, emit, finite_json, resolve, to_delimited
from nnkit.render.views import SUMMARY_COLUMNS, View, dwsep_view, solve_view, summary_line, view


TargetArg = target_arg("An input shape (CxHxW, HxW, NxCxHxW, or a feature size) followed by layers; an "
                       "architecture name (nnkit models); a user model file.py:Class; or - to read one per line "
                       "from stdin.")
LayersArg = Annotated[
    Optional[list[str]],
    typer.Argument(help='Layers, as one quoted string or separate words: "conv(6,5) maxpool(2) fc(10)".',
                   show_default=False),
]
BackendOpt = Annotated[Backend, typer.Option("--backend", help="Who counts, for named and user models.")]
AtOpt = Annotated[
    Optional[str],
    typer.Option("--at",
                 help="Stop at this layer: its number or text in a chain, its module path in a model.",
                 show_default=False),
]


def _batch(what: View, fmt: OutputFormat | None, explain: bool,
           analyse: Callable[[str, list[str] | None], Analysis], columns: str | None = None) -> None:
    """One target per stdin line, answered as soon as it is read; a bad line is reported and the rest go on.

    JSON: one object per line (JSON lines). CSV/TSV: one row of totals per line under one header. Table: the
    line's whole table.
    """
    fmt = resolve(fmt)
    if columns and fmt is not OutputFormat.table:
        raise UsageError("--columns picks the columns of a table; with - each line is one row of fixed "
                         "columns")
    worst = ExitCode.OK
    header = ("line", "source", *SUMMARY_COLUMNS[what])
    if fmt in (OutputFormat.tsv, OutputFormat.csv):
        sys.stdout.write(to_delimited(Tabular(header, ()), DELIMITERS[fmt]))
    for number, raw in enumerate(sys.stdin, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        first, *rest = line.split(None, 1)
        try:
            a = analyse(first, rest or None)
            if fmt is OutputFormat.json:
                doc, _ = view(a, what, explain)
                import json  # here: only stdin batches print JSON lines (a start-up without json is 1 ms faster)

                text = json.dumps(finite_json({"line": number, **doc}), ensure_ascii=False, allow_nan=False) + "\n"
            elif fmt is OutputFormat.table:
                text = None
                emit(*view(a, what, explain), fmt, columns=columns)
            else:
                text = to_delimited(Tabular(header, ((number, a.source, *summary_line(a, what)),)),
                                    DELIMITERS[fmt], header=False)
        except NnkitError as exc:
            sys.stderr.write(f"nnkit: line {number}: {one_line(str(exc))}\n")
            worst = max(worst, exc.exit_code)
            continue
        except (KeyboardInterrupt, BrokenPipeError):  # the user or the reader ends the batch, not a line
            raise
        except ModuleNotFoundError as exc:  # the torch-free install: this line needs torch (as the boundary says)
            from nnkit.cli import TORCH_EXTRA
            from nnkit.errors import MissingDependencyError

            missing = (exc.name or "").partition(".")[0]
            if DEBUG["on"] or missing not in TORCH_EXTRA:
                raise
            sys.stderr.write(f"nnkit: line {number}: {MissingDependencyError(TORCH_EXTRA[missing], first)}\n")
            worst = max(worst, ExitCode.ERROR)
            continue
        except Exception as exc:  # noqa: BLE001 - one line's failure, whatever it is, must not end the batch
            if DEBUG["on"]:
                raise
            sys.stderr.write(f"nnkit: line {number}: internal error: {type(exc).__name__}: {one_line(str(exc))} "
                             f"(run with --debug for details)\n")
            worst = max(worst, ExitCode.ERROR)
            continue
        if text is not None:
            sys.stdout.write(text)
        sys.stdout.flush()
    if worst:
        raise typer.Exit(int(worst))


_HELP = {
    "shape": "Output size of every layer: (H - F + 2P)/S + 1 and its PyTorch generalisations.",
    "params": "Parameters per layer and in total (10 filters of 5x5x3: 10*5*5*3 + 10 = 760).",
    "flops": "MACs and FLOPs per layer and in total (FLOPs = 2 x MACs; conv, linear, matmul, recurrent "
             "gates).",
    "rf": "Receptive field (size, effective stride, effective padding) of every layer (Araujo et al. 2019).",
}


def _make(what: View) -> Callable[..., None]:
    def command(
        target: TargetArg,
        layers: LayersArg = None,
        input: InputsOpt = None,
        batch: BatchOpt = None,
        fmt: FormatOpt = None,
        explain: ExplainOpt = False,
        depth: DepthOpt = None,
        num_classes: NumClassesOpt = None,
        in_channels: InChannelsOpt = None,
        width: WidthOpt = None,
        backend: BackendOpt = Backend.nnkit,
        at: AtOpt = None,
        columns: ColumnsOpt = None,
    ) -> None:
        def analyse(t: str, lay: list[str] | None) -> Analysis:
            return analyze_target(t, lay, input=input, depth=depth, num_classes=num_classes,
                                  in_channels=in_channels, width=width, backend=backend, at=at,
                                  fields=what in ("rf", "summary"), explain=explain, batch=batch)

        if target == "-":
            if layers:
                raise UsageError(f"'-' reads one target per line from stdin; the words after it "
                                 f"({' '.join(layers)}) would be ignored: put them on the lines, or drop the '-'")
            _batch(what, fmt, explain, analyse, columns)
            return
        doc, tab = view(analyse(target, layers), what, explain)
        emit(doc, tab, fmt, columns=columns)

    command.__doc__ = _HELP[what]
    command.__name__ = what
    return command


def dwsep(
    target: target_arg("Input shape CxHxW of one layer, or a network (mobilenet_v1, efficientnet_b0, "
                       "model.py:Net) to compare with its standard twin."),
    out: Annotated[Optional[int], typer.Option("--out", "-n", help="Output channels N.")] = None,
    kernel: Annotated[Optional[str], typer.Option("-k", "--kernel", help="Kernel size K (or KhxKw).")] = None,
    stride: Annotated[str, typer.Option("-s", "--stride", help="Stride.")] = "1",
    padding: Annotated[str, typer.Option("-p", "--padding",
                                         help="Padding (a size, HxW, same or valid).")] = "0",
    bias: Annotated[bool, typer.Option("--bias/--no-bias", help="Count biases (Howard et al. 2017 do not: "
                                                                 "BatchNorm follows every conv).")] = False,
    input: InputOpt = None,
    width: WidthOpt = None,
    fmt: FormatOpt = None,
    explain: ExplainOpt = False,
    columns: ColumnsOpt = None,
) -> None:
    """Depthwise-separable against standard convolution: params, MACs, their ratio and 1/N + 1/K^2."""
    if not looks_like_shape(target):
        if out is not None or kernel is not None:
            raise UsageError("--out and -k describe one layer; give its input shape first, e.g. "
                             "nnkit dwsep 32x112x112 --out 64 -k 3")
        from nnkit.api import dwsep as compare_network

        try:
            result = compare_network(target, input=input, width=width)
        except ModuleNotFoundError as exc:
            from nnkit.errors import MissingDependencyError

            raise MissingDependencyError(exc.name or "torch", f"comparing '{target}'") from None
        emit(*result.view(), fmt, columns=columns)
        return
    if out is None or kernel is None:
        raise UsageError("one layer needs --out N and -k K, e.g. nnkit dwsep 32x112x112 --out 64 -k 3")
    from nnkit.core.dwsep import compare

    result = compare(target, out=out, kernel=kernel, stride=stride, padding=padding, bias=bias)
    emit(*dwsep_view(result, explain), fmt, columns=columns)


solve_app = typer.Typer(help="Inverse questions: which padding keeps the size, which stride and padding map "
                             "224 to 112, which output_padding undoes a strided conv.", no_args_is_help=True)


_PER_AXIS = " (one per axis, e.g. 3x7x7, for a 1-D or 3-D layer: each axis is solved on its own)"


@solve_app.command("same")
def solve_same(
    kernel: Annotated[str, typer.Option("-k", "--kernel", help="Kernel size" + _PER_AXIS + ".")],
    dilation: Annotated[str, typer.Option("-d", "--dilation", help="Dilation.")] = "1",
    stride: Annotated[str, typer.Option("-s", "--stride", help="Stride.")] = "1",
    input: Annotated[Optional[str], typer.Option("--input", "-i",
                                                 help="Input size H (needed when stride > 1).")]
    = None,
    fmt: FormatOpt = None,
    columns: ColumnsOpt = None,
) -> None:
    """Padding that keeps the size (stride 1), or gives ceil(H/S) as TensorFlow's 'same' does (stride > 1)."""
    from nnkit.core.solve import axis_sizes, per_axis, same

    emit(*solve_view(per_axis(same, kernel=("-k", axis_sizes("-k", kernel)),
                              dilation=("-d", axis_sizes("-d", dilation)),
                              stride=("-s", axis_sizes("-s", stride)),
                              size=("--input", axis_sizes("--input", input)))), fmt, columns=columns)


@solve_app.command("map")
def solve_map(
    size_in: Annotated[str, typer.Argument(help="Input size H" + _PER_AXIS + ".", show_default=False)],
    size_out: Annotated[str, typer.Argument(help="Wanted output size.", show_default=False)],
    kernel: Annotated[str, typer.Option("-k", "--kernel", help="Kernel size.")],
    dilation: Annotated[str, typer.Option("-d", "--dilation", help="Dilation.")] = "1",
    fmt: FormatOpt = None,
    columns: ColumnsOpt = None,
) -> None:
    """Every stride and padding that maps H to the wanted size (a transposed conv when it grows)."""
    from nnkit.core.solve import axis_sizes, map_size, per_axis

    emit(*solve_view(per_axis(map_size, size_in=("input", axis_sizes("input", size_in)),
                              size_out=("output", axis_sizes("output", size_out)),
                              kernel=("-k", axis_sizes("-k", kernel)),
                              dilation=("-d", axis_sizes("-d", dilation)))), fmt, columns=columns)


@solve_app.command("undo")
def solve_undo(
    size: Annotated[str, typer.Argument(help="Input size H of the strided conv" + _PER_AXIS + ".",
                                        show_default=False)],
    kernel: Annotated[str, typer.Option("-k", "--kernel", help="Kernel size.")],
    stride: Annotated[str, typer.Option("-s", "--stride", help="Stride.")] = "1",
    padding: Annotated[str, typer.Option("-p", "--padding", help="Padding.")] = "0",
    dilation: Annotated[str, typer.Option("-d", "--dilation", help="Dilation.")] = "1",
    fmt: FormatOpt = None,
    columns: ColumnsOpt = None,
) -> None:
    """The output_padding that makes tconv(k, s, p) give back H after conv(k, s, p)."""
    from nnkit.core.solve import axis_sizes, per_axis, undo

    emit(*solve_view(per_axis(undo, size=("input", axis_sizes("input", size)),
                              kernel=("-k", axis_sizes("-k", kernel)),
                              stride=("-s", axis_sizes("-s", stride)),
                              padding=("-p", axis_sizes("-p", padding)),
                              dilation=("-d", axis_sizes("-d", dilation)))), fmt, columns=columns)


_EXAMPLES = {
    "shape": ['3x32x32 "conv(6,5) maxpool(2) conv(16,5) maxpool(2) flatten fc(120) fc(84) fc(10)"',
              '3x32x32 "conv(6,5,s=2)" --explain', 'resnet50 --depth 1', "- < chains.txt"],
    "params": ['3x32x32 "conv(10,5)" -e', '128 "lstm(256,2)"', 'mobilenet_v2 -f json'],
    "flops": ['3x224x224 "conv(64,7,s=2,p=3) maxpool(3,2,p=1)"', 'resnet50 --input 3x160x160',
              'text.py:Net --input long:50 --input mask=bool:50 --batch 32'],
    "rf": ['3x224x224 "[conv(64,3,p=1) relu]*2 maxpool(2)" -e', 'vgg16', 'resnet50 --at layer3.5.relu'],
}


def register(app: typer.Typer) -> None:
    for what in ("shape", "params", "flops", "rf"):
        # typer renders help as rich markup: '[' would open a tag
        epilog = "Examples: " + "  |  ".join(f"nnkit {what} {e}" for e in _EXAMPLES[what]).replace("[", "\\[")
        # Unknown "options" stay layers, so an unquoted chain may hold '->' or '-1' and get the layer's error.
        app.command(what, help=_HELP[what], epilog=epilog,
                    context_settings={"ignore_unknown_options": True})(_make(what))
    app.command("dwsep")(dwsep)
    app.add_typer(solve_app, name="solve")
