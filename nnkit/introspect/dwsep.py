"""The convolutions of a traced model, for nnkit.core.dwsep_network's whole-network comparison
(`nnkit dwsep ARCH`).

Which 1x1 convolution takes a depthwise convolution's output is followed tensor by tensor, not guessed from
shapes: a squeeze-excitation fc on a pooled 1x1 map, or a 1x1 conv on another branch of the same shape, would
pass a shape test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nnkit.core.dwsep import Cost, Ratio
from nnkit.core.dwsep_network import ConvLayer, NetworkComparison, compare_network
from nnkit.errors import UsageError
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

    from nnkit.introspect import meta_walk, smallest_input, trace, training_flags

    model, named = meta_walk(model)
    modules = dict(named)
    follower: list[_Sources] = []

    def sources(where: Callable[[], str]) -> _Sources:
        follower.append(_Sources(where))
        return follower[0]

    with training_flags(model, named, False):
        try:
            tr = trace.run(model, shape, source, fields=False, named=named, tracker=sources)
        except trace.TraceFailure as failure:
            smallest = smallest_input(rebuild or (lambda: model), shape, known=min_input)
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


# Howard et al. 2017: Table 4 (Conv MobileNet vs MobileNet), Table 6 (width), Table 7 (resolution)
PAPER = {"standard": Cost(29.3e6, 4866e6), "separable": Cost(4.2e6, 569e6)}  # type: ignore[arg-type]  # rounded
PAPER_WIDTH = {1.0: (4.2e6, 569e6), 0.75: (2.6e6, 325e6), 0.5: (1.3e6, 149e6), 0.25: (0.5e6, 41e6)}
PAPER_RESOLUTION = {224: (4.2e6, 569e6), 192: (4.2e6, 418e6), 160: (4.2e6, 290e6), 128: (4.2e6, 186e6)}


@dataclass(frozen=True)
class Variant:
    width: float
    input: tuple[int, ...]
    cost: Cost
    paper: Cost | None  # the paper's figure where it gives one (its params and mult-adds are rounded)


@dataclass(frozen=True)
class MobileNetComparison:
    """mobilenet_v1 against "Conv MobileNet", the same network of standard convolutions (Table 4), with the
    paper's widths (Table 6) and resolutions (Table 7)."""

    name: str
    input: tuple[int, ...]
    width: float
    standard: Cost
    separable: Cost
    theory: float  # sum(1/N + 1/9) over the separable layers, weighted by each one's standard-conv MACs
    variants: tuple[Variant, ...]
    paper: dict[str, Cost] | None  # Table 4's standard and separable figures, at width 1 on 224

    @property
    def ratio(self) -> Ratio:
        return self.separable.per(self.standard)


def _mobilenet_cost(width: float, size: int, standard: bool = False) -> Cost:
    from nnkit.introspect.registry import measure
    from nnkit.archs.mobilenet_v1 import mobilenet_v1
    from nnkit.introspect.build import on_meta

    model = on_meta(lambda: mobilenet_v1(width=width, standard=standard))
    return Cost(*measure(model, (3, size, size)))


def compare_mobilenet(width: float | None, shape: tuple[int, ...]) -> MobileNetComparison:
    from nnkit.archs.mobilenet_v1 import CONFIG, channels

    alpha = 1.0 if width is None else width
    if alpha <= 0:
        raise UsageError(f"--width must be positive, got {alpha:g}")
    if shape[0] != 3 or shape[1] != shape[2]:
        raise UsageError(f"--input {'x'.join(map(str, shape))}: mobilenet_v1 takes square 3-channel images, e.g. "
                         "3x224x224")
    size = shape[1]
    weight = total = 0.0
    c, h = channels(32, alpha), (size + 1) // 2
    for out, stride in CONFIG:  # Howard et al. 3.1: 1/N + 1/K^2 per separable layer
        o = channels(out, alpha)
        h = (h - 1) // stride + 1
        std_macs = h * h * 9 * c * o
        weight += std_macs * (1 / o + 1 / 9)
        total += std_macs
        c = o
    variants = [Variant(w, (3, size, size), _mobilenet_cost(w, size), Cost(*paper) if size == 224 else None)
                for w, paper in PAPER_WIDTH.items()]
    variants += [Variant(alpha, (3, r, r), _mobilenet_cost(alpha, r), Cost(*paper) if alpha == 1.0 else None)
                 for r, paper in PAPER_RESOLUTION.items() if r != size or alpha != 1.0]
    return MobileNetComparison("mobilenet_v1", (3, size, size), alpha, _mobilenet_cost(alpha, size, standard=True),
                               _mobilenet_cost(alpha, size), weight / total, tuple(variants),
                               PAPER if alpha == 1.0 and size == 224 else None)


def compare_target(target: Any, *, input: str | None = None,
                   width: float | None = None) -> MobileNetComparison | NetworkComparison:
    """`nnkit dwsep ARCH`: mobilenet_v1 against the paper's tables; any other network (a name, file.py:Class or a
    live nn.Module) against its standard twin."""
    from nnkit.introspect.target import is_user_model, resolve

    if isinstance(target, str) and not is_user_model(target):
        from nnkit.archs import get_arch

        info = get_arch(target)
        if info.name == "mobilenet_v1":
            from nnkit.introspect.target import parse_input

            _, shape = parse_input(input, 3)
            return compare_mobilenet(width, shape or info.input)
    if not isinstance(target, str):
        from nnkit.introspect.target import module_target

        return compare(module_target(target, input))
    return compare(resolve(target, input=input, num_classes=None, in_channels=None, width=width))
