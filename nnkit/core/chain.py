"""Analyse a chain written in the layer language: every layer's shape, parameters, MACs and receptive
field."""

from __future__ import annotations

import math
from dataclasses import replace

from nnkit.core import layers as L
from nnkit.core.numbers import MAX_ELEMENTS, MAX_SIZE
from nnkit.core.report import Analysis, Field, Formula, LayerReport, Topic
from nnkit.core.spec import RANK, TOKEN_KINDS, TOKENS, Form, LayerSpec, parse_chain, parse_shape, read_input
from nnkit.errors import GeometryError, SpecError

BYTES_PER_ELEMENT = 4  # float32 activations
# After upsampling a field is composed per output position, layer by layer, and every layer recomposes the maps
# before it: the work is the sum over layers of (positions per axis, summed) x layers so far. A 512x512 U-Net of
# 20 layers is about 200,000; beyond this bound (long chains on large maps, astronomical sizes that the
# arithmetic still answers) the fields are left out with a note instead of running for minutes.
FIELD_WORK = 1 << 22
UPSAMPLING_RULE = (
    "through upsampling, output j's field is composed layer by layer from which inputs each output reads: a "
    "tconv is a conv on the zero-interleaved input (Dumoulin & Visin 2016), nearest copies input floor(j/scale), "
    "bilinear (align_corners=false) mixes floor(x) and floor(x)+1 at x = (j+0.5)/scale - 0.5 (PyTorch "
    "nn.Upsample); S is a fraction (1/scale per upsampling), r the largest over output positions, P = -(first "
    "input of output 0)")


def _explain_positions(reads: tuple[L.AxisMap, ...] | None, rf: Field, sizes: tuple[int, ...]) -> Formula:
    """After upsampling the field is not one multiply-add per layer: say the layer's rule and the result."""
    rule = f"{reads[0].describe()}; " if reads is not None else ""
    shown = "x".join(map(str, sizes))
    return Formula(Topic.rf, f"rf: {rule}over the {shown} outputs: r = {'x'.join(map(str, rf.size))} (largest), "
                             f"S = {'x'.join(map(str, rf.stride))}, P = {'x'.join(map(str, rf.padding))}")


def chain_form(specs: list[LayerSpec]) -> tuple[Form, str]:
    """How the chain reads its input, and why: the first layer with a dimensionality (conv1d: 1-D, conv: 2-D,
    conv3d: 3-D, patch: a 2-D image) or one on tokens (attn, cls, ...) decides; none of them: 2-D, as always.

    A spatial layer of another dimensionality than the chain's is refused: nothing in the language turns a 1-D
    map into a 2-D one, so such a chain is a typo (conv where conv1d was meant), not a network.
    """
    form: Form | None = None
    rank: tuple[int, int, LayerSpec] | None = None  # the first spatial layer: its rank, index and spec
    why = ""
    for index, spec in enumerate(specs, start=1):
        layer_rank = RANK.get(spec.kind)
        if layer_rank is not None:
            if rank is None:
                rank = (layer_rank, index, spec)
            elif layer_rank != rank[0]:
                raise SpecError(f"layer {index} {spec.text}: a {layer_rank}-D layer in a {rank[0]}-D chain "
                                f"(layer {rank[1]} {rank[2].text}); a chain keeps one dimensionality")
        if form is None and (layer_rank is not None or spec.kind in TOKEN_KINDS):
            form = layer_rank if layer_rank is not None else TOKENS
            why = f"layer {index} {spec.text}"
    return (2 if form is None else form), why


def analyze_chain(input_text: str, chain: str | list[str] | tuple[str, ...] | list[LayerSpec]) -> Analysis:
    """`analyze_chain("3x32x32", "conv(6,5) maxpool(2)")`: the whole report for one chain."""
    specs = chain if chain and isinstance(chain[0], LayerSpec) else parse_chain(chain)  # type: ignore[arg-type]
    if not specs:
        parse_shape(input_text)  # a bad shape says so first
        raise SpecError(f"input {input_text}: no layers given (e.g. \"conv(6,5) maxpool(2)\")")
    form, why = chain_form(specs)  # type: ignore[arg-type]
    batch, shape = read_input(input_text, form, why)
    # token chains have no spatial field; fields start 2-D as ever
    rank = form if isinstance(form, int) else 2
    n = batch or 1
    rows: list[LayerReport] = []
    fld = L.identity_field(rank)  # per axis: size r, stride S, padding P
    # Every layer's reads so far, for the position-wise rule once the chain upsamples (None until it does): the
    # Araujo et al. arithmetic above stays exactly as it was for chains that never upsample.
    maps: list[tuple[L.AxisMap, ...]] = []
    upsampled, covers = False, False
    last: Field | None = None
    too_many: str | None = None  # the note when the fields stop being followed (FIELD_WORK)
    field_work = 0
    rf_notes: tuple[str, ...] = ()
    current = shape
    for index, spec in enumerate(specs, start=1):
        step = L.apply(spec, current, index)
        if max(step.output) > MAX_SIZE or math.prod(step.output) * n > MAX_ELEMENTS:
            # upsampling repeated grows sizes geometrically: stop before the numbers stop meaning anything
            raise GeometryError(f"layer {index} {spec.text}: output {'x'.join(map(str, step.output))[:60]} is "
                                f"beyond any tensor (a size above {MAX_SIZE:,} or more than 2**63 elements)")
        explain = list(step.explain)
        notes = list(step.notes)
        rf: Field | None = None
        reads = step.resample or step.taps or (L.window_map(step.window) if step.window is not None else None)
        if reads is not None and not covers and len(reads) == rank:
            maps.append(reads)
            if step.resample is not None:
                upsampled = True
            if not upsampled:
                explain.append(L.explain_field(fld, step.window))  # type: ignore[arg-type]
                fld = L.grow_field(fld, step.window)  # type: ignore[arg-type]
        covers = covers or step.rf_global
        if not covers and len(step.output) == rank + 1:
            if upsampled and too_many is None:  # every layer recomposes all the maps so far: the work adds up
                field_work += sum(step.output[1:]) * len(maps)
            if upsampled and too_many is None and field_work > FIELD_WORK:
                too_many = (f"receptive fields from layer {index} {spec.text} on are not followed: its "
                            f"{'x'.join(map(str, step.output[1:]))} outputs through {len(maps)} layers are more "
                            f"than nnkit composes position by position ({FIELD_WORK:,} reads)")
            if too_many is not None:
                rf = None
            elif upsampled and (reads is not None or last is None):
                rf, differ = L.field_over_positions(maps, step.output[1:])
                if reads is not None:
                    explain.append(_explain_positions(reads, rf, step.output[1:]))
                notes += differ
            elif upsampled:
                rf = last  # a pointwise layer reads its own position: the field of the layer before
            else:
                rf = L.to_field(fld)
        last = rf
        rows.append(LayerReport(
            index=index, spec=spec.text, kind=spec.kind, input=current, output=step.output,
            params=step.params, trainable=step.params, macs=step.macs * n,
            rf=rf, rf_global=covers, activation_bytes=math.prod(step.output) * BYTES_PER_ELEMENT,
            explain=tuple(explain), notes=tuple(notes),
        ))
        current = step.output
    if upsampled and not covers:
        rf_notes += (UPSAMPLING_RULE,) + ((too_many,) if too_many else ())
    if form == TOKENS or any(s.kind == "patch" for s in specs):
        rf_notes += ("tokens (TxD) have no spatial receptive field: each patch token sees its own patch, and "
                     "after attention every output sees the whole input",)
    return _totals(Analysis(source=f"{input_text} {' '.join(s.text for s in specs)}", input=shape,
                            output=current,
                            layers=tuple(rows), params=0, trainable=0, macs=0, batch=batch,
                            rf_notes=rf_notes, chain=True))


def position_fields(input_text: str, chain: str | list[str]) -> list[list[tuple[int, int] | None]]:
    """Per spatial axis of the chain's output, each output position's first and last input position (None where it
    reads no input): the intervals whose largest is the reported field. Chains that upsample need them, since their
    positions differ; for the others every interval is [j*S - P, j*S - P + r - 1]."""
    specs = parse_chain(chain)
    form, why = chain_form(specs)
    _, shape = read_input(input_text, form, why)
    if not isinstance(form, int):
        raise SpecError(f"input {input_text}: a token chain has no spatial receptive field")
    maps: list[tuple[L.AxisMap, ...]] = []
    current = shape
    for index, spec in enumerate(specs, start=1):
        step = L.apply(spec, current, index)
        if step.rf_global:
            raise SpecError(f"layer {index} {spec.text}: its output sees the whole input; no per-position field")
        reads = step.resample or step.taps or (L.window_map(step.window) if step.window is not None else None)
        if reads is not None:
            maps.append(reads)
        current = step.output
    return [L.position_spans(maps, ax, n) for ax, n in enumerate(current[1:])]


def _totals(a: Analysis) -> Analysis:
    """Totals and the output's receptive field from the rows (a chain shares no tensors between layers)."""
    fields = [x for x in a.layers if x.rf is not None]
    params = sum(x.params for x in a.layers)
    return replace(a, output=a.layers[-1].output, params=params, trainable=params,
                   macs=sum(x.macs for x in a.layers), rf=fields[-1].rf if fields else None,
                   rf_at=fields[-1].spec if fields else None, rf_global=a.layers[-1].rf_global)


def truncate(a: Analysis, at: str) -> Analysis:
    """A chain analysed up to layer `at`: its 1-based number or its text."""
    match = [x for x in a.layers if str(x.index) == at or x.spec.replace(" ", "") == at.replace(" ", "")]
    if not match:
        raise SpecError(f"--at {at}: no such layer in the chain (give its number 1-{len(a.layers)} or its "
                        "text)")
    return _totals(replace(a, layers=a.layers[:match[0].index]))
