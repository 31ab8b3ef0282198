"""Chains that train, and their code: the module built from the layer language against the source `nnkit code`
prints (executed) and against the oracle modules of tests/torch_oracle.py; a chain trained on digits and on a
CIFAR-10-format file, evaluated from its checkpoint alone; chains that do not fit the data refused in one line.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.torch

LENET_CIFAR = ("3x32x32 conv(6,5) relu maxpool(2) conv(16,5) relu maxpool(2) flatten fc(120) relu fc(84) relu "
               "fc(10)")
DIGITS = "1x8x8 conv(8,3,p=1) relu flatten fc(10)"
# Between them every layer kind the language has today, with non-default arguments where a kind takes them.
CHAINS = [
    LENET_CIFAR,
    "2x3x16x16 conv(8,3,s=2,p=1,bias=false) bn relu6 dwconv(3,p=same,m=2) pwconv(12,g=2) dwsep(16,3x5,s=1,p=1x2) "
    "maxpool(3,2,p=1,ceil=true) avgpool(2,1) gelu silu swish hardswish mish leakyrelu elu tanh sigmoid identity",
    "1x9x9 tconv(4,3,s=2,p=1,op=1) upsample(0.5) conv(6,3,d=2) adaptivepool(2x3) dropout(0.25) gap flatten "
    "fc(7,bias=false) softmax",
    "1x6x5 flatten lstm(8,2,bidir=true) gru(5) rnn(4,bias=false) bn fc(3)",
    "2x4x6 lstm(5) fc(3)",  # a sequence: the leading sizes are its steps
    "1x9x9 upsample(2,mode=bilinear) upsample(1.5) conv(2,3) gn(2) ln in(affine=true) gap flatten fc(2)",
    "2x4x100 conv1d(8,5,s=2,p=2,bias=false) bn relu dwconv1d(3,p=1,m=2) pwconv1d(12,g=2) dwsep1d(16,3,d=2) "
    "maxpool1d(3,2,p=1,ceil=true) avgpool1d(2) in(affine=true) gn(4) tconv1d(6,4,s=2,p=1,op=1) "
    "upsample(2,mode=bilinear) adaptivepool(5) ln flatten fc(3)",
    "3x8x16x16 conv3d(8,3x5x5,s=1x2x2,p=1x2x2) bn relu maxpool3d(2,ceil=true) avgpool3d(2,1) dwsep3d(12,3,p=1) "
    "pwconv3d(6) dwconv3d(3,p=1) tconv3d(4,2,s=2) upsample(0.5,mode=bilinear) in gn(2) adaptivepool(1x2x2) gap "
    "flatten fc(5)",
    "3x32x32 patch(64,8) cls pos encoder(4,128) attn(4,bias=false) attn(2) mlp(96,bias=false) mlp(80) ln "
    "token(0) fc(10)",
    "20x16 lstm(8,batch_first=true) ln fc(4)",
]


def _exec_source(text: str, name: str = "Net"):
    scope: dict = {}
    exec(compile(text, "<nnkit code>", "exec"), scope)  # noqa: S102 - the generated source is the thing tested
    return scope[name]()


@pytest.mark.parametrize("chain", CHAINS, ids=lambda c: c.split()[0] + " " + c.split()[1])
def test_code_and_trainer_module_are_the_same_network(chain):
    import torch

    from nnkit.core.chain import analyze_chain
    from nnkit.core.torchplan import plan, source
    from nnkit.train.chain_model import chain_net

    p = plan(chain)
    printed, built = _exec_source(source(p)), chain_net(p)
    ours = {k: v.shape for k, v in built.state_dict().items()}
    assert {k: v.shape for k, v in printed.state_dict().items()} == ours  # same names, same shapes
    first, rest = chain.split(" ", 1)
    assert sum(q.numel() for q in built.parameters()) == p.params == analyze_chain(first, rest).params
    printed.load_state_dict(built.state_dict())  # a checkpoint of the trained chain loads into the printed class
    printed.eval(), built.eval()
    torch.manual_seed(0)
    x = torch.randn(3, *p.input)
    with torch.no_grad():
        y = built(x)
        assert torch.equal(printed(x), y)
    assert tuple(y.shape[1:]) == tuple(p.output)


@pytest.mark.parametrize("chain", CHAINS, ids=lambda c: c.split()[0] + " " + c.split()[1])
def test_each_module_is_the_oracles(chain):
    """Layer by layer: the module's class, parameter count and output shape are those of the oracle module the
    core's arithmetic is tested against (tests/torch_oracle.py)."""
    import torch

    from nnkit.core.torchplan import plan
    from nnkit.train.chain_model import _make
    from tests.torch_oracle import module as oracle

    for m in plan(chain).modules:
        ours, theirs = _make(m.call), oracle(m.spec, m.input)
        inner = theirs.rnn if m.sequence else theirs  # the oracle wraps recurrent layers to reshape around them
        if m.call.home:  # the same module with the same settings (the oracle builds nnkit's own from lambdas)
            assert _settings(ours) == _settings(inner), m.name
        assert sum(q.numel() for q in ours.parameters()) == sum(q.numel() for q in theirs.parameters()), m.name
        x = torch.zeros(2, *m.input)
        with torch.no_grad():
            out = theirs.eval()(x)
        assert tuple(out.shape[1:]) == tuple(m.output), m.name


def _settings(module) -> str:
    """A module's repr with (2, 2) written 2: torch keeps a pool's arguments as given, a conv's as tuples."""
    import re

    return re.sub(r"\((\d+)(?:, \1)*,?\)", r"\1", repr(module))


def test_every_layer_kind_has_a_module():
    from nnkit.core.spec import POINTWISE, SIGNATURES
    from nnkit.core.torchplan import BUILDERS

    kinds = set(SIGNATURES) | set(POINTWISE)
    assert kinds - set(BUILDERS) == set()
    assert {s.split("(")[0] for c in CHAINS for s in c.split()[1:]} >= kinds  # and the tests above build each


def test_the_printed_file_runs_as_a_script(tmp_path, nnkit):
    run = nnkit("code", LENET_CIFAR, "--name", "LeNet", "--out", str(tmp_path / "lenet.py"))
    assert run.code == 0 and run.out == "", run
    text = (tmp_path / "lenet.py").read_text()
    assert "class LeNet(nn.Module):" in text and "self.conv1 = nn.Conv2d(3, 6, kernel_size=5)" in text
    assert max(len(line) for line in text.splitlines()) <= 110
    done = subprocess.run([sys.executable, str(tmp_path / "lenet.py")], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "(10,) 62006", done


def test_code_stays_torch_free_and_refuses_what_has_no_module(monkeypatch, nnkit):
    out = subprocess.run([sys.executable, "-c", "import sys; from nnkit.cli.code import code; "
                          f"code(['{DIGITS}']); print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False") and "class Net(nn.Module):" in out
    from nnkit.core import torchplan

    monkeypatch.delitem(torchplan.BUILDERS, "gelu")  # a layer kind added to the language before its module
    run = nnkit("code", "1x8x8 conv(4,3) gelu")
    assert run.code == 2 and run.err.strip() == ("nnkit: layer 2 gelu: no torch module for 'gelu' layers yet, so "
                                                 "the chain cannot be built (shape, params and flops still compute "
                                                 "it)"), run
    taken = nnkit("code", "3x32x32 patch(64,8) encoder(4,128) token(0) fc(10)", "--name", "EncoderBlock")
    assert taken.code == 2 and "--name EncoderBlock: the printed file already uses that name" in taken.err, taken
    bad = nnkit("code", "1x8x8 conv(4,9)")
    assert bad.code == 1 and "smaller than the 9-wide window" in bad.err and len(bad.err.splitlines()) == 1


def test_a_chain_trains_on_digits_and_evaluates_from_its_checkpoint(nnkit, tmp_path):
    import torch

    out = tmp_path / "run"
    run = nnkit("train", DIGITS, "--epochs", "2", "--out", str(out), "-f", "json")
    assert run.code == 0, run
    doc = run.json()
    assert doc["arch"] == DIGITS and doc["params"] == 8 * 9 + 8 + 8 * 64 * 10 + 10
    ev = nnkit("eval", str(out), "-f", "json")  # no chain given again
    assert ev.code == 0, ev
    assert ev.json()["accuracy"] == doc["val_accuracy"] and ev.json()["arch"] == DIGITS
    ck = torch.load(out / "best.pt", weights_only=True)
    code = nnkit("code", DIGITS).out
    net = _exec_source(code)
    net.load_state_dict(ck["model"])  # the trained weights in the printed class
    resumed = nnkit("train", "--resume", str(out), "--epochs", "3", "-f", "json")
    assert resumed.code == 0 and resumed.json()["epochs_run"] == 3, resumed


def test_the_issues_chain_trains_on_a_cifar10_file(nnkit, tmp_path):
    from tests.test_data import make_cifar

    make_cifar(tmp_path / "data")
    run = nnkit("train", LENET_CIFAR, "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--epochs", "1",
                "--batch-size", "8", "--out", str(tmp_path / "run"), "-f", "json")
    assert run.code == 0, run
    assert run.json()["params"] == 62006  # LeNet-5 on 3x32x32, as nnkit params counts it
    ev = nnkit("eval", str(tmp_path / "run"), "--split", "test", "-f", "json")
    assert ev.code == 0 and ev.json()["images"] == 8 and ev.json()["classes"][0] == "airplane", ev


@pytest.mark.parametrize("chain,message", [
    (LENET_CIFAR, f"chain '{LENET_CIFAR}': takes 3x32x32 images, digits gives 1x8x8; start the chain with 1x8x8"),
    ("1x8x8 conv(8,3) relu flatten fc(3)",
     "chain '1x8x8 conv(8,3) relu flatten fc(3)': ends in 3 outputs, digits has 10 classes: end it with fc(10)"),
    ("1x8x8 conv(8,3) relu", "chain '1x8x8 conv(8,3) relu': ends in 8x6x6, not one score per class; digits has 10 "
                             "classes: end it with flatten fc(10)"),
    ("64 fc(10)", "chain '64 fc(10)': takes 64 features, but training data are images; start the chain with CxHxW "
                  "(digits: 1x8x8)"),
    ("4x1x8x8 flatten fc(10)", "chain '4x1x8x8 flatten fc(10)': the batch comes from --batch-size; write the input "
                               "as 1x8x8"),
])
def test_a_chain_that_does_not_fit_the_data_is_refused_before_training(nnkit, tmp_path, chain, message):
    run = nnkit("train", chain, "--out", str(tmp_path / "run"))
    assert run.code in (1, 2) and run.err == f"nnkit: {message}\n", run
    assert not (tmp_path / "run").exists()  # refused before the run directory was made
