"""Transfer learning's three modes on a small network with BatchNorm, from weights the test writes: what is frozen
stays bit-for-bit as loaded (BatchNorm running statistics included), what trains changes; nnkit summary shows the
same trainable split; every misuse is one line.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.torch

# conv1 bn2 relu3 conv4 bn5 relu6 flatten7 fc8: two BatchNorm layers, so eval mode of the frozen part matters
NET = "1x8x8 conv(4,3,p=1) bn relu conv(4,3,p=1) bn relu flatten fc(10)"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random weights with BatchNorm statistics far from their initial 0 and 1, so a BatchNorm layer left in
    train mode would move them at once."""
    import torch

    from nnkit.core.torchplan import plan
    from nnkit.train.chain_model import chain_net

    torch.manual_seed(3)
    net = chain_net(plan(NET))
    for name, t in net.state_dict().items():
        if "running" in name:
            t.copy_(torch.rand_like(t) + 0.5)
    path = tmp_path_factory.mktemp("weights") / "w.pth"
    torch.save(net.state_dict(), path)
    return path, {k: v.clone() for k, v in net.state_dict().items()}


def _trained(tmp_path, weights, **options):
    import torch

    from nnkit.train.config import TrainConfig
    from nnkit.train.loop import train

    train(TrainConfig(arch=NET, weights=str(weights[0]), epochs=1, out=str(tmp_path / "run"), augment=(),
                      **options))
    return torch.load(tmp_path / "run" / "last.pt", weights_only=True)


def _changed(old, new):
    import torch

    return {k for k in old if not torch.equal(old[k], new[k]) and not k.endswith("num_batches_tracked")}


def test_mode_1_weights_alone_train_everything(tmp_path, weights):
    ck = _trained(tmp_path, weights)
    old = weights[1]
    assert _changed(old, ck["model"]) == {k for k in old if not k.endswith("num_batches_tracked")}


def test_mode_2_freeze_up_to_a_module(tmp_path, weights):
    ck = _trained(tmp_path, weights, freeze="bn2")
    old, new = weights[1], ck["model"]
    frozen = {k for k in old if k.startswith(("conv1.", "bn2."))}
    assert len(frozen) == 7  # conv1 weight, bias; bn2 weight, bias, running mean, var, batches tracked
    assert not frozen & _changed(old, new)  # bit for bit as loaded, running statistics too
    assert {"conv4.weight", "bn5.running_mean", "bn5.weight", "fc8.weight"} <= _changed(old, new)


def test_mode_2_trainable_modules(tmp_path, weights):
    ck = _trained(tmp_path, weights, trainable=("conv4", "fc8"))
    old, new = weights[1], ck["model"]
    assert _changed(old, new) == {"conv4.weight", "conv4.bias", "fc8.weight", "fc8.bias"}  # bn5 is frozen too


def test_mode_3_new_head_keeps_the_network_whole(nnkit, tmp_path, weights):
    """--head new on an image folder of 3 classes: the 10-output network is kept whole, a Linear(10, 3) on top is
    all that trains, and nnkit eval rebuilds the pair from the checkpoint alone."""
    import torch

    from tests.test_data import make_imagefolder

    make_imagefolder(tmp_path / "imgs")  # read at the chain's 8x8
    run = nnkit("train", NET, "--dataset", "imagefolder", "--data-dir", str(tmp_path / "imgs"), "--weights",
                str(weights[0]), "--head", "new", "--epochs", "1", "--batch-size", "6", "--out",
                str(tmp_path / "run"), "-f", "json")
    assert run.code == 0, run
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    new, old = ck["model"], weights[1]
    assert set(new) == {f"base.{k}" for k in old} | {"head.weight", "head.bias"}
    for k in old:
        assert torch.equal(old[k], new[f"base.{k}"]), k
    assert new["head.weight"].shape == (3, 10)
    assert ck["arch_options"]["head"] == "new" and ck["arch_options"]["base_outputs"] == 10
    ev = nnkit("eval", str(tmp_path / "run"), "-f", "json")
    assert ev.code == 0 and ev.json()["accuracy"] == run.json()["val_accuracy"], ev


def test_a_named_architecture_by_its_module_names(nnkit, tmp_path):
    """lenet5's classifier is module 11 of its nn.Sequential: --trainable 11 is --freeze backbone."""
    import torch

    from nnkit.archs import build

    torch.manual_seed(0)
    src = build("lenet5", num_classes=10, in_channels=1)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    run = nnkit("train", "lenet5", "--weights", str(tmp_path / "w.pth"), "--trainable", "9,11", "--epochs", "1",
                "--augment", "none", "--out", str(tmp_path / "run"), "-f", "json")
    assert run.code == 0, run
    new = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert _changed(src.state_dict(), new) == {"9.weight", "9.bias", "11.weight", "11.bias"}


def test_summary_shows_the_same_trainable_split(nnkit):
    from nnkit.core.chain import analyze_chain

    total = analyze_chain("1x32x32", "conv(6,5) tanh avgpool(2) conv(16,5) tanh avgpool(2) conv(120,5) tanh "
                                     "flatten fc(84) tanh fc(10)").params
    head = nnkit("summary", "lenet5", "--freeze", "backbone", "-f", "json").json()
    assert (head["total"], head["trainable"]) == (total, 84 * 10 + 10)
    listed = nnkit("summary", "lenet5", "--trainable", "9,11", "-f", "json").json()
    assert listed["trainable"] == 120 * 84 + 84 + 84 * 10 + 10
    up_to = nnkit("summary", "lenet5", "--freeze", "6", "-f", "json").json()
    assert up_to["trainable"] == listed["trainable"]  # modules 0-6 frozen: 9 and 11 are what has parameters after
    new = nnkit("summary", "lenet5", "--head", "new", "--num-classes", "3", "-f", "json").json()
    assert (new["total"], new["trainable"]) == (total + 10 * 3 + 3, 33)
    assert new["layers"][-1]["spec"] == "head" and new["layers"][0]["spec"].startswith("base.")
    memory = nnkit("summary", "lenet5", "--freeze", "backbone", "--train", "-f", "json").json()["memory"]
    assert memory["grads_bytes"] == 850 * 4  # gradients for the trainable parameters only


@pytest.mark.parametrize("args,message", [
    (["--trainable", "conv5"], "--trainable conv5: the chain has no module of that name; did you mean conv4, conv1, "
                               "bn5?"),
    (["--freeze", "bn2", "--trainable", "fc8"], "--freeze and --trainable both choose what trains; give one of them"),
    (["--head", "new", "--freeze", "bn2"], "--head new trains only the new layer; leave out --freeze and --trainable"),
    (["--trainable", "relu3"], "--trainable relu3: no parameter is left to train (those modules have none)"),
    (["--freeze", "fc8"], "--freeze fc8: no parameter is left to train"),
])
def test_transfer_misuse_is_one_line(nnkit, tmp_path, weights, args, message):
    run = nnkit("train", NET, "--weights", str(weights[0]), *args, "--out", str(tmp_path / "run"))
    assert run.code in (1, 2) and run.err == f"nnkit: {message}\n", run
    assert not (tmp_path / "run").exists()


def test_transfer_needs_weights_that_fit(nnkit, tmp_path, weights):
    run = nnkit("train", NET, "--head", "new", "--out", str(tmp_path / "a"))
    assert run.code == 2 and "--head new needs --weights PATH" in run.err, run
    run = nnkit("train", NET, "--trainable", "fc8", "--out", str(tmp_path / "a"))
    assert run.code == 2 and "--trainable needs --weights PATH" in run.err, run
    other = nnkit("train", "lenet5", "--weights", str(weights[0]), "--head", "new", "--out", str(tmp_path / "b"))
    assert other.code == 1 and "no '11.weight' (the classifier of this architecture)" in other.err, other


def test_summary_of_a_chain_with_the_training_options(nnkit):
    """A chain's summary takes the same options, on the module nnkit train builds for it."""
    from nnkit.core.chain import analyze_chain

    split = nnkit("summary", NET, "--trainable", "conv4,fc8", "-f", "json").json()
    first, rest = NET.split(" ", 1)
    assert (split["total"], split["trainable"]) == (analyze_chain(first, rest).params,
                                                    4 * 9 * 4 + 4 + 4 * 64 * 10 + 10)
    fit = nnkit("summary", NET, "--train", "--memory", "1MiB", "-f", "json").json()
    assert fit["fits"]["batch"] > 0 and fit["memory"]["total_bytes"] <= 1 << 20
    assert fit["layers"][0]["spec"] == "conv(4,3,p=1)"  # without a transfer option the rows are the chain's own
    bad = nnkit("summary", NET, "--train", "--width", "2")
    assert bad.code == 2 and "--width applies to named and user models, not to a chain" in bad.err, bad
