"""The layer language: parsing, defaults, aliases, and one-line errors for bad input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnkit.core.chain import analyze_chain
from nnkit.core.spec import parse_chain, parse_layer, parse_shape, split_chain
from nnkit.errors import ExitCode, GeometryError, NnkitError, SpecError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3x32x32", (None, (3, 32, 32))),
        ("32x32", (None, (1, 32, 32))),
        ("8x3x32x32", (8, (3, 32, 32))),
        ("3,224,224", (None, (3, 224, 224))),
        ("128", (None, (128,))),
        (" 3 x 8 x 8 ", (None, (3, 8, 8))),
    ],
)
def test_parse_shape(text, expected):
    assert parse_shape(text) == expected


@pytest.mark.parametrize("text", ["3x0x32", "axb", "1x2x3x4x5", "", "3x-2"])
def test_parse_shape_rejects(text):
    with pytest.raises(SpecError):
        parse_shape(text)


def test_split_chain_accepts_every_separator_and_spacing():
    expected = ["conv(6,5)", "maxpool(2)", "fc(10)"]
    assert split_chain("conv(6,5) maxpool(2) fc(10)") == expected
    assert split_chain("conv(6, 5) -> maxpool(2); fc(10)") == ["conv(6, 5)", "maxpool(2)", "fc(10)"]
    assert split_chain(["conv(6,5)", "maxpool(2)", "fc(10)"]) == expected
    assert split_chain("conv (6,5) maxpool(2),fc(10)") == ["conv(6,5)", "maxpool(2)", "fc(10)"]
    assert split_chain("conv(6,5)maxpool(2)") == ["conv(6,5)", "maxpool(2)"]


def test_defaults_aliases_and_case():
    conv = parse_layer("CONV(16, 3, stride=2, padding=1)")
    assert conv.kind == "conv"
    assert (conv["out"], conv["k"], conv["s"], conv["p"], conv["d"], conv["g"], conv["bias"]) == (
        16, (3, 3), (2, 2), (1, 1), (1, 1), 1, True)
    assert parse_layer("linear(10)").kind == "fc"
    assert parse_layer("conv(8,3x1,p=1x0)")["k"] == (3, 1)
    assert parse_layer("conv(8,3,p=same)")["p"] == "same"
    pool = parse_layer("maxpool(3,2,ceil=true)")
    assert pool["s"] == (2, 2) and pool["ceil"] is True
    assert parse_layer("maxpool(2)")["s"] is None  # defaults to the kernel
    assert parse_layer("lstm(256,2,bidir=true)")["layers"] == 2
    assert parse_layer("dropout(0.3)")["p"] == 0.3


@pytest.mark.parametrize(
    ("chain", "fragment"),
    [
        ("conv(6)", "conv needs k"),
        ("conv(6,5,q=1)", "has no argument 'q'"),
        ("conv(6,5,1,0,7)", "at most 4 positional"),
        ("convv(6,5)", "did you mean conv"),
        ("conv(6,5", "missing ')'"),
        ("conv(6,5))", "unbalanced ')'"),
        ("conv(0,5)", "out must be positive"),
        ("dropout(2)", "probability"),
        ("conv(6,5,p=-1)", "must not be negative"),
        ("conv(6,5,s=2,s=3)", "given twice"),
        ("conv(6,5,bias=maybe)", "true or false"),
    ],
)
def test_syntax_errors_name_the_layer(chain, fragment):
    with pytest.raises(SpecError) as info:
        parse_chain(chain)
    message = str(info.value)
    assert fragment in message and "layer 1" in message and "\n" not in message
    assert info.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    ("shape", "chain", "fragment"),
    [
        ("3x4x4", "conv(6,5)", "smaller than the 5-wide window"),
        ("3x32x32", "conv(6,3,g=2)", "groups=2 must divide"),
        ("3x32x32", "maxpool(2,p=2)", "more than half"),
        ("3x32x32", "conv(6,3,s=2,p=same)", "not supported for strided"),
        ("3x32x32", "tconv(6,3,s=2,op=2)", "output padding 2 must be smaller"),
        ("3x32x32", "flatten conv(6,3)", "needs a CxHxW input"),
    ],
)
def test_geometry_errors_name_the_layer(shape, chain, fragment):
    with pytest.raises(NnkitError) as info:
        analyze_chain(shape, chain)
    assert fragment in str(info.value)
    assert str(info.value).startswith("layer ")


def test_geometry_error_exit_code_is_one():
    with pytest.raises(GeometryError) as info:
        analyze_chain("3x4x4", "conv(6,5)")
    assert info.value.exit_code == ExitCode.ERROR == 1


_ALPHABET = st.sampled_from(list("convpolfcx()=,;-> 0123456789abdgkmpst.") + ["conv", "pool", "same", "true"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET, max_size=30).map("".join),
       st.sampled_from(["3x32x32", "1x8x8", "64", "2x3x16x16"]))
def test_fuzz_parser_raises_only_nnkit_errors(text, shape):
    """Random strings: an answer or a one-line NnkitError, never another exception."""
    try:
        analyze_chain(shape, text)
    except NnkitError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_fuzz_any_text(text):
    try:
        analyze_chain("3x32x32", text)
    except NnkitError as exc:
        assert "\n" not in str(exc)


def test_repetition_expands_in_place():
    assert split_chain("conv(8,3,p=1)*2 maxpool(2)") == ["conv(8,3,p=1)", "conv(8,3,p=1)", "maxpool(2)"]
    assert split_chain("[conv(64,3,p=1) relu] * 2 maxpool(2)") == [
        "conv(64,3,p=1)", "relu", "conv(64,3,p=1)", "relu", "maxpool(2)"]
    assert split_chain("[[conv(4,3) relu]*2 "
                       "maxpool(2)]*2") == (["conv(4,3)", "relu"] * 2 + ["maxpool(2)"]) * 2
    vgg = analyze_chain("3x224x224", "[conv(64,3,p=1) relu]*2 maxpool(2)")
    assert vgg.output == (64, 112, 112) and vgg.params == 1792 + 36928


@pytest.mark.parametrize("text", ["[conv(6,5)", "conv(6,5)]", "conv(6,5)*0"])
def test_repetition_errors(text):
    with pytest.raises(SpecError):
        parse_chain(text)


def test_dwsep_pairs_skip_squeeze_excitation_and_leave_lone_depthwise_convs():
    """nnkit.core.dwsep_network.pair_up on plain data: a 1x1 conv on a pooled map (squeeze-excitation) is not the
    pointwise conv of a pair, and a depthwise conv whose output only another depthwise conv takes stays
    alone."""
    from nnkit.core.dwsep_network import ConvLayer, pair_up

    def conv(path, cin, cout, k, groups, hw_in, hw_out, source=None):
        return ConvLayer(path, cin, cout, (k, k), (1, 1), groups, False, (cin, hw_in, hw_in),
                         (cout, hw_out, hw_out),
                         0, 0, source)

    layers = [conv("dw1", 16, 16, 3, 16, 8, 8), conv("se.fc1", 16, 4, 1, 1, 1, 1),
              conv("se.fc2", 4, 16, 1, 1, 1, 1),
              conv("pw1", 16, 32, 1, 1, 8, 8, "dw1"), conv("dw2", 32, 32, 5, 32, 8, 8),
              conv("dw3", 32, 32, 3, 32, 8, 8, "dw2"), conv("pw3", 32, 64, 1, 1, 8, 8, "dw3")]
    pairs, alone = pair_up(layers)
    assert [(p.depthwise.path, p.pointwise.path) for p in pairs] == [("dw1", "pw1"), ("dw3", "pw3")]
    assert [c.path for c in alone] == ["dw2"]
    assert pairs[1].standard.params == 3 * 3 * 32 * 64 and pairs[1].standard.macs == 8 * 8 * 3 * 3 * 32 * 64


_ND_WORDS = st.sampled_from(["conv1d(", "conv3d(", "tconv1d(", "tconv3d(", "maxpool1d(", "maxpool3d(",
                             "avgpool1d(",
                             "avgpool3d(", "dwsep1d(", "dwconv3d(", "gn(", "ln", "in(", "affine=", "attn(",
                             "encoder(", "mlp(", "patch(", "cls", "pos", "token(", "batch_first=", "lstm(",
                             "gap",
                             "adaptivepool(", "upsample(", "bn", "3x3x3", "2x1", "16", "3", "0", "-1", ",",
                             ")", "(",
                             " ", "true", "s=", "p=", "d=", "op=", "g=", "same", "*2", "[", "]"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_ND_WORDS, max_size=14).map("".join),
       st.sampled_from(["16x100", "100", "2x16x100", "3x8x16x16", "2x3x4x8x8", "196x768", "3x224x224", "64"]))
def test_fuzz_new_layers_raise_only_nnkit_errors(text, shape):
    """Issue 10's layers and input forms: an answer or a one-line NnkitError, never another exception."""
    try:
        analyze_chain(shape, text)
    except NnkitError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize(
    ("text", "kind", "args"),
    [
        ("conv1d(32,3,p=1)", "conv1d", {"k": (3,), "p": (1,), "s": (1,), "d": (1,)}),
        ("conv3d(64,3x7x7,s=1x2x2,p=1x3x3,bias=false)", "conv3d",
         {"k": (3, 7, 7), "s": (1, 2, 2), "bias": False}),
        ("ConvTranspose3d(8,2,stride=2)", "tconv3d", {"k": (2, 2, 2), "s": (2, 2, 2)}),
        ("maxpool1d(3,2,ceil_mode=true)", "maxpool1d", {"k": (3,), "s": (2,), "ceil": True}),
        ("GroupNorm(num_groups=8)", "gn", {"g": 8, "affine": True}),
        ("layernorm(elementwise_affine=false)", "ln", {"affine": False}),
        ("instancenorm3d(affine=true)", "in", {"affine": True}),
        ("lstm(32, batch_first=true)", "lstm", {"hidden": 32, "batch_first": True}),
        ("patch(768,16)", "patch", {"dim": 768, "size": (16, 16)}),
        ("attn(num_heads=12)", "attn", {"heads": 12, "bias": True}),
        ("encoder(12,3072)", "encoder", {"heads": 12, "mlp": 3072}),
        ("token", "token", {"i": 0}),
        ("adaptivepool(1x7x7)", "adaptivepool", {"size": (1, 7, 7)}),
    ],
)
def test_new_layers_parse_with_torch_argument_names(text, kind, args):
    spec = parse_layer(text)
    assert spec.kind == kind and {k: spec[k] for k in args} == args


@pytest.mark.parametrize(
    ("shape", "chain"),
    [
        ("16x100", "conv1d(32,3,s=2,p=1,g=2)"), ("16x100", "tconv1d(8,4,s=2,p=1,op=1)"),
        ("16x100", "maxpool1d(3,2)"),
        ("16x100", "avgpool1d(2,ceil=true)"), ("16x100", "dwconv1d(3,m=2)"), ("16x100", "pwconv1d(8)"),
        ("16x100", "dwsep1d(8,3)"), ("3x16x32x32", "conv3d(8,3x5x5,s=1x2x2)"),
        ("3x8x16x16", "tconv3d(4,2,s=2)"),
        ("3x8x16x16", "maxpool3d(2)"), ("3x8x16x16", "avgpool3d(2)"), ("3x8x16x16", "dwsep3d(6,3,p=1)"),
        ("3x8x16x16", "conv3d(4,1) adaptivepool(2x4x4)"), ("3x8x16x16", "conv3d(4,1) upsample(2)"),
        ("3x8x16x16", "conv3d(4,1) bn"), ("16x100", "conv1d(8,1) gap"), ("8x16x16", "gn(4)"),
        ("8x16x16", "ln"),
        ("8x16x16", "in(affine=true)"), ("3x224x224", "patch(768,16)"), ("196x768", "cls"),
        ("197x768", "pos"),
        ("197x768", "attn(12)"), ("197x768", "mlp(3072)"), ("197x768", "encoder(12,3072)"),
        ("197x768", "token(0)"),
        ("8x50x128", "lstm(64,batch_first=true)"),
    ],
)
def test_every_new_layer_explains_its_numbers(shape, chain):
    """--explain: a formula with the numbers put in for what the layer changes (shape, parameters, MACs)."""
    row = analyze_chain(shape, chain).layers[-1]
    lines = {topic: [f.text for f in row.explain if f.topic.value == topic]
             for topic in ("shape", "params", "macs")}
    # What changes besides the channels (their number is the layer's own argument): sizes, tokens, the rank.
    if len(row.output) != len(row.input):
        changed = [row.output[-1]]
    else:
        first = 0 if row.kind == "cls" else 1  # a class token changes T, the first axis of TxD
        changed = [o for o, i in zip(row.output[first:], row.input[first:]) if o != i]
    if changed:
        assert any(str(changed[-1]) in line for line in lines["shape"]), row
    if row.params:
        assert any(f"{row.params:,}" in line or str(row.params) in line for line in lines["params"]), row
    if row.macs:
        assert any(f"{row.macs:,}" in line for line in lines["macs"]), row
