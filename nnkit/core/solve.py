"""The inverse questions: which padding keeps the size, which (stride, padding) maps H to a wanted size,
which output_padding undoes a strided conv. All answers are checked with the forward formulas of
nnkit.core.layers' conventions (nn.Conv2d and nn.ConvTranspose2d docs)."""

from __future__ import annotations

from dataclasses import dataclass

from nnkit.errors import GeometryError, UsageError


def conv_out(h: int, k: int, s: int, p: int, d: int = 1) -> int:
    """nn.Conv2d: floor((H + 2P - D*(K-1) - 1)/S) + 1; 0 or less means the window does not fit."""
    return (h + 2 * p - d * (k - 1) - 1) // s + 1


def tconv_out(h: int, k: int, s: int, p: int, op: int = 0, d: int = 1) -> int:
    """nn.ConvTranspose2d: (H-1)*S - 2P + D*(K-1) + output_padding + 1."""
    return (h - 1) * s - 2 * p + d * (k - 1) + op + 1


def _positive(**values: int) -> None:
    for name, v in values.items():
        if v <= 0:
            raise UsageError(f"{name} must be positive, got {v}")


@dataclass(frozen=True)
class SamePadding:
    kernel: int
    dilation: int
    stride: int
    size: int | None
    before: int
    after: int
    output: int | None
    explain: tuple[str, ...]

    @property
    def symmetric(self) -> bool:
        return self.before == self.after


def same(kernel: int, *, dilation: int = 1, stride: int = 1, size: int | None = None) -> SamePadding:
    _positive(kernel=kernel, dilation=dilation, stride=stride)
    extent = dilation * (kernel - 1) + 1
    if stride == 1:
        total = extent - 1
        lines = [f"total padding = {dilation}*({kernel}-1) = {total}"]
        out = size
    else:
        if size is None:
            raise UsageError("with stride > 1 the padding depends on the input size: give --input H")
        _positive(input=size)
        out = -(-size // stride)
        total = max((out - 1) * stride + extent - size, 0)
        lines = [f"output = ceil({size}/{stride}) = {out}",
                 f"total padding = max(({out}-1)*{stride} + {extent} - {size}, 0) = {total}"]
    before, after = total // 2, total - total // 2
    if before == after:
        lines.append(f"p = {before} on each side")
    else:
        lines.append(f"p = {before} before and {after} after: asymmetric, so nn.Conv2d(padding={before}) plus "
                     f"F.pad or nn.ZeroPad2d((0, 1, 0, 1)) for the extra one (PyTorch's padding='same' does this "
                     "itself at stride 1)")
    return SamePadding(kernel, dilation, stride, size, before, after, out, tuple(lines))


@dataclass(frozen=True)
class Mapping:
    transposed: bool
    stride: int
    padding: int
    output_padding: int
    left_out: int  # rows the last window leaves out (conv)
    formula: str


@dataclass(frozen=True)
class MapResult:
    size_in: int
    size_out: int
    kernel: int
    dilation: int
    solutions: tuple[Mapping, ...]


def map_size(size_in: int, size_out: int, kernel: int, *, dilation: int = 1) -> MapResult:
    """Every (stride, padding) with padding < kernel extent mapping size_in to size_out, exact fits first."""
    _positive(input=size_in, output=size_out, kernel=kernel, dilation=dilation)
    extent = dilation * (kernel - 1) + 1
    found: list[Mapping] = []
    if size_out <= size_in:
        for s in range(1, size_in + 1):
            for p in range(0, extent):
                if conv_out(size_in, kernel, s, p, dilation) == size_out:
                    num = size_in + 2 * p - extent
                    found.append(Mapping(False, s, p, 0, num % s,
                                         f"({size_in} + 2*{p} - {extent})/{s} + 1 = {size_out}"
                                         + (f" (floor; {num % s} left out)" if num % s else "")))
    if size_out >= size_in:
        for s in range(1, size_out + 1):
            for p in range(0, extent):
                for op in range(0, max(s, dilation)):
                    if tconv_out(size_in, kernel, s, p, op, dilation) == size_out:
                        found.append(Mapping(True, s, p, op, 0,
                                             f"({size_in}-1)*{s} - 2*{p} + {dilation}*({kernel}-1) + {op} + 1 "
                                             f"= {size_out}"))
    if not found:
        raise GeometryError(f"no stride and padding below {extent} map {size_in} to {size_out} with a {kernel}-wide "
                            "kernel")
    found.sort(key=lambda m: (m.left_out, m.output_padding, m.transposed != (size_out > size_in), m.stride,
                              m.padding))
    return MapResult(size_in, size_out, kernel, dilation, tuple(found))


@dataclass(frozen=True)
class Undo:
    size: int
    conv_output: int
    output_padding: int
    explain: tuple[str, ...]


def undo(size: int, kernel: int, *, stride: int = 1, padding: int = 0, dilation: int = 1) -> Undo:
    _positive(input=size, kernel=kernel, stride=stride, dilation=dilation)
    if padding < 0:
        raise UsageError(f"padding must not be negative, got {padding}")
    out = conv_out(size, kernel, stride, padding, dilation)
    if out <= 0:
        raise GeometryError(f"conv(k={kernel}, s={stride}, p={padding}, d={dilation}) does not fit an input of "
                            f"{size}")
    back = tconv_out(out, kernel, stride, padding, 0, dilation)
    op = size - back
    lines = (f"conv: ({size} + 2*{padding} - {dilation}*({kernel}-1) - 1)/{stride} + 1 -> {out}",
             f"tconv without output_padding: ({out}-1)*{stride} - 2*{padding} + {dilation}*({kernel}-1) + 1 = {back}",
             f"output_padding = {size} - {back} = {op}")
    if not 0 <= op < max(stride, dilation):  # cannot happen for a conv that fits; kept as the proof of the claim
        raise GeometryError(f"no output_padding gives back {size}")
    return Undo(size, out, op, lines)
