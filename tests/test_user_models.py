"""Models as users write them (issue 11, "Models users write"): factories that move the model to a device,
forwards that return other things than one tensor, and failures that say why in one line."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.torch

NET = '''
import dataclasses
from typing import NamedTuple

import torch
from torch import nn
from torch.distributions import Categorical, Independent, MultivariateNormal, Normal


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 4)

    def features(self, x):
        return self.conv(x).mean((2, 3))

    def forward(self, x):
        return self.fc(self.features(x))


def on_cpu():
    return Net().cpu()


def on_device():
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return Net().to(device)


def to_cpu():
    return Net().to("cpu")


def on_cuda():  # written for a GPU machine
    return Net().cuda()


def to_cuda_half():
    return Net().to("cuda", torch.float16).float()


class MovesWhileBuilt(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = Net().to("cpu", torch.float32)
        self.register_buffer("scale", torch.ones(4, device="cuda") if not torch.cuda.is_available()
                             else torch.ones(4))

    def forward(self, x):
        return self.net(x.cpu()) * self.scale.to(x.device)


@dataclasses.dataclass
class Output:
    logits: torch.Tensor
    features: torch.Tensor
    steps: int


class Pair(NamedTuple):
    logits: torch.Tensor
    aux: torch.Tensor


class DataclassOut(Net):
    def forward(self, x):
        f = self.features(x)
        return Output(self.fc(f), f, 3)


class NestedOut(Net):
    def forward(self, x):
        f = self.features(x)
        return "logits", {"pair": Pair(self.fc(f), f), "n": 3, "none": None}


class Gaussian(Net):
    """A policy head: a distribution whose constructor validates its arguments (scale > 0)."""

    def forward(self, x):
        f = self.fc(self.features(x))
        return Independent(Normal(f, nn.functional.softplus(f) + 1e-3, validate_args=True), 1)


class Covariance(Net):
    """MultivariateNormal checks that its covariance is square, symmetric and positive definite."""

    def forward(self, x):
        f = self.fc(self.features(x))
        return MultivariateNormal(f, covariance_matrix=torch.diag_embed(f.exp()), validate_args=True)


class Classes(Net):
    def forward(self, x):
        return Categorical(logits=self.fc(self.features(x)))


class WithPrior(Net):
    def __init__(self):
        super().__init__()
        self.prior = Normal(torch.zeros(4), torch.ones(4), validate_args=True)

    def forward(self, x):
        return self.prior.log_prob(self.fc(self.features(x)))


class NoForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 8)
        self.fc = nn.Linear(8, 2)

    def forward(self, ids):
        return self.fc(self.embed(ids))


class TwoImages(Net):
    def forward(self, a, b):
        return self.fc(self.features(a + b))


class CudaInForward(Net):
    def forward(self, x):
        return self.fc(self.features(x.cuda()))


class ReadsValues(Net):
    def forward(self, x):
        return self.fc(self.features(x)) if x.sum().item() >= 0 else x
'''


@pytest.fixture()
def net(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(NET)
    return path


@pytest.mark.parametrize("factory", ["on_cpu", "on_device", "to_cpu", "on_cuda", "to_cuda_half",
                                     "MovesWhileBuilt"])
def test_factories_that_move_their_model_analyse(nnkit, net, factory):
    run = nnkit("summary", f"{net}:{factory}", "--input", "3x16x16", "-f", "json")
    assert run.code == 0, run
    doc = run.json()
    assert doc["total"] == 3 * 8 * 9 + 8 + 8 * 4 + 4  # the Net's own parameters, nothing allocated
    assert doc["macs"] == 8 * 14 * 14 * 27 + 8 * 4 and doc["output"] == [4]


def test_building_moves_nothing_off_the_meta_device(net):
    import importlib.util

    from nnkit.introspect.build import on_meta

    spec = importlib.util.spec_from_file_location("net_moves", net)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = on_meta(module.MovesWhileBuilt)
    assert all(t.is_meta for t in (*model.parameters(), *model.buffers()))
    half = on_meta(lambda: module.Net().to("cuda", __import__("torch").float16))
    assert {p.dtype for p in half.parameters()} == {__import__("torch").float16}  # the dtype asked, on meta


@pytest.mark.parametrize(("model", "output"), [("DataclassOut", [4]), ("NestedOut", [4]), ("Gaussian", [4]),
                                               ("WithPrior", [4]), ("Covariance", [4]), ("Classes", [])])
def test_forwards_returning_other_objects_analyse(nnkit, net, model, output):
    """The output shown is a distribution's batch and event shape (a Categorical over 4 classes is one draw: []),
    anything else's first tensor's."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location(f"net_{model}", net)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    real = getattr(module, model)().eval()(torch.zeros(1, 3, 16, 16))  # torch itself accepts them on the CPU
    if isinstance(real, torch.distributions.Distribution):
        assert [*real.batch_shape, *real.event_shape][1:] == output
    run = nnkit("summary", f"{net}:{model}", "--input", "3x16x16", "-f", "json")
    assert run.code == 0, run
    doc = run.json()
    assert doc["output"] == output and doc["total"] == 3 * 8 * 9 + 8 + 8 * 4 + 4
    assert doc["macs"] == 8 * 14 * 14 * 27 + 8 * 4
    assert doc["layers"][-1]["output"] == [4]  # the fc row


def _fails(nnkit, *args):
    run = nnkit("params", *args)
    assert run.code == 1 and len(run.err.strip().splitlines()) == 1, run
    assert "4096" not in run.err and "smallest input" not in run.err, run
    return run.err.strip()


def test_failures_no_size_fixes_are_said_in_one_line_without_a_search(nnkit, net):
    missing = _fails(nnkit, f"{net}:TwoImages", "--input", "3x16x16")
    assert "the model (TwoImages) fails on its input 3x16x16" in missing and "missing 1 required positional" in missing
    assert "TwoImages.forward(a, b): give --input once for each positional input" in missing
    dtype = _fails(nnkit, f"{net}:Tokens", "--input", "8")
    assert "layer embed (Embedding) fails on its input 8" in dtype and "indices" in dtype
    assert dtype.endswith("an embedding takes integer ids: give --input long:SHAPE")
    assert nnkit("params", f"{net}:Tokens", "--input", "long:8").code == 0
    nothing = _fails(nnkit, f"{net}:NoForward", "--input", "3x16x16")
    assert 'the model (NoForward) fails on its input 3x16x16: Module [NoForward] is missing the required "forward"' \
        in nothing
    values = _fails(nnkit, f"{net}:ReadsValues", "--input", "3x16x16")
    assert "the forward reads tensor values (.item(), bool(), nonzero)" in values
    import torch

    if not torch.cuda.is_available():
        cuda = _fails(nnkit, f"{net}:CudaInForward", "--input", "3x16x16")
        assert "the forward moves a tensor to CUDA, which this machine lacks" in cuda
    channels = _fails(nnkit, f"{net}:Net", "--input", "1x16x16")
    assert "layer conv (Conv2d) fails on its input 1x16x16" in channels
    assert channels.endswith("it takes 3 channels, not 1")


def test_failures_about_size_still_find_the_smallest_input(nnkit, net):
    run = nnkit("params", f"{net}:Net", "--input", "3x2x2")
    assert run.code == 1 and "layer conv (Conv2d) fails on its input 3x2x2" in run.err
    assert "the smallest input that works is 3x3x3" in run.err


def test_the_failure_classification():
    from nnkit.introspect.trace import about_size

    assert about_size(RuntimeError("Calculated padded input size per channel: (1 x 1). Kernel size: (5 x 5). "
                                   "Kernel size can't be greater than actual input size"))
    assert about_size(RuntimeError("Given input size: (192x1x1). Calculated output size: (192x0x0). Output size "
                                   "is too small"))
    assert about_size(RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x400 and 256x120)"))
    assert about_size(AssertionError("Wrong image height! Expected 224 but got 112!"))
    for exc in (TypeError("forward() missing 1 required positional argument: 'y'"),
                NotImplementedError('Module [M] is missing the required "forward" function'),
                RuntimeError("Expected tensor for argument #1 'indices' to have one of the following scalar types: "
                             "Long, Int; but got torch.FloatTensor instead (while checking arguments for embedding)"),
                RuntimeError("mat1 and mat2 must have the same dtype, but got Float and Half"),
                RuntimeError("Input type (c10::Half) and bias type (float) should be the same"),
                RuntimeError("Tensor.item() cannot be called on meta tensors"),
                RuntimeError("Invalid channel dimensions"),
                RuntimeError("Given groups=1, weight of size [8, 3, 3, 3], expected input[1, 1, 16, 16] to have 3 "
                             "channels, but got 1 channels instead"),
                KeyError("x")):
        assert not about_size(exc), exc


def test_an_input_of_another_dtype_than_the_weights_fails_at_its_first_layer(nnkit, net):
    """The meta device runs a half image or ids through a float convolution; every real device refuses, so nnkit
    does too, at that layer, in one line."""
    import torch

    with pytest.raises(RuntimeError, match="should be the same"):  # what torch says on the CPU
        torch.nn.Conv2d(3, 8, 3)(torch.zeros(1, 3, 16, 16, dtype=torch.half))
    for given, dtype in (("half:3x16x16", "float16"), ("long:3x16x16", "int64")):
        err = _fails(nnkit, f"{net}:Net", "--input", given)
        assert f"Input type (torch.{dtype}) and weight type (torch.float32) should be the same" in err, err
        assert err.startswith(f"nnkit: {net}:Net on {given}: layer conv (Conv2d) fails"), err

