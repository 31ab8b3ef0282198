"""Per-layer arithmetic, exactly as PyTorch computes it: output shape, parameters, MACs, receptive field.

Every formula states its source and convention once (see ../shared/CONVENTIONS.md):
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

from nnkit.core.report import Field, Shape
from nnkit.core.spec import POINTWISE, LayerSpec
from nnkit.errors import GeometryError, SpecError

AXES = ("H", "W")
UNITS = (("row", "rows"), ("column", "columns"))


@dataclass
class Step:
    """What one layer does to its input: the numbers and the worked formulas."""

    output: Shape
    params: int = 0
    macs: int = 0
    # receptive-field transform per axis: (kernel extent, stride, left padding); None = pointwise
    window: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None
    rf_global: bool = False  # the output depends on the whole input
    rf_undefined: bool = False  # upsampling: no integer receptive field (Araujo et al. cover downsampling)
    explain: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _fmt_pair(a: int, b: int) -> str:
    return str(a) if a == b else f"{a}x{b}"


def _label(spec: LayerSpec, index: int) -> str:
    return f"layer {index} {spec.text}"


def _need_spatial(spec: LayerSpec, shape: Shape, index: int) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise GeometryError(f"{_label(spec, index)}: needs a CxHxW input, got {'x'.join(map(str, shape))}"
                            + (" (add no flatten before it)" if len(shape) == 1 else ""))
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


def _window_axis(ax: int, size: int, k: int, s: int, pl: int, pr: int, d: int, ceil: bool,
                 pooling: bool, label: str) -> tuple[int, str, str | None]:
    """Output length along one axis for a sliding window (conv or pool).

    out = floor((H + pl + pr - d*(k-1) - 1)/s) + 1 (nn.Conv2d, nn.MaxPool2d docs); with ceil_mode, ceil instead
    of floor, but a last window that would start in the right padding is dropped (aten pooling_output_shape).
    """
    extent = d * (k - 1) + 1
    padded = size + pl + pr
    if padded < extent and not (pooling and ceil):  # ceil-mode pooling may take a window past the input
        raise GeometryError(f"{label}: input {AXES[ax]}={size}"
                            + (f" padded to {padded}" if pl + pr else "")
                            + f" is smaller than the {extent}-wide window" + (f" (kernel {k}, dilation {d})" if d > 1 else ""))
    num = padded - extent
    out = (num + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= size + pl:
        out -= 1
    if out < 1:
        raise GeometryError(f"{label}: output {AXES[ax]} would be {out}: the window does not fit input {size}")
    pad_txt = f"2*{pl}" if pl == pr else f"{pl}+{pr}"
    if d == 1:
        expr = f"({size} - {k} + {pad_txt})/{s} + 1"
    else:
        expr = f"({size} + {pad_txt} - {d}*({k}-1) - 1)/{s} + 1"
    exact = num % s == 0
    if exact:
        line = f"{AXES[ax]}: {expr} = {out}"
    else:
        q = num / s + 1
        line = f"{AXES[ax]}: {expr} = {q:g} -> {out} ({'ceil' if ceil else 'floor'})"
    note = None
    if not exact and not ceil:
        left_out = num % s
        unit = UNITS[ax][0] if left_out == 1 else UNITS[ax][1]
        note = f"the last window leaves {left_out} {unit} out ({AXES[ax]}: {num} is not a multiple of stride {s})"
    elif not exact and ceil:
        note = f"ceil mode adds a partial last window on {AXES[ax]}"
    return out, line, note


def _merge_notes(notes: list[str]) -> list[str]:
    """The same remark for rows and columns reads once: 'leaves 1 row and 1 column out'."""
    if len(notes) == 2 and notes[0].startswith("the last window leaves") and notes[1].startswith("the last window"):
        a, b = notes[0].split(" (")[0], notes[1].split(" (")[0].replace("the last window leaves ", "")
        return [a.replace(" out", f" and {b}")]
    if len(notes) == 2 and notes[0].startswith("ceil mode") and notes[1].startswith("ceil mode"):
        return ["ceil mode adds a partial last window on H and W"]
    return notes


def _axes(explain_lines: list[str]) -> list[str]:
    """'H: ... = 32' and 'W: ... = 32' with the same formula become one 'H, W: ...' line, as a textbook writes."""
    if len(explain_lines) == 2 and explain_lines[0][3:] == explain_lines[1][3:]:
        return ["H, W: " + explain_lines[0][3:]]
    return explain_lines


def _sliding(spec: LayerSpec, shape: Shape, index: int, *, out_ch: int, k: tuple[int, int],
             s: tuple[int, int], p, d: tuple[int, int], ceil: bool, pooling: bool) -> tuple[Shape, Step]:
    c, h, w = _need_spatial(spec, shape, index)
    label = _label(spec, index)
    pre: list[str] = []
    if p == "same":
        pl, pr, pre = _same_padding(spec, index, k, d, s)
    elif p == "valid":
        pl = pr = (0, 0)
    else:
        pl = pr = p
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
    step = Step(output=(out_ch, outs[0], outs[1]), explain=_axes(pre) + _axes(lines), notes=_merge_notes(notes),
                window=tuple((d[ax] * (k[ax] - 1) + 1, s[ax], pl[ax]) for ax in range(2)))  # type: ignore[arg-type]
    return step.output, step


def _conv(spec: LayerSpec, shape: Shape, index: int, *, out_ch: int, k, s, p, d, g: int, bias: bool,
          what: str = "conv") -> Step:
    c = _need_spatial(spec, shape, index)[0]
    label = _label(spec, index)
    if c % g or out_ch % g:
        raise GeometryError(f"{label}: groups={g} must divide both the {c} input and {out_ch} output channels")
    _, step = _sliding(spec, shape, index, out_ch=out_ch, k=k, s=s, p=p, d=d, ceil=False, pooling=False)
    per = c // g
    kh, kw = k
    step.params = out_ch * kh * kw * per + (out_ch if bias else 0)
    ho, wo = step.output[1], step.output[2]
    step.macs = out_ch * ho * wo * kh * kw * per
    cin = f"{per}" if g in (1, c) else f"({c}/{g})"
    step.explain.append(f"params: {out_ch}*{kh}*{kw}*{cin}" + (f" + {out_ch}" if bias else "") + f" = {step.params:,}"
                        + ("" if bias else " (no bias)"))
    step.explain.append(f"MACs: {out_ch}*{ho}*{wo} outputs * {kh}*{kw}*{cin} = {step.macs:,}")
    return step


def _tconv(spec: LayerSpec, shape: Shape, index: int) -> Step:
    """ConvTranspose2d: out = (H-1)*s - 2p + d*(k-1) + op + 1 (nn.ConvTranspose2d docs; Dumoulin & Visin's a=op).

    MACs use the input volume: every input element meets every weight of its group once (CONVENTIONS.md).
    """
    c, h, w = _need_spatial(spec, shape, index)
    label = _label(spec, index)
    out_ch, k, s, p, op, d, g, bias = (spec[x] for x in ("out", "k", "s", "p", "op", "d", "g", "bias"))
    if c % g or out_ch % g:
        raise GeometryError(f"{label}: groups={g} must divide both the {c} input and {out_ch} output channels")
    outs, lines = [], []
    for ax, size in enumerate((h, w)):
        if op[ax] >= max(s[ax], d[ax]):
            raise GeometryError(f"{label}: output padding {op[ax]} must be smaller than the stride {s[ax]} or "
                                f"the dilation {d[ax]}")
        o = (size - 1) * s[ax] - 2 * p[ax] + d[ax] * (k[ax] - 1) + op[ax] + 1
        if o <= 0:
            raise GeometryError(f"{label}: output {AXES[ax]} would be {o}: padding {p[ax]} is too large")
        lines.append(f"{AXES[ax]}: ({size} - 1)*{s[ax]} - 2*{p[ax]} + {d[ax]}*({k[ax]}-1) + {op[ax]} + 1 = {o}")
        outs.append(o)
    per_out = out_ch // g
    params = c * per_out * k[0] * k[1] + (out_ch if bias else 0)
    macs = c * h * w * per_out * k[0] * k[1]
    cout = f"{per_out}" if g == 1 else f"({out_ch}/{g})"
    explain = _axes(lines) + [
        f"params: {c}*{cout}*{k[0]}*{k[1]}" + (f" + {out_ch}" if bias else "") + f" = {params:,}",
        f"MACs: {c}*{h}*{w} inputs * {cout}*{k[0]}*{k[1]} = {macs:,}",
    ]
    return Step(output=(out_ch, outs[0], outs[1]), params=params, macs=macs, rf_undefined=True, explain=explain)


def _rnn(spec: LayerSpec, shape: Shape, index: int) -> Step:
    """nn.LSTM/GRU/RNN: per layer and direction, gates*hidden*(input + hidden) weights + 2*gates*hidden biases.

    The last dimension is the feature size; the leading ones are the sequence (their product is the number of
    steps, 1 for a single feature vector). MACs: gates*hidden*(input + hidden) per step, layer and direction.
    """
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[spec.kind]
    hidden, layers, bidir, bias = spec["hidden"], spec["layers"], spec["bidir"], spec["bias"]
    dirs = 2 if bidir else 1
    feat = shape[-1]
    steps = math.prod(shape[:-1])
    params = macs = 0
    explain = []
    inp = feat
    for layer in range(layers):
        per_dir = gates * hidden * (inp + hidden) + (2 * gates * hidden if bias else 0)
        params += per_dir * dirs
        macs += gates * hidden * (inp + hidden) * dirs * steps
        bias_txt = f" + 2*{gates}*{hidden}" if bias else ""
        explain.append(f"layer {layer + 1}: ({gates}*{hidden}*({inp}+{hidden}){bias_txt})"
                       + (f" * {dirs} directions" if dirs > 1 else "") + f" = {per_dir * dirs:,}")
        inp = hidden * dirs
    explain.append(f"params: {params:,} ({gates} gate{'s' if gates > 1 else ''}, {spec.kind.upper()})")
    explain.append(f"MACs: {macs:,} over {steps} step{'s' if steps > 1 else ''}")
    return Step(output=(*shape[:-1], hidden * dirs), params=params, macs=macs, explain=explain)


def apply(spec: LayerSpec, shape: Shape, index: int) -> Step:
    """The effect of one layer on an input of `shape` (no batch dimension)."""
    kind = spec.kind
    label = _label(spec, index)
    if kind == "conv":
        return _conv(spec, shape, index, out_ch=spec["out"], k=spec["k"], s=spec["s"], p=spec["p"], d=spec["d"],
                     g=spec["g"], bias=spec["bias"])
    if kind == "pwconv":
        return _conv(spec, shape, index, out_ch=spec["out"], k=(1, 1), s=spec["s"], p=(0, 0), d=(1, 1),
                     g=spec["g"], bias=spec["bias"])
    if kind == "dwconv":
        c = _need_spatial(spec, shape, index)[0]
        return _conv(spec, shape, index, out_ch=c * spec["m"], k=spec["k"], s=spec["s"], p=spec["p"], d=spec["d"],
                     g=c, bias=spec["bias"])
    if kind == "dwsep":
        c = _need_spatial(spec, shape, index)[0]
        dw = _conv(spec, shape, index, out_ch=c, k=spec["k"], s=spec["s"], p=spec["p"], d=spec["d"], g=c,
                   bias=spec["bias"])
        pw = _conv(spec, dw.output, index, out_ch=spec["out"], k=(1, 1), s=(1, 1), p=(0, 0), d=(1, 1), g=1,
                   bias=spec["bias"])
        return Step(output=pw.output, params=dw.params + pw.params, macs=dw.macs + pw.macs, window=dw.window,
                    explain=[f"depthwise {line}" if line.startswith(("params", "MACs")) else line
                             for line in dw.explain]
                    + [f"pointwise {line}" for line in pw.explain if line.startswith(("params", "MACs"))],
                    notes=dw.notes)
    if kind == "tconv":
        return _tconv(spec, shape, index)
    if kind in ("maxpool", "avgpool"):
        k = spec["k"]
        s = spec["s"] or k
        d = spec.get("d", (1, 1))
        out, step = _sliding(spec, shape, index, out_ch=shape[0] if len(shape) == 3 else 0, k=k, s=s,
                             p=spec["p"], d=d, ceil=spec["ceil"], pooling=True)
        return step
    if kind in ("gap", "adaptivepool"):
        c, h, w = _need_spatial(spec, shape, index)
        oh, ow = (1, 1) if kind == "gap" else spec["size"]
        step = Step(output=(c, oh, ow), explain=[f"{c}x{h}x{w} -> {c}x{oh}x{ow} (adaptive average pooling)"])
        if (oh, ow) == (h, w):
            return step
        if h % oh == 0 and w % ow == 0:
            # Each output cell averages a (H/oh)x(W/ow) block: exactly a pool with k = s = H/oh (aten adaptive pool).
            step.window = ((h // oh, h // oh, 0), (w // ow, w // ow, 0))
            if (oh, ow) == (1, 1):
                step.rf_global = True
        else:
            step.rf_global = True
            step.notes.append(f"adaptive windows on {h}x{w} -> {oh}x{ow} overlap unevenly")
        return step
    if kind == "flatten":
        n = math.prod(shape)
        return Step(output=(n,), rf_global=len(shape) > 1,
                    explain=[f"{'*'.join(map(str, shape))} = {n:,} features"] if len(shape) > 1 else [])
    if kind == "fc":
        feat, out = shape[-1], spec["out"]
        rows = math.prod(shape[:-1])
        params = feat * out + (out if spec["bias"] else 0)
        step = Step(output=(*shape[:-1], out), params=params, macs=rows * feat * out, rf_global=True,
                    explain=[f"params: {out}*{feat}" + (f" + {out}" if spec["bias"] else "") + f" = {params:,}",
                             f"MACs: {'%d*' % rows if rows > 1 else ''}{out}*{feat} = {rows * feat * out:,}"])
        if len(shape) > 1:
            step.notes.append(f"fc acts on the last axis ({feat}) of {'x'.join(map(str, shape))}, as nn.Linear does; "
                              "put flatten before it to connect every input")
        return step
    if kind == "bn":
        c = shape[0]
        return Step(output=shape, params=2 * c,
                    explain=[f"params: 2*{c} = {2 * c} (weight and bias; running mean/var are buffers)"])
    if kind == "upsample":
        if len(shape) < 2:
            raise GeometryError(f"{label}: needs a CxHxW input, got {'x'.join(map(str, shape))}")
        scale = spec["scale"]
        # nn.Upsample(scale_factor=s): out = floor(H*s)
        dims = tuple(int(math.floor(x * scale)) for x in shape[1:])
        if min(dims) < 1:
            raise GeometryError(f"{label}: scale {scale} leaves an empty output")
        return Step(output=(shape[0], *dims), rf_undefined=True,
                    explain=[f"{AXES[i] if i < 2 else 'D'}: floor({x}*{scale:g}) = {o}"
                             for i, (x, o) in enumerate(zip(shape[1:], dims))])
    if kind in ("lstm", "gru", "rnn"):
        return _rnn(spec, shape, index)
    if kind == "dropout" or kind in POINTWISE:
        return Step(output=shape)
    raise SpecError(f"{label}: no arithmetic for '{kind}'")  # unreachable for parsed specs


def grow_field(fld: tuple[tuple[int, int, int], ...], window: tuple[tuple[int, int, int], ...]) \
        -> tuple[tuple[int, int, int], ...]:
    """One Araujo et al. (2019) step per axis: r += (k-1)*S, P += p*S, S *= s (k the dilated extent)."""
    return tuple((r + (k - 1) * S, S * s, P + p * S) for (r, S, P), (k, s, p) in zip(fld, window))


def to_field(fld: tuple[tuple[int, int, int], ...]) -> Field:
    return Field(size=(fld[0][0], fld[1][0]), stride=(fld[0][1], fld[1][1]), padding=(fld[0][2], fld[1][2]))


def explain_field(old: tuple[tuple[int, int, int], ...], window: tuple[tuple[int, int, int], ...]) -> str:
    (r, S, P), (k, s, p) = old[0], window[0]
    line = f"rf: r = {r} + ({k}-1)*{S} = {r + (k - 1) * S}, S = {S}*{s} = {S * s}, P = {P} + {p}*{S} = {P + p * S}"
    if old[0] != old[1] or window[0] != window[1]:
        (r, S, P), (k, s, p) = old[1], window[1]
        line += f"; W: r = {r + (k - 1) * S}, S = {S * s}, P = {P + p * S}"
    return line
