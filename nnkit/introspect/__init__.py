"""Torch-backed analysis of named architectures and user models, into the same Analysis that chains produce.

    analyze("resnet50")                                  # every leaf module: shapes, params, MACs, fields
    analyze("resnet50", depth=1)                         # modules nested deeper than 1 folded into layer1..4
    analyze("model.py:Net", input="3x32x32")            # a user model (class or factory)
    analyze("resnet50", backend="fvcore")                # fvcore's numbers in the same shape

Models are built on the meta device (no weights allocated, no arithmetic done) and traced once: every module
call recorded, and a dispatch mode that counts MACs with torch.utils.flop_counter's formulas (conv, mm, addmm,
bmm, attention: MACs as docs/conventions.md counts them) and follows receptive fields operator by operator
(nnkit.introspect.rf).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from nnkit.core.report import Analysis, Field, Formula, LayerReport, Topic
from nnkit.errors import NnkitError, UnknownNameError, UsageError

BACKENDS = ("nnkit", "fvcore", "torchinfo")


def analyze(target: str, *, input: Any = None, depth: int | None = None,
            num_classes: int | None = None,
            in_channels: int | None = None, width: float | None = None, backend: str = "nnkit",
            at: str | None = None, batch: int | None = None, fields: bool = True,
            explain: bool = True) -> Analysis:
    """fields=False does not follow receptive fields, for views that show none (shape, params, flops); rf
    stays None then. explain=False leaves each row's formulas out (the CLI without --explain)."""
    from nnkit.introspect.target import resolve

    if backend not in BACKENDS:
        raise UnknownNameError("backend", backend, BACKENDS)
    if depth is not None and depth < 0:
        raise UsageError(f"--depth must be 0 or more, got {depth}")
    t = resolve(target, input=input, num_classes=num_classes, in_channels=in_channels, width=width)
    return _analyze_target(t, depth=depth, backend=backend, at=at, batch=batch, fields=fields,
                           explain=explain)


def analyze_module(model: Any, input: Any, *, depth: int | None = None, backend: str = "nnkit",
                   at: str | None = None, fields: bool = True, explain: bool = True,
                   batch: int | None = None) -> Analysis:
    """analyze() for a live nn.Module (nnkit.analyze(model, input=...)): a meta copy is analysed, the module
    itself stays as it is."""
    from nnkit.introspect.target import module_target

    if backend not in BACKENDS:
        raise UnknownNameError("backend", backend, BACKENDS)
    return _analyze_target(module_target(model, input), depth=depth, backend=backend, at=at, batch=batch,
                           fields=fields, explain=explain)


def _analyze_target(t: Any, *, depth: int | None, backend: str, at: str | None, batch: int | None,
                    fields: bool, explain: bool) -> Analysis:
    if batch is not None and t.batch is not None and batch != t.batch:
        raise UsageError(f"--batch {batch} and an --input written with its batch first ({t.batch}): give the "
                         "batch once")
    n = batch or t.batch
    if backend != "nnkit":
        from nnkit.introspect import backends

        return backends.analyze(backend, t, depth=depth, batch=n)
    return analyze_model(t.model, t.given, source=t.name, depth=depth, at=at, batch=n,
                         min_input=t.min_input, rebuild=t.rebuild, fields=fields, explain=explain)


def meta_copy(model: Any) -> Any:
    """The model itself when it already lives on the meta device; else a meta copy (the user's stays as
    is)."""
    return meta_walk(model)[0]


def meta_walk(model: Any) -> tuple[Any, list[tuple[str, Any]]]:
    """meta_copy(model) and its modules (build.walk)."""
    import copy

    from nnkit.introspect.build import walk

    named = walk(model)
    if all(t is None or t.is_meta for _, m in named for t in (*m._parameters.values(), *m._buffers.values())):  # noqa: SLF001
        return model, named
    model = copy.deepcopy(model).to("meta")
    return model, walk(model)


def _field(state: Any) -> tuple[Field | None, bool]:
    return _field_notes(state)[:2]  # type: ignore[return-value]


def _field_notes(state: Any) -> tuple[Field | None, bool, list[str]]:
    """The Field of a tensor's state (nnkit.introspect.rf), whether it covers the whole input, and the notes on
    output positions that differ in field (after upsampling)."""
    from nnkit.core.layers import Resampled, resampled_field, to_field

    if state is None:
        return None, False, []
    if isinstance(state, str):  # rf.GLOBAL
        return None, True, []
    if state[0] is None:  # after a resampling nnkit has no rule for
        return None, False, []
    if isinstance(state[0], Resampled):  # composed position by position: the largest over the positions
        fld, differ = resampled_field(state[0], state[1])
        return fld, False, differ
    return to_field(state[0]), False, []


@dataclass(frozen=True)
class Smallest:
    """The smallest input a search found: the whole item (channels first), and the rule it was found by, as the
    failure message states it ('' where one size says it all)."""

    item: tuple[int, ...]
    rule: str = ""


def smallest_input(rebuild: Any, shape: tuple[int, ...], start: int = 1, limit: int | None = None,
                   known: tuple[int, int] | None = None) -> Smallest | None:
    """The smallest input on which a model of `shape` items runs, found on one size s from `start` up (doubling,
    then bisection):

    - CxL: L = s.
    - CxHxW: the square H = W = s, as before; `known` (the registry's torchvision min_size, a square) is the
      answer without a search.
    - CxDxHxW (and more axes): every axis given at s or more keeps its size, the others become s. A clip's
      frames and its pixels are different kinds of axis: a common cube (7x7x7 for a clip given as 2x112x112)
      would be an input nobody runs, while this tells a model too short in time the frames it needs at the
      resolution given. `known` raises H and W to the registry's min_size first.

    None at once when the model fails for a reason other than size (trace.about_size), or its items have no
    axis to grow: no size would help."""
    from nnkit.introspect import trace

    if len(shape) < 2:
        return None
    channels, given = shape[0], tuple(shape[1:])
    limit = limit or trace.search_limit(len(shape))
    if len(given) == 2 and known:
        return Smallest((channels, *known))
    base = given
    if len(given) > 2 and known:
        base = (*given[:-2], *(max(g, k) for g, k in zip(given[-2:], known)))

    def item(s: int) -> tuple[int, ...]:
        if len(given) <= 2:
            return (channels, *(s,) * len(given))
        return (channels, *(max(b, s) for b in base))

    def works(s: int) -> bool:
        try:
            trace.run(meta_copy(rebuild()).eval(), item(s), fields=False)
            return True
        except trace.TraceFailure as failure:
            if not trace.about_size(failure.exc):
                raise _NotSize from None
            return False

    lo, hi = start - 1, max(start, 1)
    if len(given) > 2:  # every s up to the smallest axis is the input as given: start the search there
        lo, hi = min(base) - 1, min(base)
    try:
        while not works(hi):
            lo, hi = hi, hi * 2
            if hi > limit:
                return None
        while hi - lo > 1:  # lo fails (or is 0), hi works
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if works(mid) else (mid, hi)
    except _NotSize:
        return None
    if len(given) <= 2:
        return Smallest(item(hi))
    rule = f"every axis raised to at least {hi}, the larger ones kept"
    if base != given:
        rule += f", H and W to at least torchvision's min_size {known[0]}x{known[1]}"  # type: ignore[index]
    return Smallest(item(hi), rule)


class _NotSize(Exception):
    """A size tried in the search failed for another reason than its size: the search is over."""


@contextlib.contextmanager
def training_flags(model: Any, named: list[tuple[str, Any]], mode: bool) -> Iterator[None]:
    """model.train(mode) for the duration, then every module's own training flag back as it was (a model
    training with frozen BatchNorm layers keeps them frozen; model.train(was) would not)."""
    from torch import nn

    modules = [m for _, m in named]
    flags = [m.training for m in modules]
    custom = any(type(m).train is not nn.Module.train for m in modules)
    if custom:  # a train() of its own may do more than set flags (switch a head, freeze layers): let it
        model.train(mode)
    else:  # the flag alone, as Module.train sets it, without a recursive __setattr__ per module
        for m in modules:
            vars(m)["training"] = mode
    try:
        yield
    finally:
        if custom:
            model.train(flags[0])  # undoes what its train(mode) did; then the flags exactly as they were
        for m, flag in zip(modules, flags):
            vars(m)["training"] = flag


def _images(shape: Any, what: str, source: str) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """A detector's one image, or RAFT's two (`--input A --input B`), for the protocol, which calls the model
    itself, so each must be a plain float image."""
    if not hasattr(shape, "tensors"):  # one shape: RAFT's second image is the first's (the registry's rule)
        return tuple(shape), None
    specs = shape.args
    most = 2 if what == "flow" else 1
    if shape.kwargs or not 1 <= len(specs) <= most or any(s.dtype != "float32" for s in specs):
        takes = "two images (--input CxHxW --input CxHxW)" if what == "flow" else "one image (--input CxHxW)"
        raise UsageError(f"{source} takes {takes}; it was given {shape.text()}")
    return specs[0].shape, (specs[1].shape if len(specs) > 1 else None)


def analyze_model(model: Any, shape: Any, *, source: str, depth: int | None = None,
                  at: str | None = None, batch: int | None = None, min_input: tuple[int, int] | None = None,
                  rebuild: Any = None, fields: bool = True, explain: bool = True) -> Analysis:
    """shape: one float32 item (C, H, W), or nnkit.introspect.inputs.Inputs for several inputs, keyword
    inputs and other dtypes (the Analysis' input is then the first one's, and a note names them all)."""
    from nnkit.introspect import detection, trace

    what = detection.kind(model)
    if what:  # work that depends on the image: analysed under nnkit's stated protocol
        first, second = _images(shape, what, source)
        return detection.analyze(model, first, source=source, depth=depth, at=at, batch=batch, fields=fields,
                                 explain=explain, min_input=min_input, second=second)
    several = hasattr(shape, "tensors")
    item = shape.first.shape if several else tuple(shape)
    model, named = meta_walk(model)
    # torchvision's numbers are for inference; train mode adds aux heads
    with training_flags(model, named, False):
        try:
            tr = trace.run(model, shape, source, fields=fields, named=named)
        except trace.TraceFailure as failure:
            if several or not trace.about_size(failure.exc):  # the search varies the sizes of one input
                raise trace.failure_message(source, shape, failure, None,
                                            trace.how_to_give(model, failure.exc, failure.call)) from None
            smallest = smallest_input(rebuild or (lambda: model), item, known=min_input)
            raise trace.failure_message(source, item, failure, smallest) from None
        a = trace_analysis(named, tr, item, source=source, depth=depth, at=at, batch=batch, fields=fields,
                    explain=explain)
    return replace(a, notes=(f"inputs: {shape.text()}", *a.notes)) if several else a


def trace_analysis(named: list[tuple[str, Any]], tr: Any, shape: tuple[int, ...], *, source: str,
                   depth: int | None, at: str | None, batch: int | None, fields: bool,
                   explain: bool = True) -> Analysis:
    """The Analysis of one trace (trace.run) of the modules `named`: a row per module called, and the totals."""
    notes: list[str] = []
    modules = dict(named)
    sizes = {id(p): (p.numel(), p.requires_grad) for _, m in named for p in m._parameters.values()  # noqa: SLF001
             if p is not None}  # each shared tensor once
    seen: set[int] = set()

    def count(params: Any) -> tuple[int, int]:
        total = trainable = 0
        for p in params:
            if id(p) in seen:
                continue
            seen.add(id(p))
            n, grad = sizes.get(id(p)) or (p.numel(), p.requires_grad)  # or registered while the model ran
            total += n
            trainable += n if grad else 0
        return total, trainable

    n = batch or 1
    rows: list[LayerReport] = []
    fields_of: dict[int, tuple[Field | None, bool]] = {}
    if depth is not None and tr.calls:  # a model driven part by part (R-CNN) has no call at the root: its
        depth = max(depth, min(0 if c.path == "" else c.path.count(".") + 1 for c in tr.calls))  # parts fold
    for c in tr.calls:
        level = 0 if c.path == "" else c.path.count(".") + 1
        module = modules[c.path]
        # A module whose submodules are never called (nn.MultiheadAttention uses out_proj's weight directly)
        # is a leaf of the computation: its row holds all its parameters.
        leaf = not c.children
        own = [p for p in module._parameters.values() if p is not None]  # noqa: SLF001 - parameters(recurse=False)
        self_macs = c.macs - c.child_macs
        folded = depth is not None and level == depth and not leaf
        if depth is not None and level > depth:
            continue
        if not (leaf or folded or self_macs or own):
            continue
        whole = leaf or folded
        if not whole and self_macs:  # computes with its children's weights itself (Swin V2's qkv and proj)
            called = {tr.calls[i].path for i in c.children}
            own += [p for path,
                    child in module.named_children() if f"{c.path}.{path}".lstrip(".") not in called
                    for p in child.parameters()]
        # A leaf of the computation may still own submodules (nn.MultiheadAttention's out_proj): all of them
        # count.
        params, trainable = count(module.parameters() if whole and module._modules else own)  # noqa: SLF001
        key = id(c.rf)  # rows of BatchNorm and activations share their conv's state: one Field for all
        if key not in fields_of:
            fields_of[key] = _field(c.rf)
        rf, covers = fields_of[key]
        formulas = _explain(module, c, params, c.macs if whole else self_macs,
                            rf) if whole and explain else ()
        row_notes: tuple[str, ...] = ()
        if not whole:
            names = [name for name, _ in module.named_parameters(recurse=False)]
            row_notes = ((f"{self_macs * n:,} MACs in its own forward, outside its submodules",) if self_macs
                         else ()) + ((f"its own parameters: {', '.join(names)}",) if names else ())
        rows.append(LayerReport(
            index=len(rows) + 1, spec=c.path or f"({c.kind})", kind=c.kind, input=c.input, output=c.output,
            params=params, trainable=trainable, macs=(c.macs if whole else self_macs) * n, rf=rf,
            rf_global=covers, activation_bytes=c.out_bytes, depth=level, explain=formulas,
            notes=row_notes))
    total = sum(n for n, _ in sizes.values())
    trainable_total = sum(n for n, grad in sizes.values() if grad)
    unused = total - sum(r.params for r in rows)
    if unused:
        notes.append(f"{unused:,} parameters sit in modules the forward pass never calls (counted in the "
                     "total)")
    if tr.misaligned:
        first = tr.misaligned[0]
        notes.append(f"{len(tr.misaligned)} merge(s) join paths whose receptive fields are misaligned (first "
                     f"at {first}); the union of the fields is shown (Araujo et al. 2019)")
    follower = tr.follower
    if tr.upsampled:
        op = follower.stopped[0] if follower is not None and getattr(follower, "stopped", None) else "a resampling"
        notes.append(f"receptive fields stop at {tr.upsampled[0] or 'the model'} ({op}): nnkit follows them "
                     "through nearest and bilinear (linear, trilinear) interpolation and transposed "
                     "convolutions, not through this one")
    regrouped = getattr(tr.rf, "where", None)  # the output's whole-input state began at a regrouping view
    pooled = getattr(tr.rf, "pooled_at", None)
    if pooled is not None:
        regrouped = None
        if tr.outputs:  # a dense predictor whose map sees the whole input says why (a classifier's pool is plain)
            notes.append(f"the output '{tr.outputs[0]}' sees the whole input: a path through "
                         f"{pooled or 'the model'} pools globally (as DeepLabV3's ASPP does) and joins it")
    if regrouped is not None:
        notes.append(f"receptive fields from {regrouped or 'the model'} on are shown as the whole input: "
                     "positions are regrouped there (tokens, attention windows, a detector's proposals and "
                     "RoI pooling); an upper bound where a position sees only part of the input, as in Swin's "
                     "windows")
    if tr.elsewhere:
        notes.append(f"{tr.elsewhere} call(s) of the model's modules ran in other threads (a thread pool in "
                     "its forward): the analysis sees its own thread only, so their rows and MACs are "
                     "missing")
    if tr.gates:
        notes.append(f"{tr.gates} squeeze-excitation gate(s) multiply by a value computed from the whole "
                     "input; the receptive fields shown are those of the gated features, without the gates")
    out_rf, out_global, differ = _field_notes(tr.rf) if fields else (None, False, [])
    macs = tr.macs * n
    output = tr.output
    rf_notes = _rf_notes(follower, tr) if fields else []
    if at is not None:
        return _truncate(rows, at, modules, tr, shape, source=source, batch=batch, notes=notes, rf_notes=rf_notes)
    with_field = [r for r in rows if r.rf is not None]
    rf, rf_at = (with_field[-1].rf, with_field[-1].spec) if with_field else (out_rf, None)
    if out_rf is not None and (not with_field or fields_of.get(id(tr.rf), (None,))[0] is not with_field[-1].rf):
        # The output is computed after the last module (F.interpolate in the model's forward, as FCN and LRASPP
        # do), or beside it (an aux head after the main one): the field is the output's.
        rf, rf_at = out_rf, tr.outputs[0] if tr.outputs else "output"
        rf_notes += differ
        if len(tr.outputs) > 1:
            rf_notes.append(f"the model returns {len(tr.outputs)} outputs ({', '.join(tr.outputs)}): the receptive "
                            f"field shown is that of '{tr.outputs[0]}'; --at LAYER gives any layer's")
    elif with_field:
        rf_notes += _field_notes(next((c.rf for c in reversed(tr.calls) if c.path == rf_at), None))[2]
    return Analysis(source=source, input=shape, output=output, layers=tuple(rows), params=total,
                    trainable=trainable_total, macs=macs, batch=batch, rf=rf, rf_at=rf_at, rf_global=out_global,
                    notes=tuple(notes), rf_notes=tuple(rf_notes))


def _rf_notes(follower: Any, tr: Any) -> list[str]:
    """How fields went through upsampling, when they did (the rule stated once, as chains state it)."""
    from nnkit.core.chain import UPSAMPLING_RULE

    resampled = getattr(follower, "resampled", None)
    if not resampled:
        return []
    rule = UPSAMPLING_RULE.removeprefix("through upsampling, ")
    return [f"receptive fields are followed through upsampling (first at {resampled[0] or 'the model'}'s "
            f"forward): {rule}; where paths merge (torch.cat, a sum), each output position reads the union of what "
            "the paths read there (nnkit's rule; Araujo et al. 2019 for the layers before any upsampling)"]


def _worked(module: Any, c: Any) -> Any:
    """The layer's Step (numbers and worked formulas) for a convolution, transposed convolution, pooling or
    linear module, as the layer language explains the same layer (nnkit.core.layers: one text for chains and
    models); None for any other module, or a call at another rank."""
    from torch import nn

    from nnkit.core.layers import apply
    from nnkit.core.spec import LayerSpec

    shape = tuple(c.input or ())
    for rank, (conv, tconv, maxpool, avgpool) in {
            1: (nn.Conv1d, nn.ConvTranspose1d, nn.MaxPool1d, nn.AvgPool1d),
            2: (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.AvgPool2d),
            3: (nn.Conv3d, nn.ConvTranspose3d, nn.MaxPool3d, nn.AvgPool3d)}.items():
        if isinstance(module, (conv, tconv, maxpool, avgpool)):
            break
    else:
        if not (isinstance(module, nn.Linear) and shape):
            return None
        return apply(LayerSpec("fc", (("out", module.out_features), ("bias", module.bias is not None)), c.path),
                     shape, 0)
    if len(shape) != rank + 1:
        return None  # an unbatched call, or one on a view nnkit did not see as CxHxW
    suffix = "" if rank == 2 else f"{rank}d"

    def sizes(v: Any) -> tuple[int, ...] | str:
        return v if isinstance(v, str) else (v,) * rank if isinstance(v, int) else tuple(v)

    common = (("k", sizes(module.kernel_size)), ("s", sizes(module.stride)), ("p", sizes(module.padding)))
    if isinstance(module, (conv, tconv)):
        args = (*common, ("out", module.out_channels), ("d", sizes(module.dilation)), ("g", module.groups),
                ("bias", module.bias is not None))
        if isinstance(module, tconv):
            args = (*args, ("op", sizes(module.output_padding)))
        kind = ("tconv" if isinstance(module, tconv) else "conv") + suffix
    elif isinstance(module, maxpool):
        args = (*common, ("d", sizes(module.dilation)), ("ceil", module.ceil_mode))
        kind = "maxpool" + suffix
    else:
        args = (*common, ("ceil", module.ceil_mode))
        kind = "avgpool" + suffix
    try:
        return apply(LayerSpec(kind, args, c.path), shape, 0)
    except NnkitError:  # a module torch ran that nnkit's arithmetic refuses: the row's numbers still stand
        return None


def _counted(macs: int) -> Formula:
    return Formula(Topic.macs, f"MACs: {macs:,} (torch.utils.flop_counter: conv, matmul, attention inside this "
                               "module)")


def _explain(module: Any, c: Any, params: int, macs: int, rf: Field | None) -> tuple[Formula, ...]:
    """The formulas of docs/conventions.md with this module's numbers put in (one item)."""
    from torch import nn

    from nnkit.core.layers import Resampled

    if not (macs or params or isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d,
                                                  nn.AvgPool2d, nn.AvgPool3d, nn.Upsample))):
        return ()  # activations, dropout, identity, flatten: nothing to put numbers in
    step = _worked(module, c)
    lines: list[Formula] = []
    if step is not None:  # a formula whose result is not this row's number (a shared weight) is left out
        formulas = step.explain
        agree = {Topic.shape: step.output == tuple(c.output or ()), Topic.params: step.params == params,
                 Topic.macs: step.macs == macs}
        lines += [f for f in formulas if agree.get(f.topic, False)]
        if agree[Topic.shape] and step.macs and macs > step.macs and macs % step.macs == 0:
            k = macs // step.macs  # RAFT runs both images through its encoder as one batch
            lines += [f for f in formulas if f.topic is Topic.macs]
            lines.append(Formula(Topic.macs, f"MACs: {k}*{step.macs:,} = {macs:,} ({k} items of this size for "
                                             "each item of the model's input)"))
        elif macs and not agree[Topic.macs]:  # a forward of its own (a Conv2d that pads itself, TF's SAME)
            lines.append(_counted(macs))
    elif isinstance(module,
                    (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)) and params:
        lines.append(Formula(Topic.params,
                             f"params: weight + bias = {params:,} (running statistics are buffers)"))
    elif macs:
        lines.append(_counted(macs))
    windows = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d,
               nn.AvgPool2d, nn.AvgPool3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Upsample)
    if rf is not None and isinstance(module, windows):
        if all(type(x) is int for x in rf.stride) and not isinstance(c.rf[0], Resampled):
            r, S, P = (str(v[0]) if len(set(v)) == 1 else "x".join(map(str, v))  # per axis where they differ
                       for v in (rf.size, rf.stride, rf.padding))
            lines.append(Formula(Topic.rf, f"rf: r = {r}, S = {S}, P = {P} (Araujo et al. 2019, followed through "
                                           "the traced graph)"))
        else:  # after upsampling: composed position by position (nnkit.core.layers.AxisMap)
            lines.append(Formula(Topic.rf, f"rf: r = {'x'.join(map(str, rf.size))} (largest over output "
                                           f"positions), S = {'x'.join(map(str, rf.stride))}, P = "
                                           f"{'x'.join(map(str, rf.padding))} (composed position by position "
                                           "through upsampling)"))
    return tuple(lines)


def _truncate(rows: list[LayerReport], at: str, modules: dict[str, Any], tr: Any, shape: tuple[int, ...], *,
              source: str, batch: int | None, notes: list[str], rf_notes: list[str]) -> Analysis:
    inside = [i for i, r in enumerate(rows) if r.spec == at or r.spec.startswith(at + ".")]
    if at not in modules or not inside:
        raise UnknownNameError("layer", at, [p for p in modules if p])
    kept = rows[:inside[-1] + 1]
    notes = [x for x in notes if "the forward pass never calls" not in x]  # totals here are the kept rows'

    from nnkit.core.layers import Resampled

    state = next((c.rf for c in reversed(tr.calls) if c.path == at), None)
    rf, covers, differ = _field_notes(state)
    if not (isinstance(state, tuple) and isinstance(state[0], Resampled)):
        rf_notes = []  # the layer's field comes before any upsampling
    return Analysis(source=f"{source} --at {at}", input=shape, output=kept[-1].output or (),
                    layers=tuple(kept),
                    params=sum(r.params for r in kept), trainable=sum(r.trainable for r in kept),
                    macs=sum(r.macs for r in kept), batch=batch, rf=rf, rf_at=at if rf else None,
                    rf_global=covers, notes=tuple(notes), rf_notes=tuple((rf_notes + differ) if rf else ()))
