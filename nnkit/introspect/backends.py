"""Other tools' numbers in nnkit's shape: fvcore's FlopCountAnalysis and torchinfo's summary, and the
cross-check that names every difference between them, nnkit and torchvision's published metadata."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

from nnkit.core.report import Analysis, LayerReport
from nnkit.errors import MissingDependencyError, first_line


def _cpu_copy(t: Any) -> Any:
    """fvcore traces with torch.jit, which cannot run on meta tensors: allocate (uninitialised) CPU
    storage."""
    import copy

    model = t.rebuild()
    if any(p.is_meta for p in model.parameters()):
        return model.to_empty(device="cpu").eval()
    return copy.deepcopy(model).eval()


def _given(t: Any) -> Any:
    """Every input of the target as nnkit.introspect.inputs.Inputs: the tensors nnkit's own trace is given."""
    from nnkit.introspect.inputs import as_inputs

    return as_inputs(t.given)


def _check_real_forward(t: Any, inputs: Any) -> None:
    """fvcore runs a real forward on the CPU: refuse one that needs more memory than the machine has (a huge
    --input), sized on the meta device first: the weights plus the largest activation and the inputs (every one,
    in its own dtype)."""
    from nnkit.core.numbers import physical_memory
    from nnkit.errors import UsageError
    from nnkit.introspect import analyze_model

    have = physical_memory()
    if not have:
        return
    a = analyze_model(t.rebuild(), t.given, source=t.name, min_input=t.min_input, rebuild=t.rebuild,
                      fields=False, explain=False)
    need = 4 * a.params + inputs.nbytes(1) + 2 * max((r.activation_bytes for r in a.layers), default=0)
    if need > have:
        raise UsageError(f"--backend fvcore runs {t.name} for real on the CPU: at {inputs.text()} "
                         f"that takes at least {need / 2**30:,.1f} GiB, more than this machine's "
                         f"{have / 2**30:,.1f} GiB (nnkit's own count needs no memory: drop --backend)")


_INNER = "model"  # the user's model inside the wrapper that hands fvcore's positional inputs on by keyword


@dataclass(frozen=True)
class FvcoreCounts:
    """fvcore's counts on one item, under the model's own module paths (a wrapper's, if any, taken off)."""

    total: int
    by_operator: dict[str, int]
    by_module: dict[str, int]
    params: dict[str, int]  # fvcore's parameter_count: "" is the whole model
    skipped: tuple[str, ...]  # operators that ran and fvcore has no counter for ("aten::lstm")
    model: Any  # the CPU copy fvcore ran


def _keywords(model: Any, positional: int, names: tuple[str, ...]) -> Any:
    """fvcore traces with torch.jit, which calls the model with positional inputs only: a module that takes
    every input in order and passes the last ones on by name."""
    from torch import nn

    class Keywords(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.add_module(_INNER, model)

        def forward(self, *tensors: Any) -> Any:
            inner = getattr(self, _INNER)
            return inner(*tensors[:positional], **dict(zip(names, tensors[positional:])))

    return Keywords().eval()


def _unwrapped(path: str) -> str | None:
    """A path in the wrapper -> the model's own ('model.conv' -> 'conv'); None for the wrapper itself."""
    if path == _INNER or path.startswith(_INNER + "."):
        return path[len(_INNER) + 1:]
    return None


def fvcore_counts(t: Any) -> FvcoreCounts:
    """fvcore's FlopCountAnalysis and parameter_count on the CPU, on the tensors nnkit traces (every positional
    and keyword input, in its dtype, ids in the embedding's range: inputs.TensorSpec.make)."""
    try:
        with warnings.catch_warnings():  # fvcore's import warns about torch.jit.script's deprecation
            warnings.simplefilter("ignore")
            from fvcore.nn import FlopCountAnalysis, parameter_count
    except ModuleNotFoundError:
        raise MissingDependencyError("fvcore", "--backend fvcore") from None

    inputs = _given(t)
    _check_real_forward(t, inputs)
    model = _cpu_copy(t)
    args, kwargs = inputs.tensors(1, "cpu")
    runs = _keywords(model, len(args), tuple(kwargs)) if kwargs else model
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flops = FlopCountAnalysis(runs, (*args, *kwargs.values()))
        flops.unsupported_ops_warnings(False)
        flops.uncalled_modules_warnings(False)
        total = int(flops.total())
        by_module = dict(flops.by_module())
        if kwargs:
            by_module = {p: v for path, v in by_module.items() if (p := _unwrapped(path)) is not None}
        skipped = tuple(flops.unsupported_ops())
    return FvcoreCounts(total, dict(flops.by_operator()), by_module, dict(parameter_count(model)), skipped, model)


def _summary_data(model: Any, args: tuple[Any, ...], kwargs: dict[str, Any], own: Any) -> \
        tuple[Any, dict[str, Any]]:
    """torchinfo.summary's input_data and the keyword inputs it hands on to the forward. summary() passes its
    own unknown keywords to the forward, so a keyword input named like one of its parameters (depth, mode,
    device) goes in a dict input_data instead, with the positional inputs named by the forward's signature."""
    import inspect

    from nnkit.errors import UsageError

    if not kwargs:
        return list(args), {}
    if not args:
        return dict(kwargs), {}
    if not set(kwargs) & set(own):
        return list(args), kwargs
    clash = sorted(set(kwargs) & set(own))[0]
    try:
        signature = inspect.signature(model.forward)
        bound = signature.bind(*args, **kwargs)
    except (TypeError, ValueError):
        signature = bound = None
    data: dict[str, Any] = {}
    for name, value in (bound.arguments.items() if bound is not None else ()):
        kind = signature.parameters[name].kind  # type: ignore[union-attr]
        if kind is inspect.Parameter.VAR_KEYWORD:
            data.update(value)
        elif kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            bound = None
            break
        else:
            data[name] = value
    if bound is None:
        raise UsageError(f"--backend torchinfo: the keyword input '{clash}' is also a parameter of "
                         "torchinfo.summary, and the positional inputs have no names to give them by: leave "
                         "--backend out (nnkit's own count takes it)")
    return data, {}


def torchinfo_stats(t: Any, depth: int = 64) -> Any:
    """torchinfo's summary on the meta device (its counts need shapes, not values, and a meta forward takes no
    memory), on the tensors nnkit traces: every positional and keyword input, in its dtype."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchinfo
    except ModuleNotFoundError:
        raise MissingDependencyError("torchinfo", "--backend torchinfo") from None
    import inspect

    from nnkit.introspect import meta_copy

    model = meta_copy(t.rebuild()).eval()
    args, kwargs = _given(t).tensors(1, "meta")
    data, extra = _summary_data(model, args, kwargs, inspect.signature(torchinfo.summary).parameters)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchinfo.summary(model, input_data=data, verbose=0, device="meta", depth=depth, **extra)


def _dims(size: Any) -> tuple[int, ...] | None:
    """One item's shape from torchinfo's size (batch first); None where it lists several tensors' sizes."""
    if not size or not all(isinstance(d, int) for d in size):
        return None
    return tuple(size[1:])


def analyze(backend: str, t: Any, *, depth: int | None, batch: int | None) -> Analysis:
    """fvcore's or torchinfo's numbers on one item, times the batch (as nnkit's own count takes it)."""
    n = batch or 1
    rows: list[LayerReport] = []
    inputs = _given(t)
    given = () if inputs.plain else (f"inputs: {inputs.text()}",)  # as nnkit's own analysis names them
    if backend == "fvcore":
        fv = fvcore_counts(t)
        params = fv.params
        modules = list(fv.model.named_modules())
        kinds = {p: type(m).__name__ for p, m in modules}
        parents = {p.rpartition(".")[0] for p, _ in modules if p}
        for path, _ in modules:
            level = 0 if not path else path.count(".") + 1
            if not path or (depth is not None and level != depth and (level > depth or path in parents)) or \
                    (depth is None and path in parents):
                continue
            rows.append(LayerReport(index=len(rows) + 1, spec=path, kind=kinds[path], input=None, output=None,
                                    params=params.get(path, 0), trainable=params.get(path, 0),
                                    macs=fv.by_module.get(path, 0) * n, depth=level))
        total = params.get("", 0)
        return Analysis(source=f"{t.name} (fvcore)", input=t.input, output=(), layers=tuple(rows),
                        params=total, trainable=total, macs=fv.total * n, batch=batch,
                        notes=(*given, "fvcore: one 'flop' is one multiply-add; it counts BatchNorm and some "
                               "pooling, and skips operators it does not know"))
    stats = torchinfo_stats(t)
    for info in stats.summary_list:
        if info.depth == 0:
            continue
        if depth is None and not info.is_leaf_layer:
            continue
        if depth is not None and (info.depth > depth or (info.depth < depth and not info.is_leaf_layer)):
            continue
        rows.append(LayerReport(index=len(rows) + 1, spec=_path(info), kind=info.class_name,
                                input=_dims(info.input_size), output=_dims(info.output_size),
                                params=info.num_params, trainable=info.trainable_params, macs=info.macs * n,
                                depth=info.depth))
    return Analysis(source=f"{t.name} (torchinfo)", input=t.input,
                    output=_dims(stats.summary_list[0].output_size) or (), layers=tuple(rows),
                    params=stats.total_params, trainable=stats.trainable_params, macs=stats.total_mult_adds * n,
                    batch=batch,
                    notes=(*given, "torchinfo: mult-adds of module parameters times output positions; it adds "
                           "biases and BatchNorm, and misses matmuls written as functions (attention)"))


def _path(info: Any) -> str:
    parts = []
    while info is not None and info.depth > 0:
        parts.append(str(info.var_name))
        info = info.parent_info
    return ".".join(reversed(parts))


@dataclass(frozen=True)
class Crosscheck:
    name: str
    input: tuple[int, ...]
    params: dict[str, int | None]  # nnkit, fvcore, torchinfo, torchvision
    macs: dict[str, int | None]
    differences: tuple[str, ...]  # one sentence per named difference
    parts: tuple[Any, ...] = ()  # detectors and flow models: nnkit's backbone, neck and heads (core.report.Part)
    given: str | None = None  # every input, as --input words ("long:50, mask=bool:50"); None: one float tensor


_FV_NAMES = {"conv": "conv", "linear": "matmul", "matmul": "matmul", "bmm": "matmul", "einsum": "matmul",
             "addmm": "matmul", "scaled_dot_product_attention": "matmul"}
# Operators with multiply-adds in nnkit's count that fvcore may run without a counter (its skipped ops)
_MAC_OPS = frozenset(("lstm", "gru", "rnn_tanh", "rnn_relu", "scaled_dot_product_attention",
                      "_native_multi_head_attention", "baddbmm", "addbmm", "addmv", "mv", "dot", "tensordot"))
_OUR_NAMES = {"convolution": "conv", "convolution_backward": "conv"}


def crosscheck(t: Any, info: Any | None) -> Crosscheck:
    from nnkit.introspect import analyze_model, detection, meta_copy
    from nnkit.introspect import trace as tracing

    if detection.kind(t.model):  # image-dependent work: the protocol's count beside torchvision's, explained
        return detection.crosscheck(t, info)  # type: ignore[no-any-return]
    inputs = _given(t)
    ours = analyze_model(t.rebuild(), t.given, source=t.name, min_input=t.min_input, rebuild=t.rebuild)
    tr = tracing.run(meta_copy(t.rebuild()).eval(), t.given, t.name)
    mine: dict[str, int] = {}
    for op, m in tr.by_op.items():
        mine[_OUR_NAMES.get(op, "matmul")] = mine.get(_OUR_NAMES.get(op, "matmul"), 0) + m
    diffs: list[str] = []
    params: dict[str, int | None] = {"nnkit": ours.params}
    macs: dict[str, int | None] = {"nnkit": ours.macs}
    try:
        fv = fvcore_counts(t)
        params["fvcore"], macs["fvcore"] = fv.params.get("", 0), fv.total
        theirs: dict[str, int] = {}
        extra: dict[str, int] = {}
        for op, v in fv.by_operator.items():
            if op in _FV_NAMES:
                theirs[_FV_NAMES[op]] = theirs.get(_FV_NAMES[op], 0) + v
            else:
                extra[op] = v
        for op, v in sorted(extra.items(), key=lambda kv: -kv[1]):
            diffs.append(f"fvcore counts {op}: +{v:,} (nnkit counts conv, linear and matmul only)")
        skipped = [op for op in fv.skipped if op.removeprefix("aten::") in _MAC_OPS]
        for cat in sorted(set(mine) | set(theirs)):
            d = theirs.get(cat, 0) - mine.get(cat, 0)
            if d:
                why = ("a different formula" if d > 0 else
                       f"operators fvcore has no counter for: {', '.join(skipped)}" if skipped else
                       "operators fvcore has no counter for, e.g. scaled_dot_product_attention")
                diffs.append(f"fvcore {cat}: {d:+,} ({why})")
        if params["fvcore"] != ours.params:
            diffs.append(f"fvcore params: {params['fvcore'] - ours.params:+,} (it counts shared tensors per "
                         "module)")
    except Exception as exc:  # noqa: BLE001 - one tool failing must not hide the others
        params["fvcore"] = macs["fvcore"] = None
        diffs.append(f"fvcore failed: {type(exc).__name__}: {first_line(exc, 120)}")
    try:
        stats = torchinfo_stats(t)
        params["torchinfo"], macs["torchinfo"] = stats.total_params, stats.total_mult_adds
        ours_by_kind: dict[str, int] = {}
        for r in ours.layers:
            ours_by_kind[r.kind] = ours_by_kind.get(r.kind, 0) + r.macs
        theirs_by_kind: dict[str, int] = {}
        for li in stats.summary_list:
            if li.is_leaf_layer:
                theirs_by_kind[li.class_name] = theirs_by_kind.get(li.class_name, 0) + li.macs
        for kind in sorted(set(ours_by_kind) | set(theirs_by_kind)):
            d = theirs_by_kind.get(kind, 0) - ours_by_kind.get(kind, 0)
            if d > 0:
                diffs.append(f"torchinfo counts {kind}: +{d:,} ({_torchinfo_extra(kind)})")
            elif d < 0:
                why = ("it multiplies weights by output positions once per item, not per "
                       "token" if kind == "Linear"
                       else "matmuls inside the module's forward that no weight times output accounts for")
                diffs.append(f"torchinfo undercounts {kind}: {d:,} ({why})")
        if params["torchinfo"] != ours.params:
            diffs.append(f"torchinfo params: {params['torchinfo'] - ours.params:+,}")
    except Exception as exc:  # noqa: BLE001
        params["torchinfo"] = macs["torchinfo"] = None
        diffs.append(f"torchinfo failed: {type(exc).__name__}: {first_line(exc, 120)}")
    published = published_figures(t, info, ours, params, macs, diffs)
    if published:
        if published[1] is not None and round(ours.macs / 1e9, 3) != published[1]:
            diffs.append(f"torchvision meta _ops {published[1]} GMACs vs nnkit {ours.macs / 1e9:.3f}")
        else:
            diffs.append(f"torchvision's published {published[1]} GMACs (rounded to 0.001 G) and "
                         f"{published[0]:,} "
                         "params match nnkit")
    return Crosscheck(t.name, t.input, params, macs, tuple(diffs), given=None if inputs.plain else inputs.text())


def _torchinfo_extra(kind: str) -> str:
    """Why torchinfo counts more than nnkit in modules of this kind: it multiplies every parameter (weight and
    bias alike) by the output positions (layer_info.calculate_macs)."""
    if kind.startswith(("Conv", "ConvTranspose")):
        return "conv bias at every output position"
    if kind.startswith("BatchNorm"):
        return "one per parameter per item"
    if kind in ("LSTM", "GRU", "RNN"):
        return "both biases at every step"
    if kind in ("Embedding", "EmbeddingBag"):
        return "one per table entry per item, though a lookup multiplies nothing"
    return {"Linear": "bias"}.get(kind, "its own formula")


def published_figures(t: Any, info: Any | None, ours: Any, params: dict[str, int | None],
                      macs: dict[str, int | None], diffs: list[str]) -> tuple[int, float | None] | None:
    """torchvision's (num_params, _ops in GMACs) in the "torchvision" column where the target is at the size they
    were measured at, with a num_params difference said in `diffs`; the column empty and None otherwise."""
    published = info.published if info is not None else None
    if not published or tuple(t.input) != tuple(info.input):
        params["torchvision"] = macs["torchvision"] = None
        return None
    params["torchvision"] = published[0]
    macs["torchvision"] = round(published[1] * 1e9) if published[1] is not None else None
    if published[0] != ours.params:
        diffs.append(f"torchvision meta num_params: {published[0] - ours.params:+,}")
    return published
