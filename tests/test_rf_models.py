"""Issues 10 and 11: receptive fields of models through upsampling, interpolation and merged paths, and of 1-D and
3-D models, against the gradient.

The oracle: a real CPU copy of the model with non-negative weights and inputs, its ReLUs and Hardswishes made the
identity and its max pools average pools of the same window (so that no position hides behind an argmax or a
saturated activation), and its squeeze-excitation gates detached (nnkit reports the gated features' field, without
the gates, and says so). Backpropagating one output position gives a gradient whose non-zero input positions are
exactly the ones it depends on; nnkit's interval for that position (nnkit.introspect.rf.position_fields) must hold
them, and be them where it lies inside the input.
"""

from __future__ import annotations

import textwrap
from fractions import Fraction

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from nnkit.introspect import analyze, analyze_model  # noqa: E402
from nnkit.introspect.rf import position_fields  # noqa: E402
from tests.torch_oracle import gradient_spans  # noqa: E402

pytestmark = pytest.mark.torch

_LINEAR = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.LeakyReLU)


def _real_copy(make) -> nn.Module:
    """The model built on meta (no initialisers run: fast), then given CPU storage and the oracle's weights."""
    from torchvision.models.segmentation.lraspp import LRASPPHead
    from torchvision.ops.misc import SqueezeExcitation

    from nnkit.introspect.build import on_meta

    model = on_meta(make).to_empty(device="cpu").eval()
    for module in list(model.modules()):
        if isinstance(module, LRASPPHead):  # its gate: a sigmoid of the globally pooled features
            module.scale.register_forward_hook(lambda m, i, out: out.detach())
        for name, child in list(module.named_children()):
            if isinstance(child, _LINEAR) and not isinstance(module, SqueezeExcitation):  # gates stay bounded
                setattr(module, name, nn.Identity())
            elif isinstance(child, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
                avg = {nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d, nn.MaxPool3d: nn.AvgPool3d}
                setattr(module, name, avg[type(child)](child.kernel_size, child.stride, child.padding,
                                                       child.ceil_mode))
        if isinstance(module, SqueezeExcitation):
            scale = module._scale
            module._scale = lambda x, scale=scale: scale(x).detach()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            # divided by the fan-in, so that fifty layers neither overflow nor vanish in float32
            p.copy_((torch.rand_like(p) + 0.5) / (p[0].numel() if p.dim() > 1 else 1))
        for name, b in model.named_buffers():
            b.copy_(torch.ones_like(b) if name.endswith("running_var") else torch.zeros_like(b))
    return model


def _check(make, shape, pick=lambda y: y, positions=None, exact=True):
    """nnkit's interval of every chosen output position, cut to the input, holds the gradient's; it is the
    gradient's where it lies inside the input (exact=False: containment only, for paths through an inner
    padding, which nnkit counts as Araujo et al. count a conv's). Returns nnkit's per-axis intervals."""
    model = _real_copy(make)
    fields = position_fields(model, shape)
    for ax, spans in enumerate(fields):
        n = shape[1 + ax]
        js = positions if positions is not None else range(len(spans))
        js = sorted({j if j >= 0 else len(spans) + j for j in js if -len(spans) <= j < len(spans)})
        seen = gradient_spans(model, shape, ax, js, pick)
        for j, got in seen.items():
            lo, hi = spans[j]
            want = (max(lo, 0), min(hi, n - 1))
            assert got is not None, (ax, j)
            if exact and 0 <= lo and hi < n:
                assert got == want, (ax, j, spans[j], got)
            else:
                assert want[0] <= got[0] and got[1] <= want[1], (ax, j, spans[j], got)
    return fields


def _largest(fields):
    return tuple(max(hi - lo + 1 for lo, hi in spans) for spans in fields)


# --- segmentation models --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_fcn_output_field_through_its_bilinear_upsampling_matches_the_gradient():
    """fcn_resnet50: a dilated ResNet-50 at stride 8, FCNHead, F.interpolate(bilinear) back to the input. On 480
    rows the output rows see up to 451 input rows, so the border rows' fields end inside the input."""
    from nnkit.archs import build

    fields = _check(lambda: build("fcn_resnet50"), (3, 480, 16), pick=lambda y: y["out"],
                    positions=[0, 7, 100, 239, 240, -1])
    a = analyze("fcn_resnet50", input="3x480x16")
    assert a.rf.size[0] == _largest(fields)[0] == 451 and a.rf_at == "out"


def test_fcn_resnet50_answers_for_its_output_map():
    a = analyze("fcn_resnet50")
    assert a.rf_at == "out" and not a.rf_global
    assert (a.rf.size, a.rf.stride, a.rf.padding) == ((451, 451), (1, 1), (221, 221))
    assert any("2 outputs (out, aux)" in n and "'out'" in n for n in a.rf_notes)
    assert any("output positions differ in field (443 to 451 input rows)" in n for n in a.rf_notes)
    assert any("followed through upsampling" in n and "Dumoulin & Visin 2016" in n for n in a.rf_notes)
    aux = analyze("fcn_resnet50", at="aux_classifier.4")
    assert aux.rf.size == (283, 283) and aux.rf.stride == (8, 8)


def test_lraspp_field_through_the_sum_of_its_two_scales_matches_the_gradient():
    """lraspp_mobilenet_v3_large: the 1/8 branch (a gated 1x1 head) upsampled to the 1/4... low branch, added to
    it, then upsampled to the input: a merge of a resampled path and a plain one."""
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    def make():
        return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=2)

    fields = _check(make, (3, 160, 32), pick=lambda y: y["out"],
                    positions=[0, 1, 2, 3, 5, 8, 13, 40, 79, 80, 81, -3, -2, -1])
    a = analyze_model(make(), (3, 160, 32), source="lraspp")
    assert a.rf_at == "out" and a.rf.size[0] == _largest(fields)[0]
    assert any("squeeze-excitation" in n for n in a.notes)


def test_deeplabv3_sees_the_whole_input_through_its_aspp_pooling_branch():
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    a = analyze_model(deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=2),
                      (3, 96, 96), source="deeplab")
    rows = {r.spec: r for r in a.layers}
    assert a.rf_global
    assert rows["classifier.0.convs.4.0"].rf_global  # ASPPPooling's global average
    assert rows["classifier.0.convs.0.0"].rf is not None  # the 1x1 branch still has a local field
    assert any(n.startswith("the output 'out' sees the whole input: a path through classifier.0.convs.4.0 pools")
               for n in a.notes)


# --- a U-Net model file ----------------------------------------------------------------------------------------

UNET = textwrap.dedent('''
    import torch
    from torch import nn
    import torch.nn.functional as F


    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1),
                             nn.ReLU())


    class UNet(nn.Module):
        """Two levels down (max pool), a bottleneck, two up (a transposed conv, then bilinear), skips by cat."""

        def __init__(self, cin=1, classes=2, w=4):
            super().__init__()
            self.enc1, self.enc2, self.mid = block(cin, w), block(w, 2 * w), block(2 * w, 4 * w)
            self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
            self.dec2 = block(4 * w, 2 * w)
            self.dec1 = block(2 * w + w, w)
            self.head = nn.Conv2d(w, classes, 1)

        def forward(self, x):
            e1 = self.enc1(x)
            e2 = self.enc2(F.max_pool2d(e1, 2))
            m = self.mid(F.max_pool2d(e2, 2))
            d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
            up = F.interpolate(d2, scale_factor=2, mode="bilinear", align_corners=False)
            return self.head(self.dec1(torch.cat([up, e1], 1)))
''')


@pytest.fixture()
def unet_file(tmp_path):
    path = tmp_path / "unet.py"
    path.write_text(UNET)
    return path


def _unet(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("unet_for_rf", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.UNet


def test_unet_model_file_through_tconv_bilinear_and_skips_matches_the_gradient(unet_file):
    UNet = _unet(unet_file)
    fields = _check(UNet, (1, 64, 64))
    a = analyze_model(UNet(), (1, 64, 64), source="unet")
    assert a.rf.size == _largest(fields) and a.rf.stride == (1, 1) and a.rf_at == "head"
    assert a.rf.size[0] > 32  # the bottleneck's path, not the skip's 5 rows


def test_unet_model_file_on_the_cli(nnkit, unet_file):
    doc = nnkit("rf", f"{unet_file}:UNet", "--input", "1x64x64", "-f", "json").json()
    rows = {r["spec"]: r for r in doc["layers"]}
    assert doc["at"] == "head" and doc["size"] == rows["head"]["size"]
    assert rows["up2"]["stride"] == [2, 2]  # 1/4 after two pools, times 2 through the tconv
    assert rows["enc1.2"]["size"] == [5, 5]
    assert any("followed through upsampling" in n for n in doc["notes"])


# --- 1-D and 3-D models ----------------------------------------------------------------------------------------


class Wave(nn.Module):
    """A Conv1d audio model: a strided stem, a dilated stack (TCN arithmetic), a transposed conv and nearest
    upsampling back up, a skip added."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv1d(1, 4, 5, stride=2, padding=2)
        self.pool = nn.MaxPool1d(2)
        self.tcn = nn.Sequential(*(nn.Sequential(nn.Conv1d(4, 4, 2, dilation=d, padding=d // 2 if d > 1 else 0),
                                                 nn.ReLU()) for d in (1, 2, 4)))
        self.up = nn.ConvTranspose1d(4, 4, 4, stride=2, padding=1)
        self.head = nn.Conv1d(4, 3, 3, padding=1)

    def forward(self, x):
        y = self.pool(self.stem(x))
        y = self.tcn(y)
        y = self.up(y)
        skip = self.stem(x)[..., : y.shape[-1]]
        return self.head(nn.functional.interpolate(y + skip, scale_factor=2))


class Clip(nn.Module):
    """A Conv3d video model (an r3d-like stem, a pool, a tconv and trilinear upsampling)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv3d(3, 4, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3))
        self.pool = nn.MaxPool3d(2)
        self.conv = nn.Conv3d(4, 4, 3, padding=1)
        self.up = nn.ConvTranspose3d(4, 4, 2, stride=2)
        self.head = nn.Conv3d(4, 2, 1)

    def forward(self, x):
        y = self.up(self.conv(self.pool(self.stem(x))))
        return self.head(nn.functional.interpolate(y, scale_factor=2, mode="trilinear"))


def test_conv1d_model_has_a_field_per_axis_matching_the_gradient():
    fields = _check(Wave, (1, 96))
    a = analyze_model(Wave(), (1, 96), source="wave")
    assert len(a.rf.size) == 1 and not a.rf_global and a.rf.size == _largest(fields)
    rows = {r.spec: r for r in a.layers}
    assert rows["stem"].rf.size == (5,) and rows["tcn.2.0"].rf.size == (7 + (1 + 2 + 4) * 4,)


def test_plain_conv1d_model_field_is_the_tcn_arithmetic(nnkit):
    """1 + sum of (k-1)d = 16 for kernels of 2 at dilations 1, 2, 4, 8 (Bai et al. 2018)."""
    model = nn.Sequential(*(nn.Conv1d(16 if d > 1 else 1, 16, 2, dilation=d) for d in (1, 2, 4, 8)))
    a = analyze_model(model, (1, 1000), source="tcn")
    assert (a.rf.size, a.rf.stride, a.rf.padding) == ((16,), (1,), (0,)) and not a.rf_global
    fields = _check(lambda: nn.Sequential(*(nn.Conv1d(16 if d > 1 else 1, 16, 2, dilation=d)
                                           for d in (1, 2, 4, 8))), (1, 64), positions=[0, 10, -1])
    assert _largest(fields) == (16,)


def test_conv3d_model_has_a_field_per_axis_matching_the_gradient():
    fields = _check(Clip, (3, 8, 24, 24))
    a = analyze_model(Clip(), (3, 8, 24, 24), source="clip")
    assert len(a.rf.size) == 3 and a.rf.size == _largest(fields)
    rows = {r.spec: r for r in a.layers}
    assert rows["stem"].rf.size == (3, 7, 7) and rows["stem"].rf.stride == (1, 2, 2)
    assert rows["up"].rf.stride == (1, 2, 2) and a.rf.stride == (Fraction(1, 2), 1, 1)  # D: pool 2, tconv 1/2, x2


def test_conv1d_and_conv3d_model_fields_in_json_are_lists_of_the_models_rank(nnkit, tmp_path):
    path = tmp_path / "models.py"
    path.write_text(textwrap.dedent("""
        from torch import nn
        def wave():
            return nn.Sequential(nn.Conv1d(1, 8, 9, stride=4), nn.ReLU(), nn.Conv1d(8, 8, 3))
        def clip():
            return nn.Sequential(nn.Conv3d(3, 8, (3, 7, 7), stride=(1, 2, 2)), nn.ReLU())
        """))
    one = nnkit("rf", f"{path}:wave", "--input", "1x16000", "-f", "json").json()
    assert (one["size"], one["stride"], one["padding"], one["covers_input"]) == ([17], [4], [0], False)
    three = nnkit("rf", f"{path}:clip", "--input", "3x16x112x112", "-f", "json").json()
    assert (three["size"], three["stride"]) == ([3, 7, 7], [1, 2, 2])


class Resize(nn.Module):
    """A conv, F.interpolate to a size that is no whole multiple (or a scale factor), a conv: every mode nnkit has a
    rule for."""

    def __init__(self, mode, corners, size=None, scale=None) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 2, 3), nn.Conv2d(2, 2, 2)
        self.how = dict(mode=mode, size=size, scale_factor=scale)
        if mode != "nearest":
            self.how["align_corners"] = corners

    def forward(self, x):
        return self.b(nn.functional.interpolate(self.a(x), **self.how))


@pytest.mark.parametrize("mode, corners, size, scale", [
    ("bilinear", True, (19, 31), None),   # x = j*(in-1)/(out-1): whole at some j, where float32 rounds
    ("bilinear", True, None, 3.0),
    ("bilinear", True, (4, 5), None),     # downsampling
    ("bilinear", False, (22, 16), None),  # in/out scales 9/22 and 11/16: x is never a whole number
    ("bilinear", False, None, 2.5),
    ("nearest", False, (20, 29), None),
    ("nearest", False, (5, 4), None),     # nearest downsampling by a non-integer factor: gaps between reads
])
def test_interpolation_to_any_size_matches_the_gradient_at_every_position(mode, corners, size, scale):
    fields = _check(lambda: Resize(mode, corners, size, scale), (2, 11, 13))
    a = analyze_model(Resize(mode, corners, size, scale), (2, 11, 13), source="resize")
    assert a.rf.size == _largest(fields) and a.rf_at == "b"
    assert not any("stop" in n for n in a.notes)


def test_interpolation_where_x_is_whole_counts_both_neighbours():
    """9 -> 23 rows: at j = 11, x = 11.5*9/23 - 0.5 = 4 exactly; float32 lands on 4, a hair below or above it
    depending on the CPU's rounding, and PyTorch reads 4, 3 and 4, or 4 and 5. nnkit counts 3 to 5 there: never
    less than PyTorch reads (the gradient), and exactly it at the other positions."""
    fields = _check(lambda: Resize("bilinear", False, (23, 17), None), (2, 11, 13), exact=False)
    model = _real_copy(lambda: Resize("bilinear", False, (23, 17), None))
    seen = gradient_spans(model, (2, 11, 13), 0, list(range(22)))
    exact = [j for j in range(22) if seen[j] == (max(fields[0][j][0], 0), min(fields[0][j][1], 10))]
    assert len(exact) >= 20  # rows 10 and 11 read output 11 of the resize


@pytest.mark.parametrize("shape, chain", [
    ((1, 40, 40), "conv(4,3,p=1) maxpool(2) conv(4,3,p=1) maxpool(2) conv(4,3,p=1) tconv(4,2,s=2) conv(4,3,p=1) "
                  "tconv(4,2,s=2) conv(4,3,p=1) conv(2,1)"),
    ((2, 13, 13), "conv(2,3) upsample(2,mode=bilinear) conv(2,3)"),
    ((2, 13, 13), "conv(2,3) tconv(2,3,s=2,p=1,op=1) upsample(3)"),
    ((2, 13, 13), "tconv(2,3,s=3,d=2) conv(2,3)"),
    ((2, 20), "conv1d(2,3,p=1) maxpool1d(2) tconv1d(2,4,s=2,p=1) upsample(2,mode=bilinear)"),
    ((2, 6, 8, 8), "conv3d(2,3,p=1) maxpool3d(2) tconv3d(2,3,s=2,p=1,op=1) upsample(2,mode=bilinear)"),
])
def test_a_model_and_the_same_chain_have_the_same_fields(shape, chain):
    """One rule: a chain written in the layer language and the nn.Sequential it stands for, traced as a model."""
    from nnkit.core.chain import analyze_chain
    from nnkit.core.chain import position_fields as chain_fields
    from nnkit.core.spec import parse_chain
    from tests import torch_oracle

    layers, current = [], shape
    for spec in parse_chain(chain):
        m = torch_oracle.module(spec, current)
        layers.append(m)
        current = tuple(m(torch.zeros(1, *current)).shape[1:])
    model = nn.Sequential(*layers)
    text = "x".join(map(str, shape))
    a, c = analyze_model(model, shape, source="seq"), analyze_chain(text, chain)
    assert (a.rf.size, a.rf.stride, a.rf.padding) == (c.rf.size, c.rf.stride, c.rf.padding)
    assert position_fields(model, shape) == chain_fields(text, chain)
