"""Gradient norms per epoch (mean and max over the steps) in metrics.jsonl, metrics.csv and curves.png, against the
gradients the optimizer itself is handed; --clip-grad clips them to the norm given.
"""

from __future__ import annotations

import csv
import json
import math

import pytest

pytestmark = pytest.mark.torch

NET = "1x8x8 conv(8,3,p=1) relu flatten fc(10)"


def _spy_on_the_optimizer(monkeypatch):
    """The L2 norm of all gradients each AdamW step receives, computed here from p.grad."""
    import torch

    seen: list[float] = []
    step = torch.optim.AdamW.step

    def spying(self, *args, **kwargs):
        grads = [p.grad.double() for g in self.param_groups for p in g["params"] if p.grad is not None]
        seen.append(math.sqrt(sum(float((x * x).sum()) for x in grads)))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spying)
    return seen


def test_gradient_norms_are_those_the_optimizer_gets(monkeypatch, tmp_path):
    from nnkit.train.config import TrainConfig
    from nnkit.train.loop import train

    seen = _spy_on_the_optimizer(monkeypatch)
    r = train(TrainConfig(arch=NET, epochs=2, out=str(tmp_path / "run"), augment=()))
    steps = len(seen) // 2  # 1,257 training images in batches of 64, the last partial one dropped: 19 a epoch
    assert steps == 1257 // 64
    for row, part in zip(r.history, (seen[:steps], seen[steps:])):
        assert row["grad_norm_mean"] == pytest.approx(sum(part) / steps, rel=1e-6)
        assert row["grad_norm_max"] == pytest.approx(max(part), rel=1e-6)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["grad_norm_max"] for x in rows] == [x["grad_norm_max"] for x in r.history]
    with open(tmp_path / "run" / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert [float(x["grad_norm_mean"]) for x in table] == [x["grad_norm_mean"] for x in r.history]


def test_clip_grad_clips_what_the_optimizer_gets_and_records_the_norm_before(monkeypatch, tmp_path):
    from nnkit.train.config import TrainConfig
    from nnkit.train.loop import train

    seen = _spy_on_the_optimizer(monkeypatch)
    r = train(TrainConfig(arch=NET, epochs=1, out=str(tmp_path / "run"), augment=(), clip_grad=0.05))
    assert max(seen) <= 0.05 * (1 + 1e-5)
    assert r.history[0]["grad_norm_max"] > 0.05  # the metric is the norm before clipping (clip_grad_norm_'s)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["clip_grad"] == 0.05


def test_curves_draw_the_gradient_norm_and_bad_clips_are_refused(nnkit, tmp_path):
    from PIL import Image

    run = nnkit("train", NET, "--epochs", "1", "--clip-grad", "1", "--out", str(tmp_path / "run"))
    assert run.code == 0, run
    assert Image.open(tmp_path / "run" / "curves.png").size == (1500, 400)  # loss, accuracy, gradient norm
    bad = nnkit("train", NET, "--clip-grad", "0", "--out", str(tmp_path / "bad"))
    assert bad.code == 2 and bad.err == "nnkit: --clip-grad must be positive, got 0\n", bad
