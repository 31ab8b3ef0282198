"""The inverse questions: which padding keeps the size, which (stride, padding) maps H to a wanted size,
which output_padding undoes a strided conv. Every answer comes from the forward formulas in nnkit.core.layers,
so the two directions cannot disagree."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nnkit.core.layers import tconv_out, window_out
from nnkit.core.numbers import MAX_SIZE
from nnkit.errors import GeometryError, UsageError

MAX_SOLUTIONS = 100  # listed by map_size, best first; a size with more (huge inputs) says how many in `total`
MAX_EXTENT = 4096  # dilation*(kernel-1) + 1: every padding below it is tried, so this bounds the time


def conv_out(h: int, k: int, s: int, p: int, d: int = 1) -> int:
    """nn.Conv2d: floor((H + 2P - D*(K-1) - 1)/S) + 1; 0 or less means the window does not fit."""
    return window_out(h, k, s, p, p, d)[0]


def _positive(**values: int) -> None:
    for name, v in values.items():
        if v <= 0:
            raise UsageError(f"{name} must be positive, got {v}")
        if v > MAX_SIZE:
            shown = f"{v:,}" if v.bit_length() < 100 else f"of {v.bit_length():,} bits"
            raise UsageError(f"{name} {shown} is above {MAX_SIZE:,} (2**31 - 1), beyond any network")


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
        lines.append(f"p = {before} before and {after} after: asymmetric, so nn.Conv2d(padding={before}) after "
                     "nn.ZeroPad2d((0, 1, 0, 1)) for the extra one (PyTorch's padding='same' does this itself at "
                     "stride 1)")
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
    total: int = 0  # all solutions; more than len(solutions) when the list was cut at MAX_SOLUTIONS


def map_size(size_in: int, size_out: int, kernel: int, *, dilation: int = 1) -> MapResult:
    """Every (stride, padding) with padding below the kernel extent mapping size_in to size_out, exact fits first
    (the first MAX_SOLUTIONS of them; `total` counts all).

    Solved, not searched, so the time does not grow with the sizes: for each padding the strides that fit form
    one interval, read off the forward formula, and along it the rows left out (conv) or the output_padding
    (tconv) change monotonically, so each padding yields its solutions already in order and a merge of those
    streams gives the best ones first.
    """
    _positive(input=size_in, output=size_out, kernel=kernel, dilation=dilation)
    extent = dilation * (kernel - 1) + 1
    if extent > MAX_EXTENT:
        raise UsageError(f"kernel extent {dilation}*({kernel}-1) + 1 = {extent:,} is above {MAX_EXTENT:,}, beyond any "
                         "network")
    streams: list[Iterator[tuple[tuple[int, ...], Mapping]]] = []
    total = 0
    for p in range(extent):
        if size_out <= size_in:
            lo, hi, gen = _conv_strides(size_in, size_out, kernel, dilation, p)
            total += max(0, hi - lo + 1)
            if lo <= hi:
                streams.append(gen)
        if size_out >= size_in:
            lo, hi, gen = _tconv_strides(size_in, size_out, kernel, dilation, p)
            total += max(0, hi - lo + 1)
            if lo <= hi:
                streams.append(gen)
    found = tuple(m for _, m in itertools.islice(heapq.merge(*streams, key=lambda e: e[0]), MAX_SOLUTIONS))
    if not found:
        raise GeometryError(f"no stride and padding below {extent} map {size_in} to {size_out} with a {kernel}-wide "
                            "kernel")
    return MapResult(size_in, size_out, kernel, dilation, found, total)


def _conv_strides(h: int, o: int, k: int, d: int, p: int) -> tuple[int, int, Iterator[Any]]:
    """Strides s with conv_out(h, k, s, p, d) == o, as (first, last, their solutions best first).

    With num = h + 2p - extent >= 0, the output is num // s + 1, so o - 1 == num // s: s > num / o and
    s <= num / (o - 1), up to s = h. On that interval num % s = num - (o-1)*s, so the rows left out,
    max(num % s - p, 0), fall as s grows: exact fits are the largest strides.
    """
    extent = d * (k - 1) + 1
    num = h + 2 * p - extent
    if num < 0:
        return 1, 0, iter(())
    lo, hi = num // o + 1, (h if o == 1 else min(h, num // (o - 1)))
    flag = o > h  # the sort key's third part: the layer that does not change the size the asked way comes after
    lo = max(lo, 1)

    def one(s: int) -> tuple[tuple[int, ...], Mapping]:
        lost = max(num % s - p, 0)  # what no window covers: right padding first, then input rows
        m = Mapping(False, s, p, 0, lost, f"({h} + 2*{p} - {extent})/{s} + 1 = {o}"
                    + (f" (floor; {lost} input rows left out)" if lost else ""))
        return (lost, 0, flag, s, p), m

    def gen() -> Iterator[tuple[tuple[int, ...], Mapping]]:
        if o == 1:  # num % s == num for every s > num: the same rows left out, strides in order
            yield from (one(s) for s in range(lo, hi + 1))
            return
        exact = max(lo, -(-(num - p) // (o - 1)))  # smallest s with num - (o-1)*s - p <= 0
        yield from (one(s) for s in range(exact, hi + 1))
        yield from (one(s) for s in range(min(hi, exact - 1), lo - 1, -1))

    return lo, hi, gen()


def _tconv_strides(h: int, o: int, k: int, d: int, p: int) -> tuple[int, int, Iterator[Any]]:
    """Strides s of a tconv(k, s, p, d) giving o with an output_padding 0 <= op < max(s, d), best first.

    op = o - ((h-1)*s - 2p + extent) falls by h - 1 per unit of stride: op >= 0 bounds s from above, op < s or
    op < d from below, and the smallest op is the largest stride. From one pixel (h = 1) op is the same for
    every stride up to o.
    """
    extent = d * (k - 1) + 1
    room = o + 2 * p - extent  # (h-1)*s + op
    flag = not o > h

    def one(s: int) -> tuple[tuple[int, ...], Mapping]:
        op = o - tconv_out(h, k, s, p, 0, d)
        return (0, op, flag, s, p), Mapping(True, s, p, op, 0, f"({h}-1)*{s} - 2*{p} + {d}*({k}-1) + {op} + 1 "
                                                               f"= {o}")

    if room < 0:
        return 1, 0, iter(())
    if h == 1:
        lo, hi = (1 if room < d else room + 1), o
        return lo, hi, (one(s) for s in range(lo, hi + 1))
    top = (o + 2 * extent) // (h - 1)  # (H-1)*s <= out + 2p bounds the stride
    hi = min(top, room // (h - 1))
    lo = max(1, min(room // h + 1, (room - d) // (h - 1) + 1))
    return lo, hi, (one(s) for s in range(hi, lo - 1, -1))


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
    if padding > MAX_SIZE:
        raise UsageError(f"padding {padding} is above {MAX_SIZE:,} (2**31 - 1), beyond any network")
    out = conv_out(size, kernel, stride, padding, dilation)
    if out <= 0 or size + 2 * padding < dilation * (kernel - 1) + 1:
        raise GeometryError(f"conv(k={kernel}, s={stride}, p={padding}, d={dilation}) does not fit an input of "
                            f"{size}")
    back = tconv_out(out, kernel, stride, padding, 0, dilation)
    op = size - back
    lines = (f"conv: ({size} + 2*{padding} - {dilation}*({kernel}-1) - 1)/{stride} + 1 -> {out}",
             f"tconv without output_padding: ({out}-1)*{stride} - 2*{padding} + {dilation}*({kernel}-1) + 1 = {back}",
             f"output_padding = {size} - {back} = {op}")
    return Undo(size, out, op, lines)



# --- per axis (1-D, 2-D, 3-D layers): each axis is the 1-D question on its own --------------------------------

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
        given = ", ".join(f"{o} {'x'.join(map(str, v))}" for o, v in options.values() if v is not None and len(v) > 1)
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
