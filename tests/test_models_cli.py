"""The model commands end to end, in-process: nnkit models | summary | crosscheck | dwsep ARCH, and the
analysis commands on named and user models. Oracles: the registry's torchvision metadata, Howard et al.
2017."""

from __future__ import annotations

import pytest


def test_models_lists_every_architecture_as_json(nnkit):
    from nnkit.archs import arch_names

    run = nnkit("models", "--format", "json")
    assert run.code == 0, run
    doc = run.json()
    assert [d["name"] for d in doc] == arch_names()
    resnet50 = next(d for d in doc if d["name"] == "resnet50")
    assert resnet50 == {"name": "resnet50", "input": [3, 224, 224], "params": 25557032, "macs": 4089184256,
                        "task": "classification"}
    assert set(doc[0]) == {"name", "input", "params", "macs", "task"}  # the contract's four keys, extended


def test_models_filters_by_task(nnkit):
    seg = nnkit("models", "--task", "segmentation", "-f", "json").json()
    assert [d["name"] for d in seg] == ["deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50",
                                        "deeplabv3_resnet101",
                                        "fcn_resnet50", "fcn_resnet101", "lraspp_mobilenet_v3_large"]
    assert all(d["task"] == "segmentation" and d["input"] == [3, 520, 520] for d in seg)
    fcn = nnkit("models", "fcn*", "--task", "segmentation", "-f", "tsv")
    assert fcn.code == 0 and fcn.out.splitlines()[0].split("\t")[-1] == "task"
    assert nnkit("models", "resnet*", "--task", "segmentation", "-f", "json").json() == []
    bad = nnkit("models", "--task", "segmentaton")
    assert bad.code == 2 and "did you mean segmentation" in bad.err


def test_models_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from nnkit.cli import app;"
            "r = CliRunner().invoke(app, ['models', 'vgg*', '-f', 'tsv']); assert r.exit_code == 0, r.output;"
            "assert 'vgg16_bn' in r.stdout; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.torch
def test_analyses_import_neither_torchvision_nor_dynamo_unless_the_model_does(tmp_path):
    """`nnkit summary lenet5` and user models need torch alone: importing torch._dynamo (which torch's
    dispatch modes do on their first operator) cost 1.2 s of 5 here. A subprocess: this process has both
    loaded."""
    import subprocess
    import sys

    (tmp_path / "net.py").write_text("from torch import nn\n"
                                     "def Net():\n"
                                     "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), "
                                     "nn.ReLU(),\n                         nn.AvgPool2d(2), nn.Flatten(), "
                                     "nn.Linear(8 * 15 * 15, 10))\n")
    code = ("import sys; from typer.testing import CliRunner; from nnkit.cli import app\n"
            "for args in (['summary', 'lenet5'], ['summary', 'net.py:Net', '--input', '3x32x32', "
            "'--explain']):\n    r = CliRunner().invoke(app, args); assert r.exit_code == 0, r.output\n"
            "print(sorted(m for m in ('torchvision', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.torch
def test_params_and_flops_of_a_name(nnkit):
    run = nnkit("params", "resnet50", "-f", "json")
    assert run.code == 0, run
    doc = run.json()
    assert doc["total"] == 25557032 and any(x["spec"] == "layer4.2.conv3" for x in doc["layers"])
    flops = nnkit("flops", "mobilenet_v2", "-f", "json").json()
    # torchvision: 0.301
    assert round(flops["macs"] / 1e9, 3) == 0.301 and flops["flops"] == 2 * flops["macs"]


@pytest.mark.torch
def test_summary_shows_all_columns_and_depth(nnkit):
    run = nnkit("summary", "resnet18", "--depth", "1", "-f", "json")
    assert run.code == 0, run
    doc = run.json()
    layer = doc["layers"][4]
    assert layer["spec"] == "layer1" and layer["output"] == [64, 56, 56]
    assert {"params", "trainable", "macs", "rf", "activation_bytes"} <= set(layer)
    assert doc["total"] == 11689512 and doc["size"] == [435, 435]
    tsv = nnkit("summary", "lenet5", "-f", "tsv")
    assert tsv.out.splitlines()[0].split("\t")[:4] == ["#", "layer", "input", "output"]


@pytest.mark.torch
def test_json_carries_the_analysis_notes(nnkit):
    """What a table prints under itself about the whole network, scripts get as a "notes" list."""
    doc = nnkit("rf", "mobilenet_v3_small", "-f", "json").json()
    assert any("squeeze-excitation gate(s)" in n for n in doc["notes"])
    chain = nnkit("rf", "3x32x32", "conv(8,3) upsample(2) conv(8,3)", "-f", "json").json()
    assert any(n.startswith("through upsampling, output j's field is composed") for n in chain["notes"])
    assert nnkit("params", "3x32x32", "conv(8,3)", "-f", "json").json()["notes"] == []


@pytest.mark.torch
def test_summary_of_a_chain_uses_the_core(nnkit):
    run = nnkit("summary", "3x32x32", "conv(6,5) maxpool(2) flatten fc(10)", "-f", "json")
    assert run.code == 0, run
    assert run.json()["total"] == 456 + 6 * 14 * 14 * 10 + 10


@pytest.mark.torch
def test_summary_train_memory_and_plot(nnkit, tmp_path):
    from nnkit.introspect.build import build_meta
    from nnkit.introspect.memory import saved_activation_bytes

    png = tmp_path / "lenet.png"
    run = nnkit("summary", "lenet5", "--train", "--batch", "16", "--optimizer", "adam", "--plot", str(png),
                "-f", "json")
    assert run.code == 0, run
    mem = run.json()["memory"]
    assert mem["params_bytes"] == mem["grads_bytes"] == 61706 * 4 and mem["optimizer_bytes"] == 2 * 61706 * 4
    assert mem["saved_bytes_per_item"] == saved_activation_bytes(build_meta("lenet5"), (1, 32, 32))
    assert mem["total_bytes"] == 4 * 61706 * 4 + 16 * mem["saved_bytes_per_item"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    bad = nnkit("summary", "lenet5", "--batch", "4")
    assert bad.code == 2 and "add --train" in bad.err


@pytest.mark.torch
def test_user_model_in_every_command(nnkit, tmp_path):
    f = tmp_path / "model.py"
    f.write_text("from torch import nn\n\nclass Net(nn.Sequential):\n"
                 "    def __init__(self):\n        super().__init__(nn.Conv2d(3, 10, 5), nn.ReLU())\n")
    for command in ("shape", "params", "flops", "rf", "summary"):
        run = nnkit(command, f"{f}:Net", "--input", "3x32x32", "-f", "json")
        assert run.code == 0, (command, run)
    assert nnkit("params", f"{f}:Net", "--input", "3x32x32", "-f", "json").json()["total"] == 760


@pytest.mark.torch
def test_bad_input_is_one_line(nnkit, tmp_path):
    run = nnkit("params", "resnet05")
    assert run.code == 2 and run.err.strip() == \
        "nnkit: unknown architecture 'resnet05'; did you mean resnet50, resnet152, resnet101, resnet34?"
    small = nnkit("shape", "vgg16", "--input", "3x16x16")
    assert small.code == 1 and len(small.err.strip().splitlines()) == 1
    assert "fails on its input" in small.err and "smallest input that works is 3x32x32" in small.err
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\nfrom nowhere import Net\n")
    run = nnkit("summary", f"{broken}:Net", "--input", "3x8x8")
    assert run.code == 1 and "broken.py, line 2: ModuleNotFoundError" in run.err
    assert "Traceback" not in run.err and len(run.err.strip().splitlines()) == 1


@pytest.mark.torch
def test_dwsep_mobilenet_matches_howard_2017(nnkit):
    run = nnkit("dwsep", "mobilenet_v1", "-f", "json")
    assert run.code == 0, run
    doc = run.json()
    assert round(doc["standard"]["params"] / 1e6, 1) == 29.3 and round(doc["separable"]["params"] / 1e6, 1) \
        == 4.2
    assert abs(doc["standard"]["macs"] - 4866e6) / 4866e6 < 0.001 and round(doc["separable"]["macs"] / 1e6) \
        == 569
    assert doc["ratio"]["macs"] == pytest.approx(doc["separable"]["macs"] / doc["standard"]["macs"])
    for v in doc["variants"]:  # Tables 6 and 7, printed to 0.1M params and 1M mult-adds (with some slack:
        # the paper prints 290M at 160 where conv + fc give 290.7M)
        assert round(v["params"] / 1e5) == round(v["paper"]["params"] / 1e5)
        assert abs(v["macs"] - v["paper"]["macs"]) / v["paper"]["macs"] < 0.005
    half = nnkit("dwsep", "mobilenet_v1", "--width", "0.5", "--input", "3x160x160", "-f", "json").json()
    assert half["separable"]["macs"] < doc["separable"]["macs"] and half["width"] == 0.5
    assert nnkit("dwsep", "resnet50").code == 2


@pytest.mark.torch
def test_dwsep_of_any_network_against_its_standard_twin(nnkit, tmp_path):
    """Oracle: on MobileNet v1 the generic twin is Howard et al.'s Conv MobileNet, built for real (Table 4):
    the same MACs, and the params of one BatchNorm more per pair (the twin keeps the depthwise conv's)."""
    from nnkit.archs.mobilenet_v1 import mobilenet_v1
    from nnkit.introspect import analyze_model
    from nnkit.introspect.build import on_meta
    from nnkit.introspect.dwsep import compare
    from nnkit.introspect.target import resolve

    r = compare(resolve("mobilenet_v1", input=None, num_classes=None, in_channels=None, width=0.5))
    conv = analyze_model(on_meta(lambda: mobilenet_v1(width=0.5, standard=True)), (3, 224, 224),
                         source="conv")
    assert len(r.pairs) == 13 and not r.unpaired
    assert r.standard.macs == conv.macs
    assert r.standard.params == conv.params + sum(2 * p.depthwise.cin for p in r.pairs)
    assert r.separable.params == analyze_model(on_meta(lambda: mobilenet_v1(width=0.5)), (3, 224, 224),
                                               source="mobilenet").params

    # squeeze-excitation 1x1s are not pointwise
    doc = nnkit("dwsep", "mobilenet_v3_small", "-f", "json").json()
    assert len(doc["pairs"]) == 11 and doc["pairs"][0]["pointwise"] == "features.1.block.2.0"
    assert doc["ratio"]["macs"] == pytest.approx(doc["separable"]["macs"] / doc["standard"]["macs"])
    # the layers outside pairs stay as they are
    assert 0 < doc["pairs_ratio"]["macs"] < doc["ratio"]["macs"] < 1
    assert {"standard", "separable", "ratio", "theory", "variants", "pairs", "unpaired"} <= set(doc)

    model = tmp_path / "tiny.py"
    model.write_text("from torch import nn\n"
                     "def Net():\n"
                     "    return nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(), "
                     "nn.Conv2d(8, 16, 1))\n")
    tiny = nnkit("dwsep", f"{model}:Net", "--input", "8x10x10", "-f", "json").json()
    assert tiny["standard"] == {"params": 3 * 3 * 8 * 16 + 16, "macs": 10 * 10 * 3 * 3 * 8 * 16}
    assert tiny["separable"] == {"params": (9 * 8 + 8) + (8 * 16 + 16),
                                 "macs": 10 * 10 * 9 * 8 + 10 * 10 * 8 * 16}
    # Pairs follow tensors, not shapes: at 32x32 EfficientNet's last stages are 1x1 maps, where a
    # squeeze-excitation fc has the depthwise output's shape; a block called twice has its weights once.
    small = nnkit("dwsep", "efficientnet_b0", "--input", "3x32x32", "-f", "json").json()
    full = nnkit("dwsep", "efficientnet_b0", "-f", "json").json()
    assert small["standard"]["params"] == full["standard"]["params"]
    assert not any(p["pointwise"].endswith("fc1") for p in small["pairs"])
    model.write_text("from torch import nn\n"
                     "class Net(nn.Module):\n"
                     "    def __init__(self):\n"
                     "        super().__init__()\n"
                     "        self.dw, self.pw = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, "
                     "1)\n        self.other = nn.Conv2d(8, 16, 1)\n"
                     "    def forward(self, x):\n"
                     "        y = self.dw(x)\n"
                     "        return self.pw(self.dw(self.pw(y))) + self.other(x)[:, :8]\n")
    twice = nnkit("dwsep", f"{model}:Net", "--input", "8x10x10", "-f", "json").json()
    assert [(p["depthwise"], p["pointwise"]) for p in twice["pairs"]] == [("dw", "pw"), ("dw", "pw")]
    assert twice["standard"]["params"] - twice["separable"]["params"] \
        == (9 * 8 * 8 + 8) - (9 * 8 + 8 + 8 * 8 + 8)
    run = nnkit("dwsep", "resnet18")
    assert run.code == 2 and "resnet18 has no depthwise-separable pair" in run.err
    assert len(run.err.strip().splitlines()) == 1


@pytest.mark.torch
def test_crosscheck_and_backends(nnkit):
    run = nnkit("crosscheck", "resnet18", "-f", "json")
    assert run.code == 0, run
    doc = run.json()
    assert set(doc["params"]) == {"nnkit", "fvcore", "torchinfo", "torchvision"}
    assert doc["macs"]["torchinfo"] - doc["macs"]["nnkit"] == 9600 + 1000  # BatchNorm parameters + fc bias
    assert any("fvcore counts batch_norm" in d for d in doc["differences"])
    fv = nnkit("flops", "resnet18", "--backend", "fvcore", "-f", "json").json()
    assert fv["macs"] == doc["macs"]["fvcore"]


@pytest.mark.torch
def test_user_instances_stay_untouched_and_get_every_command(nnkit, tmp_path):
    f = tmp_path / "inst.py"
    f.write_text("from torch import nn\nnet = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), "
                 "nn.ReLU(),\n                    nn.Conv2d(8, 8, 3, stride=2))\nnet.train()\n")
    run = nnkit("crosscheck", f"{f}:net", "--input", "3x16x16", "-f", "json")
    assert run.code == 0, run
    doc = run.json()
    assert doc["params"]["nnkit"] == doc["params"]["torchinfo"] == 3 * 8 * 9 + 8 + 16 + 8 * 8 * 9 + 8
    assert doc["macs"]["nnkit"] == 8 * 14 * 14 * 27 + 8 * 6 * 6 * 72
    small = nnkit("shape", f"{f}:net", "--input", "3x3x3")
    assert small.code == 1 and "layer 3 (Conv2d) fails on its input 8x1x1" in small.err
    assert "smallest input that works is 3x5x5" in small.err
    import sys

    loaded = [m for name, m in sys.modules.items() if name.startswith("nnkit_user_")
              and getattr(m, "__file__", None) == str(f)]
    assert loaded, "the CLI imports user files in-process"
    net = loaded[-1].net
    assert net.training and all(p.device.type == "cpu" for p in net.parameters())  # analysis ran on copies
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
