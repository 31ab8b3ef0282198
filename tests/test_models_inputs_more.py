"""The model commands with every kind of input and at every rank (issue 10, "## Models"): crosscheck and
--backend fvcore|torchinfo on ids, several inputs and keyword inputs, checked against fvcore and torchinfo called
directly on the same tensors; and the smallest input that works for 1-D and 3-D models, checked by running the
real module at it and one size below."""

from __future__ import annotations

import re
import warnings

import pytest

pytestmark = pytest.mark.torch

EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[1] / "examples"

MODELS = '''
import torch
from torch import nn


class IdsAndFeatures(nn.Module):
    """Token ids and a second float tensor of features, and an optional keyword named like a parameter of
    torchinfo.summary."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 16)
        self.conv = nn.Conv1d(16, 8, 3)
        self.fc = nn.Linear(8 + 5, 3)

    def forward(self, ids, extra, mode=None):
        x = self.conv(self.embed(ids).transpose(1, 2)).mean(-1)
        out = self.fc(torch.cat([x, extra], 1))
        return out if mode is None else out * mode


class PositionalOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x, /, depth=None):
        return self.fc(x) if depth is None else self.fc(x) * depth


class Side(nn.Module):
    """A small first input and a large second one: the memory of a real forward is in the second."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 2)

    def forward(self, x, big):
        return self.fc(x) + big.mean()


def short1d():  # too short below 25 samples: 1 + 8 + 2*8
    return nn.Sequential(nn.Conv1d(1, 4, 9), nn.ReLU(), nn.Conv1d(4, 4, 9, dilation=2))


class FourFrames(nn.Module):  # exactly 4 frames of 8x8: its view needs them
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 4 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(self.conv(x).view(x.shape[0], 2 * 4 * 8 * 8))


def clip3d():  # 3 frames for the first conv, then 3x3x3 for the second
    return nn.Sequential(nn.Conv3d(3, 4, (3, 7, 7), padding=(0, 3, 3)), nn.ReLU(), nn.Conv3d(4, 4, 3, stride=2),
                         nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2))
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "models.py"
    path.write_text(MODELS)
    return path


def _load(path, name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ids(high, *shape):
    """Ids as nnkit draws them (inputs.TensorSpec.make): 0..high-1 from a generator seeded 0."""
    import torch

    return torch.randint(0, high, (1, *shape), generator=torch.Generator().manual_seed(0))


def _fvcore(model, *args):
    """fvcore's own (total, parameters) on a real CPU model and real tensors, positional as its API takes them."""
    import logging

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis, parameter_count

        logging.getLogger("fvcore").setLevel(logging.ERROR)
        flops = FlopCountAnalysis(model.eval(), args)
        flops.unsupported_ops_warnings(False)
        flops.uncalled_modules_warnings(False)
        return flops.total(), parameter_count(model)[""]


def _torchinfo(model, input_data, **kwargs):
    """torchinfo's own (total_mult_adds, total_params) on a real CPU model and real tensors."""
    import torchinfo

    stats = torchinfo.summary(model.eval(), input_data=input_data, verbose=0, device="cpu", **kwargs)
    return stats.total_mult_adds, stats.total_params


def _flop_counter(model, *args, **kwargs):
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(model).to("meta").eval()  # as tests/test_model_inputs.py: nn.LSTM has a formula there
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(*(a.to("meta") for a in args), **{k: v.to("meta") for k, v in kwargs.items()})
    return counter.get_total_flops() // 2


def test_crosscheck_of_the_text_model_equals_each_tool_on_the_same_tensors(nnkit):
    import torch

    path = EXAMPLES / "text_lstm.py"
    model = _load(path, "text_more").TextLSTM()
    ids, mask = _ids(model.embed.num_embeddings, 50), torch.zeros(1, 50, dtype=torch.bool)
    for given, args, kwargs in ((["long:50"], (ids,), {}),
                                (["long:50", "mask=bool:50"], (ids, mask), {"mask": mask})):
        run = nnkit("crosscheck", f"{path}:TextLSTM", *(w for g in given for w in ("--input", g)), "-f", "json")
        assert run.code == 0, run
        doc = run.json()
        fv_macs, fv_params = _fvcore(model, *args)  # mask is TextLSTM's second positional parameter too
        ti_macs, ti_params = _torchinfo(model, [ids], **kwargs)
        assert (doc["macs"]["fvcore"], doc["params"]["fvcore"]) == (fv_macs, fv_params)
        assert (doc["macs"]["torchinfo"], doc["params"]["torchinfo"]) == (ti_macs, ti_params)
        assert doc["macs"]["nnkit"] == _flop_counter(model, ids, **kwargs)
        assert doc["params"]["nnkit"] == sum(p.numel() for p in model.parameters())
        assert doc["input"] == [50] and doc["inputs"] == ", ".join(given)
        # every difference is named, and they add up to the tools' totals
        fv_gap = doc["macs"]["fvcore"] - doc["macs"]["nnkit"]
        assert f"fvcore matmul: {fv_gap:+,} (operators fvcore has no counter for: aten::lstm)" in doc["differences"]
        named = sum(int(m.group(1).replace(",", "")) for d in doc["differences"]
                    if (m := re.match(r"torchinfo counts \w+: \+([\d,]+)", d)))
        assert named == doc["macs"]["torchinfo"] - doc["macs"]["nnkit"]
        assert "torchinfo counts LSTM: +409,600 (both biases at every step)" in doc["differences"]
    table = nnkit("crosscheck", f"{path}:TextLSTM", "--input", "long:50", "--input", "mask=bool:50", "-f", "table")
    assert table.code == 0 and "TextLSTM on long:50, mask=bool:50" in " ".join(table.out.split()), table


def test_the_backends_take_ids_and_the_batch(nnkit):
    path = EXAMPLES / "text_lstm.py"
    model = _load(path, "text_batch").TextLSTM()
    ids = _ids(model.embed.num_embeddings, 50)
    fv_macs, _ = _fvcore(model, ids)
    ti_macs, ti_params = _torchinfo(model, [ids])
    for backend, macs in (("fvcore", fv_macs), ("torchinfo", ti_macs)):
        run = nnkit("flops", f"{path}:TextLSTM", "--input", "long:50", "--backend", backend, "--batch", "3",
                    "-f", "json")
        assert run.code == 0, run
        doc = run.json()
        assert doc["macs"] == 3 * macs and doc["batch"] == 3 and "inputs: long:50" in doc["notes"]
    rows = nnkit("params", f"{path}:TextLSTM", "--input", "long:50", "--backend", "torchinfo", "-f", "json")
    assert rows.code == 0 and rows.json()["total"] == ti_params, rows
    assert [r["spec"] for r in rows.json()["layers"]] == ["embed", "lstm", "head"]


@pytest.mark.parametrize("given", [["long:20", "5"], ["long:20", "extra=5"], ["long:20", "extra=5", "mode=1"]])
def test_a_model_of_ids_and_a_second_tensor_positional_and_keyword(nnkit, models, given):
    import torch

    model = _load(models, "models_two").IdsAndFeatures()
    ids, extra = _ids(100, 20), torch.zeros(1, 5)
    kwargs = {"mode": torch.zeros(1, 1)} if len(given) == 3 else {}
    run = nnkit("crosscheck", f"{models}:IdsAndFeatures", *(w for g in given for w in ("--input", g)), "-f", "json")
    assert run.code == 0, run
    doc = run.json()
    assert (doc["macs"]["fvcore"], doc["params"]["fvcore"]) == _fvcore(model, ids, extra, *kwargs.values())
    # `mode` is also a parameter of torchinfo.summary: the inputs go by name in a dict
    data = {"ids": ids, "extra": extra, **kwargs} if kwargs else [ids, extra]
    assert (doc["macs"]["torchinfo"], doc["params"]["torchinfo"]) == _torchinfo(model, data)
    assert doc["macs"]["nnkit"] == _flop_counter(model, ids, extra, **kwargs) == 8 * 18 * 16 * 3 + 3 * 13
    assert "torchinfo counts Conv1d: +144 (conv bias at every output position)" in doc["differences"]
    assert not any(d.startswith(("fvcore", "torchinfo failed")) for d in doc["differences"]), doc
    fv = nnkit("flops", f"{models}:IdsAndFeatures", *(w for g in given for w in ("--input", g)), "--backend",
               "fvcore", "-f", "json").json()
    assert fv["macs"] == doc["macs"]["fvcore"]
    assert {r["spec"] for r in fv["layers"]} == {"embed", "conv", "fc"}  # the model's own paths, not a wrapper's


def test_what_torchinfo_cannot_be_given_is_refused_in_one_line(nnkit, models):
    run = nnkit("flops", f"{models}:PositionalOnly", "--input", "4", "--input", "depth=1", "--backend", "torchinfo")
    assert run.code == 2 and len(run.err.strip().splitlines()) == 1, run
    assert "the keyword input 'depth' is also a parameter of torchinfo.summary" in run.err
    assert "leave --backend out" in run.err
    assert nnkit("flops", f"{models}:PositionalOnly", "--input", "4", "--input", "depth=1").code == 0
    check = nnkit("crosscheck", f"{models}:PositionalOnly", "--input", "4", "--input", "depth=1", "-f", "json")
    assert check.code == 0 and check.json()["macs"]["fvcore"] == check.json()["macs"]["nnkit"] == 8, check
    assert any(d.startswith("torchinfo failed: UsageError") for d in check.json()["differences"])


def test_the_memory_check_counts_every_input_in_its_dtype(nnkit, models, monkeypatch):
    import nnkit.core.numbers as numbers

    monkeypatch.setattr(numbers, "physical_memory", lambda: 2 * 2**30)
    # 20000x20000 doubles are 3.0 GiB: refused before fvcore allocates them, though the first input is 8 floats
    run = nnkit("flops", f"{models}:Side", "--input", "8", "--input", "double:20000x20000", "--backend", "fvcore")
    assert run.code == 2 and len(run.err.strip().splitlines()) == 1, run
    assert "at 8, double:20000x20000 that takes at least 3.0 GiB, more than this machine's 2.0 GiB" in run.err
    small = nnkit("flops", f"{models}:Side", "--input", "8", "--input", "double:100x100", "--backend", "fvcore",
                  "-f", "json")
    assert small.code == 0 and small.json()["macs"] == 16, small


def _smallest(err):
    m = re.search(r"the smallest input that works is ([\dx]+)", err)
    assert m, err
    return tuple(int(d) for d in m.group(1).split("x"))


def _runs(model, item):
    import torch

    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *item))
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("target,given,expected", [("short1d", "1x10", (1, 25)),
                                                   ("KeywordSpotter", "1x1000", (1, 6848))])
def test_a_1d_model_too_short_gets_the_smallest_length(nnkit, models, target, given, expected):
    path = EXAMPLES / "audio_conv1d.py" if target == "KeywordSpotter" else models
    module = _load(path, f"one_d_{target}")
    model = getattr(module, target)()
    run = nnkit("params", f"{path}:{target}", "--input", given)
    assert run.code == 1 and len(run.err.strip().splitlines()) == 1, run
    item = _smallest(run.err)
    assert item == expected  # 6848 is above the 4096 that images stop at: waveforms are searched further
    assert _runs(model, item) and not _runs(model, (item[0], item[1] - 1))
    assert run.err.strip().endswith(f"the smallest input that works is {item[0]}x{item[1]}")


@pytest.mark.parametrize("given,expected", [((3, 2, 112, 112), (3, 5, 112, 112)),  # time alone too short
                                            ((3, 2, 2, 112), (3, 5, 5, 112)),
                                            ((3, 20, 1, 1), (3, 20, 3, 3))])  # space alone too small
def test_a_3d_model_keeps_the_axes_that_are_not_the_problem(nnkit, models, given, expected):
    model = _load(models, "three_d").clip3d()
    run = nnkit("shape", f"{models}:clip3d", "--input", "x".join(map(str, given)))
    assert run.code == 1 and len(run.err.strip().splitlines()) == 1, run
    item = _smallest(run.err)
    assert item == expected
    s = min(d for d, g in zip(item[1:], given[1:]) if d != g)  # the size the short axes were raised to
    assert run.err.count("raised to at least") == 1
    assert run.err.strip().endswith(f"(every axis raised to at least {s}, the larger ones kept)")
    below = (item[0], *(max(g, s - 1) for g in given[1:]))
    assert _runs(model, item) and not _runs(model, below)


def test_a_model_that_fails_for_another_reason_gets_no_search(nnkit, models):
    run = nnkit("shape", f"{models}:clip3d", "--input", "4x2x112x112")  # channels: no size helps
    assert run.code == 1 and "smallest input" not in run.err and "doubling" not in run.err, run


def test_a_clip_with_too_many_frames_is_told_no_smallest_input(nnkit, models):
    """The 3-D search only grows the short axes: for 8 frames where the model takes exactly 4 it finds nothing,
    and the message claims nothing (before: 'no input found by doubling the short axes', read as 'none works')."""
    model = _load(models, "four_frames").FourFrames()
    assert _runs(model, (1, 4, 8, 8)) and not _runs(model, (1, 8, 8, 8))
    run = nnkit("params", f"{models}:FourFrames", "--input", "1x8x8x8")
    assert run.code == 1 and len(run.err.strip().splitlines()) == 1, run
    assert run.err.strip().endswith("is invalid for input of size 1024"), run
    short = nnkit("params", f"{models}:FourFrames", "--input", "1x2x8x8")
    assert _smallest(short.err) == (1, 4, 8, 8)
