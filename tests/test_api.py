"""nnkit as a library (nnkit.api): the same numbers and documents as the CLI, displayed where notebooks look,
and the user's module left exactly as it was."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LENET = "3x32x32 conv(6,5) maxpool(2) conv(16,5) maxpool(2) flatten fc(120) fc(84) fc(10)"


def test_import_nnkit_and_analyse_a_chain_without_torch():
    code = ("import sys, nnkit; a = nnkit.analyze('3x32x32 conv(10,5)'); "
            "assert a.params == 760, a.params; assert 'torch' not in sys.modules, 'torch imported'; "
            "str(a); a._repr_html_(); a.to_dict(); assert 'torch' not in sys.modules; "
            "assert 'rich' not in sys.modules or True")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("what", ["shape", "params", "flops", "rf", "summary"])
def test_chain_documents_equal_the_cli_json(nnkit, what):
    import nnkit as lib

    run = nnkit(what, LENET, "-f", "json")
    assert run.code == 0, run
    assert lib.analyze(LENET).to_dict(what) == run.json()


def test_layers_alone_take_their_input():
    import nnkit as lib

    assert lib.analyze("conv(10,5)", input="3x32x32").params == 760
    assert lib.analyze("conv(10,5)", input=(3, 32, 32)).output == (10, 28, 28)


def test_display_text_html_and_rows():
    import nnkit as lib

    a = lib.analyze(LENET)
    text = str(a)
    assert "fc(120)" in text and "62,006" in text
    html = a._repr_html_()
    assert html.count("<tr") == 1 + len(a.layers) + 1  # header, rows, total
    assert "<caption" in html and "fc(84)" in html
    rows = a.rows()
    assert [r["layer"] for r in rows] == [x.spec for x in a.layers]
    assert sum(r["params"] for r in rows) == a.params == 62006
    assert rows[0]["output"] == [6, 28, 28] and rows[0]["rf_size"] == [5, 5]
    assert len({tuple(r) for r in rows}) == 1  # one set of keys: a table pandas takes as it is
    printed: list[str] = []

    class Printer:  # IPython's RepresentationPrinter, as far as _repr_pretty_ uses it
        def text(self, s: str) -> None:
            printed.append(s)

    a._repr_pretty_(Printer(), False)
    assert printed == [text]
    assert "Analysis(" in repr(a) and "params=62,006" in repr(a)


def test_an_analysis_is_the_frozen_core_analysis():
    import dataclasses

    import nnkit as lib
    from nnkit.core.chain import analyze_chain
    from nnkit.core.report import Analysis

    a = lib.analyze(LENET)
    assert isinstance(a, Analysis)
    core = analyze_chain("3x32x32", LENET.split(" ", 1)[1])
    assert all(getattr(a, f.name) == getattr(core, f.name) for f in dataclasses.fields(core))
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.params = 1  # type: ignore[misc]


def test_errors_are_nnkit_errors():
    import nnkit as lib
    from nnkit.errors import NnkitError

    for call in (lambda: lib.analyze("3x32x32 conv(6,50)"), lambda: lib.analyze("nosuchnet"),
                 lambda: lib.analyze(42), lambda: lib.solve("sideways", 3),
                 lambda: lib.analyze(LENET).to_dict("x")):
        with pytest.raises(NnkitError):
            call()


def test_dwsep_and_solve_match_the_cli(nnkit):
    import nnkit as lib

    run = nnkit("dwsep", "32x112x112", "--out", "64", "-k", "3", "-p", "1", "-f", "json")
    r = lib.dwsep("32x112x112", out=64, kernel=3, padding=1)
    assert r.to_dict() == run.json()
    assert r.ratio.macs == pytest.approx(1 / 64 + 1 / 9, rel=0.05)
    s = lib.solve("same", kernel=4)
    assert (s.before, s.after) == (1, 2)
    assert s.to_dict() == nnkit("solve", "same", "-k", "4", "-f", "json").json()
    assert lib.solve("undo", 224, kernel=3, stride=2, padding=1).output_padding == 1
    assert "stride" in str(lib.solve("map", 224, 112, kernel=7))


@pytest.mark.torch
def test_a_live_module_is_analysed_and_left_as_it_was():
    import copy

    import torch
    from torch import nn

    import nnkit as lib

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 30 * 30, 4))
    model.train()
    model[1].eval()  # a frozen BatchNorm: its own flag must survive
    model[0].weight.requires_grad_(False)
    model[2].register_forward_hook(lambda *a: None)  # the user's own hooks stay, and no hook of ours is left
    state = copy.deepcopy(model.state_dict())
    flags = [m.training for m in model.modules()]
    hooks = [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()]  # noqa: SLF001
    a = lib.summary(model, input_size=(2, 3, 32, 32))
    assert a.params == sum(p.numel() for p in model.parameters())
    assert a.trainable == a.params - model[0].weight.numel()
    assert a.macs == 2 * (8 * 30 * 30 * 27 + 8 * 30 * 30 * 4)
    assert a.batch == 2 and a.output == (4,)
    assert all(torch.equal(state[k], v) and v.device.type == "cpu" for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == flags
    assert [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()] == hooks  # noqa: SLF001
    assert not model[0].weight.requires_grad
    with pytest.raises(Exception, match="give its input"):
        lib.analyze(model)


@pytest.mark.torch
def test_named_models_dwsep_and_memory_match_the_cli(nnkit):
    import nnkit as lib

    run = nnkit("summary", "lenet5", "--train", "--batch", "4", "-f", "json")
    a = lib.analyze("lenet5")
    doc = run.json()
    memory = doc.pop("memory")
    assert a.to_dict() == doc
    m = lib.memory("lenet5", batch=4)
    assert m.to_dict() == memory and m.total == memory["total_bytes"]
    assert "saved activations" in str(m)
    d = lib.dwsep("mobilenet_v1", width=0.5)
    assert d.to_dict() == nnkit("dwsep", "mobilenet_v1", "--width", "0.5", "-f", "json").json()
    assert json.dumps(d.to_dict())  # plain data


@pytest.mark.torch
def test_backends_for_a_live_module():
    from torch import nn

    import nnkit as lib

    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU())
    assert lib.analyze(model, "3x16x16", backend="torchinfo").params == 108
    assert lib.analyze(model, "3x16x16", backend="fvcore").macs == 108 * 14 * 14
