"""The registry of named architectures: names without torch, builders, and exactness against published
numbers.

Oracles: torchvision's weights metadata (meta["num_params"], meta["_ops"] in GMACs to 3 decimals, measured by
torchvision at the weights' input size), LeCun et al. 1998 (LeNet-5 layout) and Howard et al. 2017 (MobileNet
Table 1 and 4).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from nnkit.archs import arch_names, get_arch, list_archs
from nnkit.errors import UnknownNameError, UsageError

REQUIRED = ["lenet5", "alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn",
            "vgg19_bn",
            "googlenet", "inception_v3", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
            "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "densenet121",
            "densenet161", "densenet169", "densenet201", "vit_b_16"]
SLOW = {"vit_h_14", "regnet_y_128gf", "vit_l_16", "vit_l_32", "regnet_y_32gf", "efficientnet_b7",
        "convnext_large"}


def test_required_architectures_are_registered():
    assert set(REQUIRED) <= set(arch_names())


def test_names_are_naturally_sorted_and_wildcards_match():
    names = [a.name for a in list_archs("resnet*")]
    assert names == ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    assert {a.name for a in list_archs("vgg*_bn")} == {"vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"}
    assert list_archs("no-such-*") == []


def test_lookup_is_case_insensitive_and_unknown_names_suggest():
    assert get_arch("ResNet50").name == "resnet50"
    with pytest.raises(UnknownNameError, match="did you mean resnet50"):
        get_arch("resnet05")


def test_listing_names_does_not_import_torch():
    code = ("import sys; from nnkit.archs import arch_names, list_archs; arch_names(); list_archs('r*');"
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.torch
def test_every_torchvision_classifier_is_registered():
    import torchvision.models as M
    from torchvision.models import list_models

    assert set(list_models(module=M)) <= set(arch_names())


@pytest.mark.torch
def test_lenet5_follows_lecun_1998():
    import torch
    from torch import nn

    from nnkit.archs import build

    model = build("lenet5")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == \
        [(1, 6, (5, 5)), (6, 16, (5, 5)), (16, 120, (5, 5))]
    fcs = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [(120, 84), (84, 10)]
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    # LeCun 1998 section II.B: C1 156, C3 (fully connected here) 16*(6*25+1), C5 48,120, F6 10,164 parameters
    assert convs[0].weight.numel() + convs[0].bias.numel() == 156
    assert sum(p.numel() for p in convs[2].parameters()) == 48120
    assert sum(p.numel() for p in fcs[0].parameters()) == 10164


@pytest.mark.torch
def test_mobilenet_v1_matches_howard_2017():
    from nnkit.introspect.registry import measure
    from nnkit.archs.mobilenet_v1 import mobilenet_v1
    from nnkit.introspect.build import on_meta

    params, macs = measure(on_meta(mobilenet_v1), (3, 224, 224))
    assert round(params / 1e6, 1) == 4.2 and round(macs / 1e6) == 569  # Table 1/4: 4.2M, 569M
    params, macs = measure(on_meta(lambda: mobilenet_v1(standard=True)), (3, 224, 224))
    assert round(params / 1e6, 1) == 29.3  # Table 4: Conv MobileNet 29.3M, 4866M mult-adds
    assert abs(macs - 4866e6) / 4866e6 < 0.001
    for alpha, (p, m) in {0.75: (2.6, 325), 0.5: (1.3, 149), 0.25: (0.5, 41)}.items():  # Table 6
        params, macs = measure(on_meta(lambda: mobilenet_v1(width=alpha)), (3, 224, 224))
        assert (round(params / 1e6, 1), round(macs / 1e6)) == (p, m)


@pytest.mark.torch
def test_build_honours_num_classes_and_in_channels():
    from torch import nn

    from nnkit.archs import build
    from nnkit.introspect.build import build_meta

    m = build_meta("resnet18", num_classes=10, in_channels=1)
    assert m.fc.out_features == 10 and m.conv1.in_channels == 1
    assert (m.conv1.kernel_size, m.conv1.stride, m.conv1.padding,
            m.conv1.bias) == ((7, 7), (2, 2), (3, 3), None)
    v = build_meta("vit_b_16", in_channels=4)
    assert isinstance(v.conv_proj, nn.Conv2d) and v.conv_proj.in_channels == 4
    assert build_meta("lenet5", in_channels=3)[0].in_channels == 3
    assert build_meta("mobilenet_v2", width=0.5).features[0][0].out_channels == 16
    with pytest.raises(UsageError, match="resnet18 does not take --width"):
        build("resnet18", width=0.5)
    with pytest.raises(UsageError, match="must be positive"):
        build("lenet5", num_classes=0)


def _published(arch):
    return pytest.param(arch.name,
                        marks=[pytest.mark.torch] + ([pytest.mark.slow] if arch.name in SLOW else []))


# Detectors' and RAFT's _ops depend on the image torchvision measured: tests/test_detection.py checks them under
# nnkit's stated protocol, with every difference explained.
@pytest.mark.parametrize("name", [_published(a) for a in list_archs()
                                  if a.published and a.task not in ("detection", "flow")])
def test_params_and_macs_equal_torchvision_metadata(name):
    from nnkit.introspect import analyze

    arch = get_arch(name)
    num_params, gmacs = arch.published
    a = analyze(name)
    assert a.params == num_params == arch.params
    assert round(a.macs / 1e9, 3) == gmacs
    assert a.macs == arch.macs
    assert sum(r.macs for r in a.layers) == a.macs  # rows add up to the total
    unused = a.params - sum(r.params for r in a.layers)  # only modules the forward never calls are left out
    assert unused == 0 or f"{unused:,} parameters sit in modules the forward pass never calls" in a.notes[0]


@pytest.mark.torch
def test_segmentation_models_build_without_any_download(monkeypatch):
    """Every segmentation builder is called with weights=None and weights_backbone=None: a download attempt
    (torch.hub) fails the test instead of reaching the network."""
    import torch.hub

    from nnkit.introspect import analyze

    def no_download(*args, **kwargs):
        raise AssertionError(f"download attempted: {args}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    for arch in list_archs(task="segmentation"):
        a = analyze(arch.name, num_classes=5, fields=False, explain=False)
        assert a.output == (5, 520, 520)


@pytest.mark.torch
@pytest.mark.slow
def test_generated_table_has_not_drifted():
    from nnkit.introspect import registry

    assert registry.TABLE.read_text() == registry.render(registry.entries()), \
        "run: python -m nnkit.introspect.registry"
