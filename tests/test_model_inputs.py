"""Model inputs beyond 2-D images (issue 10): 1-D and 3-D models, and the one rule for where a batch
appears."""

from __future__ import annotations

import pytest

AUDIO = '''
from torch import nn


class KeywordSpotter(nn.Module):
    """A small 1-D CNN on raw 16 kHz audio (M5-style)."""

    def __init__(self, classes: int = 35) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, 32, 80, stride=16), nn.BatchNorm1d(32), nn.ReLU(), nn.MaxPool1d(4),
            nn.Conv1d(32, 64, 3), nn.BatchNorm1d(64), nn.ReLU(), nn.MaxPool1d(4),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(64, classes))

    def forward(self, x):
        return self.head(self.features(x))
'''


def test_the_batch_rule_for_every_rank():
    from nnkit.errors import SpecError
    from nnkit.introspect.target import parse_input

    assert parse_input("3x224x224", 3) == (None, (3, 224, 224))
    assert parse_input("8x3x224x224", 3) == (8, (3, 224, 224))  # the 2-D forms of before
    assert parse_input("224x224", 3) == (None, (3, 224, 224))
    assert parse_input("224x224", None) == (None, (1, 224, 224))
    assert parse_input("3x16x112x112", None, 4) == (None, (3, 16, 112, 112))  # a clip, not a batch of 3
    assert parse_input("2x3x16x112x112", None, 4) == (2, (3, 16, 112, 112))
    assert parse_input("1x16000", None, 2) == (None, (1, 16000))
    assert parse_input("4x1x16000", None, 2) == (4, (1, 16000))
    assert parse_input("50", None, None) == (None, (50,))  # no conv to tell: as given
    assert parse_input("2x3x32x32", None, None) == (2, (3, 32, 32))
    for text, rank, message in (("3x112x112", 4, "r3d_18 takes CxTxHxW, or NxCxTxHxW"),
                                ("16000", 2, "takes CxL, or NxCxL"), ("3x0x4", 3, "positive"),
                                ("3xx4", 3, "expected a shape")):
        with pytest.raises(SpecError, match=message):
            parse_input(text, None, rank, "r3d_18")


@pytest.mark.torch
def test_a_conv1d_audio_model_file_against_torch(tmp_path, nnkit):
    import importlib.util

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    path = tmp_path / "audio.py"
    path.write_text(AUDIO)
    run = nnkit("summary", f"{path}:KeywordSpotter", "--input", "1x16000", "-f", "json")
    assert run.code == 0, run
    doc = run.json()
    spec = importlib.util.spec_from_file_location("audio_oracle", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.KeywordSpotter().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model(torch.zeros(1, 1, 16000))
    assert doc["total"] == sum(p.numel() for p in model.parameters())
    assert doc["macs"] == counter.get_total_flops() // 2
    assert doc["output"] == list(out.shape[1:])
    assert doc["layers"][0]["output"] == [32, 996]  # (16000 - 80)/16 + 1
    batched = nnkit("flops", f"{path}:KeywordSpotter", "--input", "4x1x16000", "-f", "json").json()
    assert batched["macs"] == 4 * doc["macs"] and batched["batch"] == 4


@pytest.mark.torch
def test_video_models_take_clips(nnkit):
    one = nnkit("flops", "r3d_18", "-f", "json").json()
    assert round(one["macs"] / 1e9, 3) == 40.697  # torchvision's _ops for R3D_18_Weights.KINETICS400_V1
    two = nnkit("flops", "r3d_18", "--input", "2x3x16x112x112", "-f", "json").json()
    assert two["macs"] == 2 * one["macs"]
    half = nnkit("flops", "r3d_18", "--input", "3x8x112x112", "-f", "json").json()
    assert half["macs"] < one["macs"]
    bad = nnkit("params", "r3d_18", "--input", "3x112x112")
    assert bad.code == 2 and bad.err.strip() == ("nnkit: --input 3x112x112: r3d_18 takes CxTxHxW, or "
                                                 "NxCxTxHxW with the batch first")
    shape = nnkit("shape", "r3d_18", "--depth", "1", "-f", "json").json()
    assert shape["input"] == [3, 16, 112, 112] and shape["layers"][0]["output"] == [64, 16, 56, 56]
    grey = nnkit("params", "swin3d_t", "--in-channels", "1", "-f", "json").json()
    assert grey["total"] == 28_158_070 - 2 * 96 * 2 * 4 * 4  # the 2x4x4 patch conv loses two input channels


@pytest.mark.torch
def test_every_weights_enum_of_the_new_families_matches_the_registry():
    """num_params and _ops of every weights enum (not only the default) equal the registry's numbers."""
    from torchvision.models import get_model_weights

    from nnkit.archs import list_archs

    checked = 0
    for task in ("segmentation", "video"):
        for arch in list_archs(task=task):
            for weights in get_model_weights(arch.name):
                assert weights.meta["num_params"] == arch.params, weights
                assert weights.meta["_ops"] == round(arch.macs / 1e9, 3), weights
                checked += 1
    assert checked >= 16
