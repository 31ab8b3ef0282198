"""Per-layer arithmetic, exactly as PyTorch computes it: output shape, parameters, MACs, receptive field.

Every formula states its source and convention once (see docs/conventions.md):
- shapes: PyTorch nn docs (Conv2d, ConvTranspose2d, MaxPool2d, AvgPool2d, Upsample, LSTM);
  Dumoulin & Visin, "A guide to convolution arithmetic for deep learning" (2016);
- MACs: multiply-accumulates of conv (grouped, depthwise, transposed), linear and recurrent gates; bias,
  BatchNorm, activations and pooling count zero (torchvision's GFLOPS column, MobileNet's Mult-Adds);
- receptive fields: Araujo, Norris & Sim, Distill 2019.
Shapes exclude the batch dimension; MACs are for one item (nnkit.core.chain multiplies by the batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from nnkit.core.report import Field, Formula, Shape, Topic
from nnkit.core.spec import POINTWISE, LayerSpec
from nnkit.errors import GeometryError, SpecError

AXES = ("H", "W")
UNITS = (("row", "rows"), ("column", "columns"))
Window = tuple[tuple[int, int, int], tuple[int, int, int]]  # per axis: (dilated extent, stride, left padding)


# --- the two size formulas, shared with nnkit.core.solve ----------------------------------------------------


def window_out(size: int, k: int, s: int, pl: int, pr: int, d: int = 1,
               ceil: bool = False) -> tuple[int, int]:
    """Sliding-window output length (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d docs; aten pooling_output_shape).

    out = floor((H + pl + pr - d*(k-1) - 1)/s) + 1. With ceil_mode: ceil instead of floor, but a last window
    that would start in the right padding is dropped. Returns (out, the length before that drop).
    """
    num = size + pl + pr - d * (k - 1) - 1
    out = (num + (s - 1 if ceil else 0)) // s + 1
    before_drop = out
    if ceil and (out - 1) * s >= size + pl:
        out -= 1
    return out, before_drop


def tconv_out(size: int, k: int, s: int, p: int, op: int = 0, d: int = 1) -> int:
    """nn.ConvTranspose2d: (H-1)*s - 2p + d*(k-1) + output_padding + 1 (Dumoulin & Visin's a =
    output_padding)."""
    return (size - 1) * s - 2 * p + d * (k - 1) + op + 1


# --- one layer ----------------------------------------------------------------------------------------------


@dataclass
class Step:
    """What one layer does to its input: the numbers and the worked formulas."""

    output: Shape
    params: int = 0
    macs: int = 0
    window: Window | None = None  # receptive-field transform; None for pointwise layers
    rf_global: bool = False  # the output depends on the whole input
    rf_undefined: bool = False  # upsampling: no integer receptive field (Araujo et al. cover downsampling)
    explain: list[Formula] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def say(self, topic: Topic, *lines: str) -> None:
        self.explain += [Formula(topic, line) for line in lines]


def _label(spec: LayerSpec, index: int) -> str:
    return f"layer {index} {spec.text}"


def _dims(shape: Shape) -> str:
    return "x".join(map(str, shape))


def _need_spatial(spec: LayerSpec, shape: Shape, index: int) -> tuple[int, int, int]:
    if len(shape) != 3:
        hint = " (a feature vector: is there a flatten or fc before it?)" if len(shape) == 1 else ""
        raise GeometryError(f"{_label(spec, index)}: needs a CxHxW input, got {_dims(shape)}{hint}")
    return shape  # type: ignore[return-value]


def _same_padding(spec: LayerSpec, index: int, k: tuple[int, int], d: tuple[int, int],
                  s: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int], list[str]]:
    """padding='same': PyTorch pads d*(k-1) in total, the odd one on the right/bottom (nn.Conv2d docs)."""
    if s != (1, 1):
        raise SpecError(f"{_label(spec, index)}: padding='same' is not supported for strided convolutions "
                        "in PyTorch; give p explicitly (nnkit solve same -k K -s S --input H finds it)")
    left, right, lines = [], [], []
    for ax in range(2):
        total = d[ax] * (k[ax] - 1)
        left.append(total // 2)
        right.append(total - total // 2)
        asym = f" (PyTorch pads {total // 2} before, {total - total // 2} after)" if total % 2 else ""
        lines.append(f"{AXES[ax]}: same padding = {d[ax]}*({k[ax]}-1) = {total} in total{asym}")
    return (left[0], left[1]), (right[0], right[1]), lines


def _decimal(numerator: int, denominator: int) -> str:
    """An exact-enough quotient for a textbook line: 14.5, 250001.25, 2.3333."""
    return f"{numerator / denominator:.4f}".rstrip("0").rstrip(".")


def _window_axis(ax: int, size: int, k: int, s: int, pl: int, pr: int, d: int, ceil: bool, pooling: bool,
                 label: str) -> tuple[int, str, str | None]:
    """Output length along one axis for a sliding window, its worked formula and a note worth knowing."""
    extent = d * (k - 1) + 1
    padded = size + pl + pr
    if padded < extent and not (pooling and ceil):  # ceil-mode pooling may take a window past the input
        raise GeometryError(f"{label}: input {AXES[ax]}={size}"
                            + (f" padded to {padded}" if pl + pr else "")
                            + f" is smaller than the {extent}-wide window"
                            + (f" (kernel {k}, dilation {d})" if d > 1 else ""))
    out, before_drop = window_out(size, k, s, pl, pr, d, ceil)
    if out < 1:
        raise GeometryError(f"{label}: output {AXES[ax]} would be {out}: the window does not fit input "
                            f"{size}")
    num = padded - extent
    pad_txt = f"2*{pl}" if pl == pr else f"{pl}+{pr}"
    if d == 1:
        expr = f"({size} - {k} + {pad_txt})/{s} + 1"
    else:
        expr = f"({size} + {pad_txt} - {d}*({k}-1) - 1)/{s} + 1"
    note = None
    if num % s == 0:
        line = f"{AXES[ax]}: {expr} = {out}"
    elif not ceil:
        line = f"{AXES[ax]}: {expr} = {_decimal(num + s, s)} -> {out} (floor)"
        # What no window covers lies at the end of the padded input: right padding first, then real input.
        lost = num % s - pr
        if lost > 0:
            unit = UNITS[ax][0] if lost == 1 else UNITS[ax][1]
            note = f"the last window leaves {lost} input {unit} out"
    elif out == before_drop:
        line = f"{AXES[ax]}: {expr} = {_decimal(num + s, s)} -> {out} (ceil)"
        note = f"ceil mode adds a last window that reaches past the input on {AXES[ax]}"
    else:
        line = (f"{AXES[ax]}: {expr} = {_decimal(num + s, s)} -> {before_drop} (ceil); the last window would "
                f"start in the padding, so PyTorch drops it: {out}")
    return out, line, note


def _merge_notes(notes: list[str]) -> list[str]:
    """The same remark for rows and columns reads once: 'leaves 1 input row and 1 input column out'."""
    if len(notes) == 2 and all(n.startswith("the last window leaves") for n in notes):
        return [notes[0].replace(" out", " and " + notes[1].replace("the last window leaves ", ""))]
    if len(notes) == 2 and all(n.startswith("ceil mode") for n in notes):
        return ["ceil mode adds a last window that reaches past the input on H and W"]
    return notes


def _axes(lines: list[str]) -> list[str]:
    """'H: ... = 32' and 'W: ... = 32' with the same formula become one 'H, W: ...' line, as a textbook
    writes."""
    if len(lines) == 2 and lines[0][3:] == lines[1][3:]:
        return ["H, W: " + lines[0][3:]]
    return lines


def _sliding(spec: LayerSpec, shape: Shape, index: int, *, out_ch: int, k: tuple[int, int],
             s: tuple[int, int], p: tuple[int, int] | str, d: tuple[int, int], ceil: bool,
             pooling: bool) -> Step:
    _, h, w = _need_spatial(spec, shape, index)
    label = _label(spec, index)
    pre: list[str] = []
    if p == "same":
        pl, pr, pre = _same_padding(spec, index, k, d, s)
    elif p == "valid":
        pl = pr = (0, 0)
    else:
        pl = pr = p  # type: ignore[assignment]
    if pooling:
        for ax in range(2):
            if pl[ax] > k[ax] // 2:
                raise GeometryError(f"{label}: padding {pl[ax]} is more than half the {k[ax]}-wide window; "
                                    "PyTorch requires p <= k/2 for pooling")
    outs, lines, notes = [], [], []
    for ax, size in enumerate((h, w)):
        o, line, note = _window_axis(ax, size, k[ax], s[ax], pl[ax], pr[ax], d[ax], ceil, pooling, label)
        outs.append(o)
        lines.append(line)
        if note:
            notes.append(note)
    step = Step(output=(out_ch, outs[0], outs[1]), notes=_merge_notes(notes),
                window=tuple((d[ax] * (k[ax] - 1) + 1, s[ax], pl[ax]) for ax in range(2)))  # type: ignore[arg-type]
    step.say(Topic.shape, *_axes(pre), *_axes(lines))
    return step


def _conv(spec: LayerSpec, shape: Shape, index: int, *, out_ch: int, k: tuple[int, int], s: tuple[int, int],
          p: tuple[int, int] | str, d: tuple[int, int], g: int, bias: bool, part: str = "") -> Step:
    c = _need_spatial(spec, shape, index)[0]
    if c % g or out_ch % g:
        raise GeometryError(f"{_label(spec, index)}: groups={g} must divide both the {c} input and {out_ch} "
                            "output channels")
    step = _sliding(spec, shape, index, out_ch=out_ch, k=k, s=s, p=p, d=d, ceil=False, pooling=False)
    per = c // g
    kh, kw = k
    step.params = out_ch * kh * kw * per + (out_ch if bias else 0)
    ho, wo = step.output[1], step.output[2]
    step.macs = out_ch * ho * wo * kh * kw * per
    cin = f"{per}" if g in (1, c) else f"({c}/{g})"
    step.say(Topic.params, f"{part}params: {out_ch}*{kh}*{kw}*{cin}" + (f" + {out_ch}" if bias else "")
             + f" = {step.params:,}" + ("" if bias else " (no bias)"))
    step.say(Topic.macs, f"{part}MACs: {out_ch}*{ho}*{wo} outputs * {kh}*{kw}*{cin} = {step.macs:,}")
    return step


def _tconv(spec: LayerSpec, shape: Shape, index: int) -> Step:
    """ConvTranspose2d; MACs use the input volume: every input element meets every weight of its group
    once."""
    c, h, w = _need_spatial(spec, shape, index)
    label = _label(spec, index)
    out_ch, k, s, p, op, d, g, bias = (spec[x] for x in ("out", "k", "s", "p", "op", "d", "g", "bias"))
    if c % g or out_ch % g:
        raise GeometryError(f"{label}: groups={g} must divide both the {c} input and {out_ch} output "
                            "channels")
    outs, lines = [], []
    for ax, size in enumerate((h, w)):
        if op[ax] >= max(s[ax], d[ax]):
            raise GeometryError(f"{label}: output padding {op[ax]} must be smaller than the stride {s[ax]} "
                                f"or the dilation {d[ax]}")
        o = tconv_out(size, k[ax], s[ax], p[ax], op[ax], d[ax])
        if o <= 0:
            raise GeometryError(f"{label}: output {AXES[ax]} would be {o}: padding {p[ax]} is too large")
        lines.append(f"{AXES[ax]}: ({size} - 1)*{s[ax]} - 2*{p[ax]} + {d[ax]}*({k[ax]}-1) + {op[ax]} + 1 = "
                     f"{o}")
        outs.append(o)
    per_out = out_ch // g
    params = c * per_out * k[0] * k[1] + (out_ch if bias else 0)
    macs = c * h * w * per_out * k[0] * k[1]
    cout = f"{per_out}" if g == 1 else f"({out_ch}/{g})"
    step = Step(output=(out_ch, outs[0], outs[1]), params=params, macs=macs, rf_undefined=True)
    step.say(Topic.shape, *_axes(lines))
    step.say(Topic.params,
             f"params: {c}*{cout}*{k[0]}*{k[1]}" + (f" + {out_ch}" if bias else "") + f" = {params:,}")
    step.say(Topic.macs, f"MACs: {c}*{h}*{w} inputs * {cout}*{k[0]}*{k[1]} = {macs:,}")
    return step


def _rnn(spec: LayerSpec, shape: Shape) -> Step:
    """nn.LSTM/GRU/RNN: per layer and direction, gates*hidden*(input + hidden) weights + 2*gates*hidden
    biases.

    The last dimension is the feature size; the leading ones are the sequence (their product is the number of
    steps, 1 for a single feature vector). MACs: gates*hidden*(input + hidden) per step, layer and direction.
    """
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[spec.kind]
    hidden, layers, bidir, bias = spec["hidden"], spec["layers"], spec["bidir"], spec["bias"]
    dirs = 2 if bidir else 1
    steps = math.prod(shape[:-1])
    step = Step(output=(*shape[:-1], hidden * dirs))
    inp = shape[-1]
    for layer in range(layers):
        per_dir = gates * hidden * (inp + hidden) + (2 * gates * hidden if bias else 0)
        step.params += per_dir * dirs
        step.macs += gates * hidden * (inp + hidden) * dirs * steps
        bias_txt = f" + 2*{gates}*{hidden}" if bias else ""
        step.say(Topic.params, f"layer {layer + 1}: ({gates}*{hidden}*({inp}+{hidden}){bias_txt})"
                 + (f" * {dirs} directions" if dirs > 1 else "") + f" = {per_dir * dirs:,}")
        inp = hidden * dirs
    step.say(Topic.params,
             f"params: {step.params:,} ({gates} gate{'s' if gates > 1 else ''}, {spec.kind.upper()})")
    step.say(Topic.macs,
             f"MACs: {step.macs:,} = sum over layers and directions of {gates}*{hidden}*(input+{hidden})"
             f" * {steps} step{'s' if steps > 1 else ''}")
    return step


def _adaptive(spec: LayerSpec, shape: Shape, index: int) -> Step:
    c, h, w = _need_spatial(spec, shape, index)
    oh, ow = (1, 1) if spec.kind == "gap" else spec["size"]
    step = Step(output=(c, oh, ow))
    step.say(Topic.shape, f"{c}x{h}x{w} -> {c}x{oh}x{ow} (adaptive average pooling)")
    if (oh, ow) == (h, w):
        return step
    if h % oh == 0 and w % ow == 0:
        # Each output cell averages an (H/oh)x(W/ow) block: exactly a pool with k = s = H/oh (aten adaptive
        # pool).
        step.window = ((h // oh, h // oh, 0), (w // ow, w // ow, 0))
        step.rf_global = (oh, ow) == (1, 1)
    else:
        step.rf_global = True
        step.notes.append(f"adaptive windows on {h}x{w} -> {oh}x{ow} overlap unevenly")
    return step


def _fc(spec: LayerSpec, shape: Shape) -> Step:
    feat, out = shape[-1], spec["out"]
    rows = math.prod(shape[:-1])
    params = feat * out + (out if spec["bias"] else 0)
    step = Step(output=(*shape[:-1], out), params=params, macs=rows * feat * out, rf_global=True)
    step.say(Topic.params, f"params: {out}*{feat}" + (f" + {out}" if spec["bias"] else "") + f" = {params:,}")
    step.say(Topic.macs, f"MACs: {f'{rows}*' if rows > 1 else ''}{out}*{feat} = {step.macs:,}")
    if len(shape) > 1:
        step.notes.append(f"fc acts on the last axis ({feat}) of {_dims(shape)}, as nn.Linear does; put "
                          "flatten before it to connect every input")
    return step


def _upsample(spec: LayerSpec, shape: Shape, index: int) -> Step:
    if len(shape) < 2:
        raise GeometryError(f"{_label(spec, index)}: needs a CxHxW input, got {_dims(shape)}")
    scale = spec["scale"]
    dims = tuple(math.floor(x * scale) for x in shape[1:])  # nn.Upsample(scale_factor=s): floor(H*s)
    if min(dims) < 1:
        raise GeometryError(f"{_label(spec, index)}: scale {scale} leaves an empty output")
    step = Step(output=(shape[0], *dims), rf_undefined=True)
    step.say(Topic.shape, *_axes([f"{AXES[i] if i < 2 else 'D'}: floor({x}*{scale:g}) = {o}"
                                  for i, (x, o) in enumerate(zip(shape[1:], dims))]))
    return step


def apply(spec: LayerSpec, shape: Shape, index: int) -> Step:
    """The effect of one layer on an input of `shape` (no batch dimension)."""
    kind = spec.kind
    if kind in ("conv", "pwconv", "dwconv"):
        c = _need_spatial(spec, shape, index)[0]
        k, p, d = ((1, 1), (0, 0), (1, 1)) if kind == "pwconv" else (spec["k"], spec["p"], spec["d"])
        # depthwise: groups = in
        out, g = (c * spec["m"], c) if kind == "dwconv" else (spec["out"], spec["g"])
        return _conv(spec, shape, index, out_ch=out, k=k, s=spec["s"], p=p, d=d, g=g, bias=spec["bias"])
    if kind == "dwsep":
        c = _need_spatial(spec, shape, index)[0]
        dw = _conv(spec, shape, index, out_ch=c, k=spec["k"], s=spec["s"], p=spec["p"], d=spec["d"], g=c,
                   bias=spec["bias"], part="depthwise ")
        pw = _conv(spec, dw.output, index, out_ch=spec["out"], k=(1, 1), s=(1, 1), p=(0, 0), d=(1, 1), g=1,
                   bias=spec["bias"], part="pointwise ")
        return Step(output=pw.output, params=dw.params + pw.params, macs=dw.macs + pw.macs, window=dw.window,
                    explain=dw.explain + [f for f in pw.explain if f.topic is not Topic.shape],
                    notes=dw.notes)
    if kind == "tconv":
        return _tconv(spec, shape, index)
    if kind in ("maxpool", "avgpool"):
        c = _need_spatial(spec, shape, index)[0]
        return _sliding(spec, shape, index, out_ch=c, k=spec["k"], s=spec["s"] or spec["k"], p=spec["p"],
                        d=spec.get("d", (1, 1)), ceil=spec["ceil"], pooling=True)
    if kind in ("gap", "adaptivepool"):
        return _adaptive(spec, shape, index)
    if kind == "flatten":
        n = math.prod(shape)
        step = Step(output=(n,), rf_global=len(shape) > 1)
        if len(shape) > 1:
            step.say(Topic.shape, f"{'*'.join(map(str, shape))} = {n:,} features")
        return step
    if kind == "fc":
        return _fc(spec, shape)
    if kind == "bn":
        step = Step(output=shape, params=2 * shape[0])
        step.say(Topic.params,
                 f"params: 2*{shape[0]} = {2 * shape[0]} (weight and bias; running mean/var are "
                               "buffers)")
        return step
    if kind == "upsample":
        return _upsample(spec, shape, index)
    if kind in ("lstm", "gru", "rnn"):
        return _rnn(spec, shape)
    if kind == "dropout" or kind in POINTWISE:
        return Step(output=shape)
    raise SpecError(f"{_label(spec, index)}: no arithmetic for '{kind}'")  # unreachable for parsed specs


# --- receptive fields ---------------------------------------------------------------------------------------


def grow_field(fld: Window, window: Window) -> Window:
    """One Araujo et al. (2019) step per axis: r += (k-1)*S, P += p*S, S *= s (k the dilated extent)."""
    return tuple((r + (k - 1) * S, S * s, P + p * S) for (r, S, P), (k, s, p) in zip(fld, window))  # type: ignore


def to_field(fld: Window) -> Field:
    return Field(size=(fld[0][0], fld[1][0]), stride=(fld[0][1], fld[1][1]), padding=(fld[0][2], fld[1][2]))


def explain_field(old: Window, window: Window) -> Formula:
    (r, S, P), (k, s, p) = old[0], window[0]
    line = (f"rf: r = {r} + ({k}-1)*{S} = {r + (k - 1) * S}, S = {S}*{s} = {S * s}, "
            f"P = {P} + {p}*{S} = {P + p * S}")
    if old[0] != old[1] or window[0] != window[1]:
        (r, S, P), (k, s, p) = old[1], window[1]
        line += f"; W: r = {r + (k - 1) * S}, S = {S * s}, P = {P + p * S}"
    return Formula(Topic.rf, line)
