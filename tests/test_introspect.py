"""nnkit.introspect against oracles: real torch modules, gradients (receptive fields), published values."""

from __future__ import annotations

import textwrap

import pytest

from nnkit.errors import GeometryError, ModelError, UnknownNameError, UsageError

pytestmark = pytest.mark.torch


def _branchy():
    """A small branching net: a residual add and an Inception-like concat of 1x1/3x3/5x5 and pooling paths."""
    import torch
    from torch import nn

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.a = nn.Conv2d(8, 8, 1)
            self.b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=2,
                                                                                       dilation=2))
            self.c = nn.Conv2d(8, 8, 5, padding=2)
            self.down = nn.Conv2d(24, 16, 3, stride=2)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            x = x + self.b(x)
            x = torch.cat([self.a(x), self.c(x), nn.functional.max_pool2d(x, 3, 1, 1)], dim=1)
            x = self.down(x)
            return self.fc(torch.flatten(self.pool(x), 1))

    return Branchy()


def _gradient_support(model, shape, probe):
    """Oracle: rows/cols of the input that influence one output position of `probe` (torch autograd)."""
    import torch

    torch.manual_seed(0)
    model = model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand_like(p) + 0.1)  # positive weights: no cancellation hides a pixel
    x = torch.rand((1, *shape), requires_grad=True)
    out = probe(model, x)
    i, j = out.shape[-2] // 2, out.shape[-1] // 2
    out[0, :, i, j].sum().backward()
    g = x.grad[0].abs().sum(0)
    rows = (g.sum(1) > 0).nonzero().flatten()
    cols = (g.sum(0) > 0).nonzero().flatten()
    return (int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)), (i, j), (int(rows[0]), int(cols[0]))


def test_receptive_field_through_branches_matches_gradients():
    from nnkit.introspect import analyze_model

    model = _branchy()
    a = analyze_model(model, (3, 64, 64), source="branchy", at="down")
    size, (i, j), first = _gradient_support(model, (3, 64, 64), lambda m, x: m.down(torch_cat(m, x)))
    assert a.rf.size == size
    # output i sees input from i*S - P (Araujo et al. 2019)
    assert (i * a.rf.stride[0] - a.rf.padding[0], j * a.rf.stride[1] - a.rf.padding[1]) == first


def torch_cat(m, x):
    import torch

    x = torch.relu(m.stem(x))
    x = x + m.b(x)
    return torch.cat([m.a(x), m.c(x), torch.nn.functional.max_pool2d(x, 3, 1, 1)], dim=1)


def test_receptive_fields_of_classic_networks():
    from nnkit.introspect import analyze

    # Araujo, Norris & Sim (Distill 2019), table of published fields: AlexNet 195, VGG-16 212
    assert analyze("alexnet").rf.size == (195, 195)
    assert analyze("vgg16").rf.size == (212, 212)
    lenet = analyze("lenet5")
    assert lenet.rf.size == (32, 32) and lenet.rf_global  # C5 sees the whole 32x32 image


@pytest.mark.slow
def test_resnet18_field_matches_gradients():
    from nnkit.archs import build
    from nnkit.introspect import analyze

    a = analyze("resnet18", at="layer3")
    size, (i, j), first = _gradient_support(build("resnet18"), (3, 320, 320),
                                            lambda m, x: m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(
                                                m.conv1(x))))))))
    assert a.rf.size == size
    assert i * a.rf.stride[0] - a.rf.padding[0] == first[0]


def test_split_and_shuffle_keep_the_field():
    from nnkit.archs import build
    from nnkit.introspect import analyze

    a = analyze("shufflenet_v2_x0_5", at="stage2", input="3x160x160")  # chunk, cat and channel shuffle
    size, (i, _), first = _gradient_support(build("shufflenet_v2_x0_5"), (3, 160, 160),
                                            lambda m, x: m.stage2(m.maxpool(m.conv1(x))))
    assert a.rf.size == size and i * a.rf.stride[0] - a.rf.padding[0] == first[0]


def test_squeeze_excitation_gates_are_named_not_hidden():
    from nnkit.introspect import analyze

    a = analyze("mobilenet_v3_small")
    assert a.rf is not None and a.rf_global
    assert any("9 squeeze-excitation gate(s)" in n for n in a.notes)


def test_layers_match_real_modules_and_add_up():
    import torch

    from nnkit.archs import build
    from nnkit.introspect import analyze

    a = analyze("resnet18")
    model = build("resnet18").eval()
    shapes = {}

    def record(path):
        def hook(module, inputs, output):
            shapes.setdefault(path, tuple(output.shape[1:]))
        return hook

    hooks = [m.register_forward_hook(record(p)) for p, m in model.named_modules()]
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    conv = next(r for r in a.layers if r.spec == "layer4.1.conv2")
    assert conv.output == shapes["layer4.1.conv2"] == (512, 7, 7)
    assert conv.params == model.layer4[1].conv2.weight.numel()
    assert conv.macs == 512 * 512 * 9 * 7 * 7
    assert conv.activation_bytes == 512 * 7 * 7 * 4
    assert sum(r.params for r in a.layers) == a.params == sum(p.numel() for p in model.parameters())
    assert sum(r.macs for r in a.layers) == a.macs
    assert [r.spec for r in a.layers if r.spec.startswith("layer1.0.relu")] == ["layer1.0.relu"] * 2  # 2 calls


@pytest.mark.parametrize("name", ["vit_b_16", "swin_t", "mobilenet_v3_small"])
def test_every_parameter_sits_in_a_row(name):
    """Leaves of the computation that own submodules they never call (nn.MultiheadAttention and its
    out_proj) still hold those parameters: the rows add up to the total with no 'never calls' note."""
    from nnkit.introspect import analyze

    a = analyze(name)
    assert sum(r.params for r in a.layers) == a.params
    assert not any("never calls" in n for n in a.notes)


def test_depth_folds_nested_modules():
    from nnkit.introspect import analyze

    full = analyze("resnet50")
    one = analyze("resnet50", depth=1)
    assert [r.spec for r in one.layers] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                                            "layer4", "avgpool", "fc"]
    layer3 = next(r for r in one.layers if r.spec == "layer3")
    assert layer3.params == sum(r.params for r in full.layers if r.spec.startswith("layer3."))
    assert layer3.macs == sum(r.macs for r in full.layers if r.spec.startswith("layer3."))
    assert layer3.input == (512, 28, 28) and layer3.output == (1024, 14, 14)
    assert (one.params, one.macs) == (full.params, full.macs)
    two = analyze("resnet50", depth=2)
    assert "layer4.2" in [r.spec for r in two.layers]


def test_at_stops_at_a_module():
    from nnkit.introspect import analyze

    a = analyze("resnet50", at="layer2")
    assert a.layers[-1].spec.startswith("layer2.") and a.output == (512, 28, 28)
    assert a.rf_at == "layer2" and a.rf.stride == (8, 8)
    with pytest.raises(UnknownNameError, match="did you mean layer2"):
        analyze("resnet50", at="layr2")


def test_batch_and_input_options():
    from nnkit.introspect import analyze

    a = analyze("resnet18", input="4x3x112x112")
    b = analyze("resnet18", input="112x112")
    assert a.batch == 4 and a.input == b.input == (3, 112, 112)
    assert a.macs == 4 * b.macs
    c = analyze("resnet18", in_channels=1, input="64x64", num_classes=7)
    assert c.input == (1, 64, 64) and c.output == (7,)
    with pytest.raises(UsageError, match="takes 3 channels"):
        analyze("resnet18", input="1x64x64")


def test_input_too_small_names_the_layer_and_the_smallest_input():
    from nnkit.introspect import analyze

    with pytest.raises(GeometryError, match=r"layer 6 \(Conv2d\) fails on its input 16x1x1.*smallest input "
                                            r"that works is 1x32x32"):
        analyze("lenet5", input="1x16x16")
    with pytest.raises(GeometryError, match="smallest input that works is 3x63x63"):  # torchvision's min_size
        analyze("alexnet", input="3x40x40")


def test_user_models_from_files_and_modules(tmp_path):
    from nnkit.introspect import analyze

    f = tmp_path / "net.py"
    f.write_text(textwrap.dedent("""
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 10, 5)
                self.fc = nn.Linear(10 * 28 * 28, 2)

            def forward(self, x):
                return self.fc(self.conv(x).flatten(1))

        def make():
            return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())

        instance = nn.Conv2d(3, 2, 1)
    """))
    a = analyze(f"{f}:Net", input="3x32x32")
    assert a.layers[0].params == 760  # CS231n: 10 filters of 5x5x3 + 10 biases
    assert a.params == 760 + 7840 * 2 + 2 and a.output == (2,)
    assert analyze(f"{f}:make", input="3x8x8").output == (4, 6, 6)
    assert analyze(f"{f}:instance", input="3x8x8").params == 8
    assert analyze("torch.nn:Identity", input="3x8x8").output == (3, 8, 8)
    with pytest.raises(UsageError, match="give its input shape"):
        analyze(f"{f}:Net")
    with pytest.raises(ModelError, match="has no 'Nett'; did you mean Net"):
        analyze(f"{f}:Nett", input="3x32x32")


def test_user_model_import_errors_are_one_line_with_file_and_line(tmp_path):
    from nnkit.introspect import analyze

    bad = tmp_path / "bad.py"
    bad.write_text("import torch\n\nx = 1\nraise RuntimeError('no GPU here')\n")
    with pytest.raises(ModelError, match=r"bad\.py, line 4: RuntimeError: no GPU here") as e:
        analyze(f"{bad}:Net", input="3x8x8")
    assert "\n" not in str(e.value)
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def f(:\n    pass\n")
    with pytest.raises(ModelError, match=r"syntax\.py, line 1"):
        analyze(f"{syntax}:f", input="3x8x8")
    with pytest.raises(UsageError, match="no such file"):
        analyze("missing.py:Net", input="3x8x8")


def test_analysis_never_changes_the_model():
    import torch

    from nnkit.introspect import analyze_model
    from nnkit.introspect.memory import Optimizer, estimate

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attributes = [dict(vars(m)) for m in model.modules()]  # no stand-in forward or _call_impl stays behind
    analyze_model(model, (3, 16, 16), source="m")
    analyze_model(model.to("meta"), (3, 16, 16), source="m")  # analysed in place
    model.to_empty(device="cpu").load_state_dict(before)
    estimate(model, (3, 16, 16), batch=2, optimizer=Optimizer.adam)
    assert [vars(m).keys() for m in model.modules()] == [a.keys() for a in attributes]
    assert all(vars(m)[k] is a[k] for m, a in zip(model.modules(), attributes) for k in a
               if k not in ("_parameters", "_buffers"))
    assert model.training
    assert all(p.device.type == "cpu" for p in model.parameters())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(h == {} for m in model.modules() for h in (m._forward_hooks, m._forward_pre_hooks))


def test_analyses_in_threads_leave_torch_as_it_was_and_other_modules_untouched():
    """Analyses in several threads at once give their own answers, leave torch's classes and initialisers as
    they were (when they patched them, one thread's restore left the initialisers skipped for good), and
    modules outside them run their real forwards meanwhile."""
    import threading

    import torch
    from torch import nn

    from nnkit.introspect import analyze

    from torch.nn import init

    before = {c: dict(vars(c)) for c in (nn.Module, nn.Conv2d, nn.BatchNorm2d, nn.ReLU)}
    initialisers = dict(vars(init))  # building on meta skips them for its duration
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(analyze("resnet18", explain=False).macs))
               for _ in range(3)]
    real = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    with torch.no_grad():
        expected = real(torch.ones(1, 3, 8, 8))
        for t in threads:
            t.start()
        same = all(torch.equal(real(torch.ones(1, 3, 8, 8)), expected) for _ in range(50))
    for t in threads:
        t.join()
    assert same and results == [1_814_073_344] * 3
    assert {c: dict(vars(c)) for c in before} == before and dict(vars(init)) == initialisers


def test_other_threads_build_and_run_their_own_models_as_ever_meanwhile():
    """Building on meta skips torch.nn.init's initialisers and makes parameters on meta for the builder's thread
    only; a model's thread pool gets a note, not rows in the wrong places."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from torch import nn

    from nnkit.introspect import analyze_model, build

    inside, done = threading.Event(), threading.Event()

    def builder():
        inside.set()
        done.wait(10)
        return nn.Conv2d(3, 3, 3)

    for everything in (True, False):  # on_meta's two ways: every tensor on meta, or the parameters only
        built = []

        def make(everything=everything):
            with build._building_mode(everything):
                built.append(builder())

        inside.clear(), done.clear()
        t = threading.Thread(target=make)
        t.start()
        inside.wait(10)
        torch.manual_seed(0)
        theirs = nn.Conv2d(64, 64, 3)  # an ordinary CPU model of another thread, built meanwhile
        done.set()
        t.join()
        torch.manual_seed(0)
        assert theirs.weight.device.type == "cpu" and torch.equal(theirs.weight, nn.Conv2d(64, 64, 3).weight)
        assert built[0].weight.is_meta

    pool = ThreadPoolExecutor(2)

    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 14 * 14, 10))
            self.b = nn.Conv2d(3, 8, 3)

        def forward(self, x):
            return self.a(x), pool.submit(self.b, x).result()

    a = analyze_model(Pooled(), (3, 16, 16), source="pooled")
    assert [(r.spec, r.macs) for r in a.layers] == [("a.0", 8 * 27 * 14 * 14), ("a.1", 0),
                                                     ("a.2", 8 * 14 * 14 * 10)]
    assert any("1 call(s) of the model's modules ran in other threads" in n for n in a.notes)


def test_what_a_model_or_library_does_to_torch_classes_is_what_runs_and_stays():
    import torch
    from torch import nn

    from nnkit.introspect import analyze_model

    real_relu = nn.ReLU.forward
    nn.ReLU.forward = lambda self, x: torch.relu(x)[:, :4]  # a library's replacement, made before analysis
    try:
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
        assert analyze_model(model, (3, 16, 16), source="m").output == tuple(model(torch.zeros(1, 3, 16, 16)).shape[1:])
    finally:
        nn.ReLU.forward = real_relu

    def fast_relu(self, x):
        return torch.relu(x)

    class Lazy(nn.Module):  # a library that patches a class once, from inside the forward
        def __init__(self) -> None:
            super().__init__()
            self.c, self.r = nn.Conv2d(3, 8, 3), nn.ReLU()

        def forward(self, x):
            if nn.ReLU.forward is not fast_relu:
                nn.ReLU.forward = fast_relu
            return self.r(self.c(x))

    try:
        assert analyze_model(Lazy(), (3, 16, 16), source="lazy").output == (8, 14, 14)
        assert nn.ReLU.forward is fast_relu  # theirs stays
    finally:
        nn.ReLU.forward = real_relu

    class Wraps(nn.Module):  # a library that wraps the forward it finds, ours, the first time the model runs
        def __init__(self) -> None:
            super().__init__()
            self.c, self.r = nn.Conv2d(3, 8, 3), nn.ReLU()

        def forward(self, x):
            if nn.ReLU.forward.__module__ != __name__:
                found = nn.ReLU.forward

                def wrapped(self, x):
                    return found(self, x)

                nn.ReLU.forward = wrapped
            return self.r(self.c(x))

    from torch.nn import init

    from nnkit.introspect.build import on_meta

    def builder():  # a builder that wraps the initialiser it finds, ours, while it builds
        found = init.kaiming_uniform_
        init.kaiming_uniform_ = lambda tensor, *args, **kwargs: found(tensor, *args, **kwargs)
        return nn.Linear(64, 64)

    exec_made: dict = {}
    exec("def forward(self, x):\n    return x.clamp(min=0)\n", exec_made)  # its __module__ is None
    real_init = init.kaiming_uniform_
    try:
        model = Wraps().to("meta")  # analysed in place: its own ReLU is the one the stand-in knew
        assert analyze_model(model, (3, 16, 16), source="wraps").output == (8, 14, 14)
        assert model.r(torch.full((2,), -1.0)).tolist() == [0.0, 0.0]  # ours, inside theirs, is torch's again
        on_meta(builder)
        torch.manual_seed(0)
        mine = nn.Linear(64, 64).weight
        init.kaiming_uniform_ = real_init
        torch.manual_seed(0)
        assert torch.equal(mine, nn.Linear(64, 64).weight)  # initialised, though ours sits inside their wrapper
        nn.ReLU.forward = exec_made["forward"]
        assert analyze_model(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), (3, 16, 16), source="m").output == \
            (8, 14, 14)
    finally:
        nn.ReLU.forward, init.kaiming_uniform_ = real_relu, real_init


def test_backends_report_their_own_numbers():
    import logging
    import warnings

    import torch
    import torchinfo
    from fvcore.nn import FlopCountAnalysis

    from nnkit.archs import build
    from nnkit.introspect import analyze

    model = build("resnet18").eval()
    x = torch.zeros(1, 3, 224, 224)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fv = FlopCountAnalysis(model, x)
        fv.unsupported_ops_warnings(False)
        ti = torchinfo.summary(model, input_data=x, verbose=0)
    a = analyze("resnet18", backend="fvcore")
    assert a.macs == fv.total() and a.params == 11689512
    b = analyze("resnet18", backend="torchinfo")
    assert b.macs == ti.total_mult_adds and b.params == ti.total_params
    with pytest.raises(UnknownNameError):
        analyze("resnet18", backend="thop")


def test_crosscheck_names_each_difference():
    from nnkit.archs import get_arch
    from nnkit.introspect.backends import crosscheck
    from nnkit.introspect.target import resolve

    t = resolve("resnet18", input=None, num_classes=None, in_channels=None, width=None)
    c = crosscheck(t, get_arch("resnet18"))
    bn = sum(2 * m.num_features for m in t.model.modules() if type(m).__name__ == "BatchNorm2d")
    assert f"torchinfo counts BatchNorm2d: +{bn:,} (one per parameter per item)" in c.differences
    assert any(d.startswith("fvcore counts batch_norm: +") for d in c.differences)
    assert c.macs["torchvision"] == 1_814_000_000 and c.params["torchvision"] == c.params["nnkit"]


def test_training_memory_counts_saved_activations():
    import torch

    from nnkit.introspect.memory import Optimizer, estimate, saved_activation_bytes

    # One Linear(8, 4) then ReLU: autograd saves the linear's input (8) and the ReLU's output (4) per item.
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU())
    assert saved_activation_bytes(model, (8,)) == (8 + 4) * 4
    m = estimate(model, (8,), batch=10, optimizer=Optimizer.adam)
    assert (m.params_bytes, m.grads_bytes, m.optimizer_bytes) == (36 * 4, 36 * 4, 72 * 4)
    assert m.total == 36 * 4 * 4 + 10 * 48


def test_explain_puts_the_numbers_in_the_formulas():
    from nnkit.introspect import analyze

    a = analyze("resnet50")
    conv1 = a.layers[0]
    assert [f.text for f in conv1.explain[:3]] == [
        "H, W: (224 - 7 + 2*3)/2 + 1 = 112.5 -> 112 (floor)", "params: 64*7*7*3 = 9,408 (no bias)",
        f"MACs: 64*112*112 outputs * 7*7*3 = {64 * 112 * 112 * 147:,}"]
    assert [f.topic.value for f in conv1.explain[:3]] == ["shape", "params", "macs"]
    fc = a.layers[-1]
    assert [f.text for f in fc.explain] == ["params: 1000*2048 + 1000 = 2,049,000", "MACs: 1000*2048 = 2,048,000"]
    vit = analyze("vit_b_16")
    assert "its own parameters: class_token" in vit.layers[0].notes


def test_a_module_is_explained_as_the_same_layer_of_a_chain():
    """One text for the worked formulas: a model's Conv1d/2d/3d, ConvTranspose, pooling and Linear rows say what
    the layer language says for the same layer on the same input (its receptive-field line aside, which follows
    the traced graph)."""
    import torch
    from torch import nn

    from nnkit.core.chain import analyze_chain
    from nnkit.introspect import analyze_model

    cases = [
        ("1x100", nn.Conv1d(1, 8, 5, stride=2, padding=1, dilation=2), "conv1d(8,5,s=2,p=1,d=2)"),
        ("3x33x31", nn.Conv2d(3, 6, (3, 5), stride=(2, 1), padding=(1, 2), groups=3, bias=False),
         "conv(6,3x5,s=2x1,p=1x2,g=3,bias=false)"),
        ("2x5x9x9", nn.Conv3d(2, 4, 3, padding="same"), "conv3d(4,3,p=same)"),
        ("4x7x7", nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1), "tconv(2,3,s=2,p=1,op=1)"),
        ("4x9x9", nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), "maxpool(3,s=2,p=1,ceil=true)"),
        ("4x8x9x9", nn.AvgPool3d(2), "avgpool3d(2)"),
        ("12", nn.Linear(12, 3), "fc(3)"),
    ]
    for shape, module, chain in cases:
        item = tuple(int(x) for x in shape.split("x"))
        real = tuple(module(torch.zeros(1, *item)).shape[1:])
        row = analyze_model(nn.Sequential(module), item, source="m").layers[0]
        layer = analyze_chain(shape, chain).layers[0]
        assert tuple(row.output) == tuple(layer.output) == real, chain
        assert [f.text for f in row.explain if f.topic.value != "rf"] == \
            [f.text for f in layer.explain if f.topic.value != "rf"], chain


def test_a_module_with_a_forward_of_its_own_is_not_explained_by_its_settings():
    """A Conv2d that pads itself (TF's SAME, as timm's Conv2dSame) has settings that do not give its output: no
    worked MACs formula of those settings is shown, the counted MACs are; the 3-D field is stated per axis."""
    import torch.nn.functional as F
    from torch import nn

    from nnkit.introspect import analyze_model

    class Conv2dSame(nn.Conv2d):
        def forward(self, x):
            ph = max((-(-x.shape[-2] // self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - x.shape[-2], 0)
            pw = max((-(-x.shape[-1] // self.stride[1]) - 1) * self.stride[1] + self.kernel_size[1] - x.shape[-1], 0)
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
            return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    for item in ((3, 7, 7), (3, 224, 224)):
        row = analyze_model(nn.Sequential(Conv2dSame(3, 8, 5, stride=2)), item, source="m").layers[0]
        macs = [f.text for f in row.explain if f.topic.value == "macs"]
        assert macs == [f"MACs: {row.macs:,} (torch.utils.flop_counter: conv, matmul, attention inside this "
                        "module)"], macs
    pool = analyze_model(nn.Sequential(nn.AvgPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))), (2, 3, 9, 9),
                         source="m").layers[0]
    assert [f.text for f in pool.explain if f.topic.value == "rf"] == [
        "rf: r = 1x3x3, S = 1x2x2, P = 0x1x1 (Araujo et al. 2019, followed through the traced graph)"]


def test_misaligned_paths_are_reported_and_united():
    from torch import nn

    from nnkit.introspect import analyze_model

    class TwoPaths(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.even = nn.Conv2d(1, 1, 2, stride=2)  # sees [2i, 2i+1]: centre 2i + 0.5
            self.odd = nn.Conv2d(1, 1, 3, stride=2, padding=1)  # sees [2i-1, 2i+1]: centre 2i

        def forward(self, x):
            return self.even(x) + self.odd(x)

    model = TwoPaths()
    a = analyze_model(model, (1, 16, 16), source="two")
    assert any("1 merge(s) join paths whose receptive fields are misaligned" in n for n in a.notes)
    size, (i, _), first = _gradient_support(model, (1, 16, 16), lambda m, x: m(x))
    assert a.rf.size == size == (3, 3) and i * a.rf.stride[0] - a.rf.padding[0] == first[0]


def _small_vit():
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "small_vit"])
def test_saved_activations_equal_what_autograd_keeps_on_cpu(name):
    """Oracle: a real training-mode forward on CPU, saved tensors counted by their storages' addresses.
    The ViT checks attention: training runs a fused kernel, which saves no attention matrix."""
    import torch

    from nnkit.archs import build
    from nnkit.introspect.build import build_meta, on_meta
    from nnkit.introspect.memory import saved_activation_bytes

    model = (_small_vit() if name == "small_vit" else build(name)).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.rand(2, 3, 64, 64))
    meta = on_meta(_small_vit) if name == "small_vit" else build_meta(name)
    assert saved_activation_bytes(meta, (3, 64, 64)) == sum(storages.values()) // 2


def test_fields_can_be_skipped_without_changing_the_numbers():
    from nnkit.introspect import analyze

    full, quick = analyze("resnet18"), analyze("resnet18", fields=False)
    assert quick.rf is None and all(r.rf is None for r in quick.layers)
    assert [(r.spec, r.output, r.params, r.macs) for r in quick.layers] == \
        [(r.spec, r.output, r.params, r.macs) for r in full.layers]


def test_walk_visits_modules_as_named_modules_does():
    from torch import nn

    from nnkit.archs import build
    from nnkit.introspect.build import walk

    shared = nn.Linear(2, 2)
    model = nn.Sequential(nn.Sequential(shared, nn.ReLU()), shared, nn.ModuleDict({"a": shared, "b": nn.Tanh()}))
    model.add_module("gap", None)
    for m in (model, build("googlenet"), build("mobilenet_v3_small")):
        assert [(p, id(x)) for p, x in walk(m)] == [(p, id(x)) for p, x in m.named_modules()]


@pytest.mark.parametrize("up", ["interpolate", "tconv", "bicubic"])
def test_fields_go_through_upsampling_and_skips_as_in_chains(up):
    """Issue 11: rows after an upsampling (F.interpolate, a transposed conv) and a skip joined by torch.cat have the
    field nnkit.core's rule composes, which the gradient confirms; global pooling after it still covers the input.
    A resampling without a rule (bicubic) still ends the fields, with a note, and claims nothing."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from nnkit.introspect import analyze_model

    class UNetish(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.up = nn.ConvTranspose2d(8, 8, 2, stride=2) if up == "tconv" else nn.Identity()
            self.fuse = nn.Conv2d(11, 4, 3, padding=1)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

        def merged(self, x):
            y = self.down(x)
            y = self.up(y) if up == "tconv" else F.interpolate(y, scale_factor=2, mode="nearest" if up ==
                                                               "interpolate" else "bicubic")
            return self.fuse(torch.cat([y, x], 1))

        def forward(self, x):
            return self.head(self.merged(x))

    a = analyze_model(UNetish(), (3, 16, 16), source="unet")
    rows = {r.spec: r for r in a.layers}
    assert rows["down"].rf.size == (3, 3)
    assert rows["head.2"].rf is None and rows["head.2"].rf_global
    if up == "bicubic":
        assert rows["fuse"].rf is None and not rows["fuse"].rf_global
        assert any(n.startswith("receptive fields stop at the model (upsample_bicubic2d)") for n in a.notes)
        return
    from nnkit.introspect.rf import position_fields

    model = UNetish()
    size, (i, j), first = _gradient_support(model, (3, 16, 16), lambda m, x: m.merged(x))
    assert rows["fuse"].rf.size == size == (5, 5)
    spans = position_fields(model, (3, 16, 16), at="fuse")
    assert (spans[0][i][0], spans[1][j][0]) == first  # the centre's interval; P is output 0's (-1 here)
    assert not any("stop" in n for n in a.notes)


def test_fields_for_a_model_torch_fx_cannot_trace():
    """Python control flow on a shape stops torch.fx's symbolic tracing; the traced pass follows what runs."""
    import torch.fx
    from torch import nn

    from nnkit.introspect import analyze_model

    class ShapeDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.big = nn.Conv2d(3, 4, 5, stride=2)
            self.small = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.big(x) if x.shape[-1] > 16 else self.small(x)

    with pytest.raises(Exception):  # noqa: B017 - whichever error fx raises, it cannot trace this
        torch.fx.symbolic_trace(ShapeDependent())
    a = analyze_model(ShapeDependent(), (3, 32, 32), source="shapes")
    assert a.rf.size == (5, 5) and a.rf.stride == (2, 2) and not any("receptive" in n for n in a.notes)
    assert analyze_model(ShapeDependent(), (3, 8, 8), source="shapes").rf.size == (3, 3)


# Findings of a review of the single-pass trace, each checked against torch: gradients for receptive fields,
# real modules and real CPU forwards for the rest.

def _true_size(model, shape, path):
    """Rows of the input (along H) that the centre output of module `path` depends on, from gradients."""
    import torch

    model = model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.1)
    seen = {}
    hook = dict(model.named_modules())[path].register_forward_hook(lambda m, i, o: seen.setdefault("y", o))
    x = torch.ones(1, *shape, requires_grad=True)
    model(x)
    hook.remove()
    y = seen["y"]
    y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
    rows = (x.grad[0].abs().sum((0, 2)) > 0).nonzero().flatten()
    return int(rows.max() - rows.min() + 1)


def _row(model, shape, path):
    import copy

    from nnkit.introspect import analyze_model

    return next(r for r in analyze_model(copy.deepcopy(model), shape, source="m").layers if r.spec == path)


@pytest.mark.parametrize("how", ["module", "subclass", "functional"])
def test_linear_layers_on_channels_last_maps_keep_the_field(how):
    """F.linear on (N, H, W, C) runs as view, mm, view: the rows are positions, the field goes through."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Mine(nn.Linear):  # LoRA and quantisation wrappers look like this
        pass

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.dw = nn.Conv2d(8, 8, 7, padding=3, groups=8)
            self.pw = Mine(8, 8) if how == "subclass" else nn.Linear(8, 8)
            self.head = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            y = self.dw(self.stem(x)).permute(0, 2, 3, 1)
            y = F.linear(y, self.pw.weight, self.pw.bias) if how == "functional" else self.pw(y)
            return self.head(y.permute(0, 3, 1, 2))

    model = Block()
    assert _row(model, (3, 16, 16), "head").rf.size[0] == _true_size(model, (3, 16, 16), "head") == 11
    assert torch.is_tensor(model(torch.zeros(1, 3, 16, 16)))


def test_in_place_ops_change_only_their_own_tensor_and_its_base():
    import torch
    from torch import nn

    class Alias(nn.Module):  # y = bn(x) is a new tensor in torch: y += ... leaves x's field alone
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.ctx, self.local = nn.Conv2d(8, 8, 7, padding=3), nn.Conv2d(8, 8, 1)

        def forward(self, x):
            x = self.stem(x)
            y = self.bn(x)
            y += self.ctx(y)
            return torch.cat([self.local(x), y], 1)

    class Slice(nn.Module):  # an in-place add on a slice grows the field of the whole tensor
        def __init__(self) -> None:
            super().__init__()
            self.c0, self.big = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 7, padding=3)
            self.head = nn.Conv2d(8, 8, 1)

        def forward(self, x):
            y = self.c0(x)
            z = self.big(y.clone())
            y[:, :4] += z[:, :4]
            return self.head(y)

    assert _row(Alias(), (3, 16, 16), "local").rf.size[0] == _true_size(Alias(), (3, 16, 16), "local") == 3
    assert _row(Slice(), (3, 16, 16), "head").rf.size[0] == _true_size(Slice(), (3, 16, 16), "head") == 9


def test_nearest_downsampling_is_a_window_and_same_size_is_none():
    import torch.nn.functional as F
    from torch import nn

    class Half(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.low = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            y = F.interpolate(self.c(x), size=tuple(x.shape[-2:]))  # same size: the identity
            return self.low(F.interpolate(y, scale_factor=0.5, mode="nearest"))

    row = _row(Half(), (3, 16, 16), "low")
    assert row.rf.size[0] == _true_size(Half(), (3, 16, 16), "low") == 7 and row.rf.stride == (2, 2)


def test_rows_show_what_the_models_own_hooks_hand_on():
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 10))
    model[2].register_forward_hook(lambda m, i, o: o[:, :4])  # a pruning hook keeps 4 channels
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 10)
    row = _row(model, (3, 16, 16), "2")
    assert row.output == (4, 12, 12) and row.activation_bytes == 4 * 12 * 12 * 4


def test_a_call_impl_someone_else_patched_on_an_instance_still_runs_and_stays():
    """A _call_impl patched on an instance (a profiler's, a framework's) that calls torch's runs, is recorded
    inside it, and stays."""
    import types

    from torch import nn

    from nnkit.introspect import analyze_model

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    seen = []

    def theirs(self, *args, **kwargs):
        seen.append(args[0].shape)
        return nn.Module._call_impl(self, *args, **kwargs)

    vars(model[2])["_call_impl"] = patch = types.MethodType(theirs, model[2])
    for m in (model, model.to("meta")):  # a copy on the meta device, and in place
        a = analyze_model(m, (3, 16, 16), source="m")
        assert [r.output for r in a.layers] == [(8, 14, 14), (8, 14, 14), (4, 12, 12)]
    assert len(seen) == 2 and vars(model[2])["_call_impl"] is patch
    assert all("_call_impl" not in vars(m) for m in (model, model[0], model[1]))


def test_convolution_settings_a_model_changes_while_it_runs_are_the_ones_used():
    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    from nnkit.introspect import analyze_model

    class Switch(nn.Module):  # one conv run twice, at stride 1 then 2, reflect-padded the second time
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            self.conv.stride, self.conv.padding_mode = (1, 1), "zeros"
            y = self.conv(x)
            self.conv.stride, self.conv.padding_mode = (2, 2), "reflect"
            return self.conv(y)

    with FlopCounterMode(display=False) as counter:
        real = Switch()(torch.zeros(1, 3, 16, 16))
    a = analyze_model(Switch(), (3, 16, 16), source="switch")
    assert [r.output for r in a.layers] == [(3, 16, 16), tuple(real.shape[1:])] == [(3, 16, 16), (3, 8, 8)]
    assert a.macs == counter.get_total_flops() // 2


def test_modules_copied_or_made_while_the_model_runs_are_not_rows_and_keep_nothing():
    """An EMA copy made in forward runs its own settings, untraced (its MACs go to the caller's row), and
    carries nothing of the tracer afterwards; a head registered in forward counts in its parent's row."""
    import copy

    import torch
    from torch import nn

    from nnkit.introspect import analyze_model

    class EMA(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
            self.ema = None

        def forward(self, x):
            if self.ema is None:
                self.ema = copy.deepcopy(self.backbone)
                self.ema[0].stride = (2, 2)
            return self.ema(x)

    model = EMA().to("meta")
    a = analyze_model(model, (3, 16, 16), source="ema")
    real = EMA()(torch.zeros(1, 3, 16, 16))
    assert a.output == tuple(real.shape[1:]) == (4, 7, 7) and [r.spec for r in a.layers] == ["(EMA)"]
    assert a.macs == 4 * 27 * 7 * 7
    assert all(k not in vars(m) for m in model.ema.modules() for k in ("forward", "_call_impl"))
    assert type(model.ema[1]).forward is nn.BatchNorm2d.forward and nn.Conv2d.__dict__["forward"].__module__ \
        == "torch.nn.modules.conv"

    class LazyHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.head = nn.Conv2d(3, 4, 3), None

        def forward(self, x):
            if self.head is None:
                self.head = nn.Conv2d(4, 2, 1, device=x.device)
            return self.head(self.body(x))

    a = analyze_model(LazyHead(), (3, 16, 16), source="lazy")
    assert a.output == (2, 14, 14) and sum(r.params for r in a.layers) == 4 * 27 + 4 + 2 * 4 + 2


def test_compiled_submodules_and_hooks_of_every_kind_are_recorded_as_they_run():
    import torch
    from torch import nn
    from torch.nn.modules import module as nn_module

    from nnkit.introspect import analyze_model

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.body = nn.Conv2d(3, 4, 3, stride=2), nn.Conv2d(4, 4, 3)
            self.body.register_forward_pre_hook(lambda m, a: (a[0][:, :, :5, :5],))  # crops to 5x5

        def forward(self, x):
            return self.body(self.stem(x))

    model = Net().to("meta")
    model.body.compile()  # a compiled module is analysed uncompiled, and stays compiled
    compiled = model.body._compiled_call_impl
    rows = {r.spec: (r.input, r.output, r.macs) for r in analyze_model(model, (3, 16, 16), source="m").layers}
    assert rows["body"] == ((4, 5, 5), (4, 3, 3), 4 * 36 * 9) and model.body._compiled_call_impl is compiled

    crop = nn_module.register_module_forward_pre_hook(
        lambda m, a: (a[0][:, :, :8, :8],) if isinstance(m, nn.Conv2d) else None)  # torch-wide
    try:
        row = analyze_model(nn.Sequential(nn.Conv2d(3, 4, 3)), (3, 16, 16), source="m").layers[0]
    finally:
        crop.remove()
    assert (row.input, row.output) == ((3, 8, 8), (4, 6, 6))

    m = nn.Sequential(nn.Conv2d(3, 4, 3)).to("meta")
    m.register_forward_pre_hook(lambda mod, a: None)
    m.compile()
    assert analyze_model(m, (3, 16, 16), source="m").output == (4, 14, 14)
    assert torch.nn.Module.__dict__["_call_impl"].__module__ == "torch.nn.modules.module"


def test_convolutions_replaced_by_others_run_as_replaced():
    """A profiler's nn.Conv2d.forward, an instance _conv_forward, a subclass's _call_impl, and settings set to
    plain ints: the analysis follows what the model really runs (the real CPU forward is the oracle)."""
    import torch
    from torch import nn

    from nnkit.introspect import analyze_model

    def both(model):
        real = tuple(model(torch.zeros(1, 3, 16, 16)).shape[1:])
        return real, analyze_model(model, (3, 16, 16), source="m", explain=True).output

    c = nn.Conv2d(3, 4, 3)
    c._conv_forward = lambda x, w, b: nn.Conv2d._conv_forward(c, x, w, b)[:, :, ::2, ::2]
    assert both(nn.Sequential(c)) == ((4, 7, 7), (4, 7, 7))

    real_forward = nn.Conv2d.forward
    nn.Conv2d.forward = lambda self, x: real_forward(self, x)[:, :2]
    try:
        assert both(nn.Sequential(nn.Conv2d(3, 4, 3))) == ((2, 14, 14), (2, 14, 14))
    finally:
        nn.Conv2d.forward = real_forward

    class Half(nn.Conv2d):
        def _call_impl(self, x):
            return super()._call_impl(x[:, :, ::2, ::2])

    assert both(nn.Sequential(Half(3, 4, 3))) == ((4, 6, 6), (4, 6, 6))

    class Ints(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            self.conv.stride, self.conv.padding = 2, 1  # F.conv2d takes ints
            return self.conv(x)

    assert both(Ints()) == ((4, 8, 8), (4, 8, 8))


def test_a_model_that_catches_a_submodule_error_still_adds_up():
    from torch import nn

    from nnkit.introspect import analyze_model

    class Fallback(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(7, 8, 1))  # inner[1] raises
            self.slow, self.head = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3)

        def forward(self, x):
            try:
                y = self.inner(x)
            except RuntimeError:
                y = self.slow(x)
            return self.head(y)

    a = analyze_model(Fallback(), (3, 16, 16), source="fallback")
    assert sum(r.macs for r in a.layers) == a.macs and all(r.macs >= 0 for r in a.layers)
    assert a.output == (8, 12, 12)


def test_shape_keeping_modules_called_with_keywords():
    from torch import nn

    from nnkit.introspect import analyze_model

    class Kw(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.bn = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)

        def forward(self, x):
            return self.bn(input=self.c(x))

    assert analyze_model(Kw(), (3, 16, 16), source="kw").output == (8, 14, 14)


def test_analysis_undoes_what_a_custom_train_method_did():
    import torch
    from torch import nn

    from nnkit.introspect import analyze_model

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.use_aux = nn.Conv2d(3, 8, 3), True

        def train(self, mode=True):
            super().train(mode)
            self.use_aux = mode
            return self

        def forward(self, x):
            return self.body(x)

    with torch.device("meta"):
        model = Net()
    analyze_model(model, (3, 16, 16), source="net")
    assert model.training and model.use_aux


def test_memory_estimate_keeps_frozen_layers_frozen_and_odd_attention_on_the_math_path():
    """Attention whose values have another head size than queries: torch's CPU kernel choice is the math path,
    and the estimate must run and equal what autograd keeps on a real CPU forward."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from nnkit.introspect.build import on_meta
    from nnkit.introspect.memory import saved_activation_bytes

    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qk, self.v, self.proj = nn.Linear(64, 128), nn.Linear(64, 128), nn.Linear(128, 64)

        def forward(self, x):
            b, _, h, w = x.shape
            t = x.flatten(2).transpose(1, 2)
            q, k = self.qk(t).view(b, -1, 2, 4, 16).permute(2, 0, 3, 1, 4)
            v = self.v(t).view(b, -1, 4, 32).transpose(1, 2)
            return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, -1)).mean(1)

    def make():
        return nn.Sequential(nn.Conv2d(3, 64, 4, 4), nn.BatchNorm2d(64), Attn())

    real = make().train()
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    params = {p.untyped_storage().data_ptr() for p in real.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        real(torch.rand(2, 3, 32, 32))
    kept = sum(n for ptr, n in storages.items() if ptr not in params) // 2
    meta = on_meta(make).train()
    meta[1].eval()  # frozen BatchNorm
    assert saved_activation_bytes(meta, (3, 32, 32)) > 0
    assert [m.training for m in meta] == [True, False, True]
    meta[1].train()
    assert saved_activation_bytes(meta, (3, 32, 32)) == kept


def test_swin_says_where_its_fields_become_the_whole_input():
    from nnkit.introspect import analyze

    notes = analyze("swin_t").notes
    assert any(n.startswith("receptive fields from features.1.0.attn on are shown as the whole input") for n in notes)
    assert not any("regrouped" in n for n in analyze("resnet18").notes + analyze("vgg11").notes)


# A second review's findings, reproduced against torch (gradients, real modules) and fixed.

def test_fields_with_kernels_or_matrices_computed_from_the_input_are_whole_input():
    import torch.nn.functional as F
    from torch import nn

    from nnkit.introspect import analyze_model

    class DynConv(nn.Module):  # CondConv / dynamic convolution: the kernel comes from the pooled input
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.gen = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 8 * 8 * 9)

        def forward(self, x):
            x = self.stem(x)
            return F.conv2d(x, self.gen(x.mean((2, 3))).view(8, 8, 3, 3), padding=1)

    class DynMix(nn.Module):  # channels-last rows times a matrix from the whole input
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.gen = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 64)

        def forward(self, x):
            x = self.stem(x)
            return (x.permute(0, 2, 3, 1) @ self.gen(x.mean((2, 3))).view(8, 8)).permute(0, 3, 1, 2)

    for model in (DynConv(), DynMix()):
        assert analyze_model(model, (3, 8, 8), source="dyn").rf_global


def test_elementwise_in_place_through_a_flat_view_and_keyword_norms_keep_fields():
    import torch
    from torch import nn

    class FlatScale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            x = self.stem(x)
            x.view(x.shape[0], 8, -1).mul_(0.5)
            return self.head(x)

    class KwNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.head = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return self.head(self.bn(input=self.stem(x)))

    class SqueezeByView(nn.Module):  # x.view(b, c, -1).mean(-1): a gate, not tokens
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 8)
            self.head = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            x = self.stem(x)
            return self.head(x * torch.sigmoid(self.fc(x.view(1, 8, -1).mean(-1))).view(1, 8, 1, 1))

    for model in (FlatScale(), KwNorm()):
        row = _row(model, (3, 16, 16), "head")
        assert row.rf.size[0] == _true_size(model, (3, 16, 16), "head") == 5
    from nnkit.introspect import analyze_model

    se = analyze_model(SqueezeByView(), (3, 16, 16), source="se")  # the gated features' field, as for other gates
    assert se.rf.size == (5, 5) and any("gate" in n for n in se.notes) and not any("regrouped" in n for n in se.notes)


def test_a_linear_over_width_mixes_a_row_and_one_axis_nearest_resize_is_a_window():
    import torch.nn.functional as F
    from torch import nn

    class MixW(nn.Module):  # MLP-Mixer style: nn.Linear over W of an NCHW map
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.mix = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(8, 8)

        def forward(self, x):
            return self.mix(self.stem(x))

    class HalfH(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return self.head(F.interpolate(self.stem(x), size=(4, 8), mode="nearest"))

    assert _row(MixW(), (3, 8, 8), "mix").rf_global
    row = _row(HalfH(), (3, 8, 8), "head")
    assert row.rf.size == (7, 5) and row.rf.stride == (2, 1)
    assert row.rf.size[0] == _true_size(HalfH(), (3, 8, 8), "head")


def test_errors_in_the_models_own_pre_hooks_and_own_code_name_the_right_place():
    import pytest as _pytest
    from torch import nn

    from nnkit.errors import GeometryError
    from nnkit.introspect import analyze_model

    def small(module, args):
        if args[0].shape[-1] < 8:
            raise ValueError("input too small for this hooked layer")

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
            self.b.register_forward_pre_hook(small)

        def forward(self, x):
            return self.b(self.a(x))

    class Raises(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block, self.head = Block(), nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.head(self.block(x))

    class Caught(Raises):
        def __init__(self) -> None:
            super().__init__()
            self.alt = nn.Conv2d(3, 8, 1)

        def forward(self, x):
            try:
                y = self.block(x)
            except ValueError:
                y = self.alt(x)
            return self.head(y)

    class OwnCode(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.big = nn.Conv2d(3, 8, 7)

        def forward(self, x):
            try:
                y = self.big(x)
            except RuntimeError:
                y = x
            return y.view(7, 7, 7, 7)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when one of our always_call hooks raises: none may
        with _pytest.raises(GeometryError, match=r"layer block\.b \(Conv2d\) fails on its input 8x4x4"):
            analyze_model(Raises(), (3, 4, 4), source="raises")
    assert analyze_model(Caught(), (3, 4, 4), source="caught").output == (4, 4, 4)
    with _pytest.raises(GeometryError, match=r"the model \(OwnCode\) fails"):
        analyze_model(OwnCode(), (3, 5, 5), source="own")
