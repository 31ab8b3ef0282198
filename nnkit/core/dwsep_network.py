"""Whole networks against their standard twin (`nnkit dwsep ARCH`): the network as built, where each depthwise
convolution and the pointwise (1x1) convolution that consumes its output are one standard convolution with the
depthwise kernel, stride and padding, from the depthwise input channels to the pointwise output channels (Howard
et al. 2017, Table 4's "Conv MobileNet", generalised). Everything else stays: BatchNorm, activations,
squeeze-excitation, expansions. The layers come from a traced model (nnkit.introspect.dwsep), so this module
needs no torch either; it is apart from nnkit.core.dwsep so that `nnkit dwsep` on one layer does not load it.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnkit.core.dwsep import Cost, Ratio
from nnkit.core.report import Shape
from nnkit.errors import UsageError


@dataclass(frozen=True)
class ConvLayer:
    """One call of a 2-d convolution as traced: shapes without batch, MACs for one item."""
    path: str
    cin: int
    cout: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    groups: int
    bias: bool
    input: Shape
    output: Shape
    params: int
    macs: int
    source: str | None = None  # the depthwise conv whose output (through shape-keeping ops) this conv takes

    @property
    def depthwise(self) -> bool:  # one filter group per input channel (a channel multiplier is allowed)
        return self.groups > 1 and self.groups == self.cin

    @property
    def pointwise(self) -> bool:
        return self.kernel == (1, 1) and self.groups == 1 and self.stride == (1, 1)

    @property
    def cost(self) -> Cost:
        return Cost(self.params, self.macs)


@dataclass(frozen=True)
class Pair:
    depthwise: ConvLayer
    pointwise: ConvLayer

    @property
    def separable(self) -> Cost:
        return self.depthwise.cost + self.pointwise.cost

    @property
    def standard(self) -> Cost:
        """k*k*M*N weights (+ N biases if either conv had them), at every output position of the pointwise."""
        (kh, kw), m, n = self.depthwise.kernel, self.depthwise.cin, self.pointwise.cout
        bias = n if self.depthwise.bias or self.pointwise.bias else 0
        positions = self.depthwise.output[1] * self.depthwise.output[2]
        return Cost(kh * kw * m * n + bias, positions * kh * kw * m * n)


@dataclass(frozen=True)
class NetworkComparison:
    source: str
    input: Shape
    separable: Cost  # the network as built
    pairs: tuple[Pair, ...]
    unpaired: tuple[str, ...]  # depthwise convolutions no pointwise convolution consumes directly

    @property
    def standard(self) -> Cost:
        """MACs change at every call of a pair; params once per pair of modules (a block called twice shares
        its weights, and so would its twin)."""
        once = {(p.depthwise.path, p.pointwise.path): p for p in self.pairs}.values()
        return Cost(self.separable.params + sum(p.standard.params - p.separable.params for p in once),
                    self.separable.macs + sum(p.standard.macs - p.separable.macs for p in self.pairs))

    @property
    def ratio(self) -> Ratio:
        return self.separable.per(self.standard)

    @property
    def pairs_ratio(self) -> Ratio:
        """Separable / standard over the pairs alone, what the theory predicts."""
        none = Cost(0, 0)
        return sum((p.separable for p in self.pairs), none).per(sum((p.standard for p in self.pairs), none))

    @property
    def theory(self) -> float:
        """1/N + 1/K^2 per pair (Howard et al. 2017, 3.1), weighted by the pair's standard MACs."""
        total = sum(p.standard.macs for p in self.pairs)
        return sum(p.standard.macs * (1 / p.pointwise.cout
                                      + 1 / (p.depthwise.kernel[0] * p.depthwise.kernel[1]))
                   for p in self.pairs) / total


def pair_up(convs: list[ConvLayer]) -> tuple[list[Pair], list[ConvLayer]]:
    """Each depthwise conv call with the first later 1x1 conv that takes its output (ConvLayer.source,
    followed through shape-keeping ops by the tracer) at the same spatial size."""
    pairs: list[Pair] = []
    waiting: dict[str, ConvLayer] = {}  # depthwise path -> its latest call not yet paired
    alone: list[ConvLayer] = []
    for conv in convs:
        if conv.depthwise:
            if conv.path in waiting:
                alone.append(waiting[conv.path])
            waiting[conv.path] = conv
        elif conv.pointwise and conv.source in waiting and conv.output[1:] == waiting[conv.source].output[1:]:
            pairs.append(Pair(waiting.pop(conv.source), conv))
    return pairs, alone + list(waiting.values())


def compare_network(source: str, input: Shape, params: int, macs: int,
                    convs: list[ConvLayer]) -> NetworkComparison:
    pairs, alone = pair_up(convs)
    if not pairs:
        raise UsageError(f"{source} has no depthwise-separable pair (a depthwise conv whose output a 1x1 "
                         "conv takes): nothing to compare; nnkit dwsep CxHxW --out N -k K compares one layer")
    return NetworkComparison(source=source, input=input, separable=Cost(params, macs), pairs=tuple(pairs),
                             unpaired=tuple(c.path for c in alone))
