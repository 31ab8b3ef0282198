"""Receptive fields through branching graphs, followed tensor by tensor during the traced forward pass
(Araujo, Norris & Sim 2019), and through upsampling by nnkit's rule (nnkit.core.layers.AxisMap).

Each tensor carries, per spatial axis of the model's input (L; H, W; D, H, W), a field and the sizes it tracks.
While no path has resampled the field is Araujo et al.'s (size r, effective stride S, effective padding P); once
one does (nearest, bilinear, linear or trilinear interpolation, a transposed convolution) it is a
nnkit.core.layers.Resampled node, composed position by position by the same rule as chains. The tracer
(nnkit.introspect.trace) hands every aten operator to `Fields.op` with its inputs and output:
convolutions, pooling, padding and crops grow the field; operators whose output keeps the tracked sizes as
consecutive dimensions (activations, adds, concatenations, splits, channel shuffles, channels-last permutes) pass
it on; anything else (flatten, global pooling, attention over tokens, a product of two tensors computed from the
input) makes the output depend on the whole input. A multiplication by a global gate (squeeze-and-excitation in
MobileNetV3, EfficientNet, RegNetY) keeps the local field: the gate scales channels, it does not move the window;
analyses say so in a note. At a merge the field is the union of the incoming ones: P = max P_i,
r = max(r_i - P_i) + P; when the paths' strides or centres ((r - 1)/2 - P) differ, the merge is reported as
misaligned. A merge with an upsampled path (a U-Net's skip, an FPN's or LRASPP's sum) is a Resampled union: each
output position reads what every path reads at that position.

Following the operators that really run, rather than a torch.fx graph, costs one dictionary lookup per
operator, needs no second pass, and works for models fx cannot trace (Python control flow on shapes); in-place
operators (`out += identity`) update their tensor's field.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

from nnkit.core.layers import AxisMap, Resampled, grow_field, identity_field, resample, union
from nnkit.introspect.trace import SHAPE_KEEPING

Reads = tuple[AxisMap, ...]  # what a window rule answers: per axis, which inputs an output reads
GLOBAL = "global"
UPSAMPLING = "upsampling"  # a window rule's answer for a resampling nnkit has no rule for: no field from here on


class Regrouped(str):
    """A whole-input state (any str state is one) that began where a view regrouped positions into tokens or
    attention windows; `where` names that module, for the note (ViT, Swin)."""
    where = ""


class Pooled(str):
    """A whole-input state that began at a global pooling; `where` names that module, for the note on a model whose
    output map sees the whole input (DeepLabV3's ASPP pooling branch)."""
    pooled_at = property(lambda self: self.where)
    where = ""


class Folded(tuple):  # type: ignore[type-arg]
    """(axes, sizes) of a channels-last map whose positions a linear layer has flattened into rows: F.linear on
    (N, H, W, C) runs as view (N*H*W, C), mm/addmm, view back. Each row is a position, so the field returns when
    the rows are viewed back as (H, W); any other use of the rows counts as mixing them."""


def _same(n: int) -> Reads:
    return (AxisMap("window"),) * n  # output j reads input j


def _tuple(v: Any, m: int) -> tuple[int, ...]:
    """An aten size argument (an int, or a list of 1 or m) as m ints."""
    if isinstance(v, int):
        return (v,) * m
    if len(v) == 1:
        return (int(v[0]),) * m
    return tuple(int(x) for x in v)


def _arg(args: tuple[Any, ...], i: int, default: Any) -> Any:
    """Positional argument i of an aten call; trailing arguments left at their defaults are not passed."""
    return args[i] if len(args) > i else default


def _adaptive(sp_in: tuple[int, ...], sp_out: tuple[int, ...]) -> Reads | str | None:
    if sp_out == sp_in:
        return _same(len(sp_in))
    if 0 in sp_out:
        return None
    if all(o == 1 for o in sp_out) or any(i % o for i, o in zip(sp_in, sp_out)):
        return GLOBAL
    return tuple(AxisMap("window", i // o, i // o) for i, o in zip(sp_in, sp_out))


def _windows_of(k: tuple[int, ...], s: tuple[int, ...], p: tuple[int, ...], d: tuple[int, ...], n: int) -> Reads:
    """The last n axes of an m-d window (1-d pooling runs as 2-d pooling on an unsqueezed (N, C, 1, L))."""
    m = len(k)
    return tuple(AxisMap("window", k[i], s[i], p[i], d[i]) for i in range(m - n, m))


def _conv(args: tuple[Any, ...], sp_in: tuple[int, ...], sp_out: tuple[int, ...]) -> Any:
    # convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
    weight = args[1]
    m, n = weight.dim() - 2, len(sp_in)
    if m < n:
        return None  # a lower-dimensional convolution across the map (over flattened positions): no window
    k = tuple(weight.shape[2:])
    s, p, d = _tuple(args[3], m), _tuple(args[4], m), _tuple(args[5], m)
    if _arg(args, 6, False):  # transposed: nnkit's tconv rule (nnkit.core.layers.AxisMap)
        return tuple(AxisMap("tconv", k[i], s[i], p[i], d[i], n=sp_in[i - (m - n)]) for i in range(m - n, m))
    return _windows_of(k, s, p, d, n)


def _max_pool(args: tuple[Any, ...], sp_in: tuple[int, ...], sp_out: tuple[int, ...]) -> Reads:
    # max_pool2d_with_indices(self, kernel_size, stride=[], padding=0, dilation=1, ceil_mode=False), and 3d
    m = len(args[1])
    k = _tuple(args[1], m)
    stride = _arg(args, 2, ())
    s = _tuple(stride, m) if len(stride) else k
    return _windows_of(k, s, _tuple(_arg(args, 3, 0), m), _tuple(_arg(args, 4, 1), m), len(sp_in))


def _avg_pool(args: tuple[Any, ...], sp_in: tuple[int, ...], sp_out: tuple[int, ...]) -> Reads:
    # avg_pool2d(self, kernel_size, stride=[], padding=0, ceil_mode=False, count_include_pad=True, divisor=None)
    m = len(args[1])
    k = _tuple(args[1], m)
    stride = _arg(args, 2, ())
    s = _tuple(stride, m) if len(stride) else k
    return _windows_of(k, s, _tuple(_arg(args, 3, 0), m), (1,) * m, len(sp_in))


def _pad(args: tuple[Any, ...], sp_in: tuple[int, ...], sp_out: tuple[int, ...]) -> Reads | None:
    # constant_pad_nd(self, pad, value) and the reflection/replication pads: pad = [left, right] of the last
    # axis, then of the one before it, ...
    pad = list(args[1])
    n = len(sp_in)
    lr = [(pad[2 * q], pad[2 * q + 1]) if 2 * q + 1 < len(pad) else (0, 0) for q in range(n - 1, -1, -1)]
    if sp_out != tuple(size + a + b for size, (a, b) in zip(sp_in, lr)):
        return None
    return tuple(AxisMap("window", p=a) for a, _ in lr)


def _crop(args: tuple[Any, ...], sp_in: tuple[int, ...], sp_out: tuple[int, ...]) -> Reads | None:
    """slice(self, dim, start, end, step) along a tracked axis: output j is input start + j*step, a window of 1
    with stride step and padding -start. None: along another dimension, or not the sizes this would give."""
    ndim = len(args[0].shape)
    n = len(sp_in)
    dim = _arg(args, 1, 0)
    dim = dim + ndim if dim < 0 else dim
    if dim < ndim - n:
        return None if sp_out != sp_in else _same(n)  # channels or batch: the positions stay as they are
    size = sp_in[dim - (ndim - n)]
    start, end, step = _arg(args, 2, None), _arg(args, 3, None), _arg(args, 4, 1)
    start, end, step = slice(start, end, step).indices(size)
    if not isinstance(start, int) or len(range(start, end, step)) != sp_out[dim - (ndim - n)]:
        return None
    return tuple(AxisMap("window", s=step, p=-start) if a == dim - (ndim - n) else AxisMap("window") for a in range(n))


def _scale(given: Any, size_in: int, size_out: int) -> Fraction:
    """The scale torch maps indices by: the scale factor the caller gave, or else output/input
    (aten's area_pixel_compute_scale)."""
    return Fraction(str(given)) if given else Fraction(size_out, size_in)


def _resize(kind: str | None) -> Callable[..., Any]:
    """Interpolation: the same size is the identity; nearest-neighbour downsampling by integer factors k (1 on an
    axis that keeps its size) is a window of 1 with stride k (at offset floor(k/2) for 'nearest-exact'), unless a
    scale factor other than 1/k was given (torch then maps indices by that scale). Otherwise 'nearest' and
    'bilinear' (and linear, trilinear) read per nnkit.core.layers.AxisMap, at torch's scale (align_corners=true
    too); the rest (bicubic, antialiased, nearest-exact upsampling) has no rule and ends the field.
    kind: "nearest", "exact" (nearest-exact), "linear" or None (no rule)."""
    def rule(args: tuple[Any, ...], sp_in: tuple[int, ...], sp_out: tuple[int, ...]) -> Any:
        n = len(sp_in)
        if sp_out == sp_in:
            return _same(n)
        # upsample_nearest2d(input, output_size, scales...); upsample_bilinear2d(input, output_size,
        # align_corners, scales...)
        first = 3 if kind == "linear" else 2
        m = len(args[0].shape) - 2
        scales = tuple(_arg(args, first + i, None) for i in range(m))[m - n:]
        if kind in ("nearest", "exact") and all(
                o and i >= o and i % o == 0 and (sc is None or sc * (i // o) == 1)
                for i, o, sc in zip(sp_in, sp_out, scales)):
            return tuple(AxisMap("window", s=i // o, p=-((i // o) // 2) if kind == "exact" else 0)
                         for i, o in zip(sp_in, sp_out))
        if kind == "nearest" or (kind == "linear" and not _arg(args, 2, False)):
            mode = "nearest" if kind == "nearest" else "bilinear"
            return tuple(AxisMap(mode, scale=_scale(sc, i, o), n=i) for i, o, sc in zip(sp_in, sp_out, scales))
        if kind == "linear":  # align_corners=true: x = j*(in-1)/(out-1), whatever scale factor was given
            return tuple(AxisMap("bilinear", scale=Fraction(o - 1, i - 1), n=i, corners=True) if i > 1 and o > 1
                         else AxisMap("nearest", scale=Fraction(o, i), n=i) for i, o in zip(sp_in, sp_out))
        return UPSAMPLING
    return rule


def _windows() -> dict[Any, Callable[..., Any]]:
    import torch

    aten = torch.ops.aten
    resizes = [(f"upsample_nearest{r}d", "nearest") for r in (1, 2, 3)] + \
        [(f"_upsample_nearest_exact{r}d", "exact") for r in (1, 2, 3)] + \
        [("upsample_linear1d", "linear"), ("upsample_bilinear2d", "linear"), ("upsample_trilinear3d", "linear"),
         ("upsample_bicubic2d", None), ("_upsample_bilinear2d_aa", None), ("_upsample_bicubic2d_aa", None)]
    table: dict[Any, Callable[..., Any]] = {
        getattr(aten, name): _resize(kind) for name, kind in resizes if hasattr(aten, name)}
    pads = [f"{kind}_pad{r}d" for kind in ("reflection", "replication") for r in (1, 2, 3)]
    table |= {getattr(aten, name): _pad for name in pads if hasattr(aten, name)}
    table |= {
        aten.convolution: _conv, aten.max_pool2d_with_indices: _max_pool, aten.max_pool2d: _max_pool,
        aten.max_pool3d_with_indices: _max_pool, aten.avg_pool2d: _avg_pool, aten.avg_pool3d: _avg_pool,
        aten.constant_pad_nd: _pad,
    }
    for name in ("_adaptive_avg_pool2d", "adaptive_max_pool2d", "_adaptive_avg_pool3d", "adaptive_max_pool3d"):
        table[getattr(aten, name)] = lambda args, sp_in, sp_out: _adaptive(sp_in, sp_out)
    return table


def _keeps(shape: tuple[int, ...], sp: tuple[int, ...]) -> bool:
    """The tensor still holds the tracked positions as consecutive dimensions after the batch (a 1-D map needs a
    channel axis too, so that a feature vector of L numbers is not taken for L positions)."""
    n = len(sp)
    if n == 1 and len(shape) < 3:
        return False
    return any(shape[i:i + n] == sp for i in range(1, len(shape) - n + 1))


def _grow(axes: Any, win: Reads) -> Any:
    """The field after one layer: Araujo et al.'s step while no path has upsampled, nnkit's position-by-position
    rule (nnkit.core.layers.Resampled) once one has or for a layer that resamples."""
    if axes is None:
        return None
    if isinstance(axes, Resampled) or _resamples(win):
        return resample(axes, win)
    return grow_field(axes, tuple(m.window for m in win))


def _resamples(win: Reads) -> bool:
    return win[0].kind != "window"  # a rule answers one kind on every axis


def merge(states: list[tuple[Any, tuple[int, ...]]], where: str, misaligned: list[str]) -> tuple[Any, Any]:
    if len({s[0] for s in states}) == 1:  # (Resampled nodes compare by identity)
        return states[0]
    if any(s[0] is None for s in states):  # a path through a resampling without a rule: no field
        return None, states[0][1]
    if any(isinstance(s[0], Resampled) for s in states):  # a skip joins an upsampled path (U-Net, FPN)
        distinct = list({id(s[0]): s[0] for s in states}.values())
        node = union(distinct)
        if len({tuple(_strides(a)) for a in distinct}) > 1:
            misaligned.append(where)
        return node, states[0][1]
    axes = []
    off = False
    for a in range(len(states[0][0])):
        per = [s[0][a] for s in states]
        P = max(w[2] for w in per)
        r = max(w[0] - w[2] for w in per) + P
        S = max(w[1] for w in per)
        if len({w[1] for w in per}) > 1 or len({(w[0] - 1) / 2 - w[2] for w in per}) > 1:
            off = True
        axes.append((r, S, P))
    if off:
        misaligned.append(where)
    return tuple(axes), states[0][1]


def _strides(axes: Any) -> tuple[Any, ...]:
    return axes.stride if isinstance(axes, Resampled) else tuple(Fraction(w[1]) for w in axes)


class Follower:
    """What the tracer (nnkit.introspect.trace.run) asks of whatever follows tensors through a forward pass: a
    state per tensor object, set by op() for every aten operator; the notes' lists stay empty unless a follower
    fills them."""

    def __init__(self, where: Callable[[], str]) -> None:
        import torch

        self._tensor = torch.Tensor
        self._convolution = torch.ops.aten.convolution
        self.where = where  # the innermost module running
        self.states: dict[int, Any] = {}
        self._alive: list[Any] = []  # every tensor with a state stays alive, so that no id() is reused
        self.misaligned: list[str] = []
        self.upsampled: list[str] = []  # where upsampling ends the fields (the modules, in order)
        self.gates = 0  # multiplications by a global gate (squeeze-excitation)

    def start(self, x: Any) -> None:
        """x: the model's input."""

    def _set(self, t: Any, state: Any) -> None:
        self.states[id(t)] = state
        self._alive.append(t)

    def of(self, t: Any) -> Any:
        return None if t is None else self.states.get(id(t))

    def op(self, packet: Any, args: tuple[Any, ...], out: Any) -> None:
        raise NotImplementedError


class Fields(Follower):
    """Field states of the tensors of one forward pass, keyed by the tensor object."""

    def __init__(self, where: Callable[[], str]) -> None:
        import torch

        super().__init__(where)
        self._windows = _windows()
        aten = torch.ops.aten
        self._gates = (aten.mul, aten.mul_)
        self._views = (aten.view, aten._unsafe_view, aten.reshape)  # noqa: SLF001
        self._addmm = aten.addmm
        self._slice = aten.slice
        self._matmuls = (aten.mm, aten.addmm)
        # Products of two tensors computed from the input (attention's Q K^T and its weighted sum) mix positions:
        # on a 1-D map the token axis is the tracked one, so no view regroups it first, as on images.
        self._mixing = frozenset(getattr(aten, name) for name in (
            "mm", "addmm", "bmm", "baddbmm", "matmul", "_scaled_dot_product_flash_attention_for_cpu",
            "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
            "_scaled_dot_product_cudnn_attention", "scaled_dot_product_attention") if hasattr(aten, name))
        self._keeping = frozenset(getattr(aten, name) for name in SHAPE_KEEPING)
        self.stopped: list[str] = []  # what the resamplings without a rule were, beside self.upsampled's where
        self.resampled: list[str] = []  # where a field first went through a resampling (the modules, in order)

    def start(self, x: Any) -> None:
        """The field's axes are the input's after batch and channels (N, C, L), (N, C, H, W), (N, C, D, H, W);
        a 2-d input (N, L) is a sequence of L positions (token ids)."""
        sp = tuple(x.shape[2:]) if x.dim() >= 3 else tuple(x.shape[-1:])
        self._set(x, (identity_field(len(sp)), sp))

    def op(self, packet: Any, args: tuple[Any, ...], out: Any) -> None:
        tensor = self._tensor
        inputs: list[Any] = []
        if packet in self._keeping:  # activations and norms, a third of all operators: the input's state as is
            state = self.states.get(id(args[0]))
            if state is not None and not any(isinstance(a, tensor) and id(a) in self.states for a in args[1:]):
                self._set(out[0] if type(out) is tuple else out, state)
                return
        if packet is self._convolution:  # the most frequent operator: look up its three tensors only
            state = self.states.get(id(args[0]))
            if type(state) is tuple and self._plain_conv(args, state, out):
                return
            inputs = [state, self.states.get(id(args[1]))]
            if args[2] is not None:
                inputs.append(self.states.get(id(args[2])))  # a kernel computed from the input (CondConv) counts
        else:
            for a in args:
                if isinstance(a, tensor):
                    inputs.append(self.states.get(id(a)))
                elif isinstance(a, (list, tuple)):
                    inputs.extend(self.states.get(id(t)) for t in a if isinstance(t, tensor))
        live = [s for s in inputs if s is not None and not isinstance(s, str)]
        marker = next((s for s in inputs if isinstance(s, Regrouped)), None) or \
            next((s for s in inputs if isinstance(s, str)), None)
        outs = [out] if isinstance(out, tensor) else [t for t in out if isinstance(t, tensor)] \
            if isinstance(out, (list, tuple)) else []
        if not outs or (not live and marker is None):
            return  # constants (parameters, buffers, positions): no field
        states = self._states(packet, args, live, marker, outs)
        for t, state in zip(outs, states):
            self._set(t, state)
        first = outs[0]
        if first is args[0] and first._base is not None and id(first._base) in self.states:
            self._grow_base(first._base, args[1:])

    def _plain_conv(self, args: tuple[Any, ...], state: tuple[Any, Any], out: Any) -> bool:
        """What op() and _states() do for a 2-d convolution of a local field (not Folded, not a marker) by a
        weight and bias that have none, in one step: the most frequent operator, for which the general path's
        lists and generators cost about 0.3 ms of a traced MobileNetV2. False: anything else, for op()."""
        states = self.states
        axes, sp = state
        n = len(sp)
        if states.get(id(args[1])) is not None or (args[2] is not None and states.get(id(args[2])) is not None) \
                or args[1].dim() != n + 2 or _arg(args, 6, False) or out.dim() != n + 2 \
                or tuple(args[0].shape[2:]) != sp:
            return False
        sp_out = tuple(out.shape[2:])
        self._set(out, (_grow(axes, _conv(args, sp, sp_out)), sp_out))
        return True

    def _grow_base(self, base: Any, others: tuple[Any, ...]) -> None:
        """An in-place op on a view writes into its base: the base's field takes in the op's other operands
        (y[:, :4] += z[:, :4]); a scalar or a parameter adds nothing (x.view(b, c, -1).mul_(0.5))."""
        tensor = self._tensor
        extra = [self.states.get(id(a)) for a in others if isinstance(a, tensor)]
        extra = [s for s in extra if s is not None]
        state = self.states[id(base)]
        if not extra or isinstance(state, str):
            return
        strs = [s for s in extra if isinstance(s, str)]
        if strs or isinstance(state, Folded) or any(isinstance(s, Folded) or s[1] != state[1] for s in extra):
            self._set(base, strs[0] if strs else GLOBAL)
            return
        self._set(base, merge([state, *extra], self.where(), self.misaligned))

    def _states(self, packet: Any, args: tuple[Any, ...], live: list[Any], marker: str | None,
                outs: list[Any]) -> list[Any]:
        first = tuple(outs[0].shape)
        everywhere = [marker or GLOBAL] * len(outs)
        if any(isinstance(s, Folded) for s in live):
            return (None if marker is not None else self._folded(packet, args, live, first)) or everywhere
        if marker is not None:
            if live and packet in self._gates and _keeps(first, live[0][1]):
                self.gates += 1  # x * sigmoid(fc(pool(x))): a global gate on a local field
            else:
                return everywhere
        if len(live) > 1 and packet in self._mixing:
            return everywhere
        axes, sp = merge(live, self.where(), self.misaligned) if len(live) > 1 else live[0]
        n = len(sp)
        if packet is self._slice and len(live) == 1 and len(first) == args[0].dim():
            crop = _crop(args, sp, first[-n:])
            if crop is not None:  # a crop of the map (a U-Net's skip cut to the decoder's size)
                return [(_grow(axes, crop), first[-n:])]
        rule = self._windows.get(packet)
        # A window over other axes than the tracked ones (a pad of a channels-last map's channels) is no window
        # of theirs: the tensor keeps its positions or mixes them, as below.
        if rule is not None and len(first) >= n + 2 and tuple(args[0].shape[-n:]) == sp:
            sp_out = first[-n:]
            win = rule(args, sp, sp_out)
            if win == GLOBAL:
                pooled = Pooled(GLOBAL)
                pooled.where = self.where()
                return [pooled]
            if win == UPSAMPLING:
                if axes is not None:
                    self.upsampled.append(self.where())
                    self.stopped.append(str(packet).removeprefix("aten.").split(".")[0])
                return [(None, sp_out)]
            if win is not None:
                if axes is not None and _resamples(win) and not isinstance(axes, Resampled):
                    self.resampled.append(self.where())
                return [(_grow(axes, win), sp_out)]
        if packet in self._views and len(live) == 1 and len(first) == 2 and len(args[0].shape) >= n + 1 and \
                tuple(args[0].shape[-n - 1:-1]) == sp and first[-1] == args[0].shape[-1]:
            return [Folded((axes, sp))]  # F.linear on a channels-last map flattens positions into rows
        out = [(axes, sp) if _keeps(tuple(t.shape), sp) else GLOBAL for t in outs]
        if packet in self._views and len(first) >= 3 and GLOBAL in out:  # tokens, attention windows
            regrouped = Regrouped(GLOBAL)
            regrouped.where = self.where()
            out = [regrouped if s == GLOBAL else s for s in out]
        elif GLOBAL in out and len(first) >= 2 and first[1:] and all(d == 1 for d in first[2:]):
            pooled = Pooled(GLOBAL)  # a mean over the positions (adaptive pooling to 1 runs as aten.mean)
            pooled.where = self.where()
            out = [pooled if s == GLOBAL else s for s in out]
        return out

    def _folded(self, packet: Any, args: tuple[Any, ...], live: list[Any], first: tuple[int, ...]) -> list[Any] | None:
        """Rows of positions (Folded) through a linear layer: mm/addmm with a weight (no field of its own) keep
        them rows; a view back to (..., H, W, C) restores the field. None: they are mixed, or multiplied by
        something computed from the input: the field becomes the whole input."""
        if len(live) != 1:
            return None
        (axes, sp) = live[0]
        rows = self.states.get(id(args[1] if packet is self._addmm else args[0]))
        if packet in self._matmuls and isinstance(rows, Folded) and len(first) == 2:
            return [live[0]]
        n = len(sp)
        if packet in self._views and len(first) >= n + 2 and tuple(first[-n - 1:-1]) == sp:
            return [(axes, sp)]
        return None


def position_fields(model: Any, shape: tuple[int, ...], at: str | None = None) -> list[list[tuple[int, int] | None]]:
    """Per spatial axis of a model's output (or of module `at`'s), each output position's first and last input
    position (None where it reads none): the intervals whose largest is the reported field, as
    nnkit.core.chain.position_fields gives them for chains. Without upsampling every interval is
    [j*S - P, j*S - P + r - 1]."""
    from nnkit.core.layers import resampled_spans
    from nnkit.errors import UnknownNameError, UsageError
    from nnkit.introspect import meta_copy, training_flags
    from nnkit.introspect.build import walk
    from nnkit.introspect.trace import run

    model = meta_copy(model)
    named = walk(model)
    with training_flags(model, named, False):
        tr = run(model, shape, named=named)
    state = tr.rf
    if at is not None:
        state = next((c.rf for c in reversed(tr.calls) if c.path == at), None)
        if state is None and at not in dict(named):
            raise UnknownNameError("layer", at, [p for p, _ in named if p])
    if state is None or isinstance(state, str) or state[0] is None:
        raise UsageError(f"{at or 'the output'}: no local receptive field (it sees the whole input, or follows a "
                         "resampling nnkit has no rule for)")
    axes, sizes = state
    if isinstance(axes, Resampled):
        return [resampled_spans(axes, ax, n) for ax, n in enumerate(sizes)]
    return [[(j * S - P, j * S - P + r - 1) for j in range(n)] for (r, S, P), n in zip(axes, sizes)]
