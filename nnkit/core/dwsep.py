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
