"""Issue 10's layer language against real torch modules: 1-D and 3-D layers, the normalisations, recurrent
layers with batch_first, and the transformer layers on tokens (torchvision's own ViT blocks). Hypothesis draws
the settings; nnkit either answers exactly what torch computes (shape, parameters, FlopCounterMode's MACs) or
refuses with a one-line NnkitError exactly where torch raises or gives an empty tensor.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nnkit.core.chain import analyze_chain, chain_form
from nnkit.core.spec import parse_chain, parse_layer, read_input
from nnkit.errors import GeometryError, NnkitError, SpecError

torch = pytest.importorskip("torch")
from tests import torch_oracle  # noqa: E402

pytestmark = pytest.mark.torch
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

small = st.integers(1, 4)


def sizes(n: int, strategy: st.SearchStrategy[int]) -> st.SearchStrategy[str]:
    """One size, or one per axis: '3' or '3x1x2'."""
    return st.one_of(strategy.map(str), st.tuples(*[strategy] * n).map(lambda t: "x".join(map(str, t))))


def check(shape: tuple[int, ...], text: str, batch: int = 1, lead: str | None = None) -> None:
    """One layer on `shape` (no batch): nnkit's row equals the torch module's, or both refuse. `lead`, a layer
    that keeps the shape, goes first to set how the chain reads its input (conv1d(C,1): CxL; pos: TxD
    tokens)."""
    spec = parse_layer(text)
    texts = [lead, text] if lead else [text]
    shape_text = "x".join(map(str, (batch, *shape) if batch > 1 else shape))
    form, why = chain_form(parse_chain(texts))
    n, read = read_input(shape_text, form, why)
    assert read == shape and (n or 1) == batch, (shape_text, form)
    try:
        mine = analyze_chain(shape_text, texts).layers[-1]
    except (GeometryError, SpecError) as exc:
        assert "\n" not in str(exc) and str(exc).startswith(f"layer {len(texts)} ")
        try:
            out, _, _ = torch_oracle.run(spec, shape, batch)
        except Exception:  # noqa: BLE001 - torch raises RuntimeError, ValueError or AssertionError
            return
        assert 0 in out, f"nnkit refused {text} on {shape_text} ({exc}) but torch gives {out}"
        return
    assert mine.input == shape
    out, params, macs = torch_oracle.run(spec, shape, batch)
    assert (mine.output, mine.params, mine.macs) == (out, params, macs), text


def lead_of(shape: tuple[int, ...]) -> str:
    """A shape-keeping first layer that makes the chain read `shape` as CxL, CxHxW or CxDxHxW."""
    return {2: "conv1d", 3: "conv", 4: "conv3d"}[len(shape)] + f"({shape[0]},1)"


# --- 1-D and 3-D convolutions, transposed convolutions, pools -----------------------------------------------


@SETTINGS
@given(g=st.integers(1, 3), cin=small, cout=small, k=st.integers(1, 6), s=small,
       p=st.one_of(st.integers(0, 4).map(str), st.sampled_from(["same", "valid"])), d=st.integers(1, 3),
       length=st.integers(1, 30), bias=st.booleans(), batch=st.integers(1, 2))
def test_conv1d(g, cin, cout, k, s, p, d, length, bias, batch):
    check((g * cin, length), f"conv1d({g * cout},{k},s={s},p={p},d={d},g={g},bias={str(bias).lower()})",
          batch)


@SETTINGS
@given(g=st.integers(1, 2), cin=st.integers(1, 2), cout=st.integers(1, 3), k=sizes(3, st.integers(1, 4)),
       s=sizes(3, st.integers(1, 3)), p=sizes(3, st.integers(0, 2)), d=sizes(3, st.integers(1, 2)),
       dhw=st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9)), bias=st.booleans())
def test_conv3d(g, cin, cout, k, s, p, d, dhw, bias):
    check((g * cin, *dhw), f"conv3d({g * cout},{k},s={s},p={p},d={d},g={g},bias={str(bias).lower()})")


@SETTINGS
@given(rank=st.sampled_from([1, 3]), g=st.integers(1, 3), cin=small, cout=small, k=st.integers(1, 4),
       s=st.integers(1, 3), p=st.integers(0, 2), op=st.integers(0, 2), d=st.integers(1, 3),
       size=st.integers(1, 8))
def test_conv_transpose_1d_3d(rank, g, cin, cout, k, s, p, op, d, size):
    shape = (g * cin, *(size,) * rank)
    check(shape, f"tconv{rank}d({g * cout},{k},s={s},p={p},op={op},d={d},g={g})")


@SETTINGS
@given(rank=st.sampled_from([1, 3]), kind=st.sampled_from(["maxpool", "avgpool"]), c=small,
       k=st.integers(1, 4),
       s=st.integers(1, 3), p=st.integers(0, 2), d=st.integers(1, 2), ceil=st.booleans(),
       size=st.tuples(st.integers(1, 12), st.integers(1, 7), st.integers(1, 7)))
def test_pooling_1d_3d(rank, kind, c, k, s, p, d, ceil, size):
    dil = f",d={d}" if kind == "maxpool" else ""
    check((c, *size[:rank]), f"{kind}{rank}d({k},s={s},p={p}{dil},ceil={str(ceil).lower()})")


@SETTINGS
@given(rank=st.sampled_from([1, 3]), c=small, m=st.integers(1, 2), k=st.integers(1, 4), s=small,
       p=st.integers(0, 2), out=small, size=st.integers(1, 9))
def test_depthwise_pointwise_separable_1d_3d(rank, c, m, k, s, p, out, size):
    shape = (c, *(size,) * rank)
    check(shape, f"dwconv{rank}d({k},s={s},p={p},m={m})")
    check(shape, f"pwconv{rank}d({out})")
    check(shape, f"dwsep{rank}d({out},{k},s={s},p={p})")


@SETTINGS
@given(rank=st.sampled_from([1, 3]), c=small, size=st.integers(1, 9), o=st.integers(1, 4),
       scale=st.sampled_from([1, 2, 1.5]))
def test_layers_of_any_rank_in_1d_and_3d_chains(rank, c, size, o, scale):
    """gap, adaptivepool, upsample, bn, in, dropout and activations, each as torch's module of the input's
    rank, on a 1-D or 3-D chain (the conv1d/conv3d before them sets how the input reads)."""
    shape = (c, *(size,) * rank)
    lead = f"conv{rank}d({c},1)"
    for text in (f"adaptivepool({o})", "gap", f"upsample({scale})", "bn", "in", "in(affine=true)", "relu",
                 "gelu", "dropout(0.1)", "flatten"):
        try:
            a = analyze_chain("x".join(map(str, shape)), [lead, text])
        except GeometryError:  # InstanceNorm on a single position: torch refuses too
            with pytest.raises(ValueError, match="more than 1 spatial element"):
                torch_oracle.run(parse_layer(text), shape)
            continue
        out, params, macs = torch_oracle.run(parse_layer(text), shape)
        assert (a.layers[1].output, a.layers[1].params, a.layers[1].macs) == (out, params, macs), text


def test_adaptive_pool_sizes_per_axis():
    assert analyze_chain("8x16x32x32", "conv3d(8,1) adaptivepool(1x7x7)").output == (8, 1, 7, 7)
    with pytest.raises(GeometryError, match="output size of 2 axes for a 3-D input"):
        analyze_chain("8x16x32x32", "conv3d(8,1) adaptivepool(7x7)")


# --- normalisations -----------------------------------------------------------------------------------------


@SETTINGS
@given(c=st.integers(1, 12), g=st.integers(1, 6), length=st.integers(1, 6), affine=st.booleans(),
       bias=st.booleans(), rank=st.integers(1, 3))
def test_layernorm_groupnorm_instancenorm(c, g, length, affine, bias, rank):
    shape = (c, *(length,) * rank)
    flag = str(affine).lower()
    lead = lead_of(shape)
    check(shape, f"ln(affine={flag},bias={str(bias).lower()})", lead=lead)
    # groups that do not divide C: torch refuses to build it
    check(shape, f"gn({g},affine={flag})", lead=lead)
    check(shape, f"in(affine={flag})", lead=lead)


def test_norm_parameter_counts_and_errors():
    """CONVENTIONS.md: LayerNorm over D: 2*D; GroupNorm(G, C): 2*C; InstanceNorm: 0 unless affine=True."""
    assert analyze_chain("196x768", "attn(12) ln").layers[1].params == 1536
    assert analyze_chain("64x56x56", "gn(32)").params == 128
    assert analyze_chain("64x56x56", "in").params == 0 \
        and analyze_chain("64x56x56", "in(affine=true)").params == 128
    with pytest.raises(GeometryError) as info:
        analyze_chain("6x8x8", "gn(4)")
    assert str(info.value) \
        == "layer 1 gn(4): 4 groups do not divide the 6 channels (GroupNorm needs C % G == 0)"


# --- recurrent layers with batch_first ----------------------------------------------------------------------


@SETTINGS
@given(kind=st.sampled_from(["lstm", "gru", "rnn"]), a=st.integers(1, 5), b=st.integers(1, 5),
       feat=st.integers(1, 9),
       hidden=st.integers(1, 9), layers=st.integers(1, 2), bidir=st.booleans(), batch_first=st.booleans())
def test_recurrent_batch_first_against_torch(kind, a, b, feat, hidden, layers, bidir, batch_first):
    """nn.LSTM/GRU/RNN on a 3-D tensor as the user wrote it: [seq, batch, features], or [batch, seq, features]
    with batch_first=true. Output shape, parameters and MACs (FlopCounterMode on the meta device) agree."""
    from torch.utils.flop_counter import FlopCounterMode

    text = f"{kind}({hidden},{layers},bidir={str(bidir).lower()},batch_first={str(batch_first).lower()})"
    mine = analyze_chain(f"{a}x{b}x{feat}", text)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
    with torch.device("meta"):
        m = cls(feat, hidden, layers, bidirectional=bidir, batch_first=batch_first)
        counter = FlopCounterMode(display=False)
        with counter:
            y, _ = m(torch.empty(a, b, feat))
    assert mine.output == tuple(y.shape)
    assert mine.params == sum(p.numel() for p in m.parameters())
    assert mine.macs == counter.get_total_flops() // 2
    explain = [f.text for f in mine.layers[0].explain]
    assert any(("[batch " if batch_first else "[seq ") + str(a) in line for line in explain)


# --- transformer layers -------------------------------------------------------------------------------------


@SETTINGS
@given(t=st.integers(1, 20), heads=st.integers(1, 4), per_head=st.integers(1, 8), hidden=st.integers(1, 40),
       bias=st.booleans(), batch=st.integers(1, 2), i=st.integers(-3, 3))
def test_token_layers_against_torchvision_blocks(t, heads, per_head, hidden, bias, batch, i):
    """attn = nn.MultiheadAttention as self-attention, mlp = torchvision's MLPBlock, encoder = its
    EncoderBlock; params 4D^2 + 4D and MACs 4TD^2 + 2T^2D through FlopCounterMode."""
    d = heads * per_head
    flag = str(bias).lower()
    for text in (f"attn({heads},bias={flag})", f"mlp({hidden},bias={flag})", f"encoder({heads},{hidden})",
                 "cls",
                 "pos", f"token({i})", "ln", f"fc({hidden})", "gelu"):
        check((t, d), text, batch, lead="pos")
    attn = analyze_chain(f"{t}x{d}", f"attn({heads})")
    assert attn.params == 4 * d * d + 4 * d and attn.macs == 4 * t * d * d + 2 * t * t * d


@SETTINGS
@given(c=st.integers(1, 3), h=st.integers(1, 40), w=st.integers(1, 40), dim=st.integers(1, 16),
       size=sizes(2, st.integers(1, 12)))
def test_patch_embedding_against_conv_proj(c, h, w, dim, size):
    check((c, h, w), f"patch({dim},{size})")


def test_attention_heads_must_divide_the_features():
    with pytest.raises(GeometryError, match="5 heads do not divide the 768 features"):
        analyze_chain("196x768", "attn(5)")
    with pytest.raises(AssertionError, match="divisible by num_heads"):  # torch refuses to build it
        torch.nn.MultiheadAttention(768, 5)


VIT_B_16 = "patch(768,16) cls pos [encoder(12,3072)]*12 ln token(0) fc(1000)"


def test_vit_b_16_line_equals_torchvision():
    """Issue 10: this line gives vit_b_16's parameters and MACs: its weights' meta (num_params, _ops in GMACs)
    and the model itself, built on the meta device and counted by FlopCounterMode / 2."""
    from torch.utils.flop_counter import FlopCounterMode
    from torchvision.models import ViT_B_16_Weights, vit_b_16

    a = analyze_chain("3x224x224", VIT_B_16)
    meta = ViT_B_16_Weights.IMAGENET1K_V1.meta
    assert a.params == meta["num_params"] == 86_567_656
    with torch.device("meta"):
        model = vit_b_16().eval()
        counter = FlopCounterMode(display=False)
        with counter:
            out = model(torch.empty(1, 3, 224, 224))
    assert a.macs == counter.get_total_flops() // 2 == 17_563_828_224
    assert round(a.macs / 1e9, 3) == meta["_ops"] == 17.564
    assert a.params == sum(p.numel() for p in model.parameters()) and a.output == tuple(out.shape[1:])
    assert a.rf is None and a.rf_global  # attention sees every token: the whole input


def test_vit_explain_states_the_attention_formulas():
    row = analyze_chain("197x768", "attn(12)").layers[0]
    lines = [f.text for f in row.explain]
    assert ("params: 4*768^2 + 4*768 = 2,362,368 (in_proj 3*768*768, out_proj 768*768, and their biases)"
            in lines)
    assert any(line.startswith("MACs: 4*197*768^2 + 2*197^2*768 = 524,391,936") for line in lines)


# --- whole chains -------------------------------------------------------------------------------------------


def _layers(rank: int) -> st.SearchStrategy[str]:
    r = f"{rank}d"
    return st.one_of(
        st.builds(lambda o, k, s, p, d: f"conv{r}({o},{k},s={s},p={p},d={d})", st.integers(1, 5),
                  st.integers(1, 4),
                  st.integers(1, 2), st.integers(0, 2), st.integers(1, 2)),
        st.builds(lambda k, s: f"maxpool{r}({k},{s})", st.integers(1, 3), st.integers(1, 3)),
        st.builds(lambda k, s: f"avgpool{r}({k},{s},ceil=true)", st.integers(1, 3), st.integers(1, 3)),
        st.builds(lambda o, k, s: f"tconv{r}({o},{k},s={s})", st.integers(1, 4), st.integers(1, 3), small),
        st.sampled_from(["bn", "relu", "gap", "in", f"dwconv{r}(3,p=1)", f"dwsep{r}(4,3)", "dropout(0.1)"]),
    )


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rank=st.sampled_from([1, 3]), c=small, size=st.integers(4, 14), data=st.data(), fc=st.integers(1, 6))
def test_random_1d_and_3d_chains_against_nn_sequential(rank, c, size, data, fc):
    """Whole chains layer by layer: every intermediate shape, parameter and MAC count agrees with torch."""
    chain = data.draw(st.lists(_layers(rank), min_size=1, max_size=4))
    texts = [f"conv{rank}d({c},1)", *chain, "flatten", f"fc({fc})"]  # the first layer sets the dimensionality
    shape = (c, *(size,) * rank)
    try:
        mine = analyze_chain("x".join(map(str, shape)), texts)
    except GeometryError:
        assume(False)
        return
    total_params = total_macs = 0
    for layer in mine.layers:
        out, params, macs = torch_oracle.run(parse_layer(layer.spec), shape)
        assert layer.input == shape and (layer.output, layer.params, layer.macs) \
            == (out, params, macs), layer.spec
        total_params += params
        total_macs += macs
        shape = out
    assert (mine.params, mine.macs, mine.output) == (total_params, total_macs, shape)


def _support(texts: list[str],
             shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Gradient oracle: per axis, the extent and first index of the input that the centre output position of
    the real chain depends on (non-negative weights and inputs; max pooling as its linear envelope, an average
    pool of the same window, so that no position is hidden by an argmax)."""
    layers, current = [], shape
    for spec in parse_chain(texts):
        if spec.kind.startswith("maxpool"):
            spec = parse_layer(spec.text.replace("maxpool", "avgpool").replace(",d=1", ""))
        m = torch_oracle.module(spec, current)
        layers.append(m)
        current = tuple(m(torch.zeros(1, *current)).shape[1:])
    model = torch.nn.Sequential(*layers).eval()  # BatchNorm with running statistics: pointwise
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand_like(p) + 0.1)
    x = torch.rand((1, *shape), requires_grad=True)
    y = model(x)
    centre = tuple(n // 2 for n in y.shape[2:])
    y[(0, slice(None), *centre)].sum().backward()
    g = x.grad[0].abs().sum(0)
    extents, firsts = [], []
    for ax in range(g.dim()):
        other = tuple(i for i in range(g.dim()) if i != ax)
        hit = (g.sum(other) > 0 if other else g > 0).nonzero().flatten()
        extents.append(int(hit[-1] - hit[0] + 1))
        firsts.append(int(hit[0]))
    return tuple(extents), tuple(firsts), centre


def _rf_layers(rank: int) -> st.SearchStrategy[str]:
    r = f"{rank}d"
    return st.one_of(
        st.builds(lambda k, s, p, d: f"conv{r}(2,{k},s={s},p={p},d={d})", st.integers(1, 4),
                  st.integers(1, 2),
                  st.integers(0, 1), st.integers(1, 3)),
        st.builds(lambda k, s: f"maxpool{r}({k},{s})", st.integers(2, 3), st.integers(1, 2)),
        st.builds(lambda k, s, p: f"avgpool{r}({k},{s},p={p})", st.integers(2, 3), st.integers(1, 2),
                  st.integers(0, 1)),
        st.sampled_from(["relu", "bn", f"dwconv{r}(3,p=1)"]),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rank=st.sampled_from([1, 3]), data=st.data())
def test_receptive_fields_of_1d_and_3d_chains_match_gradients(rank, data):
    """Araujo et al.'s r, S and P per axis: the centre output sees exactly [i*S - P, i*S - P + r - 1]."""
    chain = [f"conv{rank}d(2,1)", *data.draw(st.lists(_rf_layers(rank), min_size=1, max_size=4))]
    size = 48 if rank == 1 else 20
    shape = (2, *(size,) * rank)
    try:
        a = analyze_chain("x".join(map(str, shape)), chain)
    except GeometryError:
        assume(False)
        return
    assume(a.rf is not None)
    extents, firsts, centre = _support(chain, shape)
    starts = tuple(i * s - p for i, s, p in zip(centre, a.rf.stride, a.rf.padding))
    # Only fields that lie inside the input are fully visible to the gradient.
    assume(all(0 <= lo and lo + r <= size for lo, r in zip(starts, a.rf.size)))
    assert a.rf.size == extents and starts == firsts


def test_tcn_receptive_field():
    """Issue 10: 1 + sum of (k-1)*d for a dilated stack (Bai et al. 2018), the TCN arithmetic; and the
    gradient."""
    chain = "conv1d(16,2,d=1) conv1d(16,2,d=2) conv1d(16,2,d=4) conv1d(16,2,d=8)"
    a = analyze_chain("1x1000", chain)
    assert a.rf.size == (16,) == (1 + sum((2 - 1) * d for d in (1, 2, 4, 8)),)
    assert _support(chain.split(), (1, 1000))[0] == (16,)


# --- how chains read their input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "chain", "output", "batch"),
    [
        ("16x100", "conv1d(32,3,p=1) maxpool1d(2)", (32, 50), None),  # issue 10, as written
        ("8x16x100", "conv1d(32,3,p=1) maxpool1d(2)", (32, 50), 8),
        ("100", "conv1d(4,3)", (4, 98), None),  # L alone: one channel, as HxW is 1xHxW
        # r3d_18's stem
        ("3x16x112x112", "conv3d(64,3x7x7,s=1x2x2,p=1x3x3,bias=false)", (64, 16, 56, 56), None),
        ("2x3x16x112x112", "conv3d(64,3x7x7,s=1x2x2,p=1x3x3,bias=false)", (64, 16, 56, 56), 2),
        ("16x32x32", "conv3d(4,3)", (4, 14, 30, 30), None),  # DxHxW: one channel
        ("196x768", "attn(12)", (196, 768), None),
        ("4x196x768", "encoder(12,3072)", (196, 768), 4),
        ("3x32x32", "conv(6,5)", (6, 28, 28), None),  # 2-D exactly as before
        ("32x32", "relu", (1, 32, 32), None),
    ],
)
def test_the_chain_decides_how_its_input_reads(shape, chain, output, batch):
    a = analyze_chain(shape, chain)
    assert (a.output, a.batch) == (output, batch)


def test_r3d_18_stem_against_torch():
    check((3, 16, 112, 112), "conv3d(64,3x7x7,s=1x2x2,p=1x3x3,bias=false)")


@pytest.mark.parametrize(
    ("shape", "chain", "message"),
    [
        ("3x32x32", "conv(8,3) conv1d(8,3)",
         "layer 2 conv1d(8,3): a 1-D layer in a 2-D chain (layer 1 conv(8,3)); a chain keeps one "
         "dimensionality"),
        ("16x100", "relu conv1d(8,3) maxpool3d(2)",
         "layer 3 maxpool3d(2): a 3-D layer in a 1-D chain (layer 2 conv1d(8,3)); a chain keeps one "
         "dimensionality"),
        ("16x100", "conv3d(8,3)",
         "input '16x100': a 3-D chain (layer 1 conv3d(8,3)) reads CxDxHxW, DxHxW (C = 1) or NxCxDxHxW, got 2 "
         "sizes"),
        ("768", "attn(12)",
         "input '768': a token chain (layer 1 attn(12)) reads TxD (T tokens of D features) or NxTxD, got 1 "
         "size"),
        ("3x32x32", "conv1d(8,3x3)", "layer 1 conv1d(8,3x3): k takes one size, got 3x3"),
        ("3x16x16x16", "conv3d(8,3x3)", "layer 1 conv3d(8,3x3): k takes one size or DxHxW, got 3x3"),
    ],
)
def test_mixed_or_misread_chains_are_refused_in_one_line(shape, chain, message):
    with pytest.raises(SpecError) as info:
        analyze_chain(shape, chain)
    assert str(info.value) == message


def test_new_layers_name_what_they_need():
    for shape, chain, fragment in [("3x32x32", "conv1d(8,3)", None), ("16x100", "attn(4)", None),
                                   ("3x224x224", "conv(3,1) attn(12)", "needs TxD tokens"),
                                   ("8x100", "conv1d(8,3) flatten conv1d(8,3)", "needs a CxL input, got 784"),
                                   ("196x768", "token(196)", "token 196 of 196 tokens")]:
        try:
            analyze_chain(shape, chain)
        except NnkitError as exc:
            assert fragment is None or fragment in str(exc), str(exc)
            assert "\n" not in str(exc)
        else:
            assert fragment is None, chain


def test_recurrent_outputs_see_the_whole_sequence():
    """The last step of an LSTM depends on the first input: the gradient reaches every step, so nnkit reports
    the whole input, not the 1x1 field of a pointwise layer."""
    a = analyze_chain("1x12x4", "lstm(3)")
    assert a.rf is None and a.rf_global
    m = torch.nn.LSTM(4, 3, batch_first=True)
    x = torch.rand(1, 12, 4, requires_grad=True)
    m(x)[0][0, -1].sum().backward()
    assert bool((x.grad[0].abs().sum(1) > 0).all())


def test_token_chains_say_why_they_have_no_spatial_field():
    a = analyze_chain("3x224x224", "patch(768,16) mlp(3072)")
    assert a.rf is None and not a.rf_global and any("no spatial receptive field" in n for n in a.rf_notes)
    assert analyze_chain("3x224x224", "patch(768,16) attn(12)").rf_global
    assert analyze_chain("3x32x32", "conv(6,5)").rf_notes == ()
