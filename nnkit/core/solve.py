"""The inverse questions: which padding keeps the size, which (stride, padding) maps H to a wanted size,
which output_padding undoes a strided conv. Every answer comes from the forward formulas in nnkit.core.layers,
so the two directions cannot disagree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nnkit.core.layers import tconv_out, window_out
from nnkit.errors import GeometryError, UsageError


def conv_out(h: int, k: int, s: int, p: int, d: int = 1) -> int:
    """nn.Conv2d: floor((H + 2P - D*(K-1) - 1)/S) + 1; 0 or less means the window does not fit."""
    return window_out(h, k, s, p, p, d)[0]


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
        out = -(-size // stride)  # TensorFlow's 'same': ceil(H/S)
        total = max((out - 1) * stride + extent - size, 0)
        lines = [f"output = ceil({size}/{stride}) = {out}",
                 f"total padding = max(({out}-1)*{stride} + {extent} - {size}, 0) = {total}"]
    before, after = total // 2, total - total // 2
    if before == after:
        lines.append(f"p = {before} on each side")
    else:
        lines.append(f"p = {before} before and {after} after: asymmetric, so nn.Conv2d(padding={before}) "
                     "after nn.ZeroPad2d((0, 1, 0, 1)) for the extra one (PyTorch's padding='same' does this "
                     "itself at stride 1)")
    return SamePadding(kernel, dilation, stride, size, before, after, out, tuple(lines))


@dataclass(frozen=True)
class Mapping:
    transposed: bool
    stride: int
    padding: int
    output_padding: int
    left_out: int  # input rows the last window leaves out (conv)
    formula: str


@dataclass(frozen=True)
class MapResult:
    size_in: int
    size_out: int
    kernel: int
    dilation: int
    solutions: tuple[Mapping, ...]


def map_size(size_in: int, size_out: int, kernel: int, *, dilation: int = 1) -> MapResult:
    """Every (stride, padding) with padding below the kernel extent mapping size_in to size_out, exact fits
    first.

    Strides and paddings are enumerated (at most size x extent pairs); a transposed conv's output_padding is
    solved for, not searched.
    """
    _positive(input=size_in, output=size_out, kernel=kernel, dilation=dilation)
    extent = dilation * (kernel - 1) + 1
    found: list[Mapping] = []
    if size_out <= size_in:
        for s in range(1, size_in + 1):
            for p in range(0, extent):
                if conv_out(size_in, kernel, s, p, dilation) == size_out:
                    num = size_in + 2 * p - extent
                    lost = max(num % s - p, 0)  # what no window covers: right padding first, then input rows
                    found.append(Mapping(False, s, p, 0, lost,
                                         f"({size_in} + 2*{p} - {extent})/{s} + 1 = {size_out}"
                                         + (f" (floor; {lost} input rows left out)" if lost else "")))
    if size_out >= size_in:
        # (H-1)*s <= out + 2p bounds the stride; from a single pixel the output is the same for every stride
        top = (size_out + 2 * extent) // (size_in - 1) if size_in > 1 else size_out
        for s in range(1, top + 1):
            for p in range(0, extent):
                op = size_out - tconv_out(size_in, kernel, s, p, 0, dilation)
                if 0 <= op < max(s, dilation):
                    found.append(Mapping(True, s, p, op, 0,
                                         f"({size_in}-1)*{s} - 2*{p} + {dilation}*({kernel}-1) + {op} + 1 "
                                         f"= {size_out}"))
    if not found:
        raise GeometryError(f"no stride and padding below {extent} map {size_in} to {size_out} with a "
                            f"{kernel}-wide "
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
    """output_padding = H - tconv(conv(H)) with the same k, s, p, d; it is (H + 2p - extent) mod s < s."""
    _positive(input=size, kernel=kernel, stride=stride, dilation=dilation)
    if padding < 0:
        raise UsageError(f"padding must not be negative, got {padding}")
    out = conv_out(size, kernel, stride, padding, dilation)
    if out <= 0 or size + 2 * padding < dilation * (kernel - 1) + 1:
        raise GeometryError(f"conv(k={kernel}, s={stride}, p={padding}, d={dilation}) does not fit an input "
                            f"of {size}")
    back = tconv_out(out, kernel, stride, padding, 0, dilation)
    op = size - back
    lines = (f"conv: ({size} + 2*{padding} - {dilation}*({kernel}-1) - 1)/{stride} + 1 -> {out}",
             f"tconv without output_padding: ({out}-1)*{stride} - 2*{padding} + {dilation}*({kernel}-1) + 1 "
             f"= {back}",
             f"output_padding = {size} - {back} = {op}")
    return Undo(size, out, op, lines)



# --- per axis (1-D, 2-D, 3-D layers): each axis is the 1-D question on its own ------------------------------

_AXIS_NAMES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}


@dataclass(frozen=True)
class PerAxis:
    """One answer per spatial axis, for arguments written as 3x7x7 (a 3-D layer) or 3x3 (a 2-D one)."""

    axes: tuple[str, ...]
    answers: tuple[SamePadding, ...] | tuple[MapResult, ...] | tuple[Undo, ...]


def axis_sizes(option: str, text: str | None) -> tuple[int, ...] | None:
    """'3' -> (3,); '3x7x7' -> (3, 7, 7): one size, or one per axis, of an option of nnkit solve."""
    if text is None:
        return None
    parts = text.lower().replace("×", "x").split("x")
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(f"{option} {text}: expected a whole number, or one per axis such as 3x7x7") from None
    if len(sizes) > 3:
        raise UsageError(f"{option} {text}: at most 3 axes (DxHxW), got {len(sizes)}")
    return sizes


def per_axis(solve_one: Any, **options: tuple[str, tuple[int, ...] | None]) -> Any:
    """Call a scalar solver once, or once per axis when an option has several sizes (others are broadcast).

    `options` maps the solver's keyword to (the option as typed, its sizes); every multi-size option must have
    the same number of axes.
    """
    ranks = {len(v) for _, v in options.values() if v is not None and len(v) > 1}
    if len(ranks) > 1:
        given = ", ".join(f"{o} {'x'.join(map(str, v))}" for o,
                          v in options.values() if v is not None and len(v) > 1)
        raise UsageError(f"{given}: every option with one size per axis needs the same number of axes")
    if not ranks:
        return solve_one(**{k: (v[0] if v is not None else None) for k, (_, v) in options.items()})
    n = ranks.pop()
    answers = []
    for ax, name in enumerate(_AXIS_NAMES[n]):
        try:
            answers.append(solve_one(**{k: (None if v is None else v[ax] if len(v) > 1 else v[0])
                                        for k, (_, v) in options.items()}))
        except (GeometryError, UsageError) as exc:
            raise type(exc)(f"axis {name}: {exc}") from None
    return PerAxis(_AXIS_NAMES[n], tuple(answers))
