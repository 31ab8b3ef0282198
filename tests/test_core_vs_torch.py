"""Hypothesis property tests: nnkit.core's shapes, parameters and MACs against real torch modules.

For random layer settings, nnkit either answers exactly what torch computes, or refuses with a GeometryError
exactly where torch raises.
"""

from __future__ import annotations


import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nnkit.core.chain import analyze_chain
from nnkit.core.spec import parse_layer, parse_shape
from nnkit.errors import GeometryError, SpecError

torch = pytest.importorskip("torch")
from tests import torch_oracle  # noqa: E402

pytestmark = pytest.mark.torch
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

small = st.integers(1, 4)
size = st.integers(1, 24)


def pair(strategy: st.SearchStrategy[int]) -> st.SearchStrategy[str]:
    return st.one_of(strategy.map(str), st.tuples(strategy, strategy).map(lambda t: f"{t[0]}x{t[1]}"))


def check(shape: tuple[int, ...], text: str) -> None:
    spec = parse_layer(text)
    shape_text = "x".join(map(str, shape))
    batch, shape = parse_shape(shape_text)  # the shape as nnkit reads it: HxW is 1xHxW, 4 sizes carry N
    try:
        mine = analyze_chain(shape_text, [text]).layers[0]
    except (GeometryError, SpecError) as exc:
        assert "\n" not in str(exc)
        try:
            out, _, _ = torch_oracle.run(spec, shape, batch or 1)
        except Exception:  # noqa: BLE001 - torch raises RuntimeError or ValueError
            return
        # Where torch returns an empty tensor instead of raising, nnkit refuses with a reason.
        assert 0 in out, f"nnkit refused {text} on {shape_text} ({exc}) but torch gives {out}"
        return
    out, params, macs = torch_oracle.run(spec, shape, batch or 1)
    assert mine.output == out, text
    assert mine.params == params, text
    assert mine.macs == macs, text


@SETTINGS
@given(g=st.integers(1, 3), cin=small, cout=small, k=pair(st.integers(1, 6)), s=pair(small),
       p=pair(st.integers(0, 4)), d=pair(st.integers(1, 3)), h=size, w=size, bias=st.booleans())
def test_conv2d(g, cin, cout, k, s, p, d, h, w, bias):
    check((g * cin, h, w), f"conv({g * cout},{k},s={s},p={p},d={d},g={g},bias={str(bias).lower()})")


@SETTINGS
@given(c=small, cout=small, k=st.integers(1, 6), d=st.integers(1, 3), h=size, w=size)
def test_conv2d_same_padding(c, cout, k, d, h, w):
    """Even kernels pad asymmetrically; torch's padding='same' is the oracle."""
    spec = parse_layer(f"conv({cout},{k},p=same,d={d})")
    mine = analyze_chain(f"{c}x{h}x{w}", [spec.text]).layers[0]
    m = torch.nn.Conv2d(c, cout, k, padding="same", dilation=d)
    assert mine.output == tuple(m(torch.zeros(1, c, h, w)).shape[1:])


@SETTINGS
@given(g=st.integers(1, 3), cin=small, cout=small, k=pair(st.integers(1, 5)), s=st.integers(1, 4),
       p=st.integers(0, 3), op=st.integers(0, 3), d=st.integers(1, 3), h=size, w=size)
def test_conv_transpose2d(g, cin, cout, k, s, p, op, d, h, w):
    if op >= max(s, d):
        with pytest.raises(GeometryError):
            analyze_chain(f"{g * cin}x{h}x{w}", f"tconv({g * cout},{k},s={s},p={p},op={op},d={d},g={g})")
        with pytest.raises(Exception):  # noqa: B017, PT011
            torch.nn.ConvTranspose2d(g * cin, g * cout, k, s, p, op, g, True, d)(torch.zeros(1, g * cin, h, w))
        return
    check((g * cin, h, w), f"tconv({g * cout},{k},s={s},p={p},op={op},d={d},g={g})")


@SETTINGS
@given(c=small, k=pair(st.integers(1, 5)), s=pair(small), p=st.integers(0, 3), d=st.integers(1, 3),
       ceil=st.booleans(), h=size, w=size, kind=st.sampled_from(["maxpool", "avgpool"]))
def test_pooling(c, k, s, p, d, ceil, h, w, kind):
    dil = f",d={d}" if kind == "maxpool" else ""
    check((c, h, w), f"{kind}({k},s={s},p={p}{dil},ceil={str(ceil).lower()})")


def test_pool_ceil_mode_drops_a_window_starting_in_the_padding():
    """CONVENTIONS.md: MaxPool2d(3, stride=3, padding=1, ceil_mode=True) on 5 gives 2."""
    assert analyze_chain("1x5x5", "maxpool(3,3,p=1,ceil=true)").output == (1, 2, 2)
    check((1, 5, 5), "maxpool(3,3,p=1,ceil=true)")


@SETTINGS
@given(c=small, m=st.integers(1, 3), k=st.integers(1, 5), s=small, p=st.integers(0, 2), out=small,
       h=size, w=size)
def test_depthwise_pointwise_separable(c, m, k, s, p, out, h, w):
    check((c, h, w), f"dwconv({k},s={s},p={p},m={m})")
    check((c, h, w), f"pwconv({out})")
    check((c, h, w), f"dwsep({out},{k},s={s},p={p})")


@SETTINGS
@given(lead=st.lists(st.integers(1, 4), max_size=3), feat=st.integers(1, 16), out=st.integers(1, 16),
       bias=st.booleans())
def test_linear(lead, feat, out, bias):
    check((*lead, feat), f"fc({out},bias={str(bias).lower()})")


@SETTINGS
@given(kind=st.sampled_from(["lstm", "gru", "rnn"]), feat=st.integers(1, 12), hidden=st.integers(1, 12),
       layers=st.integers(1, 3), bidir=st.booleans(), bias=st.booleans(), steps=st.integers(1, 3))
def test_recurrent_params_and_shapes(kind, feat, hidden, layers, bidir, bias, steps):
    spec = parse_layer(f"{kind}({hidden},{layers},bidir={str(bidir).lower()},bias={str(bias).lower()})")
    shape = (steps, feat) if steps > 1 else (feat,)
    mine = analyze_chain("x".join(map(str, shape)) if steps > 1 else str(feat), [spec.text])
    m = torch_oracle.module(spec, (feat,))
    assert mine.params == sum(p.numel() for p in m.parameters())
    x = torch.zeros(1, steps, feat)
    assert mine.output[-1] == m(x).shape[-1]


def test_lstm_published_count():
    """CONVENTIONS.md: nn.LSTM(10, 20, 2) has 5,920 parameters."""
    assert analyze_chain("10", "lstm(20,2)").params == 5920 == sum(
        p.numel() for p in torch.nn.LSTM(10, 20, 2).parameters())


@SETTINGS
@given(c=small, h=size, w=size, oh=st.integers(1, 6), ow=st.integers(1, 6), scale=st.sampled_from([1, 2, 3, 1.5]))
def test_adaptive_pool_gap_upsample_bn_flatten(c, h, w, oh, ow, scale):
    for text in (f"adaptivepool({oh}x{ow})", "gap", f"upsample({scale})", "bn", "flatten", "relu", "dropout(0.2)"):
        check((c, h, w), text)


layer_texts = st.one_of(
    st.builds(lambda o, k, s, p: f"conv({o},{k},s={s},p={p})", st.integers(1, 6), st.integers(1, 5), small,
              st.integers(0, 2)),
    st.builds(lambda k, s: f"maxpool({k},{s})", st.integers(1, 3), st.integers(1, 3)),
    st.builds(lambda k, s: f"avgpool({k},{s},ceil=true)", st.integers(1, 3), st.integers(1, 3)),
    st.builds(lambda o, k, s: f"tconv({o},{k},s={s})", st.integers(1, 4), st.integers(1, 4), small),
    st.sampled_from(["bn", "relu", "gap", "dwconv(3,p=1)", "dwsep(4,3)"]),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=small, h=st.integers(4, 40), chain=st.lists(layer_texts, min_size=1, max_size=5),
       fc=st.integers(1, 10))
def test_random_chains_against_nn_sequential(c, h, chain, fc):
    """Whole chains, layer by layer: every intermediate shape and the totals agree with nn.Sequential."""
    texts = [*chain, "flatten", f"fc({fc})"]
    try:
        mine = analyze_chain(f"{c}x{h}x{h}", texts)
    except GeometryError:
        assume(False)
        return
    shape = (c, h, h)
    total_params = total_macs = 0
    for layer in mine.layers:
        out, params, macs = torch_oracle.run(parse_layer(layer.spec), shape)
        assert layer.input == shape and layer.output == out and layer.params == params and layer.macs == macs
        total_params += params
        total_macs += macs
        shape = out
    assert (mine.params, mine.macs, mine.output) == (total_params, total_macs, shape)
    assert mine.flops == 2 * mine.macs


def test_batch_multiplies_macs_not_params():
    one = analyze_chain("3x32x32", "conv(6,5) flatten fc(10)")
    eight = analyze_chain("8x3x32x32", "conv(6,5) flatten fc(10)")
    assert eight.params == one.params and eight.macs == 8 * one.macs and eight.batch == 8
    out, params, macs = torch_oracle.run(parse_layer("conv(6,5)"), (3, 32, 32), batch=8)
    assert eight.layers[0].macs == macs


def test_transposed_conv_macs_use_the_input_volume():
    """CONVENTIONS.md: ConvTranspose2d(3, 1, 2, stride=2) on 2x2 is 2*2*3*1*2*2 = 48 MACs."""
    assert analyze_chain("3x2x2", "tconv(1,2,s=2)").macs == 48


@SETTINGS
@given(n=st.integers(1, 2), c=st.integers(1, 8), h=st.integers(1, 12), w=st.integers(1, 12), o=st.integers(1, 8),
       groups=st.integers(1, 4), kh=st.integers(1, 5), kw=st.integers(1, 5), s=st.integers(0, 3),
       p=st.integers(-1, 3), d=st.integers(0, 3), bias=st.sampled_from([None, "ok", "wrong"]))
def test_trace_convolution_shortcut_equals_torchs_meta_kernel(n, c, h, w, o, groups, kh, kw, s, p, d, bias):
    """The tracer's own convolution shape (nnkit.introspect.trace._conv_shape) answers only where torch's meta
    kernel answers the same; everything it declines goes to torch, errors included."""
    import torch

    from nnkit.introspect.trace import _conv_shape

    x = torch.empty(n, c, h, w, device="meta")
    weight = torch.empty(o, max(c // groups, 1), kh, kw, device="meta")
    b = None if bias is None else torch.empty(o if bias == "ok" else o + 1, device="meta")
    args = (x, weight, b, [s, s], [p, p], [d, d], False, [0, 0], groups)
    ours = _conv_shape(*args)
    try:
        theirs = list(torch.ops.aten.convolution.default(*args).shape)
    except Exception:  # noqa: BLE001 - RuntimeError, ValueError, even ZeroDivisionError for stride 0
        theirs = None
    if ours is not None:
        assert ours == theirs
    assume(ours is not None or theirs is None)  # a declined valid case is allowed: torch's kernel answers it


@SETTINGS
@given(op=st.sampled_from(["mm", "addmm", "bmm", "add", "mul", "add_", "mul_", "scale", "softmax"]),
       dims=st.lists(st.integers(1, 5), min_size=7, max_size=7), same=st.booleans(), k=st.sampled_from([2, 0.5]))
def test_trace_operator_shortcuts_equal_torchs_kernels(op, dims, same, k):
    """The tracer's shortcuts for linear layers, attention and residual adds answer only what torch's meta
    kernels answer (shape and dtype), with torch.utils.flop_counter's MACs; the rest goes to torch."""
    import torch
    from torch.utils.flop_counter import flop_registry

    from nnkit.introspect.trace import _shortcuts

    aten = torch.ops.aten
    b_, n, k1, m, k2, m2, b2 = dims
    if same:
        k2, m2, b2 = k1, m, b_

    def meta(*shape):
        return torch.empty(*shape, device="meta")

    func, args = {
        "mm": (aten.mm.default, (meta(n, k1), meta(k2, m))),
        "addmm": (aten.addmm.default, (meta(m2), meta(n, k1), meta(k2, m))),
        "bmm": (aten.bmm.default, (meta(b_, n, k1), meta(b2, k2, m))),
        "add": (aten.add.Tensor, (meta(b_, n, m), meta(b2, n, m2))),
        "mul": (aten.mul.Tensor, (meta(b_, n, m), meta(b_, n, m).transpose(1, 2) if not same else meta(b_, n, m))),
        "add_": (aten.add_.Tensor, (meta(b_, n, m), meta(b2, n, m2))),
        "mul_": (aten.mul_.Tensor, (meta(b_, n, m), meta(b2, n, m2))),
        "scale": (aten.mul.Scalar, (meta(b_, n, m), k)),
        "softmax": (aten._safe_softmax.default, (meta(b_, n, m), -1)),
    }[op]
    ours = _shortcuts()[func](args)
    try:
        theirs = func(*args)
    except Exception:  # noqa: BLE001 - torch refuses: the shortcut must have declined
        assert ours is None
        return
    if ours is None:
        return
    out, counted, macs = ours
    assert (tuple(out.shape), out.dtype) == (tuple(theirs.shape), theirs.dtype)
    if op.endswith("_"):
        assert out is args[0]
    formula = flop_registry.get(func._overloadpacket)
    assert macs == (formula(*args, out_val=theirs) // 2 if formula else 0)
    assert counted == (func._overloadpacket.__name__ if formula else None)


@SETTINGS
@given(c=st.integers(1, 4), h=st.integers(1, 10), o=st.integers(1, 4), k=st.integers(1, 4), s=st.integers(1, 3),
       p=st.sampled_from([0, 1, 2, (2, 0), "same", "valid"]), d=st.integers(1, 2), g=st.integers(1, 3),
       bias=st.booleans(), mode=st.sampled_from(["zeros", "reflect", "circular"]),
       kind=st.sampled_from(["conv", "sub"]))
def test_conv2d_modules_answered_without_the_dispatcher_equal_torch(c, h, o, k, s, p, d, g, bias, mode, kind):
    """The tracer answers plain 2-d convolutions with its own shape (trace._conv_shape) and grows their fields in
    one step (rf.Fields._plain_conv): output shapes and MACs equal a real CPU forward and FlopCounterMode's
    count; rows, fields and errors equal what the general field rules give, which the other cases take
    (subclasses, padding modes, string padding)."""
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    from nnkit.introspect import analyze_model
    from nnkit.introspect.rf import Fields

    class Sub(nn.Conv2d):
        pass

    try:
        conv = (Sub if kind == "sub" else nn.Conv2d)(c * g, o * g, k, stride=s, padding=p, dilation=d, groups=g,
                                                      bias=bias, padding_mode=mode)
    except ValueError:  # 'same' with a stride: torch refuses to build it
        assume(False)
        return
    model = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(o * g, 2, 3, padding=1))
    shape = (c * g, h, h)
    try:
        with FlopCounterMode(display=False) as counter:
            real = model(torch.zeros(1, *shape))
        expected = (tuple(real.shape[1:]), counter.get_total_flops() // 2)
    except RuntimeError:
        expected = None

    def analysis():
        try:
            a = analyze_model(model, shape, source="m")
        except GeometryError as exc:
            return str(exc).split(": the smallest")[0].split("; ")[0]
        return a.output, a.macs, [(r.spec, r.output, r.macs, r.rf) for r in a.layers]

    direct = analysis()
    plain = Fields._plain_conv
    Fields._plain_conv = lambda self, args, state, out: False  # every field through the general rules
    try:
        dispatched = analysis()
    finally:
        Fields._plain_conv = plain
    assert direct == dispatched
    if expected is None:
        assert isinstance(direct, str)
    else:
        assert direct[:2] == expected
