"""The convolutions of a traced model, for nnkit.core.dwsep's whole-network comparison (`nnkit dwsep ARCH`).

Which 1x1 convolution takes a depthwise convolution's output is followed tensor by tensor, not guessed from
shapes: a squeeze-excitation fc on a pooled 1x1 map, or a 1x1 conv on another branch of the same shape, would
pass a shape test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nnkit.core.dwsep import ConvLayer, NetworkComparison, compare_network
from nnkit.introspect.rf import Follower
from nnkit.introspect.trace import SHAPE_KEEPING


class _Sources(Follower):
    """Which depthwise convolution's output each tensor is (its path), through elementwise operators that keep
    its shape (BatchNorm and activations, and a squeeze-excitation scale)."""

    def __init__(self, where: Callable[[], str]) -> None:
        import torch

        super().__init__(where)
        self._pointwise: dict[Any, bool] = {}  # per operator: elementwise (torch.Tag.pointwise) or a plain copy
        self._copies = (torch.ops.aten.clone, torch.ops.aten.detach, torch.ops.aten.alias)
        self._tag = torch.Tag.pointwise
        # Activations and norms keep the source too: BatchNorm's output is the first of three, and Hardswish is
        # not tagged pointwise.
        self._keeping = frozenset(getattr(torch.ops.aten, name) for name in SHAPE_KEEPING)
        self.inputs: list[tuple[str, str | None]] = []  # per convolution operator: (module running, input's source)

    def op(self, packet: Any, args: tuple[Any, ...], out: Any) -> None:
        if packet in self._keeping:
            if id(args[0]) in self.states:
                self._set(out[0] if isinstance(out, (tuple, list)) else out, self.states[id(args[0])])
            return
        if not isinstance(out, self._tensor):
            return
        if packet is self._convolution:
            self.inputs.append((self.where(), self.states.get(id(args[0]))))
            groups, x = args[8], args[0]
            if groups > 1 and x.dim() == 4 and groups == x.shape[1]:  # depthwise: its output starts a source
                self._set(out, self.where())
            return
        keeps = self._pointwise.get(packet)
        if keeps is None:  # a pooling of a 1x1 map keeps the shape too, but is not the depthwise output any more
            keeps = self._pointwise[packet] = packet in self._copies or any(
                self._tag in getattr(packet, name).tags for name in packet.overloads())
        if not keeps:
            return
        for a in args:
            if isinstance(a, self._tensor) and id(a) in self.states and a.shape == out.shape:
                self._set(out, self.states[id(a)])
                return


def convolutions(model: Any, shape: tuple[int, ...], source: str, *, min_input: tuple[int, int] | None = None,
                 rebuild: Any = None) -> tuple[list[ConvLayer], Any]:
    """Every call of an nn.Conv2d in execution order, with the trace (totals) it came from."""
    from torch import nn

    from nnkit.introspect import _on_meta, smallest_input, trace, training_flags

    model, named = _on_meta(model)
    modules = dict(named)
    follower: list[_Sources] = []

    def sources(where: Callable[[], str]) -> _Sources:
        follower.append(_Sources(where))
        return follower[0]

    with training_flags(model, named, False):
        try:
            tr = trace.run(model, shape, source, fields=False, named=named, tracker=sources)
        except trace._Failure as failure:  # noqa: SLF001
            smallest = min_input or smallest_input(rebuild or (lambda: model), shape)
            raise trace.failure_message(source, shape, failure, smallest) from None
    ops = follower[0].inputs
    at = 0
    convs = []
    for c in tr.calls:  # an nn.Conv2d call runs one convolution operator; F.conv2d elsewhere runs its own
        m = modules[c.path]
        if not isinstance(m, nn.Conv2d):
            continue
        while at < len(ops) and ops[at][0] != c.path:
            at += 1
        fed_by = ops[at][1] if at < len(ops) else None
        at += 1
        if c.output is not None and len(c.output) == 3:
            convs.append(ConvLayer(path=c.path, cin=m.in_channels, cout=m.out_channels, kernel=tuple(m.kernel_size),
                                   stride=tuple(m.stride), groups=m.groups, bias=m.bias is not None,
                                   input=c.input, output=c.output,
                                   params=sum(p.numel() for p in m.parameters()), macs=c.macs, source=fed_by))
    return convs, tr


def compare(target: Any) -> NetworkComparison:
    """target: a resolved nnkit.introspect.target.Target."""
    convs, tr = convolutions(target.model, target.input, target.name, min_input=target.min_input,
                             rebuild=target.rebuild)
    params = sum({id(p): p.numel() for p in target.model.parameters()}.values())
    return compare_network(target.name, target.input, params, tr.macs, convs)
