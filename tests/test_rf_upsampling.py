"""Issue 11: receptive fields through upsampling (tconv, nearest and bilinear upsample), against the gradient.

The oracle: a real nn.Sequential with non-negative weights and inputs (max pooling as an average pool of the same
window, so that no position hides behind an argmax; ReLU is the identity on non-negative values). Backpropagating
one output position gives a gradient whose non-zero input positions are exactly the ones it can depend on.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nnkit.core.chain import analyze_chain, position_fields
from nnkit.core.spec import parse_chain, parse_layer
from nnkit.errors import GeometryError

torch = pytest.importorskip("torch")
from tests import torch_oracle
from tests.torch_oracle import gradient_spans

pytestmark = pytest.mark.torch

UNET = ("conv(64,3,p=1) maxpool(2) conv(128,3,p=1) maxpool(2) conv(256,3,p=1) tconv(128,2,s=2) conv(128,3,p=1) "
        "tconv(64,2,s=2) conv(64,3,p=1) conv(2,1)")


def _model(texts: list[str], shape: tuple[int, ...]) -> torch.nn.Module:
    layers, current = [], shape
    for spec in parse_chain(texts):
        if spec.kind.startswith("maxpool"):
            spec = parse_layer(spec.text.replace("maxpool", "avgpool"))
        m = torch_oracle.module(spec, current)
        layers.append(m)
        current = tuple(m(torch.zeros(1, *current)).shape[1:])
    model = torch.nn.Sequential(*layers).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand_like(p) + 0.1)
    return model


def _gradient_spans(texts: list[str], shape: tuple[int, ...], ax: int,
                    positions: list[int] | None = None) -> dict[int, tuple[int, int] | None]:
    """The gradient oracle's spans (tests/torch_oracle.py) of the chain's real module."""
    return gradient_spans(_model(texts, shape), shape, ax, positions)


def _clip(span: tuple[int, int] | None, n: int) -> tuple[int, int] | None:
    if span is None or span[1] < 0 or span[0] >= n:
        return None
    return max(span[0], 0), min(span[1], n - 1)


def _check(texts: list[str], shape: tuple[int, ...], positions: list[int] | None = None) -> None:
    """Every output position: nnkit's interval, cut to the input, holds where the gradient reaches, and is exactly it
    where the interval lies inside the input (across a border a window's padding may lead onto input rows that the
    real layer's last window leaves out, as in Araujo et al.'s convention)."""
    a = analyze_chain("x".join(map(str, shape)), texts)
    fields = position_fields("x".join(map(str, shape)), texts)
    for ax, spans in enumerate(fields):
        seen = _gradient_spans(texts, shape, ax, positions)
        n = shape[1 + ax]
        # The oracle holds the other axes at their centre: where that centre reads no input (a gap a stride-2 tconv
        # leaves), no position of this axis can reach any, whatever this axis's own spans are.
        gap = any(other[len(other) // 2] is None for o, other in enumerate(fields) if o != ax)
        for j, got in seen.items():
            if gap:
                assert got is None, (texts, ax, j, got)
                continue
            want = _clip(spans[j], n)
            # An inner layer's padding is counted as Araujo et al. count a conv's padding: paths through it may make
            # nnkit's interval larger than what the gradient reaches (an overstatement, never an understatement).
            # Without inner padding the two are equal wherever the interval lies inside the input.
            inner_padding = any(re.search(r"p=[1-9]", t) for t in texts[1:])
            if spans[j] is not None and 0 <= spans[j][0] and spans[j][1] < n and not inner_padding:
                assert want == got, (texts, ax, j, spans[j], got)
            elif spans[j] is not None and 0 <= spans[j][0] and spans[j][1] < n:
                assert got is None or (want[0] <= got[0] and got[1] <= want[1]), (texts, ax, j, spans[j], got)
            else:
                assert got is None or (want is not None and want[0] <= got[0] and got[1] <= want[1]), (
                    texts, ax, j, spans[j], got)
        sizes = [s[1] - s[0] + 1 for s in spans if s is not None]
        assert a.rf is not None and a.rf.size[ax] == (max(sizes) if sizes else 0)
        first = next(((j, s) for j, s in enumerate(spans) if s is not None), None)
        if first is not None:  # else every output is bias alone: size 0 (checked above)
            assert a.rf.padding[ax] == first[0] * a.rf.stride[ax] - first[1][0]


def test_unet_chain_field_matches_the_gradient_at_every_row():
    """The README's U-Net-style chain: 26x26; inside, output rows alternate between 22 and 26 input rows in pairs
    (two stride-2 tconvs), and the border rows, whose tconvs have no input past the edge, see 18."""
    text = UNET.replace("conv(64,", "conv(4,").replace("conv(128,", "conv(4,").replace("conv(256,", "conv(4,")
    text = text.replace("tconv(128,", "tconv(4,").replace("tconv(64,", "tconv(4,")
    a = analyze_chain("1x40x40", UNET)
    assert (a.rf.size, a.rf.stride, a.rf.padding) == ((26, 26), (1, 1), (7, 7))
    assert any("output positions differ in field (18 to 26 input rows)" in n for n in a.layers[-1].notes)
    rows = [s[1] - s[0] + 1 for s in position_fields("1x40x40", UNET)[0]]
    assert rows[:7] == [18, 22, 22, 22, 22, 26, 26] and set(rows[3:-3]) == {22, 26}
    _check(text.split(), (1, 24, 24))


@pytest.mark.parametrize("chain, size, stride", [
    ("conv(2,3) upsample(2)", (3, 3), ("1/2", "1/2")),
    ("conv(2,3) upsample(2,mode=bilinear) conv(2,3)", (5, 5), ("1/2", "1/2")),
    ("maxpool(2) upsample(4,mode=bilinear)", (4, 4), ("1/2", "1/2")),
    ("conv(2,3,s=2) tconv(2,4,s=2,p=1) conv(2,3,p=1)", (7, 7), ("1", "1")),
    ("conv(2,3) tconv(2,3,s=2,p=1,op=1) upsample(3)", (4, 4), ("1/6", "1/6")),
    ("tconv(2,3,s=3,d=2) conv(2,3)", (3, 3), ("1/3", "1/3")),
])
def test_every_upsampling_kind_against_the_gradient(chain, size, stride):
    a = analyze_chain("2x13x13", chain)
    assert a.rf.size == size and tuple(str(s) for s in a.rf.stride) == stride
    _check(chain.split(), (2, 13, 13))


def _layer(data: st.DataObject, r: str) -> str:
    kind = data.draw(st.sampled_from(["conv", "pool", "tconv", "nearest", "bilinear", "relu"]))
    if kind == "conv":
        k, s, p, d = (data.draw(st.integers(*b)) for b in ((1, 4), (1, 2), (0, 1), (1, 2)))
        return f"conv{r}(2,{k},s={s},p={p},d={d})"
    if kind == "pool":
        return data.draw(st.sampled_from([f"maxpool{r}(2)", f"maxpool{r}(3,2,p=1)", f"avgpool{r}(2,1)"]))
    if kind == "tconv":
        k, s, d = (data.draw(st.integers(*b)) for b in ((1, 4), (1, 3), (1, 2)))
        p = data.draw(st.integers(0, d * (k - 1)))  # more would crop: see test_cropping_tconv_is_sound
        op = data.draw(st.integers(0, max(s, d) - 1))
        return f"tconv{r}(2,{k},s={s},p={p},op={op},d={d})"
    if kind == "nearest":
        return f"upsample({data.draw(st.sampled_from([2, 3]))})"
    if kind == "bilinear":
        # Scales 2 and 4: their interpolation weights are never exactly zero, so the gradient shows both reads
        # (at x3 some outputs fall exactly on an input and PyTorch's weight on the other is a rounding error).
        return f"upsample({data.draw(st.sampled_from([2, 4]))},mode=bilinear)"
    return "relu"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), length=st.integers(8, 24))
def test_random_1d_chains_with_upsampling_match_the_gradient_everywhere(data, length):
    """Every output position of random 1-D chains mixing convs, pools, tconvs and both upsamplings."""
    chain = [data.draw(st.sampled_from(["conv1d(2,1)", "conv1d(2,3,p=1)"])),
             *(_layer(data, "1d") for _ in range(data.draw(st.integers(1, 4))))]
    chain.append(data.draw(st.sampled_from(["tconv1d(2,2,s=2)", "upsample(2)", "upsample(2,mode=bilinear)"])))
    try:
        a = analyze_chain(f"2x{length}", chain)
    except GeometryError:
        assume(False)
        return
    assume(a.output[1] <= 160)
    _check(chain, (2, length))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), size=st.integers(8, 14))
def test_random_2d_chains_with_upsampling_match_the_gradient(data, size):
    """2-D chains, both axes, a spread of output positions (the ends and a stride of them between)."""
    chain = ["conv(2,3,p=1)", *(_layer(data, "") for _ in range(data.draw(st.integers(1, 3)))), "upsample(2)"]
    try:
        a = analyze_chain(f"2x{size}x{size}", chain)
    except GeometryError:
        assume(False)
        return
    assume(max(a.output[1:]) <= 96)
    n = min(a.output[1:])
    _check(chain, (2, size, size), positions=sorted({j for j in (0, 1, 2, n // 3, n // 2, n - 2, n - 1) if j < n}))


def test_3d_chain_through_tconv_and_trilinear():
    chain = ["conv3d(2,3,p=1)", "maxpool3d(2)", "tconv3d(2,3,s=2,p=1,op=1)", "upsample(2,mode=bilinear)"]
    a = analyze_chain("2x6x8x8", chain)
    assert a.rf.stride == tuple([__import__("fractions").Fraction(1, 2)] * 3)
    _check(chain, (2, 6, 8, 8))


def test_cropping_tconv_is_sound():
    """A tconv whose padding exceeds its kernel crops real outputs: nnkit extends the field through the cropped
    (virtual) positions as it does through a conv's padding, so border intervals may overstate, never understate;
    interior ones stay exact."""
    chain = ["tconv1d(2,3,s=1,p=3)", "conv1d(2,3,p=1)"]
    spans = position_fields("2x16", chain)[0]
    seen = _gradient_spans(chain, (2, 16), 0)
    for j, got in seen.items():
        want = _clip(spans[j], 16)
        assert got is not None and want[0] <= got[0] and got[1] <= want[1]
        if 0 < j < len(spans) - 1:
            assert want == got


def test_chains_without_upsampling_keep_their_integer_fields():
    a = analyze_chain("3x32x32", "conv(6,5) maxpool(2) conv(16,5) maxpool(2)")
    assert (a.rf.size, a.rf.stride, a.rf.padding) == ((16, 16), (4, 4), (0, 0))
    assert all(type(x) is int for x in (*a.rf.stride, *a.rf.padding))
    assert not any("upsampling" in n for n in a.rf_notes)


def test_cli_states_the_mode_the_rule_and_a_fractional_stride(nnkit):
    doc = nnkit("rf", "3x32x32", "conv(8,3) upsample(2,mode=bilinear) conv(8,3)", "-e", "-f", "json").json()
    assert (doc["size"], doc["stride"], doc["padding"]) == ([5, 5], ["1/2", "1/2"], [0, 0])
    up = doc["layers"][1]
    assert up["stride"] == ["1/2", "1/2"] and any(line.startswith("rf: bilinear x2: output j reads floor(x)")
                                                  for line in up["explain"])
    assert any("Dumoulin & Visin 2016" in n for n in doc["notes"])
    shape = nnkit("shape", "3x32x32", "upsample(2)", "-e", "-f", "json").json()["layers"][0]["explain"]
    assert any(line.startswith("mode nearest: output j copies input floor(j/scale)") for line in shape)
    bad = nnkit("shape", "3x32x32", "upsample(2,mode=bicubic)")
    assert bad.code == 2 and "mode must be nearest or bilinear, got bicubic" in bad.err


def test_fields_after_upsampling_to_astronomical_sizes_are_left_out_fast():
    """Composing a field position by position costs positions x layers: a chain the arithmetic still answers
    (32 -> 32 million positions per axis) answers at once, with its fields left out and a note saying why."""
    import time

    from nnkit.core.chain import analyze_chain

    start = time.perf_counter()
    a = analyze_chain("3x32x32", "conv(8,3,p=1) upsample(999999) conv(8,3,p=1)")
    assert time.perf_counter() - start < 2.0
    assert a.layers[0].rf is not None and a.layers[1].rf is None and a.layers[2].rf is None
    assert any("are not followed" in n for n in a.rf_notes)
    small = analyze_chain("3x32x32", "conv(8,3,p=1) upsample(2) conv(8,3,p=1)")
    assert small.layers[2].rf is not None
