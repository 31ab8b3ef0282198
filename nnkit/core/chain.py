"""Analyse a chain written in the layer language: every layer's shape, parameters, MACs and receptive
field."""

from __future__ import annotations

import math
from dataclasses import replace

from nnkit.core import layers as L
from nnkit.core.report import Analysis, LayerReport
from nnkit.core.numbers import MAX_ELEMENTS, MAX_SIZE
from nnkit.core.spec import RANK, TOKEN_KINDS, TOKENS, Form, LayerSpec, parse_chain, parse_shape, read_input
from nnkit.errors import GeometryError, SpecError

BYTES_PER_ELEMENT = 4  # float32 activations


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
    fld: L.Window = ((1, 1, 0),) * rank  # per axis: size r, stride S, padding P of the identity
    fld_ok, covers = True, False
    current = shape
    for index, spec in enumerate(specs, start=1):
        step = L.apply(spec, current, index)
        if max(step.output) > MAX_SIZE or math.prod(step.output) * n > MAX_ELEMENTS:
            # upsampling repeated grows sizes geometrically: stop before the numbers stop meaning anything
            raise GeometryError(f"layer {index} {spec.text}: output {'x'.join(map(str, step.output))[:60]} is "
                                f"beyond any tensor (a size above {MAX_SIZE:,} or more than 2**63 elements)")
        explain = list(step.explain)
        if step.rf_undefined:
            fld_ok = False
        elif step.window is not None and fld_ok and not covers and len(step.window) == rank:
            explain.append(L.explain_field(fld, step.window))
            fld = L.grow_field(fld, step.window)
        covers = covers or step.rf_global
        rows.append(LayerReport(
            index=index, spec=spec.text, kind=spec.kind, input=current, output=step.output,
            params=step.params, trainable=step.params, macs=step.macs * n,
            rf=L.to_field(fld) if fld_ok and not covers and len(step.output) == rank + 1 else None,
            rf_global=covers, activation_bytes=math.prod(step.output) * BYTES_PER_ELEMENT,
            explain=tuple(explain), notes=tuple(step.notes),
        ))
        current = step.output
    rf_notes: tuple[str, ...] = () if fld_ok else (
        "receptive fields stop at the first upsampling layer (tconv, upsample): Araujo et al. (2019) define "
        "them for downsampling chains",)
    if form == TOKENS or any(s.kind == "patch" for s in specs):
        rf_notes += ("tokens (TxD) have no spatial receptive field: each patch token sees its own patch, and "
                     "after attention every output sees the whole input",)
    return _totals(Analysis(source=f"{input_text} {' '.join(s.text for s in specs)}", input=shape,
                            output=current,
                            layers=tuple(rows), params=0, trainable=0, macs=0, batch=batch,
                            rf_notes=rf_notes))


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
