"""Depthwise-separable against standard convolution for one layer (Howard et al., "MobileNets", 2017, 3.1).

Cost ratio of MACs: (K^2*M*H*W + M*N*H*W) / (K^2*M*N*H*W) = 1/N + 1/K^2 for M input and N output channels.
The counts come from the same layer arithmetic as `nnkit params` and `nnkit flops`, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnkit.core.chain import analyze_chain
from nnkit.core.report import Shape, Topic
from nnkit.core.spec import SIGNATURES, LayerSpec, parse_layer, read_value, value_text
from nnkit.errors import UsageError


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.macs + other.macs)

    def __sub__(self, other: Cost) -> Cost:
        return Cost(self.params - other.params, self.macs - other.macs)

    def per(self, other: Cost) -> Ratio:
        """self / other, params and MACs each."""
        return Ratio(self.params / other.params, self.macs / other.macs)


@dataclass(frozen=True)
class Ratio:
    params: float
    macs: float


@dataclass(frozen=True)
class DwsepComparison:
    input: Shape
    output: Shape
    out: int
    kernel: tuple[int, int]
    bias: bool
    standard: Cost
    depthwise: Cost
    pointwise: Cost
    explain: tuple[str, ...]

    @property
    def separable(self) -> Cost:
        return self.depthwise + self.pointwise

    @property
    def ratio(self) -> Ratio:
        """Separable / standard."""
        return self.separable.per(self.standard)

    @property
    def theory(self) -> float:
        return 1 / self.out + 1 / (self.kernel[0] * self.kernel[1])


def _option(kind: str, option: str, key: str, value: str) -> object:
    """One command-line option read with the layer language's own types, the error naming the option."""
    try:
        return SIGNATURES[kind].types[key](read_value(value), key)
    except ValueError as exc:
        raise UsageError(f"{option} {value}: {str(exc).replace(key + ' ', '', 1)}") from None


def compare(input_text: str, *, out: int, kernel: str, stride: str = "1", padding: str = "0",
            bias: bool = False) -> DwsepComparison:
    n = _option("conv", "--out", "out", str(out))
    k = _option("conv", "-k", "k", kernel)
    s = _option("conv", "-s", "s", stride)
    p = _option("conv", "-p", "p", padding)

    def spec(kind: str, **args: object) -> LayerSpec:  # built from checked values, not pasted text
        text = f"{kind}(" + ",".join(f"{key}={value_text(v)}" for key, v in args.items()) + ")"
        return parse_layer(text)

    std = analyze_chain(input_text, [spec("conv", out=n, k=k, s=s, p=p, bias=bias)])
    sep = analyze_chain(input_text,
                        [spec("dwconv", k=k, s=s, p=p, bias=bias), spec("pwconv", out=n, bias=bias)])
    conv, (dw, pw) = std.layers[0], sep.layers
    kh, kw = k  # type: ignore[misc]
    c = std.input[0]
    explain = [f"{name} {f.text}" for name, row in (("standard", conv), ("depthwise", dw), ("pointwise", pw))
               for f in row.explain if f.topic in (Topic.params, Topic.macs)]
    standard, depthwise, pointwise = (Cost(x.params, x.macs) for x in (conv, dw, pw))
    theory = 1 / n + 1 / (kh * kw)  # type: ignore[operator]
    measured = (depthwise.macs + pointwise.macs) / standard.macs
    explain.append(f"ratio (MACs): ({kh}*{kw}*{c}*H*W + {c}*{n}*H*W)/({kh}*{kw}*{c}*{n}*H*W) = 1/{n} + "
                   f"1/{kh * kw} = {theory:.4f}; measured {measured:.4f}")
    return DwsepComparison(input=std.input, output=std.output, out=n, kernel=(kh, kw), bias=bias,  # type: ignore
                           standard=standard, depthwise=depthwise, pointwise=pointwise,
                           explain=tuple(explain))


# Whole networks (`nnkit dwsep ARCH`): the network as built against its "standard twin", where each depthwise
# convolution and the pointwise (1x1) convolution that consumes its output are one standard convolution with
# the depthwise kernel, stride and padding, from the depthwise input channels to the pointwise output channels
# (Howard et al. 2017, Table 4's "Conv MobileNet", generalised). Everything else stays: BatchNorm,
# activations, squeeze-excitation, expansions. The layers come from a traced model (nnkit.introspect.dwsep),
# so this part needs no torch either.

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
