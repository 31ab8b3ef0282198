"""What each analysis command shows of an Analysis: its JSON document and its table.

The JSON keys are a contract with users' scripts (issue 2): extend them, never rename them.
  shape  {"input", "output", "layers": [{"spec", "input", "output", ...}]}
  params {"total", "trainable", "layers": [{"spec", "params", ...}]}
  flops  {"macs", "flops", "layers": [{"spec", "macs", ...}]}
  rf     {"size": [h, w], "stride": [h, w], "padding": [h, w], "layers": [...]}
Shapes in JSON include the batch dimension when the user gave one (NxCxHxW). Per-axis fields are lists of the
chain's rank: [l] for a 1-D chain, [h, w] for 2-D, [d, h, w] for 3-D.
Detectors and flow models add "parts" (every view but rf): [{"name", "role", "modules", "runs_on", "params"?,
"macs"?, "flops"?}], backbone, neck and heads, adding up to the totals (nnkit.introspect.detection).
"""

from __future__ import annotations

from typing import Any, Callable, Literal

from nnkit.core.report import Analysis, Field, LayerReport, Part, Topic
from nnkit.render import Tabular

View = Literal["shape", "params", "flops", "rf", "summary"]


def human(n: float, unit: str = "") -> str:
    """4089184256 -> '4.089 G' (three decimals, as torchvision's tables print GFLOPS)."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.3f} {prefix}{unit}"
    return f"{n:g} {unit}".rstrip()


def _shape(a: Analysis, shape: tuple[int, ...] | None) -> list[int] | None:
    if shape is None:
        return None
    return [a.batch, *shape] if a.batch else list(shape)


def _numbers(values: tuple[Any, ...]) -> list[Any]:
    """JSON numbers stay numbers; a fractional stride after upsampling is exact as a string: "1/2"."""
    return [v if isinstance(v, int) else str(v) for v in values]


def _field(layer: LayerReport) -> dict[str, Any]:
    f = layer.rf
    return {
        "size": list(f.size) if f else None,
        "stride": _numbers(f.stride) if f else None,
        "padding": _numbers(f.padding) if f else None,
        "global": layer.rf_global,
    }


def _layer_doc(a: Analysis, layer: LayerReport, what: View, explain: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {"index": layer.index, "spec": layer.spec, "kind": layer.kind}
    if what in ("shape", "summary"):
        doc.update(input=_shape(a, layer.input), output=_shape(a, layer.output))
    if what in ("params", "summary"):
        doc.update(params=layer.params, trainable=layer.trainable)
    if what in ("flops", "summary"):
        doc.update(macs=layer.macs, flops=layer.flops)
    if what in ("rf", "summary"):
        doc.update(_field(layer) if what == "rf" else {"rf": _field(layer)})
    if what == "summary":
        doc["activation_bytes"] = layer.activation_bytes
    if layer.depth:
        doc["depth"] = layer.depth
    if layer.notes:
        doc["notes"] = list(layer.notes)
    if explain:
        doc["explain"] = _explain_for(layer, what)
    return doc


_TOPICS: dict[str, tuple[Topic, ...]] = {
    "shape": (Topic.shape,), "params": (Topic.params,), "flops": (Topic.macs,), "rf": (Topic.rf,),
    "summary": tuple(Topic),
}


def _explain_for(layer: LayerReport, what: View) -> list[str]:
    """The formula lines that belong to this view."""
    return [f.text for f in layer.explain if f.topic in _TOPICS[what]]


def _rf_cells(rf: Field | None, covers_input: bool) -> tuple[Any, Any, Any]:
    if rf is not None:
        return rf.size, rf.stride, rf.padding
    return ("whole input" if covers_input else None), None, None


def _columns(a: Analysis, what: View) -> list[tuple[str, Callable[[LayerReport], Any], Any]]:
    """The view's columns: header, the cell of a layer, and the cell of the total row."""
    cols: list[tuple[str, Callable[[LayerReport], Any], Any]] = []
    if what in ("shape", "summary"):
        cols += [("input", lambda x: _shape(a, x.input), _shape(a, a.input)),
                 ("output", lambda x: _shape(a, x.output), _shape(a, a.output))]
    if what in ("params", "summary"):
        cols.append(("params", lambda x: x.params, a.params))
    if what in ("flops", "summary"):
        cols.append(("MACs", lambda x: x.macs, a.macs))
    if what in ("rf", "summary"):
        total = _rf_cells(a.rf, a.rf_global)
        cols += [(name, lambda x, i=i: _rf_cells(x.rf, x.rf_global)[i], total[i])
                 for i, name in enumerate(("rf size", "rf stride", "rf padding"))]
    if what == "summary":
        cols.append(("activations", lambda x: human(x.activation_bytes, "B"),
                     human(sum(x.activation_bytes for x in a.layers), "B")))
    return cols


def view(a: Analysis, what: View, explain: bool = False) -> tuple[dict[str, Any], Tabular]:
    doc: dict[str, Any] = {"source": a.source}
    notes = list(a.notes) + (list(a.rf_notes) if what in ("rf", "summary") else [])
    if what in ("shape", "summary"):
        doc.update(input=_shape(a, a.input), output=_shape(a, a.output))
    if what in ("params", "summary"):
        doc.update(total=a.params, trainable=a.trainable)
    if what in ("flops", "summary"):
        doc.update(macs=a.macs, flops=a.flops)
    if what in ("rf", "summary"):
        f = a.rf
        doc.update(size=list(f.size) if f else None, stride=_numbers(f.stride) if f else None,
                   padding=_numbers(f.padding) if f else None, at=a.rf_at, covers_input=a.rf_global)
    if a.batch:
        doc["batch"] = a.batch
    # what the whole analysis needs said (merges, gates, upsampling, unused params)
    doc["notes"] = list(notes)
    doc["layers"] = [_layer_doc(a, layer, what, explain) for layer in a.layers]
    if a.parts and what != "rf":  # detectors and flow models: backbone, neck and heads (nnkit.introspect.detection)
        doc["parts"] = [_part_doc(p, what) for p in a.parts]

    # Model rows are module paths: their class (Conv2d, ...) is worth a column; a chain's layer says it
    # itself. It comes last, so that chains and models put every other column at the same place for scripts.
    typed = not a.chain
    columns = _columns(a, what)
    rows = []
    for layer in a.layers:
        row: list[Any] = [layer.index, layer.spec]  # module paths show their own nesting
        row += [cell(layer) for _, cell, _ in columns]
        if explain:
            row.append("\n".join(_explain_for(layer, what)))
        if typed:
            row.append(layer.kind)
        rows.append(tuple(row))
        notes += [f"{layer.index} {layer.spec}: {n}" for n in layer.notes]
    if what in ("params", "summary") and a.trainable != a.params:
        notes.append(f"trainable {a.trainable:,} of {a.params:,}")
    if what in ("flops", "summary"):
        notes.append(f"{human(a.macs, 'MACs')}, {human(a.flops, 'FLOPs')} (FLOPs = 2 x MACs; conv, linear, "
                     "matmul and recurrent gates)")
    if what in ("rf", "summary") and a.rf_at:
        notes.append(f"receptive field at {a.rf_at}: {'x'.join(map(str, a.rf.size))}"  # type: ignore[union-attr]
                     + ("; the layers after it see the whole input" if a.rf_global else ""))
    total = ["", f"at {a.rf_at}" if what == "rf" and a.rf_at else "total", *(t for _, _, t in columns)]
    total += [""] * (explain + typed)
    parts = _part_rows(a, what, columns, explain + typed) if what != "rf" else ()
    if what == "shape":
        notes += [f"part {p.label}: {', '.join(p.modules) or 'the rest'}" for p in a.parts]
    header = ["#", "layer", *(name for name, _, _ in columns)] + ["formula"] * explain + ["type"] * typed
    numeric = frozenset({"#", "params", "MACs", "rf size", "rf stride", "rf padding", "activations"})
    # r/S/P: size, effective stride and padding, as --explain writes them (Araujo et al. 2019)
    merge = (("rf", "rf r/S/P", ("rf size", "rf stride", "rf padding")),) if what == "summary" else ()
    return doc, Tabular(columns=tuple(header), rows=tuple(rows), title=a.source,
                        footer=(*parts, tuple(total)) if what != "shape" else (), notes=tuple(notes),
                        numeric=numeric,
                        key=2, merge=merge,
                        # the formulas are what --explain asked for: the other columns make way for them
                        drop=tuple(c for c in reversed(header[2:]) if c != "formula") if explain else None)


def _part_doc(p: Part, what: View) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": p.name, "role": p.role, "modules": list(p.modules), "runs_on": p.runs_on}
    if what in ("params", "summary"):
        doc["params"] = p.params
    if what in ("flops", "summary"):
        doc.update(macs=p.macs, flops=2 * p.macs)
    return doc


def _part_rows(a: Analysis, what: View, columns: list[Any], extra: int) -> tuple[tuple[Any, ...], ...]:
    """One footer row per part, above the total: its parameters and MACs under the view's columns."""
    rows = []
    for p in a.parts:
        cells = [p.params if name == "params" else p.macs if name == "MACs" else "" for name, _, _ in columns]
        rows.append(("", p.label, *cells, *[""] * extra))
    return tuple(rows)


def summary_line(a: Analysis, what: View) -> tuple[Any, ...]:
    """One TSV row per chain for batch mode (stdin): the totals of the view."""
    if what == "shape":
        return (_shape(a, a.input), _shape(a, a.output))
    if what == "params":
        return (a.params, a.trainable)
    if what == "flops":
        return (a.macs, a.flops)
    if what == "rf":
        f = a.rf
        return (f.size if f else None, f.stride if f else None, f.padding if f else None)
    return (_shape(a, a.output), a.params, a.macs)


SUMMARY_COLUMNS = {
    "shape": ("input", "output"),
    "params": ("total", "trainable"),
    "flops": ("macs", "flops"),
    "rf": ("size", "stride", "padding"),
    "summary": ("output", "params", "macs"),
}


def dwsep_view(r: Any, explain: bool = False) -> tuple[dict[str, Any], Tabular]:
    """nnkit dwsep INPUT --out N -k K: JSON keys standard/separable/ratio/theory (issue 2's contract)."""
    sep = r.separable
    doc = {
        "input": list(r.input), "output": list(r.output), "bias": r.bias,
        "standard": {"params": r.standard.params, "macs": r.standard.macs},
        "separable": {"params": sep.params, "macs": sep.macs,
                      "depthwise": {"params": r.depthwise.params, "macs": r.depthwise.macs},
                      "pointwise": {"params": r.pointwise.params, "macs": r.pointwise.macs}},
        "ratio": {"params": r.ratio.params, "macs": r.ratio.macs},
        "theory": r.theory,
    }
    if explain:
        doc["explain"] = list(r.explain)
    rows = (("standard", r.standard.params, r.standard.macs),
            ("depthwise", r.depthwise.params, r.depthwise.macs),
            ("pointwise", r.pointwise.params, r.pointwise.macs),
            ("separable", sep.params, sep.macs))
    notes = [f"separable / standard: params {r.ratio.params:.4f}, MACs {r.ratio.macs:.4f}; "
             f"theory 1/N + 1/K^2 = 1/{r.out} + 1/{r.kernel[0] * r.kernel[1]} = {r.theory:.4f}"]
    if not r.bias:
        notes.append("biases not counted (Howard et al. 2017: BatchNorm follows every conv); --bias counts "
                     "them")
    if explain:
        notes += list(r.explain)
    title = f"{'x'.join(map(str, r.input))} -> {'x'.join(map(str, r.output))}"
    return doc, Tabular(columns=("conv", "params", "MACs"), rows=rows, title=title, notes=tuple(notes),
                        numeric=frozenset({"params", "MACs"}))


def solve_view(r: Any) -> tuple[dict[str, Any], Tabular]:
    """nnkit solve same | map | undo; per axis (-k 3x7x7), each key holds a list with one value per axis."""
    from nnkit.core import solve

    if isinstance(r, solve.PerAxis):
        return _solve_axes(r)

    if isinstance(r, solve.SamePadding):
        doc = {"kernel": r.kernel, "dilation": r.dilation, "stride": r.stride, "input": r.size,
               "output": r.output, "padding": [r.before, r.after], "symmetric": r.symmetric,
               "explain": list(r.explain)}
        tab = Tabular(columns=("kernel", "dilation", "stride", "padding before", "padding after"),
                      rows=((r.kernel, r.dilation, r.stride, r.before, r.after),), notes=r.explain,
                      numeric=frozenset({"kernel", "dilation", "stride", "padding before", "padding after"}))
        return doc, tab
    if isinstance(r, solve.MapResult):
        sols = [{"layer": "tconv" if m.transposed else "conv", "stride": m.stride, "padding": m.padding,
                 "output_padding": m.output_padding, "left_out": m.left_out, "formula": m.formula}
                for m in r.solutions]
        doc = {"input": r.size_in, "output": r.size_out, "kernel": r.kernel, "dilation": r.dilation,
               "solutions": sols, "total": r.total}
        more = (f"the best {len(sols)} of {r.total:,} solutions",) if r.total > len(sols) else ()
        rows = tuple((s["layer"], s["stride"], s["padding"], s["output_padding"], s["left_out"], s["formula"])
                     for s in sols)
        return doc, Tabular(columns=("layer", "stride", "padding", "output_padding", "left out", "formula"),
                            rows=rows, title=f"{r.size_in} -> {r.size_out}, kernel {r.kernel}", notes=more,
                            numeric=frozenset({"stride", "padding", "output_padding", "left out"}))
    doc = {"input": r.size, "conv_output": r.conv_output, "output_padding": r.output_padding,
           "explain": list(r.explain)}
    return doc, Tabular(columns=("input", "conv output", "output_padding"),
                        rows=((r.size, r.conv_output, r.output_padding),), notes=r.explain,
                        numeric=frozenset({"input", "conv output", "output_padding"}))


VIEWS: tuple[str, ...] = ("shape", "params", "flops", "rf", "summary")


def layer_rows(a: Analysis) -> list[dict[str, Any]]:
    """One flat dict per layer, for pandas.DataFrame(rows): shapes and per-axis fields as lists, no
    nesting."""
    rows = []
    for x in a.layers:
        f = x.rf
        rows.append({"index": x.index, "layer": x.spec, "kind": x.kind, "depth": x.depth,
                     "input": _shape(a, x.input), "output": _shape(a, x.output), "params": x.params,
                     "trainable": x.trainable, "macs": x.macs, "flops": x.flops,
                     "rf_size": list(f.size) if f else None, "rf_stride": list(f.stride) if f else None,
                     "rf_padding": list(f.padding) if f else None, "rf_global": x.rf_global,
                     "activation_bytes": x.activation_bytes, "notes": list(x.notes)})
    return rows


def memory_doc(m: Any) -> dict[str, Any]:
    """The "memory" object of `nnkit summary ARCH --train -f json`."""
    return {"batch": m.batch, "optimizer": m.optimizer, "params_bytes": m.params_bytes,
            "grads_bytes": m.grads_bytes, "optimizer_bytes": m.optimizer_bytes,
            "saved_bytes_per_item": m.saved_bytes_per_item, "total_bytes": m.total, "amp": m.amp,
            "amp_weights_bytes": m.amp_weights_bytes}


def memory_note(m: Any) -> str:
    b = m.batch
    return (f"training memory at batch {b} with {m.optimizer}: {human(m.total, 'B')} = "
            f"params {human(m.params_bytes, 'B')} + grads {human(m.grads_bytes, 'B')} + "
            f"optimizer {human(m.optimizer_bytes, 'B')} + "
            + (f"16-bit weight copies {human(m.amp_weights_bytes, 'B')} + " if m.amp else "")
            + f"{b} x {human(m.saved_bytes_per_item, 'B')} saved activations per item (an estimate: "
            "no allocator overhead, no workspace)")


def memory_view(m: Any) -> tuple[dict[str, Any], Tabular]:
    """Training memory on its own (nnkit.memory in a notebook): one row per part."""
    rows = (("parameters", m.params_bytes), ("gradients", m.grads_bytes), (f"{m.optimizer} state", m.optimizer_bytes),
            *((("16-bit weight copies (--amp)", m.amp_weights_bytes),) if m.amp else ()),
            (f"saved activations ({m.batch} x {m.saved_bytes_per_item:,})", m.batch * m.saved_bytes_per_item))
    return memory_doc(m), Tabular(columns=("part", "bytes"), rows=rows, footer=(("total", m.total),),
                                  title=f"training memory at batch {m.batch}", notes=(memory_note(m),),
                                  numeric=frozenset({"bytes"}))


def _cost(c: Any) -> dict[str, Any]:
    return {"params": c.params, "macs": c.macs}


def dwsep_network_view(r: Any, width: float | None = None) -> tuple[dict[str, Any], Tabular]:
    """`nnkit dwsep ARCH`: mobilenet_v1 against the paper's Conv MobileNet (Howard et al. 2017, Tables 4, 6,
    7), or any network against its standard twin, pair by pair."""
    if hasattr(r, "variants"):
        return _mobilenet_view(r)
    std, sep = r.standard, r.separable
    doc: dict[str, Any] = {
        "name": r.source, "input": list(r.input), "width": width, "standard": _cost(std),
        "separable": _cost(sep),
        "ratio": vars(r.ratio), "theory": r.theory, "paper": None, "pairs_ratio": vars(r.pairs_ratio),
        "variants": [],
        "pairs": [{"depthwise": p.depthwise.path, "pointwise": p.pointwise.path,
                   "kernel": list(p.depthwise.kernel), "in": p.depthwise.cin, "out": p.pointwise.cout,
                   "standard": _cost(p.standard), "separable": _cost(p.separable),
                   "ratio": vars(p.separable.per(p.standard))} for p in r.pairs],
        "unpaired": list(r.unpaired)}
    rows = tuple((f"{p.depthwise.path} + {p.pointwise.path}", f"{p.depthwise.cin}->{p.pointwise.cout}",
                  "x".join(map(str, p.depthwise.kernel)), p.standard.params, p.standard.macs,
                  p.separable.params,
                  p.separable.macs, f"{p.separable.per(p.standard).macs:.4f}") for p in r.pairs)
    footer = (("whole network", "", "", std.params, std.macs, sep.params, sep.macs, f"{r.ratio.macs:.4f}"),)
    notes = ["standard twin: each depthwise conv and the 1x1 conv that takes its output replaced by one "
             f"standard conv with the depthwise kernel and stride ({len(r.pairs)} pairs); BatchNorm, "
             "activations and the rest kept (Howard et al. 2017, Table 4, generalised)",
             f"separable / standard, whole network: params {r.ratio.params:.4f}, MACs {r.ratio.macs:.4f}; "
             f"the pairs alone: MACs {r.pairs_ratio.macs:.4f}, theory sum(1/N + 1/K^2) weighted by each "
             f"pair's standard MACs = {r.theory:.4f}"]
    if r.unpaired:
        notes.append(f"{len(r.unpaired)} depthwise conv(s) no 1x1 conv takes directly, kept as they are "
                     f"(first: {r.unpaired[0]})")
    return doc, Tabular(columns=("pair", "channels", "kernel", "standard params", "standard MACs",
                                 "separable params", "separable MACs", "MACs ratio"), rows=rows,
                        footer=footer,
                        title=f"{r.source} on {'x'.join(map(str, r.input))}: as built vs its standard twin",
                        notes=tuple(notes), numeric=frozenset({"standard params", "standard MACs",
                                                               "separable params", "separable MACs"}))


def _mobilenet_view(r: Any) -> tuple[dict[str, Any], Tabular]:
    size = r.input[1]
    variants = [{"width": v.width, "input": list(v.input), **_cost(v.cost),
                 "paper": _cost(v.paper) if v.paper else None} for v in r.variants]
    doc: dict[str, Any] = {"name": r.name, "input": list(r.input), "width": r.width,
                           "standard": _cost(r.standard),
                           "separable": _cost(r.separable), "ratio": vars(r.ratio), "theory": r.theory,
                           "paper": {k: _cost(c) for k, c in r.paper.items()} if r.paper else None,
                           "variants": variants}
    rows = [("Conv MobileNet (standard)", r.standard.params, r.standard.macs, ""),
            ("MobileNet (separable)", r.separable.params, r.separable.macs, "")]
    rows += [(f"MobileNet {v['width']:g} @ {v['input'][1]}", v["params"], v["macs"],
              f"paper {v['paper']['params'] / 1e6:.1f}M / "
              f"{v['paper']['macs'] / 1e6:.0f}M" if v["paper"] else "")
             for v in variants]
    notes = (f"separable / standard: params {r.ratio.params:.4f}, MACs {r.ratio.macs:.4f}; theory "
             f"sum(1/N + 1/9) weighted by each layer's MACs = {r.theory:.4f} (Howard et al. 2017, 3.1)",
             "Howard et al. 2017 Table 4: Conv MobileNet 29.3M params / 4866M mult-adds, MobileNet 4.2M / "
             "569M")
    return doc, Tabular(columns=("network", "params", "MACs", "published"), rows=tuple(rows),
                        title=f"mobilenet_v1 width {r.width:g} on 3x{size}x{size}", notes=notes,
                        numeric=frozenset({"params", "MACs"}))


def _solve_axes(r: Any) -> tuple[dict[str, Any], Tabular]:
    """The answers of one axis each, merged: the same keys as one axis, their values lists over the axes
    (explain lines are prefixed by their axis); the table has one block of rows per axis."""
    views = [solve_view(a) for a in r.answers]
    doc: dict[str, Any] = {"axes": list(r.axes)}
    for key in views[0][0]:
        values = [v[0][key] for v in views]
        doc[key] = ([f"{axis}: {line}" for axis, v in zip(r.axes, values) for line in v] if key == "explain"
                    else values)
    first = views[0][1]
    rows = tuple((axis, *row) for axis, (_, tab) in zip(r.axes, views) for row in tab.rows)
    notes = tuple(f"{axis}: {n}" for axis, (_, tab) in zip(r.axes, views) for n in tab.notes)
    title = "; ".join(f"{axis}: {tab.title}" for axis, (_, tab) in zip(r.axes, views) if tab.title)
    return doc, Tabular(columns=("axis", *first.columns), rows=rows, title=title, notes=notes,
                        numeric=first.numeric)
