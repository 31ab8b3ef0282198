"""nnkit as a library, for notebooks and scripts: the functions the CLI is a thin loop over.

    >>> import nnkit
    >>> a = nnkit.analyze("3x32x32 conv(6,5) maxpool(2) conv(16,5) maxpool(2) flatten fc(120) fc(84) fc(10)")
    >>> a.params, a.macs
    (62006, 651720)
    >>> nnkit.summary(model, input="3x224x224")     # torchinfo.summary(model, input_size=(1, 3, 224, 224))

Every function returns the frozen result object of its analysis (nnkit.core.report.Analysis and friends), which
displays itself where people look: a table in a terminal, in IPython and under print(), an HTML table in Jupyter
(_repr_html_), `to_dict()` for the JSON document the CLI prints and `rows()` for a per-layer list of dicts that
pandas takes directly (pandas.DataFrame(a.rows())). The user's module is never changed: analysis runs on a copy
on the meta device.

This module imports no torch: chains are analysed by nnkit.core alone; models import torch when they are analysed.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

from nnkit.core import report
from nnkit.core.spec import looks_like_shape
from nnkit.errors import MissingDependencyError, UnknownOptionError, UsageError, refuse_given

__all__ = ["Analysis", "analyze", "dwsep", "memory", "solve", "summary"]

NOT_FOR_CHAINS = "to named and user models, not to a chain (write the shape first, then the layers)"


class _Shown:
    """Display for a result object: the one table and JSON document nnkit.render.views makes of it."""

    def view(self, what: str = "", explain: bool = False) -> tuple[dict[str, Any], Any]:
        raise NotImplementedError

    def to_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The JSON document the CLI prints for this result (`-f json`), as Python data."""
        return self.view(*args, **kwargs)[0]

    def table(self, *args: Any, **kwargs: Any) -> str:
        """The table as text, as a terminal shows it."""
        from nnkit.render.notebook import to_text

        return to_text(self.view(*args, **kwargs)[1])

    def __str__(self) -> str:
        return self.table()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython's terminal display
        printer.text(f"{type(self).__name__}(...)" if cycle else self.table())

    def _repr_html_(self) -> str:  # Jupyter
        from nnkit.render.notebook import to_html

        return to_html(self.view()[1])

    def __rich__(self) -> Any:  # rich.print(result)
        from nnkit.render.notebook import to_rich

        return to_rich(self.view()[1])


def _as(cls: type, value: Any) -> Any:
    """The same frozen data as an instance of the displaying subclass `cls`."""
    return cls(**{f.name: getattr(value, f.name) for f in dataclasses.fields(value)})


@dataclasses.dataclass(frozen=True, repr=False)
class Analysis(report.Analysis, _Shown):
    """nnkit.core.report.Analysis, displayed. `view` is one of shape, params, flops, rf, summary."""

    def view(self, what: str = "summary", explain: bool = False) -> tuple[dict[str, Any], Any]:
        from nnkit.render.views import VIEWS, view

        if what not in VIEWS:
            raise UsageError(f"view '{what}': one of {', '.join(VIEWS)}")
        return view(self, what, explain)  # type: ignore[arg-type]

    def to_dict(self, view: str = "summary", explain: bool = False) -> dict[str, Any]:
        """The CLI's JSON document: `nnkit VIEW ... -f json` (VIEW = shape, params, flops, rf or summary)."""
        return self.view(view, explain)[0]

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per layer (pandas.DataFrame(a.rows())): shapes as lists, fields per axis as lists."""
        from nnkit.render.views import layer_rows

        return layer_rows(self)

    def __repr__(self) -> str:
        return (f"Analysis(source={self.source!r}, input={self.input}, output={self.output}, "
                f"params={self.params:,}, macs={self.macs:,}, layers={len(self.layers)})")


def _dwsep_class() -> type:
    """Dwsep, made on first use: nnkit.core.dwsep is not imported by the commands that do not compare (every
    command's start-up pays for what this module imports)."""
    global _DWSEP
    if _DWSEP is None:
        from nnkit.core.dwsep import DwsepComparison

        @dataclasses.dataclass(frozen=True, repr=False)
        class Dwsep(DwsepComparison, _Shown):
            """One layer, depthwise-separable against standard (nnkit dwsep INPUT --out N -k K)."""

            def view(self, what: str = "", explain: bool = False) -> tuple[dict[str, Any], Any]:
                from nnkit.render.views import dwsep_view

                return dwsep_view(self, explain or bool(what))

            def __repr__(self) -> str:
                return (f"Dwsep(input={self.input}, out={self.out}, kernel={self.kernel}, ratio=(params "
                        f"{self.ratio.params:.4f}, macs {self.ratio.macs:.4f}))")

        Dwsep.__module__ = __name__
        _DWSEP = Dwsep
    return _DWSEP


_DWSEP: type | None = None


def __getattr__(name: str) -> Any:  # nnkit.api.Dwsep, made when first asked for
    if name == "Dwsep":
        return _dwsep_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclasses.dataclass(frozen=True, repr=False)
class NetworkDwsep(_Shown):
    """A whole network against its standard twin (nnkit dwsep ARCH); `result` is
    nnkit.core.dwsep_network's comparison."""

    result: Any
    width: float | None = None

    def view(self, what: str = "", explain: bool = False) -> tuple[dict[str, Any], Any]:
        from nnkit.render.views import dwsep_network_view

        return dwsep_network_view(self.result, width=self.width)

    def __getattr__(self, name: str) -> Any:  # standard, separable, ratio, pairs, ... of the comparison
        if name == "result":
            raise AttributeError(name)
        return getattr(self.result, name)

    def __repr__(self) -> str:
        r = self.result
        return (f"NetworkDwsep(source={getattr(r, 'source', getattr(r, 'name', ''))!r}, input={r.input}, "
                f"ratio=(params {r.ratio.params:.4f}, macs {r.ratio.macs:.4f}))")


def _solved(base: type) -> type:
    def view(self: Any, what: str = "", explain: bool = False) -> tuple[dict[str, Any], Any]:
        from nnkit.render.views import solve_view

        return solve_view(self)

    return dataclasses.dataclass(frozen=True)(type(base.__name__, (base, _Shown), {"view": view}))


_SOLVED: dict[type, type] = {}  # nnkit.core.solve's results as displaying classes, made on first use


@dataclasses.dataclass(frozen=True, repr=False)
class Memory(_Shown):
    """Training memory of a model at one batch size (nnkit summary ARCH --train)."""

    estimate: Any  # nnkit.introspect.memory.Memory

    def view(self, what: str = "", explain: bool = False) -> tuple[dict[str, Any], Any]:
        from nnkit.render.views import memory_view

        return memory_view(self.estimate)

    def __getattr__(self, name: str) -> Any:  # batch, total, params_bytes, ... of the estimate
        if name == "estimate":
            raise AttributeError(name)
        return getattr(self.estimate, name)

    def __repr__(self) -> str:
        return f"Memory(batch={self.estimate.batch}, optimizer={self.estimate.optimizer!r}, total={self.total:,})"


# --- targets ------------------------------------------------------------------------------------------------------


class Backend(str, Enum):
    """Who counts, for named and user models."""

    nnkit = "nnkit"
    fvcore = "fvcore"
    torchinfo = "torchinfo"


def analyze_target(target: str, layers: list[str] | None, *, input: Any = None, depth: int | None = None,
                   num_classes: int | None = None, in_channels: int | None = None, width: float | None = None,
                   backend: Backend | str = "nnkit", at: str | None = None, fields: bool = True,
                   explain: bool = True, batch: int | None = None) -> report.Analysis:
    """A chain (torch-free) or a named/user model (torch) into one Analysis, as the CLI's TARGET [LAYERS...]
    reads them; fields and explain=False leave out what a view will not show (receptive fields, a model's
    per-layer formulas). input: one --input word or a list of them (several inputs); batch: --batch N."""
    if batch is not None and batch <= 0:
        raise UsageError(f"--batch must be positive, got {batch}")
    if isinstance(input, (list, tuple)) and not input:
        input = None
    first, _, rest = target.strip().partition(" ")
    if rest.strip() and looks_like_shape(first):  # the whole chain as one argument, as a stdin line reads
        target, layers = first, [rest, *(layers or [])]
    if looks_like_shape(target):
        from nnkit.core.chain import analyze_chain, truncate

        if batch is not None:
            raise UsageError(f"--batch {batch} applies to named and user models; a chain takes its batch first "
                             f"in its shape (e.g. {batch}x3x32x32)")
        refuse_given((("--depth", depth), ("--num-classes", num_classes), ("--in-channels", in_channels),
                      ("--width", width), ("--input", input),
                      ("--backend", None if _backend(backend) is Backend.nnkit else backend)), NOT_FOR_CHAINS)
        options = [x for x in layers or [] if x.startswith("--")]
        if options:
            raise UnknownOptionError(options[0])
        analysis = analyze_chain(target, layers or [])
        return truncate(analysis, at) if at else analysis
    options = [x for x in layers or [] if x.startswith("-") and len(x) > 1]
    if options:  # a model takes no words after it: these were meant as options
        raise UnknownOptionError(options[0])
    if layers:
        raise UsageError(f"'{target}' is not an input shape, so the words after it ({' '.join(layers)}) make no "
                         "chain; for a chain write the shape first, e.g. 3x32x32 \"conv(6,5)\"")
    try:
        from nnkit.introspect import analyze
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(exc.name or "torch", f"analysing '{target}'") from None
    return analyze(target, input=input, depth=depth, num_classes=num_classes, in_channels=in_channels,
                   width=width, backend=_backend(backend).value, at=at, fields=fields, explain=explain, batch=batch)




def _backend(name: Any) -> Backend:
    try:
        return Backend(name)
    except ValueError:
        raise UsageError(f"backend '{name}': one of {', '.join(b.value for b in Backend)}") from None


def _input_text(input: Any) -> Any:
    """'3x224x224', (3, 224, 224), torch.Size([1, 3, 224, 224]) (torchinfo's input_size, batch first) -> text;
    several inputs as a list of them (entries 'NAME=...' are keyword inputs), keyword inputs as a dict
    {'mask': 'bool:50'} -> a list of texts, as --input given once for each."""
    if input is None or isinstance(input, str):
        return input
    if isinstance(input, dict):
        return [f"{name}={_one_input(value)}" for name, value in input.items()]
    items = list(input) if isinstance(input, (list, tuple)) else None
    if items and any(isinstance(v, (str, list, tuple, dict)) for v in items):
        texts: list[str] = []
        for v in items:
            texts += _input_text(v) if isinstance(v, dict) else [_one_input(v)]
        return texts
    return _one_input(input)


def _one_input(input: Any) -> str:
    if isinstance(input, str):
        return input
    try:
        dims = [int(d) for d in input]
    except (TypeError, ValueError):
        raise UsageError(f"input {input!r}: give a shape such as '3x224x224' or (3, 224, 224), 'long:50' for "
                         "ids, a list of them for several inputs, a dict {name: input} for keyword ones") from None
    return "x".join(map(str, dims))


def _is_module(obj: Any) -> bool:
    """An nn.Module, without importing torch for a string target."""
    import sys

    nn = sys.modules.get("torch.nn")
    return nn is not None and isinstance(obj, nn.Module)


def analyze(target: Any, input: Any = None, *, depth: int | None = None, num_classes: int | None = None,
            in_channels: int | None = None, width: float | None = None, backend: str = "nnkit",
            at: str | None = None, explain: bool = False, fields: bool = True, batch: int | None = None) -> Analysis:
    """Every layer's shape, parameters, MACs and receptive field, as `nnkit summary` shows them.

    target: a chain ("3x32x32 conv(6,5) maxpool(2)", or the layers alone with input="3x32x32"), an architecture
    name ("resnet50"), a user model ("model.py:Net", "package.module:factory") or a live torch.nn.Module.
    input: "3x224x224", (3, 224, 224) or with the batch first (1, 3, 224, 224), as torchinfo's input_size;
    for a model, as --input: "long:50" (ids), ["3x520x960", "3x520x960"] (several inputs, in order; an entry
    "mask=bool:50" is a keyword input) or {"mask": "bool:50"} (keyword inputs). batch: --batch N.
    """
    text = _input_text(input)
    if _is_module(target):
        given = [o for o, v in (("num_classes", num_classes), ("in_channels", in_channels), ("width", width))
                 if v is not None]
        if given:
            raise UsageError(f"{', '.join(given)} apply to named architectures; a module is analysed as it is")
        if text is None:
            raise UsageError(f"{type(target).__name__}: give its input, e.g. input='3x224x224'")
        try:
            from nnkit.introspect import analyze_module
        except ModuleNotFoundError as exc:  # a module without torch cannot be, but its import may lack a part
            raise MissingDependencyError(exc.name or "torch", "analysing a module") from None
        if batch is not None and batch <= 0:
            raise UsageError(f"batch must be positive, got {batch}")
        a = analyze_module(target, text, depth=depth, at=at, backend=_backend(backend).value, fields=fields,
                           explain=explain, batch=batch)
        return _as(Analysis, a)
    if not isinstance(target, str):
        raise UsageError(f"target {target!r}: give a chain, an architecture name, file.py:Class or an nn.Module")
    first = target.strip().split(None, 1)[0] if target.strip() else ""
    if not looks_like_shape(first) and isinstance(text, str) and ("(" in target or " " in target.strip()):
        target, text = f"{text} {target}", None  # the layers alone, with their input
    a = analyze_target(target, None, input=text, depth=depth, num_classes=num_classes, in_channels=in_channels,
                       width=width, backend=backend, at=at, fields=fields, explain=explain, batch=batch)
    return _as(Analysis, a)


def summary(model: Any, input: Any = None, *, input_size: Any = None, **options: Any) -> Analysis:
    """The torchinfo-style one call: summary(model, input_size=(1, 3, 224, 224)) or summary("resnet18")."""
    if input is not None and input_size is not None:
        raise UsageError("give input or input_size, not both")
    return analyze(model, input if input is not None else input_size, **options)


def dwsep(target: Any, *, out: int | None = None, kernel: Any = None, stride: Any = 1, padding: Any = 0,
          bias: bool = False, input: Any = None, width: float | None = None) -> Any:
    """Depthwise-separable against standard convolution: one layer (dwsep("32x112x112", out=64, kernel=3)) or a
    whole network against its standard twin (dwsep("mobilenet_v2"), dwsep(model, input=...))."""
    from nnkit.core.spec import looks_like_shape

    if isinstance(target, str) and looks_like_shape(target):
        if out is None or kernel is None:
            raise UsageError("one layer needs out= and kernel=, e.g. nnkit.dwsep('32x112x112', out=64, kernel=3)")
        from nnkit.core.dwsep import compare

        r = compare(target, out=out, kernel=_input_text(kernel) if not isinstance(kernel, int) else str(kernel),
                    stride=str(stride) if isinstance(stride, int) else _input_text(stride),
                    padding=padding if isinstance(padding, str) else
                    (str(padding) if isinstance(padding, int) else _input_text(padding)), bias=bias)
        return _as(_dwsep_class(), r)
    if out is not None or kernel is not None:
        raise UsageError("out= and kernel= describe one layer; give its input shape first, e.g. '32x112x112'")
    from nnkit.introspect.dwsep import compare_target

    return NetworkDwsep(compare_target(target, input=_input_text(input), width=width), width=width)


def solve(question: str, *args: int, **options: int | None) -> Any:
    """nnkit solve as a function: solve("same", kernel=4), solve("map", 224, 112, kernel=7),
    solve("undo", 224, kernel=3, stride=2, padding=1)."""
    from nnkit.core import solve as _solve

    functions = {"same": _solve.same, "map": _solve.map_size, "undo": _solve.undo}
    if question not in functions:
        raise UsageError(f"solve '{question}': one of {', '.join(functions)}")
    result = functions[question](*args, **options)  # type: ignore[operator]
    if type(result) not in _SOLVED:
        _SOLVED[type(result)] = _solved(type(result))
    return _as(_SOLVED[type(result)], result)


def memory(target: Any, input: Any = None, *, batch: int | None = None, optimizer: str = "sgd", amp: bool = False,
           num_classes: int | None = None, in_channels: int | None = None, width: float | None = None) -> Memory:
    """Training memory at `batch` (default: the input's batch, else 1): parameters, gradients, optimizer state
    (sgd with momentum, adam, adamw) and the activations autograd saves (measured on the meta device; 16-bit under
    amp=True, as nnkit train --amp). An estimate: no allocator overhead."""
    from nnkit.introspect.memory import Optimizer, estimate_target

    if batch is not None and batch <= 0:
        raise UsageError(f"batch must be positive, got {batch}")
    try:
        opt = Optimizer(optimizer)
    except ValueError:
        raise UsageError(f"optimizer '{optimizer}': one of {', '.join(o.value for o in Optimizer)}") from None
    if not (isinstance(target, str) and not looks_like_shape(target.strip().split(None, 1)[0])):
        refuse_given((("num_classes", num_classes), ("in_channels", in_channels), ("width", width)),
                     "to named architectures; a module or chain is estimated as it is")
    if isinstance(target, str) and looks_like_shape(target.strip().split(None, 1)[0]):
        from nnkit.introspect.memory import estimate
        from nnkit.train.chain_model import chain_target  # the module nnkit train builds for the chain

        t = chain_target(target)
        return Memory(estimate(t.model, t.input, batch=batch or t.batch or 1, optimizer=opt, amp=amp))
    return Memory(estimate_target(target, _input_text(input), batch=batch, optimizer=opt, num_classes=num_classes,
                                  in_channels=in_channels, width=width, amp=amp))


def training_target(target: str, *, input: Any = None, num_classes: int | None = None,
                    in_channels: int | None = None, width: float | None = None, freeze: str = "none",
                    trainable: str | None = None, head: str = "own") -> Any:
    """The model `nnkit train` would train, on the meta device, with its transfer mode applied (which part
    trains): an architecture, a user model or a chain (as the module nnkit train builds for it, rows named
    conv1, relu2, ... as nnkit code writes them). nnkit summary --train and --freeze analyse it."""
    from nnkit.core.torchplan import is_chain
    from nnkit.introspect.target import resolve
    from nnkit.train.transfer import parse_modules, transferred

    new = head == "new"
    if is_chain(target):
        refuse_given((("--input", input), ("--in-channels", in_channels), ("--width", width),
                      ("--num-classes", None if new else num_classes)), NOT_FOR_CHAINS)
        from nnkit.train.chain_model import chain_target

        t = chain_target(target)
    else:
        t = resolve(target, input=input, num_classes=None if new else num_classes, in_channels=in_channels,
                    width=width)
    return transferred(t, freeze=freeze, trainable=parse_modules(trainable), head=head, num_classes=num_classes)
