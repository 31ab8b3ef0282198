"""Analyse a chain written in the layer language: every layer's shape, parameters, MACs and receptive field."""

from __future__ import annotations

from nnkit.core import layers as L
from nnkit.core.report import Analysis, LayerReport, Shape
from nnkit.core.spec import LayerSpec, parse_chain, parse_shape
from nnkit.errors import SpecError

BYTES_PER_ELEMENT = 4  # float32 activations


def _numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def analyze_chain(input_text: str, chain: str | list[str] | tuple[str, ...] | list[LayerSpec]) -> Analysis:
    """`analyze_chain("3x32x32", "conv(6,5) maxpool(2)")`: the whole report for one chain."""
    batch, shape = parse_shape(input_text)
    specs = chain if chain and isinstance(chain[0], LayerSpec) else parse_chain(chain)  # type: ignore[arg-type]
    if not specs:
        raise SpecError(f"input {input_text}: no layers given (e.g. \"conv(6,5) maxpool(2)\")")
    n = batch or 1
    rows: list[LayerReport] = []
    fld = ((1, 1, 0), (1, 1, 0))  # per axis: size r, stride S, padding P of the identity
    fld_ok, covers = True, False
    rf_at: str | None = None
    last_field = None
    current = shape
    for index, spec in enumerate(specs, start=1):
        step = L.apply(spec, current, index)
        explain = list(step.explain)
        if step.rf_undefined:
            fld_ok = False
        elif step.window is not None and fld_ok and not covers:
            explain.append(L.explain_field(fld, step.window))
            fld = L.grow_field(fld, step.window)
        covers = covers or step.rf_global
        field = L.to_field(fld) if fld_ok and not covers and len(step.output) == 3 else None
        if field is not None:
            last_field, rf_at = field, spec.text
        rows.append(LayerReport(
            index=index, spec=spec.text, kind=spec.kind, input=current, output=step.output,
            params=step.params, trainable=step.params, macs=step.macs * n, rf=field,
            rf_global=covers, activation_bytes=_numel(step.output) * BYTES_PER_ELEMENT,
            explain=tuple(explain), notes=tuple(step.notes),
        ))
        current = step.output
    notes = []
    if not fld_ok:
        notes.append("receptive fields stop at the first upsampling layer (tconv, upsample): Araujo et al. (2019) "
                     "define them for downsampling chains")
    total = sum(r.params for r in rows)
    return Analysis(
        source=f"{input_text} {' '.join(s.text for s in specs)}", input=shape, output=current, layers=tuple(rows),
        params=total, trainable=total, macs=sum(r.macs for r in rows), batch=batch, rf=last_field, rf_at=rf_at,
        rf_global=covers, notes=tuple(notes),
    )
