"""Depthwise-separable against standard convolution for one layer (Howard et al., "MobileNets", 2017, 3.1).

Cost ratio of MACs: (K^2*M*H*W + M*N*H*W) / (K^2*M*N*H*W) = 1/N + 1/K^2 for M input and N output channels.
The counts come from the same chain arithmetic as `nnkit params` and `nnkit flops`, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnkit.core.chain import analyze_chain
from nnkit.core.report import Shape


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int


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
        return Cost(self.depthwise.params + self.pointwise.params, self.depthwise.macs + self.pointwise.macs)

    @property
    def ratio(self) -> Cost:  # fractions, separable / standard, as floats
        return Cost(self.separable.params / self.standard.params,  # type: ignore[arg-type]
                    self.separable.macs / self.standard.macs)

    @property
    def theory(self) -> float:
        return 1 / self.out + 1 / (self.kernel[0] * self.kernel[1])


def compare(input_text: str, *, out: int, kernel: str, stride: str = "1", padding: str = "0",
            bias: bool = False) -> DwsepComparison:
    b = "true" if bias else "false"
    std = analyze_chain(input_text, f"conv({out},{kernel},s={stride},p={padding},bias={b})")
    sep = analyze_chain(input_text, f"dwconv({kernel},s={stride},p={padding},bias={b}) pwconv({out},bias={b})")
    dw, pw = sep.layers
    conv = std.layers[0]
    k = dw.explain  # the formulas of each part, as `nnkit params --explain` prints them
    explain = (
        [f"standard {x}" for x in conv.explain if x.startswith(("params", "MACs"))]
        + [f"depthwise {x}" for x in k if x.startswith(("params", "MACs"))]
        + [f"pointwise {x}" for x in pw.explain if x.startswith(("params", "MACs"))]
    )
    kh, kw = (int(v) for v in (kernel.lower().split("x") * 2)[:2])
    c = std.input[0]
    result = DwsepComparison(
        input=std.input, output=std.output, out=out, kernel=(kh, kw), bias=bias,
        standard=Cost(conv.params, conv.macs), depthwise=Cost(dw.params, dw.macs),
        pointwise=Cost(pw.params, pw.macs), explain=(),
    )
    explain.append(f"ratio (MACs): ({kh}*{kw}*{c}*H*W + {c}*{out}*H*W)/({kh}*{kw}*{c}*{out}*H*W) = 1/{out} + "
                   f"1/{kh * kw} = {result.theory:.4f}; measured {result.ratio.macs:.4f}")
    return DwsepComparison(**{**result.__dict__, "explain": tuple(explain)})
