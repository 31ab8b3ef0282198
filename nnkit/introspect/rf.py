"""Receptive fields through branching graphs, from the model's torch.fx graph (Araujo, Norris & Sim 2019).

Each node carries, per spatial axis, (size r, effective stride S, effective padding P) and the (H, W) it
tracks. Convolutions and pooling grow the field (nnkit.core.layers.grow_field); nodes that keep the tracked
(H, W) as two consecutive dimensions (activations, norms, adds, concatenations, channels-last permutes) pass it
on; anything else (flatten, global pooling, attention over tokens) makes the output depend on the whole input.
A multiplication by a global gate (squeeze-and-excitation in MobileNetV3, EfficientNet, RegNetY) keeps the local
field: the gate scales channels, it does not move the window; analyses say so in a note.
At a merge the field is the union of the incoming ones: P = max P_i, r = max(r_i - P_i) + P; when the paths'
strides or centres ((r - 1)/2 - P) differ, the merge is reported as misaligned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nnkit.core.layers import grow_field

Axes = tuple[tuple[int, int, int], ...]
GLOBAL = "global"


@dataclass
class FieldGraph:
    by_path: dict[str, list[Any]]  # module path -> states of the nodes inside it, in graph order
    output: Any  # state of the graph's output: Axes with hw, GLOBAL or None
    misaligned: list[str] = field(default_factory=list)
    gates: list[str] = field(default_factory=list)  # multiplications by a global gate (squeeze-excitation)


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _window(module: Any, hw_in: tuple[int, int], hw_out: tuple[int, int]) -> Axes | str | None:
    from torch import nn

    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        k = _pair(module.kernel_size)
        s = _pair(module.stride if module.stride is not None else module.kernel_size)
        d = _pair(getattr(module, "dilation", 1))
        keff = tuple(di * (ki - 1) + 1 for ki, di in zip(k, d))
        pad = module.padding
        if pad == "same":
            p = tuple((ke - 1) // 2 for ke in keff)
        elif pad == "valid":
            p = (0, 0)
        else:
            p = _pair(pad)
        return tuple((keff[i], s[i], p[i]) for i in range(2))
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        if hw_out == hw_in:
            return ((1, 1, 0), (1, 1, 0))
        if all(o == 1 for o in hw_out):
            return GLOBAL
        if all(i % o == 0 for i, o in zip(hw_in, hw_out)):
            return tuple((i // o, i // o, 0) for i, o in zip(hw_in, hw_out))
        return GLOBAL
    return None


def _gate_targets() -> tuple[Any, ...]:
    import operator

    import torch

    return (operator.mul, torch.mul, "mul", "mul_")


_GATES = _gate_targets()
_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation")
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


def _functional_window(n: Any, hw_in: tuple[int, int], hw_out: tuple[int, int]) -> Axes | str | None:
    """F.max_pool2d, F.avg_pool2d, F.conv2d and the adaptive poolings called as functions (Inception does)."""
    import torch
    import torch.nn.functional as F

    name = getattr(n.target, "__name__", str(n.target))
    if name in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
        if hw_out == hw_in:
            return ((1, 1, 0), (1, 1, 0))
        return GLOBAL if hw_out == (1, 1) or any(i % o for i, o in zip(hw_in, hw_out)) else \
            tuple((i // o, i // o, 0) for i, o in zip(hw_in, hw_out))
    if n.target in (F.max_pool2d, F.avg_pool2d, torch.max_pool2d) or \
            name in ("max_pool2d", "avg_pool2d", "boolean_dispatch"):
        args = dict(zip(_POOL_ARGS, n.args))
        args.update(n.kwargs)
        k = _pair(args["kernel_size"])
        stride = args.get("stride")
        s = _pair(stride) if stride not in (None, [], ()) else k
        d = _pair(args.get("dilation", 1)) if "max" in name else (1, 1)
        p = _pair(args.get("padding", 0))
    elif n.target in (F.conv2d, torch.conv2d):
        args = dict(zip(_CONV_ARGS, n.args))
        args.update(n.kwargs)
        weight = args["weight"]
        k = tuple(weight.meta["tensor_meta"].shape[-2:]) if hasattr(weight, "meta") and "tensor_meta" in \
            weight.meta else None
        if k is None:
            return None
        s, d = _pair(args.get("stride", 1)), _pair(args.get("dilation", 1))
        p = _pair(args.get("padding", 0)) if not isinstance(args.get("padding"), str) else (0, 0)
    else:
        return None
    return tuple((d[i] * (k[i] - 1) + 1, s[i], p[i]) for i in range(2))


def _keeps(shape: tuple[int, ...], hw: tuple[int, int]) -> bool:
    return any(shape[i:i + 2] == hw for i in range(1, len(shape) - 1))


def _merge(states: list[tuple[Axes, tuple[int, int]]], where: str, notes: list[str]) -> tuple[Axes, Any]:
    if len({s[0] for s in states}) == 1:
        return states[0]
    axes = []
    misaligned = False
    for a in range(2):
        per = [s[0][a] for s in states]
        P = max(p for _, _, p in per)
        r = max(r - p for r, _, p in per) + P
        S = max(s for _, s, _ in per)
        if len({s for _, s, _ in per}) > 1 or len({(r_ - 1) / 2 - p for r_, _, p in per}) > 1:
            misaligned = True
        axes.append((r, S, P))
    if misaligned:
        notes.append(where)
    return tuple(axes), states[0][1]


def fields(model: Any, shape: tuple[int, ...]) -> FieldGraph:
    """Trace `model` with torch.fx and propagate receptive fields for one input of (C, H, W) `shape`."""
    import torch
    import torch.fx as fx

    graph = fx.symbolic_trace(model)
    modules = dict(graph.named_modules())
    states: dict[Any, Any] = {}
    by_path: dict[str, list[Any]] = {}
    notes: list[str] = []
    gates: list[str] = []

    class Prop(fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            result = super().run_node(n)
            states[n] = self._state(n, result)
            stack = n.meta.get("nn_module_stack") or {}
            for path in stack:
                by_path.setdefault(path, []).append(states[n])
            if n.op == "call_module" and n.target not in stack:
                by_path.setdefault(n.target, []).append(states[n])
            return result

        def _state(self, n: Any, result: Any) -> Any:
            if n.op == "placeholder":
                return (((1, 1, 0), (1, 1, 0)), tuple(result.shape[-2:]))
            inputs = [states.get(i) for i in n.all_input_nodes]
            container = isinstance(result, (tuple, list)) and any(isinstance(r, torch.Tensor) for r in result)
            if not isinstance(result, torch.Tensor) and not container:
                return None
            live = [s for s in inputs if s is not None and s != GLOBAL]
            if GLOBAL in inputs:
                if live and n.target in _GATES and isinstance(result, torch.Tensor) and \
                        _keeps(tuple(result.shape), live[0][1]):
                    gates.append(n.name)  # x * sigmoid(fc(pool(x))): a global gate on a local field
                else:
                    return GLOBAL
            if not live:
                return None  # a constant (parameter, buffer): no field
            if container:  # chunk / split: each piece has the field of the whole
                return _merge(live, str(n.name), notes)
            where = n.meta.get("nn_module_stack") and list(n.meta["nn_module_stack"])[-1] or str(n.name)
            axes, hw = _merge(live, where, notes)
            out = tuple(result.shape)
            win = None
            if n.op == "call_module":
                win = _window(modules[n.target], hw, tuple(out[-2:]))
            elif n.op == "call_function" and len(out) >= 3:
                win = _functional_window(n, hw, tuple(out[-2:]))
            if win is not None:
                if win == GLOBAL:
                    return GLOBAL
                return (grow_field(axes, win), tuple(out[-2:]))
            return (axes, hw) if _keeps(out, hw) else GLOBAL

    from nnkit.introspect.build import pass_through

    x = torch.empty((1, *shape), device="meta")
    with torch.no_grad(), pass_through(model):
        Prop(graph).run(x)
    out_node = [n for n in graph.graph.nodes if n.op == "output"][0]
    ins = [states.get(i) for i in out_node.all_input_nodes]
    output = GLOBAL if GLOBAL in ins else next((s for s in ins if s is not None), None)
    return FieldGraph(by_path=by_path, output=output, misaligned=notes, gates=gates)
