"""Per-layer arithmetic, exactly as PyTorch computes it: output shape, parameters, MACs, receptive field.

Every formula states its source and convention once (see ../shared/CONVENTIONS.md):
- shapes: PyTorch nn docs (Conv2d, ConvTranspose2d, MaxPool2d, AvgPool2d, Upsample, LSTM);
  Dumoulin & Visin, "A guide to convolution arithmetic for deep learning" (2016);
- MACs: multiply-accumulates of conv (grouped, depthwise, transposed), linear and recurrent gates; bias,
  BatchNorm, activations and pooling count zero (torchvision's GFLOPS column, MobileNet's Mult-Adds);
- receptive fields: Araujo, Norris & Sim, Distill 2019; through upsampling, nnkit's rule (see `AxisMap`).
Shapes exclude the batch dimension; MACs are for one item (nnkit.core.chain multiplies by the batch).
"""

from __future__ import annotations

import itertools
import math
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from nnkit.core.report import Field, Formula, Shape, Topic
from nnkit.core.spec import POINTWISE, RANK, TOKEN_KINDS, LayerSpec
from nnkit.errors import GeometryError, SpecError

# Axis names and what one unit of each is called, by the number of spatial axes (1-D: L; 2-D: H, W; 3-D: D, H,
# W).
AXES_OF = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}
UNITS_OF = {"L": ("position", "positions"), "D": ("slice", "slices"), "H": ("row", "rows"),
            "W": ("column", "columns")}
INPUT_OF = {1: "CxL", 2: "CxHxW", 3: "CxDxHxW"}
Window = tuple[tuple[int, int, int], ...]  # per axis: (dilated extent, stride, left padding)


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
    # upsampling (tconv, upsample): per axis, which inputs each output reads
    resample: tuple[AxisMap, ...] | None = None
    taps: tuple[AxisMap, ...] | None = None  # the same for a sliding window, with its dilation (for the rule above)
    explain: list[Formula] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def say(self, topic: Topic, *lines: str) -> None:
        self.explain += [Formula(topic, line) for line in lines]


def _label(spec: LayerSpec, index: int) -> str:
    return f"layer {index} {spec.text}"


def _dims(shape: Shape) -> str:
    return "x".join(map(str, shape))


def _need_spatial(spec: LayerSpec, shape: Shape, index: int, rank: int = 2) -> Shape:
    """The input of an n-D layer: channels and then exactly `rank` spatial sizes."""
    if len(shape) != rank + 1:
        hint = " (a feature vector: is there a flatten or fc before it?)" if len(shape) == 1 else ""
        raise GeometryError(f"{_label(spec, index)}: needs a {INPUT_OF[rank]} input, got "
                            f"{_dims(shape)}{hint}")
    return shape


def _any_spatial(spec: LayerSpec, shape: Shape, index: int) -> int:
    """The rank of a layer that works at any rank (gap, adaptivepool, upsample, in): its input's, 1 to 3."""
    rank = len(shape) - 1
    if rank not in AXES_OF:
        raise GeometryError(f"{_label(spec, index)}: needs a CxL, CxHxW or CxDxHxW input, got {_dims(shape)}")
    return rank


def _rank_of(spec: LayerSpec) -> int:
    return RANK.get(spec.kind, 2)


def _same_padding(spec: LayerSpec, index: int, k: tuple[int, ...], d: tuple[int, ...],
                  s: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], list[str]]:
    """padding='same': PyTorch pads d*(k-1) in total, the odd one on the right/bottom (nn.Conv2d docs)."""
    if any(x != 1 for x in s):
        raise SpecError(f"{_label(spec, index)}: padding='same' is not supported for strided convolutions "
                        "in PyTorch; give p explicitly (nnkit solve same -k K -s S --input H finds it)")
    axes = AXES_OF[len(k)]
    left, right, lines = [], [], []
    for ax in range(len(k)):
        total = d[ax] * (k[ax] - 1)
        left.append(total // 2)
        right.append(total - total // 2)
        asym = f" (PyTorch pads {total // 2} before, {total - total // 2} after)" if total % 2 else ""
        lines.append(f"{axes[ax]}: same padding = {d[ax]}*({k[ax]}-1) = {total} in total{asym}")
    return tuple(left), tuple(right), lines


def _decimal(numerator: int, denominator: int) -> str:
    """An exact-enough quotient for a textbook line: 14.5, 250001.25, 2.3333."""
    return f"{numerator / denominator:.4f}".rstrip("0").rstrip(".")


def _window_axis(axis: str, size: int, k: int, s: int, pl: int, pr: int, d: int, ceil: bool, pooling: bool,
                 label: str) -> tuple[int, str, str | None]:
    """Output length along one axis for a sliding window, its worked formula and a note worth knowing."""
    extent = d * (k - 1) + 1
    padded = size + pl + pr
    if padded < extent and not (pooling and ceil):  # ceil-mode pooling may take a window past the input
        raise GeometryError(f"{label}: input {axis}={size}"
                            + (f" padded to {padded}" if pl + pr else "")
                            + f" is smaller than the {extent}-wide window"
                            + (f" (kernel {k}, dilation {d})" if d > 1 else ""))
    out, before_drop = window_out(size, k, s, pl, pr, d, ceil)
    if out < 1:
        raise GeometryError(f"{label}: output {axis} would be {out}: the window does not fit input {size}")
    num = padded - extent
    pad_txt = f"2*{pl}" if pl == pr else f"{pl}+{pr}"
    if d == 1:
        expr = f"({size} - {k} + {pad_txt})/{s} + 1"
    else:
        expr = f"({size} + {pad_txt} - {d}*({k}-1) - 1)/{s} + 1"
    note = None
    if num % s == 0:
        line = f"{axis}: {expr} = {out}"
    elif not ceil:
        line = f"{axis}: {expr} = {_decimal(num + s, s)} -> {out} (floor)"
        # What no window covers lies at the end of the padded input: right padding first, then real input.
        lost = num % s - pr
        if lost > 0:
            unit = UNITS_OF[axis][0] if lost == 1 else UNITS_OF[axis][1]
            note = f"the last window leaves {lost} input {unit} out"
    elif out == before_drop:
        line = f"{axis}: {expr} = {_decimal(num + s, s)} -> {out} (ceil)"
        note = f"ceil mode adds a last window that reaches past the input on {axis}"
    else:
        line = (f"{axis}: {expr} = {_decimal(num + s, s)} -> {before_drop} (ceil); the last window would "
                f"start in the padding, so PyTorch drops it: {out}")
    return out, line, note


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _merge_notes(notes: list[str]) -> list[str]:
    """The same remark for several axes reads once: 'leaves 1 input row and 1 input column out'."""
    lost = "the last window leaves "
    if len(notes) > 1 and all(n.startswith(lost) for n in notes):
        return [lost + _and([n[len(lost):-len(" out")] for n in notes]) + " out"]
    ceil = "ceil mode adds a last window that reaches past the input on "
    if len(notes) > 1 and all(n.startswith(ceil) for n in notes):
        return [ceil + _and([n[len(ceil):] for n in notes])]
    return notes


def _axes(lines: list[str]) -> list[str]:
    """'H: ... = 32' and 'W: ... = 32' with the same formula become one 'H, W: ...' line, as a textbook
    writes."""
    if len(lines) > 1 and all(line[3:] == lines[0][3:] for line in lines):  # every axis name is one letter
        return [", ".join(line[0] for line in lines) + ": " + lines[0][3:]]
    return lines


def _sliding(spec: LayerSpec, shape: Shape, index: int, *, out_ch: int, k: tuple[int, ...],
             s: tuple[int, ...], p: tuple[int, ...] | str, d: tuple[int, ...], ceil: bool,
             pooling: bool) -> Step:
    rank = len(k)
    sizes = _need_spatial(spec, shape, index, rank)[1:]
    label = _label(spec, index)
    pre: list[str] = []
    if p == "same":
        pl, pr, pre = _same_padding(spec, index, k, d, s)
    elif p == "valid":
        pl = pr = (0,) * rank
    else:
        pl = pr = p  # type: ignore[assignment]
    if pooling:
        for ax in range(rank):
            if pl[ax] > k[ax] // 2:
                raise GeometryError(f"{label}: padding {pl[ax]} is more than half the {k[ax]}-wide window; "
                                    "PyTorch requires p <= k/2 for pooling")
    outs, lines, notes = [], [], []
    for ax, size in enumerate(sizes):
        o, line, note = _window_axis(AXES_OF[rank][ax], size, k[ax], s[ax], pl[ax], pr[ax], d[ax], ceil,
                                     pooling,
                                     label)
        outs.append(o)
        lines.append(line)
        if note:
            notes.append(note)
    step = Step(output=(out_ch, *outs), notes=_merge_notes(notes),
                window=tuple((d[ax] * (k[ax] - 1) + 1, s[ax], pl[ax]) for ax in range(rank)),
                taps=tuple(AxisMap("window", k[ax], s[ax], pl[ax], d[ax]) for ax in range(rank)))
    step.say(Topic.shape, *_axes(pre), *_axes(lines))
    return step


def _times(sizes: tuple[int, ...]) -> str:
    return "*".join(map(str, sizes))


def _conv(spec: LayerSpec, shape: Shape, index: int, *, out_ch: int, k: tuple[int, ...], s: tuple[int, ...],
          p: tuple[int, ...] | str, d: tuple[int, ...], g: int, bias: bool, part: str = "") -> Step:
    """nn.Conv1d/2d/3d: out*(in/groups)*prod(k) weights (+ out biases); MACs that many at every output
    position."""
    c = _need_spatial(spec, shape, index, len(k))[0]
    if c % g or out_ch % g:
        raise GeometryError(f"{_label(spec, index)}: groups={g} must divide both the {c} input and {out_ch} "
                            "output channels")
    step = _sliding(spec, shape, index, out_ch=out_ch, k=k, s=s, p=p, d=d, ceil=False, pooling=False)
    per = c // g
    step.params = out_ch * math.prod(k) * per + (out_ch if bias else 0)
    positions = step.output[1:]
    step.macs = out_ch * math.prod(positions) * math.prod(k) * per
    cin = f"{per}" if g in (1, c) else f"({c}/{g})"
    step.say(Topic.params, f"{part}params: {out_ch}*{_times(k)}*{cin}" + (f" + {out_ch}" if bias else "")
             + f" = {step.params:,}" + ("" if bias else " (no bias)"))
    step.say(Topic.macs,
             f"{part}MACs: {out_ch}*{_times(positions)} outputs * {_times(k)}*{cin} = {step.macs:,}")
    return step


def _tconv(spec: LayerSpec, shape: Shape, index: int) -> Step:
    """ConvTranspose1d/2d/3d; MACs use the input volume: every input element meets every weight of its group
    once."""
    out_ch, k, s, p, op, d, g, bias = (spec[x] for x in ("out", "k", "s", "p", "op", "d", "g", "bias"))
    rank = len(k)
    c, *sizes = _need_spatial(spec, shape, index, rank)
    label = _label(spec, index)
    if c % g or out_ch % g:
        raise GeometryError(f"{label}: groups={g} must divide both the {c} input and {out_ch} output "
                            "channels")
    outs, lines = [], []
    for ax, size in enumerate(sizes):
        axis = AXES_OF[rank][ax]
        if op[ax] >= max(s[ax], d[ax]):
            raise GeometryError(f"{label}: output padding {op[ax]} must be smaller than the stride {s[ax]} "
                                f"or the dilation {d[ax]}")
        o = tconv_out(size, k[ax], s[ax], p[ax], op[ax], d[ax])
        if o <= 0:
            raise GeometryError(f"{label}: output {axis} would be {o}: padding {p[ax]} is too large")
        lines.append(f"{axis}: ({size} - 1)*{s[ax]} - 2*{p[ax]} + {d[ax]}*({k[ax]}-1) + {op[ax]} + 1 = {o}")
        outs.append(o)
    per_out = out_ch // g
    params = c * per_out * math.prod(k) + (out_ch if bias else 0)
    macs = c * math.prod(sizes) * per_out * math.prod(k)
    cout = f"{per_out}" if g == 1 else f"({out_ch}/{g})"
    step = Step(output=(out_ch, *outs), params=params, macs=macs,
                resample=tuple(AxisMap("tconv", k[ax], s[ax], p[ax], d[ax], n=sizes[ax]) for ax in range(rank)))
    step.say(Topic.shape, *_axes(lines))
    step.say(Topic.params,
             f"params: {c}*{cout}*{_times(k)}" + (f" + {out_ch}" if bias else "") + f" = {params:,}")
    step.say(Topic.macs, f"MACs: {c}*{_times(tuple(sizes))} inputs * {cout}*{_times(k)} = {macs:,}")
    return step


def _rnn(spec: LayerSpec, shape: Shape) -> Step:
    """nn.LSTM/GRU/RNN: per layer and direction, gates*hidden*(input + hidden) weights + 2*gates*hidden
    biases.

    The last dimension is the feature size; the leading ones are the sequence and the batch (their product is
    the number of steps, 1 for a single feature vector): [seq, batch, features] as nn.LSTM reads a 3-D input,
    or [batch, seq, features] with batch_first=true. MACs: gates*hidden*(input + hidden) per step, layer,
    direction.
    """
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[spec.kind]
    hidden, layers, bidir, bias = spec["hidden"], spec["layers"], spec["bidir"], spec["bias"]
    dirs = 2 if bidir else 1
    steps = math.prod(shape[:-1])
    # Each step's state carries every earlier step (and, bidirectional, every later one): no local field.
    step = Step(output=(*shape[:-1], hidden * dirs), rf_global=True)
    if len(shape) == 3:
        a, b, f = shape
        layout = (f"[batch {a}, seq {b}, features {f}] (batch_first=true)" if spec["batch_first"] else
                  f"[seq {a}, batch {b}, features {f}] (batch_first=false, as nn.{spec.kind.upper()} reads "
                  "it)")
        step.say(Topic.shape, f"input {_dims(shape)} is {layout} -> {_dims(step.output)}")
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
    """nn.AdaptiveAvgPool1d/2d/3d by the input's rank; gap is an output of 1 on every axis."""
    rank = _any_spatial(spec, shape, index)
    c, *sizes = shape
    size = 1 if spec.kind == "gap" else spec["size"]
    outs = (size,) * rank if isinstance(size, int) else size
    if len(outs) != rank:
        raise GeometryError(f"{_label(spec, index)}: an output size of {len(outs)} axes for a {rank}-D input "
                            f"{_dims(shape)} (give one size, or {'x'.join(AXES_OF[rank])})")
    step = Step(output=(c, *outs))
    step.say(Topic.shape, f"{_dims(shape)} -> {_dims(step.output)} (adaptive average pooling)")
    if tuple(outs) == tuple(sizes):
        return step
    if all(h % o == 0 for h, o in zip(sizes, outs)):
        # Each output cell averages an (H/oh)x(W/ow) block: exactly a pool with k = s = H/oh (aten adaptive
        # pool).
        step.window = tuple((h // o, h // o, 0) for h, o in zip(sizes, outs))
        step.rf_global = all(o == 1 for o in outs)
    else:
        step.rf_global = True
        step.notes.append(f"adaptive windows on {'x'.join(map(str, sizes))} -> {'x'.join(map(str, outs))} "
                          "overlap unevenly")
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
    """nn.Upsample(scale_factor=s) on CxL, CxHxW or CxDxHxW: floor(size*s) on every spatial axis."""
    rank = _any_spatial(spec, shape, index)
    scale = spec["scale"]
    dims = tuple(math.floor(x * scale) for x in shape[1:])
    if min(dims) < 1:
        raise GeometryError(f"{_label(spec, index)}: scale {scale} leaves an empty output")
    mode = spec.get("mode", "nearest")
    step = Step(output=(shape[0], *dims), resample=tuple(AxisMap(mode, scale=_fraction(scale), n=x) for x in shape[1:]))
    step.say(Topic.shape, *_axes([f"{AXES_OF[rank][i]}: floor({x}*{scale:g}) = {o}"
                                  for i, (x, o) in enumerate(zip(shape[1:], dims))]))
    step.say(Topic.shape, f"mode {mode}: " + (
        "output j copies input floor(j/scale) (nn.Upsample's default)" if mode == "nearest" else
        "output j mixes inputs floor(x) and floor(x)+1, x = (j + 0.5)/scale - 0.5 (align_corners=false)"))
    return step


def _fraction(scale: float) -> Fraction:
    """2 -> 2, 1.5 -> 3/2: the scale as written, not its binary expansion."""
    return Fraction(str(scale))


# --- normalisations -----------------------------------------------------------------------------------------


_BN = {1: "BatchNorm1d", 2: "BatchNorm1d", 3: "BatchNorm2d", 4: "BatchNorm3d"}  # by the rank with channels


def _bn(spec: LayerSpec, shape: Shape, index: int) -> Step:
    """nn.BatchNorm1d (C or CxL), 2d (CxHxW), 3d (CxDxHxW): 2*C parameters, running mean/var are buffers."""
    if len(shape) not in _BN:
        raise GeometryError(f"{_label(spec, index)}: BatchNorm takes C, CxL, CxHxW or CxDxHxW, got "
                            f"{_dims(shape)}")
    step = Step(output=shape, params=2 * shape[0])
    step.say(Topic.params, f"params: 2*{shape[0]} = {2 * shape[0]} (weight and bias; running mean/var are "
                           "buffers)")
    return step


def _norm(spec: LayerSpec, shape: Shape, index: int) -> Step:
    """nn.LayerNorm(last axis), nn.GroupNorm(G, C), nn.InstanceNorm1d/2d/3d(C) (torch.nn docs): a weight and a
    bias per normalised feature (LayerNorm: D) or channel (GroupNorm, InstanceNorm) when affine; no MACs."""
    label = _label(spec, index)
    if spec.kind == "ln":
        d = shape[-1]
        params = (d + (d if spec["bias"] else 0)) if spec["affine"] else 0
        what = (f"params: {d} + {d} = {params}" if spec["affine"] and spec["bias"] else f"params: {params}")
        step = Step(output=shape, params=params)
        step.say(Topic.params, f"{what} (LayerNorm over the last axis, {d} features"
                 + ("" if spec["affine"] else ", elementwise_affine=false") + ")")
        return step
    c = shape[0]
    if spec.kind == "gn":
        g = spec["g"]
        if c % g:
            raise GeometryError(f"{label}: {g} groups do not divide the {c} channel{'s' if c != 1 else ''} "
                                "(GroupNorm needs C % G == 0)")
        # F.group_norm refuses a group of one value (its variance is 0)
        if c // g * math.prod(shape[1:]) == 1:
            raise GeometryError(f"{label}: each of the {g} groups holds one value of {_dims(shape)}; "
                                "GroupNorm needs more to normalise")
        params = 2 * c if spec["affine"] else 0
        step = Step(output=shape, params=params)
        step.say(Topic.params,
                 f"params: {f'2*{c} = ' if params else ''}{params} (GroupNorm: {g} groups of {c // g} "
                 "channels" + ("" if params else ", affine=false") + ")")
        return step
    # InstanceNorm{1,2,3}d: statistics per item and channel over space
    rank = _any_spatial(spec, shape, index)
    if math.prod(shape[1:]) == 1:  # F.instance_norm refuses: one value has no variance to normalise by
        raise GeometryError(f"{label}: InstanceNorm needs more than one position per channel, got "
                            f"{_dims(shape)}")
    params = 2 * c if spec["affine"] else 0
    step = Step(output=shape, params=params)
    step.say(Topic.params, f"params: {f'2*{c} = ' if params else ''}{params} (InstanceNorm{rank}d"
             + (", affine=true)" if params else ": no parameters unless affine=true, as in PyTorch)"))
    return step


# --- tokens: T tokens of D features (torchvision VisionTransformer; Vaswani et al. 2017; Dosovitskiy et al.
# 2021)


def _need_tokens(spec: LayerSpec, shape: Shape, index: int) -> tuple[int, int]:
    if len(shape) != 2:
        raise GeometryError(f"{_label(spec, index)}: needs TxD tokens (T tokens of D features), got "
                            f"{_dims(shape)}"
                            + (" (patch(dim, size) turns a CxHxW image into "
                               "tokens)" if len(shape) == 3 else ""))
    return shape  # type: ignore[return-value]


def _attention_numbers(t: int, d: int, bias: bool) -> tuple[int, int]:
    """nn.MultiheadAttention(D, heads) as self-attention: in_proj 3*D*D (+3D) and out_proj D*D (+D) weights;
    MACs 4*T*D^2 for the projections, T^2*D for Q K^T and T^2*D for the weighted sum (heads change
    neither)."""
    return 4 * d * d + (4 * d if bias else 0), 4 * t * d * d + 2 * t * t * d


def _attn(spec: LayerSpec, shape: Shape, index: int, heads: int, bias: bool, part: str = "") -> Step:
    t, d = _need_tokens(spec, shape, index)
    if d % heads:
        raise GeometryError(f"{_label(spec, index)}: {heads} heads do not divide the {d} features (nn."
                            "MultiheadAttention needs D % heads == 0)")
    params, macs = _attention_numbers(t, d, bias)
    step = Step(output=shape, params=params, macs=macs, rf_global=True)
    step.say(Topic.params, f"{part}params: 4*{d}^2" + (f" + 4*{d}" if bias else "") + f" = {params:,}"
             f" (in_proj 3*{d}*{d}, out_proj {d}*{d}" + (", and their biases" if bias else "") + ")")
    step.say(Topic.macs,
             f"{part}MACs: 4*{t}*{d}^2 + 2*{t}^2*{d} = {macs:,} (Q, K, V and out projections; Q K^T "
             f"and the weighted sum, {heads} heads of {d // heads})")
    return step


def _mlp(spec: LayerSpec, shape: Shape, index: int, hidden: int, bias: bool, part: str = "") -> Step:
    """torchvision's MLPBlock: Linear(D, hidden), GELU, Linear(hidden, D) on every token."""
    t, d = _need_tokens(spec, shape, index)
    params = 2 * d * hidden + ((hidden + d) if bias else 0)
    macs = 2 * t * d * hidden
    step = Step(output=shape, params=params, macs=macs)
    step.say(Topic.params,
             f"{part}params: {d}*{hidden}" + (f" + {hidden}" if bias else "") + f" + {hidden}*{d}"
             + (f" + {d}" if bias else "") + f" = {params:,}")
    step.say(Topic.macs, f"{part}MACs: 2*{t}*{d}*{hidden} = {macs:,}")
    return step


def _encoder(spec: LayerSpec, shape: Shape, index: int) -> Step:
    """torchvision's EncoderBlock (pre-norm): x + attn(ln(x)), then x + mlp(ln(x)); the adds count no MACs."""
    d = _need_tokens(spec, shape, index)[1]
    attn = _attn(spec, shape, index, spec["heads"], True, "attention ")
    mlp = _mlp(spec, shape, index, spec["mlp"], True, "mlp ")
    step = Step(output=shape, params=4 * d + attn.params + mlp.params, macs=attn.macs + mlp.macs,
                rf_global=True,
                explain=attn.explain + mlp.explain)
    step.say(Topic.params, f"params: 2*{d} + {attn.params:,} + 2*{d} + {mlp.params:,} = {step.params:,} "
             "(ln, attention, ln, mlp)")
    step.say(Topic.macs, f"MACs: {attn.macs:,} + {mlp.macs:,} = {step.macs:,}")
    return step


def _patch(spec: LayerSpec, shape: Shape, index: int) -> Step:
    """A Conv2d(C, dim, size, stride=size) whose HxW map becomes H*W tokens of dim features (ViT's
    conv_proj)."""
    size = spec["size"]
    conv = _conv(spec, shape, index, out_ch=spec["dim"], k=size, s=size, p=(0, 0), d=(1, 1), g=1,
                 bias=spec["bias"])
    dim, *grid = conv.output
    tokens = math.prod(grid)
    step = Step(output=(tokens, dim), params=conv.params, macs=conv.macs, explain=conv.explain,
                notes=conv.notes)
    step.say(Topic.shape, f"tokens: {_times(tuple(grid))} = {tokens} tokens of {dim} features")
    return step


def _tokens(spec: LayerSpec, shape: Shape, index: int) -> Step:
    kind = spec.kind
    if kind == "attn":
        return _attn(spec, shape, index, spec["heads"], spec["bias"])
    if kind == "mlp":
        return _mlp(spec, shape, index, spec["hidden"], spec["bias"])
    if kind == "encoder":
        return _encoder(spec, shape, index)
    t, d = _need_tokens(spec, shape, index)
    if kind == "cls":  # torchvision: class_token of shape (1, 1, D), concatenated before the tokens
        step = Step(output=(t + 1, d), params=d)
        step.say(Topic.shape, f"{t} + 1 = {t + 1} tokens (a learned class token first)")
        step.say(Topic.params, f"params: {d} (the class token)")
        return step
    if kind == "pos":  # torchvision: pos_embedding of shape (1, T, D), added to every item
        step = Step(output=shape, params=t * d)
        step.say(Topic.params, f"params: {t}*{d} = {t * d:,} (a learned embedding per position)")
        return step
    i = spec["i"]  # token(i): x[:, i], one token's features
    if not -t <= i < t:
        raise GeometryError(f"{_label(spec, index)}: token {i} of {t} tokens (give 0 to {t - 1}, or -1 for "
                            "the last)")
    step = Step(output=(d,))
    step.say(Topic.shape, f"token {i} of {t}: {d} features")
    return step


def apply(spec: LayerSpec, shape: Shape, index: int) -> Step:
    """The effect of one layer on an input of `shape` (no batch dimension)."""
    kind, rank = spec.kind, _rank_of(spec)
    # conv1d works as conv on one axis
    base = kind[:-2] if kind in RANK and kind[-2:] in ("1d", "3d") else kind
    if base in ("conv", "pwconv", "dwconv"):
        c = _need_spatial(spec, shape, index, rank)[0]
        one, zero = (1,) * rank, (0,) * rank
        k, p, d = (one, zero, one) if base == "pwconv" else (spec["k"], spec["p"], spec["d"])
        # depthwise: groups = in
        out, g = (c * spec["m"], c) if base == "dwconv" else (spec["out"], spec["g"])
        return _conv(spec, shape, index, out_ch=out, k=k, s=spec["s"], p=p, d=d, g=g, bias=spec["bias"])
    if base == "dwsep":
        c = _need_spatial(spec, shape, index, rank)[0]
        one = (1,) * rank
        dw = _conv(spec, shape, index, out_ch=c, k=spec["k"], s=spec["s"], p=spec["p"], d=spec["d"], g=c,
                   bias=spec["bias"], part="depthwise ")
        pw = _conv(spec, dw.output, index, out_ch=spec["out"], k=one, s=one, p=(0,) * rank, d=one, g=1,
                   bias=spec["bias"], part="pointwise ")
        step = Step(output=pw.output, params=dw.params + pw.params, macs=dw.macs + pw.macs, window=dw.window,
                    taps=dw.taps, explain=dw.explain + [f for f in pw.explain if f.topic is not Topic.shape],
                    notes=dw.notes)
        step.say(Topic.params, f"params: {dw.params:,} + {pw.params:,} = {step.params:,}")
        step.say(Topic.macs, f"MACs: {dw.macs:,} + {pw.macs:,} = {step.macs:,}")
        return step
    if base == "tconv":
        return _tconv(spec, shape, index)
    if base in ("maxpool", "avgpool"):
        c, *sizes = _need_spatial(spec, shape, index, rank)
        # aten's pool3d_shape_check: AvgPool3d wants the window inside the unpadded input
        if kind == "avgpool3d":
            for axis, size, k in zip(AXES_OF[3], sizes, spec["k"]):
                if size < k:
                    raise GeometryError(f"{_label(spec, index)}: input {axis}={size} is smaller than the "
                                        f"{k}-wide "
                                        "window (AvgPool3d checks the input before padding)")
        return _sliding(spec, shape, index, out_ch=c, k=spec["k"], s=spec["s"] or spec["k"], p=spec["p"],
                        d=spec.get("d", (1,) * rank), ceil=spec["ceil"], pooling=True)
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
        return _bn(spec, shape, index)
    if kind in ("ln", "gn", "in"):
        return _norm(spec, shape, index)
    if kind == "upsample":
        return _upsample(spec, shape, index)
    if kind in ("lstm", "gru", "rnn"):
        return _rnn(spec, shape)
    if kind == "patch":
        return _patch(spec, shape, index)
    if kind in TOKEN_KINDS:
        return _tokens(spec, shape, index)
    if kind == "dropout" or kind in POINTWISE:
        return Step(output=shape)
    raise SpecError(f"{_label(spec, index)}: no arithmetic for '{kind}'")  # unreachable for parsed specs


# --- receptive fields ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AxisMap:
    """Which input positions one output position of a layer reads, along one axis: nnkit's receptive-field rule for
    layers Araujo et al. (2019) do not cover, written so that it also covers the ones they do.

    - window (conv, pooling; Araujo et al.): output j reads [j*s - p, j*s - p + k - 1] (k the dilated extent).
    - tconv: per Dumoulin & Visin (2016), section 4, a transposed conv is a direct conv on the input with s-1 zeros
      between its elements; equivalently (the PyTorch ConvTranspose docs' scatter form) input i adds into outputs
      i*s - p + t*d, t = 0..k-1, so output o reads the inputs i with o + p - i*s in {0, d, ..., (k-1)*d}: none, one
      or several, depending on o (an output that no tap reaches is its bias alone).
    - nearest (nn.Upsample's default, aten's nearest_idx): output j copies input floor(j/scale), as PyTorch's
      float32 computes it (_nearest).
    - bilinear with align_corners=false (aten's area_pixel_compute_source_index): x = (j + 0.5)/scale - 0.5,
      output j mixes inputs floor(x) and floor(x) + 1 (both neighbours of a whole x that float32 may round
      across: _linear_reads); with align_corners=true (models), x = j*(in-1)/(out-1) in float32 (_corner_reads).
    Upsamplings read only their real input: PyTorch clamps x into it (and at x < 0 the second weight is zero), and
    a tconv has no input past its ends. Windows keep Araujo et al.'s convention and read into their padding. So a
    field that lies inside the input is exact, and one that crosses its border may overstate it, never understate.
    """

    kind: str  # "window", "tconv", "nearest" or "bilinear"
    k: int = 1  # taps, d apart (a window given by its dilated extent, as window_map does, has d = 1)
    s: int = 1
    p: int = 0
    d: int = 1
    scale: Fraction = Fraction(1)
    n: int = 0  # the input's length on this axis (upsamplings read only inside it)
    corners: bool = False  # bilinear with align_corners=true: scale is (out - 1)/(in - 1)

    @property
    def window(self) -> tuple[int, int, int]:
        """A window's axis of Window: (dilated extent, stride, left padding), Araujo et al.'s numbers."""
        return self.d * (self.k - 1) + 1, self.s, self.p

    @property
    def stride(self) -> Fraction:
        """How far, in input positions, the window moves per output position: s, 1/s (tconv) or 1/scale."""
        if self.kind == "window":
            return Fraction(self.s)
        return Fraction(1, self.s) if self.kind == "tconv" else 1 / self.scale

    def reads(self, j: int) -> list[tuple[int, int]]:
        """The input positions output j reads, as sorted disjoint intervals; [] where it reads none."""
        return self.span(j, j)

    def span(self, first: int, last: int) -> list[tuple[int, int]]:
        """The input positions outputs first..last read, as sorted disjoint intervals ([] where they read none):
        a dilated window or tconv leaves gaps, and a hull would let later layers fill them.

        Outputs past the borders (a later conv's padding) are allowed: a window reads into its own padding, as
        Araujo et al. count it; the upsamplings read only their real input, clamped as PyTorch clamps.
        """
        if self.kind == "window":  # tap t of output j reads j*s - p + t*d
            start, end = first * self.s - self.p, last * self.s - self.p + (self.k - 1) * self.d
            if self.d == 1 and (self.k >= self.s or first == last):  # the taps overlap: no gaps
                return [(start, end)]
            if self.d == 1:  # windows narrower than the stride leave the skipped inputs out
                return [(j * self.s - self.p, j * self.s - self.p + self.k - 1) for j in range(first, last + 1)]
            return _merge([(j * self.s - self.p + t * self.d,) * 2 for j in range(first, last + 1)
                           for t in range(self.k)] if self.s > 1 else
                          [(start + t * self.d, last - self.p + t * self.d) for t in range(self.k)])
        top = self.n - 1
        if self.kind == "nearest":
            lo, hi = _nearest(first, self.scale), _nearest(last, self.scale)
            return [(min(max(lo, 0), top), min(max(hi, 0), top))]
        if self.kind == "bilinear" and self.corners:
            return [(_corner_reads(first, self.n, self.scale)[0], _corner_reads(last, self.n, self.scale)[1])]
        if self.kind == "bilinear":
            lo, hi = _linear_reads(first, self.scale)[0], _linear_reads(last, self.scale)[1]
            return [(min(max(lo, 0), top), min(max(hi, 0), top))]
        # tconv: input i reaches outputs i*s - p + t*d; for each tap t the inputs reaching first..last are an
        # interval, and the union of those k intervals is exact.
        spans = []
        for t in range(self.k):
            lo = max(-((-(first + self.p - t * self.d)) // self.s), 0)
            hi = min((last + self.p - t * self.d) // self.s, top)
            if lo <= hi:
                spans.append((lo, hi))
        return _merge(spans)

    def describe(self) -> str:
        if self.kind == "window":
            return f"window k={self.k}, s={self.s}, p={self.p}" + (f", d={self.d}" if self.d > 1 else "")
        if self.kind == "tconv":
            return (f"tconv: output o reads inputs i with o + {self.p} - i*{self.s} in {{0, {self.d}, ..., "
                    f"{(self.k - 1) * self.d}}} (Dumoulin & Visin 2016)")
        if self.kind == "nearest":
            return f"nearest x{self.scale}: output j reads input floor(j/{self.scale})"
        if self.corners:
            return (f"bilinear, align_corners=true: output j reads floor(x), and floor(x)+1 unless x is a whole "
                    f"number, x = j/{self.scale} in float32 as PyTorch computes it")
        return (f"bilinear x{self.scale}: output j reads floor(x) and floor(x)+1, x = (j + 0.5)/{self.scale} - 0.5 "
                "(align_corners=false)")


def _f32(x: float) -> float:
    """x rounded to float32. An operation on float32 values done in float64 and rounded once to float32 is the
    correctly rounded float32 result (float64 has more than 2*24 + 2 bits), so this is PyTorch's arithmetic."""
    return struct.unpack("f", struct.pack("f", x))[0]


def _nearest(j: int, scale: Fraction) -> int:
    """The input output j of a nearest resize copies, as PyTorch computes it (aten's nearest_idx): j itself at
    scale 1, j >> 1 at scale 2, else floorf(j * (1/scale)) in float32, one multiplication that float32
    reproduces exactly (a whole j/scale that float32 rounds down reads the input before it)."""
    if scale == 1:
        return j
    if scale == 2:
        return j >> 1
    return math.floor(_f32(_f32(float(j)) * _f32(float(1 / scale))))


# How far float32 may move x = (j + 0.5)/scale - 0.5 from its exact value, relative to |x| + 1: PyTorch computes it
# in float32 (with or without a fused multiply-add, by CPU), a few units of 2**-24.
_SLACK = Fraction(1, 1 << 20)


def _linear_reads(j: int, scale: Fraction) -> tuple[int, int]:
    """The first and last input of output j of a linear resize with align_corners=false: floor(x) and floor(x) + 1
    at x = (j + 0.5)/scale - 0.5 (aten's area_pixel_compute_source_index). Where x is within float32's rounding
    of a whole number w, PyTorch reads w - 1 and w, or w and w + 1, by how its CPU rounds: both are counted, so
    that the field never leaves out an input PyTorch reads."""
    x = (j + Fraction(1, 2)) / scale - Fraction(1, 2)
    w = round(x)
    if abs(x - w) <= (abs(x) + 1) * _SLACK:
        return w - 1, w + 1
    return math.floor(x), math.floor(x) + 1


def _corner_reads(j: int, n: int, scale: Fraction) -> tuple[int, int]:
    """The first and last input of output j of a bilinear resize with align_corners=true, as PyTorch computes it
    (aten's area_pixel_compute_scale and compute_source_index_and_lambda, in float32): x = j * ((in-1)/(out-1)),
    input trunc(x) always, and the next one only where its weight x - trunc(x) is not zero. Exact rationals would
    be wrong both ways where float32 rounds a whole x below or above it."""
    top = n - 1
    out = scale * top + 1
    ratio = _f32(top / (out - 1)) if out > 1 else 0.0
    x = _f32(ratio * j)
    i = min(max(int(x), 0), top)
    return i, (i + 1 if i < top and x - i > 0 else i)


def window_map(window: Window) -> tuple[AxisMap, ...]:
    return tuple(AxisMap("window", k, s, p) for k, s, p in window)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted disjoint intervals covering the same integers (touching ones join)."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _exact(x: Fraction) -> int | Fraction:
    return int(x) if x.denominator == 1 else x


_SERIAL = itertools.count()  # creation order: a node's sources are always older than it


@dataclass(frozen=True, eq=False)
class Resampled:
    """A receptive field composed position by position (nnkit's rule for fields through upsampling, see AxisMap),
    as one node of the network's graph: the layer's per-axis `reads` of its `sources` (None: a merge, the union of
    its sources' fields, as a concatenation or a sum of paths), each source a Resampled node or an Araujo et al.
    field (Window) of a path that has not upsampled (its output j reads [j*S - P, j*S - P + r - 1]).

    Chains are one path of such nodes from the input; models are graphs (U-Net skips, FPN). Each node keeps, per
    axis, the input positions of every position asked for so far, so that a graph is composed once, not once per
    output position and path.
    """

    reads: tuple[AxisMap, ...] | None
    sources: tuple[Any, ...]
    stride: tuple[Fraction, ...]  # per axis: the product of the strides on the path (the largest at a merge)
    serial: int = field(default_factory=lambda: next(_SERIAL))
    known: tuple[dict[int, tuple[tuple[int, int], ...]], ...] = ()


def _stride_of(src: Any, ax: int) -> Fraction:
    return src.stride[ax] if isinstance(src, Resampled) else Fraction(src[ax][1])


def resample(src: Any, reads: tuple[AxisMap, ...]) -> Resampled:
    """The field after a layer that reads `src` (a Resampled node or an Araujo Window) through `reads`."""
    return Resampled(reads, (src,), tuple(_stride_of(src, ax) * m.stride for ax, m in enumerate(reads)),
                     known=tuple({} for _ in reads))


def union(sources: list[Any]) -> Resampled:
    """The field of a merge (torch.cat, an elementwise sum): every output position reads what each path's does
    there. S is the largest of the paths' (the callers say when they differ)."""
    rank = len(sources[0].stride if isinstance(sources[0], Resampled) else sources[0])
    return Resampled(None, tuple(sources), tuple(max(_stride_of(s, ax) for s in sources) for ax in range(rank)),
                     known=tuple({} for _ in range(rank)))


def _window_reads(win: tuple[int, int, int], first: int, last: int) -> list[tuple[int, int]]:
    """An Araujo et al. field (r, S, P) on one axis: the inputs its positions first..last read."""
    r, S, P = win[0], win[1], win[2]
    if r >= S or first == last:
        return [(first * S - P, last * S - P + r - 1)]
    return [(i * S - P, i * S - P + r - 1) for i in range(first, last + 1)]


def _compose(node: Resampled, ax: int, first: int, last: int) -> dict[int, tuple[tuple[int, int], ...]]:
    """Along axis `ax`, the input positions (sorted disjoint intervals) that each position first..last of `node`
    reads: what positions need of the nodes below them is asked for first (consumers before sources), then filled
    from the sources up, each node's positions once."""
    order: list[Resampled] = []
    seen, stack = {id(node)}, [node]
    while stack:
        n = stack.pop()
        order.append(n)
        for src in n.sources:
            if isinstance(src, Resampled) and id(src) not in seen:
                seen.add(id(src))
                stack.append(src)
    order.sort(key=lambda n: n.serial, reverse=True)  # consumers before their sources
    wanted: dict[int, tuple[int, int]] = {id(node): (first, last)}
    for n in order:
        need = wanted.get(id(n))
        if need is None:
            continue
        lo, hi = need
        spans = n.reads[ax].span(lo, hi) if n.reads is not None else [(lo, hi)]
        if not spans:
            continue
        below = (spans[0][0], spans[-1][1])
        for src in n.sources:
            if isinstance(src, Resampled):
                had = wanted.get(id(src))
                wanted[id(src)] = below if had is None else (min(had[0], below[0]), max(had[1], below[1]))
    for n in reversed(order):  # sources first
        need = wanted.get(id(n))
        if need is None:
            continue
        known = n.known[ax]
        m = n.reads[ax] if n.reads is not None else None
        for j in range(need[0], need[1] + 1):
            if j in known:
                continue
            reads = m.span(j, j) if m is not None else [(j, j)]
            parts: list[tuple[int, int]] = []
            for src in n.sources:
                if isinstance(src, Resampled):
                    below_known = src.known[ax]
                    for a, b in reads:
                        for i in range(a, b + 1):
                            parts.extend(below_known[i])
                else:
                    for a, b in reads:
                        parts.extend(_window_reads(src[ax], a, b))
            known[j] = tuple(_merge(parts))
    return node.known[ax]


def resampled_spans(node: Resampled, ax: int, n: int) -> list[tuple[int, int] | None]:
    """Along axis `ax`, the first and last input position each of the node's n positions reads (None: none).
    Positions past an input's borders are kept, as Araujo et al. keep a conv's padding in its field."""
    known = _compose(node, ax, 0, n - 1)
    return [(known[j][0][0], known[j][-1][1]) if known[j] else None for j in range(n)]


def position_spans(maps: list[tuple[AxisMap, ...]], ax: int, n: int) -> list[tuple[int, int] | None]:
    """resampled_spans of a chain: every layer's reads (input layer first) composed from the input."""
    if not maps:
        return [(j, j) for j in range(n)]
    return resampled_spans(chain_node(maps), ax, n)


def chain_node(maps: list[tuple[AxisMap, ...]]) -> Resampled:
    node: Any = identity_field(len(maps[0]))
    for reads in maps:
        node = resample(node, reads)
    return node


def resampled_field(node: Resampled, sizes: tuple[int, ...]) -> tuple[Field, list[str]]:
    """The field of a node's output of `sizes`, from each output position's interval of input positions.

    r is the largest interval over output positions; S the product of the layers' strides (a fraction after
    upsampling); P = j0*S - first input of output j0, j0 the first output position that reads any input (0 nearly
    always). Where positions differ in size, a note says by how much.
    """
    size, stride, padding, notes = [], [], [], []
    for ax, n in enumerate(sizes):
        extents: list[int] = []
        first_start: tuple[int, int] | None = None
        for j, span in enumerate(resampled_spans(node, ax, n)):
            if span is None:
                continue
            extents.append(span[1] - span[0] + 1)
            if first_start is None:
                first_start = (j, span[0])
        S = node.stride[ax]
        if not extents or first_start is None:  # every output is bias alone: it reads nothing
            size.append(0)
            padding.append(0)
        else:
            size.append(max(extents))
            padding.append(_exact(first_start[0] * S - first_start[1]))
            if min(extents) != max(extents):
                axes = AXES_OF.get(len(sizes), AXES_OF[2])
                notes.append(f"{axes[ax]}: output positions differ in field ({min(extents)} to {max(extents)} input "
                             f"{UNITS_OF[axes[ax]][1]}); r is the largest")
        stride.append(_exact(S))
    return Field(size=tuple(size), stride=tuple(stride), padding=tuple(padding)), notes


def field_over_positions(maps: list[tuple[AxisMap, ...]], sizes: tuple[int, ...]) -> tuple[Field, list[str]]:
    """The field of a chain with upsampling (resampled_field), from every layer's per-axis reads, input layer
    first."""
    return resampled_field(chain_node(maps), sizes)


def identity_field(rank: int) -> Window:
    """The field of the input itself, per axis: size 1, stride 1, padding 0."""
    return ((1, 1, 0),) * rank


def grow_field(fld: Window, window: Window) -> Window:
    """One Araujo et al. (2019) step per axis: r += (k-1)*S, P += p*S, S *= s (k the dilated extent)."""
    return tuple((r + (w[0] - 1) * S, S * w[1], P + w[2] * S) for (r, S, P), w in zip(fld, window))


def to_field(fld: Window) -> Field:
    return Field(size=tuple(a[0] for a in fld), stride=tuple(a[1] for a in fld),
                 padding=tuple(a[2] for a in fld))


def explain_field(old: Window, window: Window) -> Formula:
    """The first axis in full; the others only where they differ from it (W of a 2-D chain, as before)."""
    (r, S, P), (k, s, p) = old[0], window[0]
    line = (f"rf: r = {r} + ({k}-1)*{S} = {r + (k - 1) * S}, S = {S}*{s} = {S * s}, "
            f"P = {P} + {p}*{S} = {P + p * S}")
    axes = AXES_OF.get(len(old), AXES_OF[2])
    others = [f"; {axes[ax]}: r = {r + (k - 1) * S}, S = {S * s}, P = {P + p * S}"
              for ax, ((r, S, P), (k, s, p)) in enumerate(zip(old, window))
              if ax and (old[ax] != old[0] or window[ax] != window[0])]
    if others and len(old) == 3:  # a 2-D chain's first axis is H by habit; a 3-D one says D
        line = line.replace("rf: ", "rf: D: ", 1)
    return Formula(Topic.rf, line + "".join(others))
