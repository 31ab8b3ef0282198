"""Receptive fields through branching graphs, followed tensor by tensor during the traced forward pass
(Araujo, Norris & Sim 2019).

Each tensor carries, per spatial axis, (size r, effective stride S, effective padding P) and the (H, W) it
tracks; after upsampling (interpolation, transposed convolution) it carries no field but still its (H, W), as
Araujo et al. define fields for downsampling networks only (chains in nnkit.core carry them through upsampling;
models do not yet). The tracer (nnkit.introspect.trace) hands every aten operator to `Fields.op` with its inputs
and output:
convolutions, pooling and padding grow the field (nnkit.core.layers.grow_field); operators whose output keeps
the tracked (H, W) as two consecutive dimensions (activations, adds, concatenations, splits, channel shuffles,
channels-last permutes) pass it on; anything else (flatten, global pooling, attention over tokens) makes the
output depend on the whole input. A multiplication by a global gate (squeeze-and-excitation in MobileNetV3,
EfficientNet, RegNetY) keeps the local field: the gate scales channels, it does not move the window; analyses
say so in a note. At a merge the field is the union of the incoming ones: P = max P_i, r = max(r_i - P_i) + P;
when the paths' strides or centres ((r - 1)/2 - P) differ, the merge is reported as misaligned.

Following the operators that really run, rather than a torch.fx graph, costs one dictionary lookup per
operator, needs no second pass, and works for models fx cannot trace (Python control flow on shapes); in-place
operators (`out += identity`) update their tensor's field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nnkit.core.layers import grow_field
from nnkit.introspect.trace import SHAPE_KEEPING

Axes = tuple[tuple[int, int, int], ...]
GLOBAL = "global"
UPSAMPLING = "upsampling"  # a window rule's answer for upsampling: no integer field from here on


class Regrouped(str):
    """A whole-input state (any str state is one) that began where a view regrouped positions into tokens or
    attention windows; `where` names that module, for the note (ViT, Swin)."""
    where = ""


class Folded(tuple):  # type: ignore[type-arg]
    """(axes, hw) of a channels-last map whose positions a linear layer has flattened into rows: F.linear on
    (N, H, W, C) runs as view (N*H*W, C), mm/addmm, view back. Each row is a position, so the field returns when
    the rows are viewed back as (H, W); any other use of the rows counts as mixing them."""
_IDENTITY: Axes = ((1, 1, 0), (1, 1, 0))


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    if len(v) == 1:
        return int(v[0]), int(v[0])
    return int(v[0]), int(v[1])


def _arg(args: tuple[Any, ...], i: int, default: Any) -> Any:
    """Positional argument i of an aten call; trailing arguments left at their defaults are not passed."""
    return args[i] if len(args) > i else default


def _adaptive(hw_in: tuple[int, int], hw_out: tuple[int, int]) -> Axes | str | None:
    if hw_out == hw_in:
        return _IDENTITY
    if 0 in hw_out:
        return None
    if hw_out == (1, 1) or any(i % o for i, o in zip(hw_in, hw_out)):
        return GLOBAL
    return tuple((i // o, i // o, 0) for i, o in zip(hw_in, hw_out))


def _conv(args: tuple[Any, ...], hw_in: tuple[int, int], hw_out: tuple[int, int]) -> Axes | str | None:
    # convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
    weight = args[1]
    if weight.dim() != 4:
        return None  # 1-d/3-d convolutions: no 2-d window to grow
    if _arg(args, 6, False):
        return UPSAMPLING  # transposed

    k = tuple(weight.shape[-2:])
    s, p, d = _pair(args[3]), _pair(args[4]), _pair(args[5])
    return tuple((d[i] * (k[i] - 1) + 1, s[i], p[i]) for i in range(2))


def _max_pool(args: tuple[Any, ...], hw_in: tuple[int, int], hw_out: tuple[int, int]) -> Axes:
    # max_pool2d_with_indices(self, kernel_size, stride=[], padding=0, dilation=1, ceil_mode=False)
    k = _pair(args[1])
    stride = _arg(args, 2, ())
    s = _pair(stride) if len(stride) else k
    p, d = _pair(_arg(args, 3, 0)), _pair(_arg(args, 4, 1))
    return tuple((d[i] * (k[i] - 1) + 1, s[i], p[i]) for i in range(2))


def _avg_pool(args: tuple[Any, ...], hw_in: tuple[int, int], hw_out: tuple[int, int]) -> Axes:
    # avg_pool2d(self, kernel_size, stride=[], padding=0, ceil_mode=False, count_include_pad=True, divisor=None)
    k = _pair(args[1])
    stride = _arg(args, 2, ())
    s = _pair(stride) if len(stride) else k
    p = _pair(_arg(args, 3, 0))
    return tuple((k[i], s[i], p[i]) for i in range(2))


def _pad(args: tuple[Any, ...], hw_in: tuple[int, int], hw_out: tuple[int, int]) -> Axes | None:
    # constant_pad_nd(self, pad, value) and the reflection/replication pads: pad = [left, right, top, bottom, ...]
    pad = list(args[1])
    if len(pad) < 4 or hw_out != (hw_in[0] + pad[2] + pad[3], hw_in[1] + pad[0] + pad[1]):
        return None
    return ((1, 1, pad[2]), (1, 1, pad[0]))


def _resize(exact: bool | None) -> Callable[..., Any]:
    """Interpolation: the same size is the identity; nearest-neighbour downsampling by integer factors k (1 on an
    axis that keeps its size) is a window of 1 with stride k (at offset floor(k/2) for 'nearest-exact'), unless a
    scale factor other than 1/k was given (torch then maps indices by that scale); anything else (upsampling,
    bilinear or fractional resizing) has no integer field. exact None: not a nearest mode."""
    def rule(args: tuple[Any, ...], hw_in: tuple[int, int], hw_out: tuple[int, int]) -> Axes | str:
        if hw_out == hw_in:
            return _IDENTITY
        scales = tuple(_arg(args, i, None) for i in (2, 3))  # upsample_nearest2d(input, output_size, sh, sw)
        if exact is not None and all(o and i >= o and i % o == 0 and (sc is None or sc * (i // o) == 1)
                                     for i, o, sc in zip(hw_in, hw_out, scales)):
            return tuple((1, i // o, -((i // o) // 2) if exact else 0) for i, o in zip(hw_in, hw_out))
        return UPSAMPLING
    return rule


def _windows() -> dict[Any, Callable[..., Any]]:
    import torch

    aten = torch.ops.aten
    table: dict[Any, Callable[..., Any]] = {
        getattr(aten, name): _resize(exact) for name, exact in (
            ("upsample_nearest2d", False), ("_upsample_nearest_exact2d", True), ("upsample_bilinear2d", None),
            ("upsample_bicubic2d", None), ("_upsample_bilinear2d_aa", None), ("_upsample_bicubic2d_aa", None))
        if hasattr(aten, name)}
    table |= {
        aten.convolution: _conv, aten.max_pool2d_with_indices: _max_pool, aten.max_pool2d: _max_pool,
        aten.avg_pool2d: _avg_pool, aten.constant_pad_nd: _pad, aten.reflection_pad2d: _pad,
        aten.replication_pad2d: _pad,
        aten._adaptive_avg_pool2d: lambda args, hw_in, hw_out: _adaptive(hw_in, hw_out),  # noqa: SLF001
        aten.adaptive_max_pool2d: lambda args, hw_in, hw_out: _adaptive(hw_in, hw_out),
    }
    return table


def _keeps(shape: tuple[int, ...], hw: tuple[int, int]) -> bool:
    return any(shape[i:i + 2] == hw for i in range(1, len(shape) - 1))


def merge(states: list[tuple[Axes | None, tuple[int, int]]], where: str, misaligned: list[str]) -> \
        tuple[Axes | None, Any]:
    if len({s[0] for s in states}) == 1:
        return states[0]
    if any(s[0] is None for s in states):  # a path through upsampling: no field
        return None, states[0][1]
    axes = []
    off = False
    for a in range(2):
        per = [s[0][a] for s in states]
        P = max(p for _, _, p in per)
        r = max(r - p for r, _, p in per) + P
        S = max(s for _, s, _ in per)
        if len({s for _, s, _ in per}) > 1 or len({(r_ - 1) / 2 - p for r_, _, p in per}) > 1:
            off = True
        axes.append((r, S, P))
    if off:
        misaligned.append(where)
    return tuple(axes), states[0][1]


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
        self._matmuls = (aten.mm, aten.addmm)
        self._keeping = frozenset(getattr(aten, name) for name in SHAPE_KEEPING)

    def start(self, x: Any) -> None:
        self._set(x, (_IDENTITY, tuple(x.shape[-2:])))

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
        if states.get(id(args[1])) is not None or (args[2] is not None and states.get(id(args[2])) is not None) \
                or args[1].dim() != 4 or _arg(args, 6, False) or out.dim() < 3:
            return False
        axes, hw = state
        hw_out = tuple(out.shape[-2:])
        self._set(out, (grow_field(axes, _conv(args, hw, hw_out)) if axes is not None else None, hw_out))
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
        axes, hw = merge(live, self.where(), self.misaligned) if len(live) > 1 else live[0]
        rule = self._windows.get(packet)
        if rule is not None and len(first) >= 3:
            win = rule(args, hw, first[-2:])
            if win == GLOBAL:
                return [GLOBAL]
            if win == UPSAMPLING:
                if axes is not None:
                    self.upsampled.append(self.where())
                return [(None, first[-2:])]
            if win is not None:
                return [(grow_field(axes, win) if axes is not None else None, first[-2:])]
        if packet in self._views and len(live) == 1 and len(first) == 2 and len(args[0].shape) >= 3 and \
                tuple(args[0].shape[-3:-1]) == hw and first[-1] == args[0].shape[-1]:
            return [Folded((axes, hw))]  # F.linear on a channels-last map flattens positions into rows
        out = [(axes, hw) if _keeps(tuple(t.shape), hw) else GLOBAL for t in outs]
        if packet in self._views and len(first) >= 3 and GLOBAL in out:  # tokens, attention windows
            regrouped = Regrouped(GLOBAL)
            regrouped.where = self.where()
            out = [regrouped if s == GLOBAL else s for s in out]
        return out

    def _folded(self, packet: Any, args: tuple[Any, ...], live: list[Any], first: tuple[int, ...]) -> list[Any] | None:
        """Rows of positions (Folded) through a linear layer: mm/addmm with a weight (no field of its own) keep
        them rows; a view back to (..., H, W, C) restores the field. None: they are mixed, or multiplied by
        something computed from the input: the field becomes the whole input."""
        if len(live) != 1:
            return None
        (axes, hw) = live[0]
        rows = self.states.get(id(args[1] if packet is self._addmm else args[0]))
        if packet in self._matmuls and isinstance(rows, Folded) and len(first) == 2:
            return [live[0]]
        if packet in self._views and len(first) >= 3 and tuple(first[-3:-1]) == hw:
            return [(axes, hw)]
        return None
