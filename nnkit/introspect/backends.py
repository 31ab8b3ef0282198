"""Other tools' numbers in nnkit's shape: fvcore's FlopCountAnalysis and torchinfo's summary, and the
cross-check that names every difference between them, nnkit and torchvision's published metadata."""

from __future__ import annotations

import logging
import math
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


def _check_real_forward(t: Any) -> None:
    """fvcore runs a real forward on the CPU: refuse one that needs more memory than the machine has (a huge
    --input), sized on the meta device first: the weights plus the largest activation and its input."""
    from nnkit.core.numbers import physical_memory
    from nnkit.errors import UsageError
    from nnkit.introspect import analyze_model

    have = physical_memory()
    if not have:
        return
    a = analyze_model(t.rebuild(), t.input, source=t.name, min_input=t.min_input, rebuild=t.rebuild,
                      fields=False, explain=False)
    need = 4 * (a.params + math.prod(t.input)) + 2 * max((r.activation_bytes for r in a.layers), default=0)
    if need > have:
        raise UsageError(f"--backend fvcore runs {t.name} for real on the CPU: at {'x'.join(map(str, t.input))} "
                         f"that takes at least {need / 2**30:,.1f} GiB, more than this machine's "
                         f"{have / 2**30:,.1f} GiB (nnkit's own count needs no memory: drop --backend)")


def fvcore_counts(t: Any) -> tuple[Any, Any]:
    """(FlopCountAnalysis, parameter_count dict) on one item."""
    try:
        with warnings.catch_warnings():  # fvcore's import warns about torch.jit.script's deprecation
            warnings.simplefilter("ignore")
            from fvcore.nn import FlopCountAnalysis, parameter_count
    except ModuleNotFoundError:
        raise MissingDependencyError("fvcore", "--backend fvcore") from None
    import torch

    _check_real_forward(t)
    model = _cpu_copy(t)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flops = FlopCountAnalysis(model, torch.zeros((1, *t.input)))
        flops.unsupported_ops_warnings(False)
        flops.uncalled_modules_warnings(False)
        flops.total()
    return flops, parameter_count(model)


def torchinfo_stats(t: Any, depth: int = 64) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchinfo
    except ModuleNotFoundError:
        raise MissingDependencyError("torchinfo", "--backend torchinfo") from None
    import torch

    from nnkit.introspect import meta_copy

    model = meta_copy(t.rebuild()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchinfo.summary(model, input_data=torch.empty((1, *t.input), device="meta"), verbose=0,
                                 device="meta", depth=depth)


def analyze(backend: str, t: Any, *, depth: int | None, batch: int | None) -> Analysis:
    n = batch or 1
    rows: list[LayerReport] = []
    if backend == "fvcore":
        flops, params = fvcore_counts(t)
        by_module = flops.by_module()
        model_paths = [p for p, _ in flops._model.named_modules()]  # noqa: SLF001 - fvcore keeps the model
        kinds = {p: type(m).__name__ for p, m in flops._model.named_modules()}  # noqa: SLF001
        parents = {p.rpartition(".")[0] for p in model_paths if p}
        for path in model_paths:
            level = 0 if not path else path.count(".") + 1
            if not path or (depth is not None and level != depth and (level > depth or path in parents)) or \
                    (depth is None and path in parents):
                continue
            rows.append(LayerReport(index=len(rows) + 1, spec=path, kind=kinds[path], input=None, output=None,
                                    params=params.get(path, 0), trainable=params.get(path, 0),
                                    macs=by_module.get(path, 0) * n, depth=level))
        total = params.get("", 0)
        return Analysis(source=f"{t.name} (fvcore)", input=t.input, output=(), layers=tuple(rows),
                        params=total,
                        trainable=total, macs=flops.total() * n, batch=batch,
                        notes=("fvcore: one 'flop' is one multiply-add; it counts BatchNorm and some "
                               "pooling, and skips operators it does not know",))
    stats = torchinfo_stats(t)
    for info in stats.summary_list:
        if info.depth == 0:
            continue
        if depth is None and not info.is_leaf_layer:
            continue
        if depth is not None and (info.depth > depth or (info.depth < depth and not info.is_leaf_layer)):
            continue
        out = tuple(info.output_size[1:]) if info.output_size else None
        inp = tuple(info.input_size[1:]) if info.input_size else None
        rows.append(LayerReport(index=len(rows) + 1, spec=_path(info), kind=info.class_name, input=inp,
                                output=out,
                                params=info.num_params, trainable=info.trainable_params, macs=info.macs * n,
                                depth=info.depth))
    return Analysis(source=f"{t.name} (torchinfo)", input=t.input,
                    output=tuple(stats.summary_list[0].output_size
                                                                                [1:]) if stats.summary_list[0]
                    .output_size else (), layers=tuple(rows), params=stats.total_params,
                    trainable=stats.trainable_params, macs=stats.total_mult_adds * n, batch=batch,
                    notes=("torchinfo: mult-adds of module parameters times output positions; it adds biases "
                           "and BatchNorm, and misses matmuls written as functions (attention)",))


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


_FV_NAMES = {"conv": "conv", "linear": "matmul", "matmul": "matmul", "bmm": "matmul", "einsum": "matmul",
             "addmm": "matmul", "scaled_dot_product_attention": "matmul"}
_OUR_NAMES = {"convolution": "conv", "convolution_backward": "conv"}


def crosscheck(t: Any, info: Any | None) -> Crosscheck:
    from nnkit.errors import UsageError
    from nnkit.introspect import analyze_model, detection, meta_copy
    from nnkit.introspect import trace as tracing

    if detection.kind(t.model):  # image-dependent work: the protocol's count beside torchvision's, explained
        return detection.crosscheck(t, info)  # type: ignore[no-any-return]
    inputs = getattr(t, "inputs", None)
    if inputs is not None and not inputs.plain:  # fvcore and torchinfo are called on one float tensor here
        raise UsageError(f"crosscheck runs every tool on one float input; {t.name} is given {inputs.text()}: "
                         "use nnkit params or flops for it")
    ours = analyze_model(t.rebuild(), t.input, source=t.name, min_input=t.min_input, rebuild=t.rebuild)
    tr = tracing.run(meta_copy(t.rebuild()).eval(), t.input, t.name)
    mine: dict[str, int] = {}
    for op, m in tr.by_op.items():
        mine[_OUR_NAMES.get(op, "matmul")] = mine.get(_OUR_NAMES.get(op, "matmul"), 0) + m
    diffs: list[str] = []
    params: dict[str, int | None] = {"nnkit": ours.params}
    macs: dict[str, int | None] = {"nnkit": ours.macs}
    try:
        flops, fparams = fvcore_counts(t)
        params["fvcore"], macs["fvcore"] = fparams.get("", 0), int(flops.total())
        theirs: dict[str, int] = {}
        extra: dict[str, int] = {}
        for op, v in flops.by_operator().items():
            if op in _FV_NAMES:
                theirs[_FV_NAMES[op]] = theirs.get(_FV_NAMES[op], 0) + v
            else:
                extra[op] = v
        for op, v in sorted(extra.items(), key=lambda kv: -kv[1]):
            diffs.append(f"fvcore counts {op}: +{v:,} (nnkit counts conv, linear and matmul only)")
        for cat in sorted(set(mine) | set(theirs)):
            d = theirs.get(cat, 0) - mine.get(cat, 0)
            if d:
                diffs.append(f"fvcore {cat}: {d:+,} (" + ("operators fvcore has no counter for, e.g. "
                             "scaled_dot_product_attention" if d < 0 else "a different formula") + ")")
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
                why = {"BatchNorm2d": "one per parameter per item", "Linear": "bias",
                       "Conv2d": "conv bias at every output position"}.get(kind, "its own formula")
                diffs.append(f"torchinfo counts {kind}: +{d:,} ({why})")
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
    return Crosscheck(t.name, t.input, params, macs, tuple(diffs))


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
