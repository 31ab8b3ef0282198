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


# --- several inputs, dtypes, keywords and --batch (issue 10, "Models") ------------------------------------------

EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[1] / "examples"

TWO = '''
from torch import nn


class Pair(nn.Module):
    """Two images in, as RAFT takes them, and an optional keyword scale."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(6, 8, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, first, second, *, weight=None):
        y = self.conv(__import__("torch").cat([first, second], 1)).mean((2, 3))
        return self.fc(y if weight is None else y * weight)


def half():
    return Pair().half()
'''


def _module(path, name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _oracle(model, *args, **kwargs):
    """(the output shape without the batch of a real CPU forward, FlopCounterMode's FLOPs / 2). FlopCounterMode
    counts on a meta copy, as tests/test_layers_nd_vs_torch.py does: on the CPU, nn.LSTM runs one fused kernel
    that it has no formula for (it would count the head alone)."""
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad():
        out = model.eval()(*args, **kwargs)
        meta = copy.deepcopy(model).to("meta")
        with FlopCounterMode(display=False) as counter:
            meta(*(a.to("meta") for a in args), **{k: v.to("meta") for k, v in kwargs.items()})
    return list(out.shape[1:]), counter.get_total_flops() // 2


def test_inputs_are_read_as_written():
    from nnkit.errors import SpecError, UsageError
    from nnkit.introspect.inputs import Inputs, TensorSpec
    from nnkit.introspect.target import read_inputs

    batch, inputs = read_inputs(["3x520x960", "3x520x960"], None, None, 3, "raft")
    assert batch is None and inputs == Inputs((TensorSpec((3, 520, 960)),) * 2)
    batch, inputs = read_inputs(["long:50", "mask=bool:50", "scale=half:1"], None, None, None, "m")
    assert inputs.args == (TensorSpec((50,), "int64", 2),)  # no embedding: ids 0 and 1
    assert inputs.kwargs == (("mask", TensorSpec((50,), "bool")), ("scale", TensorSpec((1,), "float16")))
    assert inputs.text() == "long:50, mask=bool:50, scale=half:1" and not inputs.plain
    assert read_inputs("2x3x32x32", None, None, 3, "m") == (2, Inputs.of((3, 32, 32)))  # the batch first, as before
    assert read_inputs(["int:8x50"], None, None, 2, "m")[1].first == TensorSpec((8, 50), "int32", 2)  # as given
    assert read_inputs(["2x3x32x32", "2x3x32x32", "mask=bool:2x50"], None, None, 3, "m") == \
        (2, Inputs((TensorSpec((3, 32, 32)),) * 2, (("mask", TensorSpec((50,), "bool")),)))
    for given, error, message in (
            (["lng:50"], SpecError, r"dtype 'lng' is not one of .* \(did you mean long"),
            (["mask=bool:50", "3x32x32"], UsageError, "a positional input after a keyword one"),
            (["m=bool:5", "m=bool:5"], UsageError, "'m' is given twice"),
            (["2x3x32x32", "3x32x32"], UsageError, r"the first input has its batch \(2\) first, so every input"),
            (["2x3x32x32", "mask=bool:50"], UsageError, "so every input must"),
            (["long:abc"], SpecError, r"--input long:abc: 'abc' is not a shape; write \[NAME=\]\[DTYPE:\]SHAPE"),
            (["long:0"], SpecError, "every size must be positive"),
            (["torch.long:50"], SpecError, r"'torch.long:50' is not a shape; write \[NAME=\]"),
            (["mask=:50"], SpecError, r"--input mask=:50: ':50' is not a shape"),
            ([""], UsageError, r"--input '': write \[NAME=\]\[DTYPE:\]SHAPE")):
        with pytest.raises(error, match=message):
            read_inputs(given, None, None, 3, "m")


@pytest.mark.torch
def test_integer_inputs_are_ids_inside_the_first_embedding():
    import torch
    from torch import nn

    from nnkit.introspect.target import module_target

    model = nn.Sequential(nn.Embedding(7, 4), nn.Embedding(1000, 4))
    t = module_target(model, "long:64x64")
    assert t.inputs.first.high == 7
    (ids,), _ = t.inputs.tensors(2, "cpu")
    assert ids.dtype == torch.int64 and ids.shape == (2, 64, 64) and 0 <= ids.min() and ids.max() == 6
    (meta,), _ = t.inputs.tensors(1)
    assert meta.is_meta and meta.dtype == torch.int64


@pytest.mark.torch
def test_raft_takes_its_two_images(nnkit):
    from torchvision.models.optical_flow import Raft_Small_Weights

    target = "torchvision.models.optical_flow:raft_small"
    run = nnkit("params", target, "--input", "3x520x960", "--input", "3x520x960", "-f", "json")
    assert run.code == 0, run
    assert run.json()["total"] == Raft_Small_Weights.DEFAULT.meta["num_params"]
    for name in (target, "raft_small"):  # the registry's entry takes two images of its size without --input
        one = nnkit("params", name, "--input", "3x520x960")
        assert one.code == 2 and one.err.strip() == (f"nnkit: --input 3x520x960: {name} takes two images, image1 "
                                                     "and image2: give --input twice (--input 3x520x960 --input "
                                                     "3x520x960)"), one


@pytest.mark.torch
def test_several_keyword_and_half_inputs_against_torch(nnkit, tmp_path):
    import torch

    path = tmp_path / "pair.py"
    path.write_text(TWO)
    module = _module(path, "pair_oracle")
    x = torch.zeros(1, 3, 16, 16)
    shape, macs = _oracle(module.Pair(), x, x, weight=torch.ones(1, 1))
    run = nnkit("flops", f"{path}:Pair", "--input", "3x16x16", "--input", "3x16x16", "--input", "weight=1",
                "-f", "json")
    assert run.code == 0, run
    assert run.json()["macs"] == macs and "inputs: 3x16x16, 3x16x16, weight=1" in run.json()["notes"]
    shaped = nnkit("shape", f"{path}:Pair", "--input", "3x16x16", "--input", "3x16x16", "-f", "json").json()
    assert shaped["input"] == [3, 16, 16] and shaped["output"] == shape
    assert shaped["layers"][0]["output"] == [8, 14, 14]
    half = nnkit("flops", f"{path}:half", "--input", "half:3x16x16", "--input", "half:3x16x16", "-f", "json")
    assert half.code == 0 and half.json()["macs"] == macs, half
    wrong = nnkit("flops", f"{path}:Pair", "--input", "3x16x16", "--input", "3x16x16", "--input", "scale=1")
    assert wrong.code == 1 and "unexpected keyword argument 'scale'" in wrong.err
    assert "Pair.forward(first, second, *, weight=None)" in wrong.err and "4096" not in wrong.err


@pytest.mark.torch
def test_the_batch_option(nnkit, tmp_path):
    path = tmp_path / "pair.py"
    path.write_text(TWO)
    args = ("flops", f"{path}:Pair", "--input", "3x16x16", "--input", "3x16x16", "-f", "json")
    one, four = nnkit(*args).json(), nnkit(*args, "--batch", "4").json()
    assert four["macs"] == 4 * one["macs"] and four["batch"] == 4 and "batch" not in one
    resnet = nnkit("shape", "resnet18", "--batch", "8", "-f", "json").json()
    assert resnet == nnkit("shape", "resnet18", "--input", "8x3x224x224", "-f", "json").json()  # as NxCxHxW
    assert resnet["input"] == [8, 3, 224, 224] and resnet["batch"] == 8
    assert nnkit("flops", "resnet18", "-b", "8", "-f", "json").json()["macs"] == \
        nnkit("flops", "resnet18", "--input", "8x3x224x224", "-f", "json").json()["macs"]
    for bad, message in ((["resnet18", "--batch", "0"], "--batch must be positive, got 0"),
                         (["resnet18", "--batch", "2", "--input", "4x3x224x224"], "give the batch once"),
                         (["3x32x32", "conv(6,5)", "--batch", "2"], "a chain takes its batch first in its shape")):
        run = nnkit("params", *bad)
        assert run.code == 2 and message in run.err and len(run.err.strip().splitlines()) == 1, run
    # the backends run on the same two inputs (issue 10; they refused them before): the same parameters
    other = nnkit("params", f"{path}:Pair", "--input", "3x16x16", "--input", "3x16x16", "--backend", "fvcore",
                  "-f", "json")
    assert other.code == 0 and other.json()["total"] == 6 * 8 * 9 + 8 + 8 * 2 + 2, other


@pytest.mark.torch
@pytest.mark.parametrize("command", ["shape", "params", "flops", "rf"])
def test_the_example_text_model_against_torch(nnkit, command):
    import torch

    path = EXAMPLES / "text_lstm.py"
    model = _module(path, "text_oracle").TextLSTM()
    run = nnkit(command, f"{path}:TextLSTM", "--input", "long:50", "-f", "json")
    assert run.code == 0, run
    doc = run.json()
    ids = torch.randint(0, model.embed.num_embeddings, (1, 50), generator=torch.Generator().manual_seed(0))
    shape, macs = _oracle(model, ids)
    if command == "params":
        assert doc["total"] == sum(p.numel() for p in model.parameters())
    if command == "flops":
        assert doc["macs"] == macs
        masked = nnkit("flops", f"{path}:TextLSTM", "--input", "long:50", "--input", "mask=bool:50", "-f", "json")
        assert masked.json()["macs"] == _oracle(model, ids, mask=torch.ones(1, 50, dtype=torch.bool))[1]
    if command == "shape":
        assert doc["input"] == [50] and doc["output"] == shape
        assert [r["output"] for r in doc["layers"]] == [[50, 128], [50, 512], [4]]


@pytest.mark.torch
def test_the_example_audio_model_against_torch(nnkit):
    import torch

    path = EXAMPLES / "audio_conv1d.py"
    model = _module(path, "audio_oracle").KeywordSpotter()
    doc = nnkit("summary", f"{path}:KeywordSpotter", "--input", "1x16000", "-f", "json").json()
    shape, macs = _oracle(model, torch.zeros(1, 1, 16000))
    assert doc["total"] == sum(p.numel() for p in model.parameters())
    assert doc["macs"] == macs and doc["output"] == shape


@pytest.mark.torch
def test_the_library_takes_the_same_inputs(tmp_path):
    import torch

    import nnkit

    path = tmp_path / "pair.py"
    path.write_text(TWO)
    model = _module(path, "pair_api").Pair()
    x = torch.zeros(1, 3, 16, 16)
    _, macs = _oracle(model, x, x, weight=torch.ones(1, 1))
    for given in (["3x16x16", (3, 16, 16), "weight=1"], ["3x16x16", "3x16x16", {"weight": (1,)}]):
        assert nnkit.analyze(f"{path}:Pair", input=given).macs == macs
        assert nnkit.analyze(model, input=given).macs == macs
    assert nnkit.analyze(model, input=["3x16x16", "3x16x16"], batch=3).macs == 3 * macs  # a product: no MACs
    text = _module(EXAMPLES / "text_lstm.py", "text_api").TextLSTM()
    assert nnkit.analyze(text, input="long:50").output == (4,)
    assert nnkit.analyze(text, input=["long:50", "mask=bool:50"]).params == sum(p.numel() for p in text.parameters())


@pytest.mark.torch
def test_summary_and_crosscheck_with_ids(nnkit):
    path = EXAMPLES / "text_lstm.py"
    run = nnkit("summary", f"{path}:TextLSTM", "--input", "long:50", "--train", "-f", "json")
    assert run.code == 0, run
    doc = run.json()
    flops = nnkit("flops", f"{path}:TextLSTM", "--input", "long:50", "-f", "json").json()
    assert doc["macs"] == flops["macs"] and doc["memory"]["saved_bytes_per_item"] > 0
    both = nnkit("summary", f"{path}:TextLSTM", "--input", "long:50", "--input", "mask=bool:50", "-f", "json")
    assert both.code == 0 and "inputs: long:50, mask=bool:50" in both.json()["notes"], both  # every --input
    other = nnkit("crosscheck", f"{path}:TextLSTM", "--input", "long:50", "-f", "json")  # refused before issue 10
    assert other.code == 0 and other.json()["macs"]["nnkit"] == flops["macs"], other
    assert "fvcore matmul: -117,964,800 (operators fvcore has no counter for: aten::lstm)" in \
        other.json()["differences"]
