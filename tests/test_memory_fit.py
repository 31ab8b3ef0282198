"""nnkit summary --train --memory: the largest batch that fits, the inverse of the training-memory estimate, with
--amp against a real autocast forward and the estimate's known error stated.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.torch


@pytest.mark.parametrize("optimizer,amp", [("sgd", False), ("adam", True)])
def test_the_batch_found_fits_and_one_more_does_not(nnkit, optimizer, amp):
    flags = ["--amp"] if amp else []
    doc = nnkit("summary", "resnet18", "--train", "--memory", "2GiB", "--optimizer", optimizer, *flags,
                "-f", "json").json()
    fit, memory = doc["fits"], doc["memory"]
    b = fit["batch"]
    assert fit["memory_bytes"] == 2 << 30 and b > 1 and memory["batch"] == b and memory["amp"] is amp
    assert memory["total_bytes"] <= 2 << 30
    assert fit["fixed_bytes"] + b * fit["saved_bytes_per_item"] == memory["total_bytes"]
    more = nnkit("summary", "resnet18", "--train", "--batch", str(b + 1), "--optimizer", optimizer, *flags,
                 "-f", "json").json()["memory"]
    assert more["total_bytes"] > 2 << 30
    assert "0.2%-5.1% under the measured peak" in fit["error"]
    assert ("with --amp 1.6%-5.9% under" in fit["error"]) is amp


def test_amp_halves_the_activations_and_adds_the_weight_copies(nnkit):
    full = nnkit("summary", "resnet18", "--train", "-f", "json").json()["memory"]
    amp = nnkit("summary", "resnet18", "--train", "--amp", "-f", "json").json()["memory"]
    # 16-bit activations; the max-pool's int64 indices keep their size
    assert full["saved_bytes_per_item"] / 2 < amp["saved_bytes_per_item"] < full["saved_bytes_per_item"] * 0.6
    assert amp["amp_weights_bytes"] * 2 == amp["params_bytes"] and full["amp_weights_bytes"] == 0


def test_amp_estimate_against_a_real_autocast_forward():
    """What a real CPU forward under torch.autocast(bfloat16) saves for backward (every storage but the
    parameters: the activations and autocast's 16-bit weight copies) against the estimate's saved activations
    plus weight copies; ResNet-18 is all conv, BatchNorm, ReLU and linear, where the two agree within 0.1%."""
    import torch

    from nnkit.archs import build
    from nnkit.introspect.memory import Optimizer, estimate

    torch.manual_seed(0)
    model = build("resnet18", num_classes=10).train()
    shape, batch = (3, 32, 32), 2
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            saved[s.data_ptr()] = s.nbytes()
        return t

    with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.rand(batch, *shape))
    real = sum(saved.values())
    est = estimate(model, shape, batch=batch, optimizer=Optimizer.sgd, amp=True)
    ours = batch * est.saved_bytes_per_item + est.amp_weights_bytes
    assert abs(ours - real) / real < 1e-3, (ours, real)


def test_frozen_layers_save_no_activations(nnkit):
    full = nnkit("summary", "resnet18", "--train", "-f", "json").json()["memory"]
    head = nnkit("summary", "resnet18", "--train", "--freeze", "backbone", "-f", "json").json()["memory"]
    assert head["grads_bytes"] == (512 * 1000 + 1000) * 4
    assert head["saved_bytes_per_item"] < full["saved_bytes_per_item"] / 100  # fc's input, little else


def test_nothing_fits_and_bad_budgets(nnkit):
    tiny = nnkit("summary", "resnet18", "--train", "--memory", "10MiB", "-f", "json")
    assert tiny.code == 0 and tiny.json()["fits"]["batch"] == 0, tiny
    table = nnkit("summary", "resnet18", "--train", "--memory", "10MiB", "-f", "tsv")
    assert "--memory 10MiB: not even batch 1 fits" in table.err
    for args, message in [(["--train", "--memory", "lots"],
                           "--memory lots: expected a size such as 8GiB, 24GB or 512MiB"),
                          (["--memory", "8GiB"], "--batch, --memory, --amp and --optimizer describe training "
                                                 "memory; add --train"),
                          (["--train", "--memory", "8GiB", "--batch", "4"], "--batch gives the batch, --memory "
                                                                             "finds the largest one that fits")]:
        run = nnkit("summary", "resnet18", *args)
        assert run.code == 2 and message in run.err and len(run.err.splitlines()) == 1, run
