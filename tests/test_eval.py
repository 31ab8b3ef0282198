"""nnkit eval: its numbers against a hand-written torch evaluation and scikit-learn's metrics, the JSON
contract, --plot, and bad checkpoints; plus the issue's acceptance run (default settings, >= 97% on digits).
"""

from __future__ import annotations

import json
import pickle

import pytest

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from nnkit.train.config import TrainConfig
    from nnkit.train.loop import train

    out = tmp_path_factory.mktemp("eval") / "run"
    result = train(TrainConfig(epochs=2, out=str(out)))
    return out, result


def _oracle(ck, x, y):
    """Evaluate by hand: the model rebuilt from the checkpoint, the saved normalisation, plain torch."""
    import torch
    import torch.nn.functional as F

    from nnkit.archs import build

    model = build(ck["arch"], num_classes=len(ck["classes"]), in_channels=ck["input"][0])
    model.load_state_dict(ck["model"])
    model.eval()
    mean = torch.tensor(ck["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(ck["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        logits = model((x.float() / 255 - mean) / std)
    return logits, F.cross_entropy(logits, y).item()


def test_eval_matches_a_hand_written_evaluation(nnkit, run_dir):
    import torch
    from sklearn.metrics import confusion_matrix, top_k_accuracy_score

    from nnkit.train.config import TrainConfig
    from nnkit.train.data import load_data

    out, result = run_dir
    run = nnkit("eval", str(out / "best.pt"), "-f", "json")
    assert run.code == 0, run
    doc = run.json()
    assert {"accuracy", "top5", "loss", "per_class", "confusion"} <= set(doc)
    assert doc["split"] == "val" and doc["accuracy"] == result.val_accuracy  # what training reported as best

    ck = torch.load(out / "best.pt", weights_only=True)
    val = load_data(TrainConfig(), (32, 32), (1, 32, 32)).val
    logits, loss = _oracle(ck, val.x, val.y)
    pred = logits.argmax(1).numpy()
    truth = val.y.numpy()
    assert doc["accuracy"] == pytest.approx((pred == truth).mean(), abs=1e-12)
    assert doc["loss"] == pytest.approx(loss, rel=1e-5)
    assert doc["top5"] == pytest.approx(top_k_accuracy_score(truth, logits.numpy(), k=5,
                                                             labels=list(range(10))))
    assert doc["confusion"] == confusion_matrix(truth, pred, labels=list(range(10))).tolist()
    for i, name in enumerate(ck["classes"]):
        mask = truth == i
        assert doc["per_class"][name]["images"] == int(mask.sum())
        assert doc["per_class"][name]["accuracy"] == pytest.approx((pred[mask] == i).mean())


def test_eval_on_the_test_split_agrees_with_training(nnkit, run_dir):
    out, result = run_dir
    doc = nnkit("eval", str(out), "--split", "test", "-f", "json").json()  # a run dir means its best.pt
    assert doc["accuracy"] == result.test_accuracy and doc["images"] == 359


def test_eval_table_and_confusion_plot(nnkit, run_dir, tmp_path):
    out, _ = run_dir
    png = tmp_path / "confusion.png"
    run = nnkit("eval", str(out / "best.pt"), "--plot", str(png))
    assert run.code == 0, run
    lines = run.out.splitlines()
    assert lines[0].split("\t") == ["class", "images", "accuracy"] and len(lines) == 11  # ten classes
    assert sum(int(line.split("\t")[1]) for line in lines[1:]) == 180
    assert "top-5" in run.err and "on 180 val images" in run.err  # the totals, for people, on stderr
    import matplotlib.image

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and matplotlib.image.imread(png).ndim == 3


def test_corrupt_and_foreign_checkpoints(nnkit, tmp_path, run_dir):
    import torch

    out, _ = run_dir
    cut = tmp_path / "cut.pt"
    cut.write_bytes((out / "best.pt").read_bytes()[:5000])
    run = nnkit("eval", str(cut))
    assert run.code == 1 and f"{cut}: truncated or corrupt checkpoint, torch cannot read it (" in run.err, run
    assert run.err.count("\n") == 1 and run.err.rstrip().endswith(")")  # our sentence, not torch's cut short

    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    run = nnkit("eval", str(foreign))
    assert run.code == 1 and "not an nnkit checkpoint" in run.err, run

    class Payload:
        def __reduce__(self):
            return (print, ("ran code",))

    hostile = tmp_path / "hostile.pt"
    torch.save({"format": "nnkit-checkpoint", "x": Payload()}, hostile, pickle_module=pickle)
    run = nnkit("eval", str(hostile))
    assert run.code == 1 and f"{hostile}: not a plain checkpoint" in run.err \
        and "ran code" not in run.out, run
    assert "refuses to load it for safety" in run.err and "weights_only=False" not in run.err, run
    run = nnkit("train", "lenet5", "--weights", str(hostile), "--out", str(tmp_path / "r"))
    assert run.code == 1 and f"--weights {hostile}: not a plain checkpoint" in run.err, run

    run = nnkit("eval", str(tmp_path / "missing.pt"))
    assert run.code == 1 and "missing.pt: no such checkpoint" in run.err


def test_plot_under_a_file_names_the_file(nnkit, run_dir, tmp_path):
    out, _ = run_dir
    (tmp_path / "f").write_text("x")
    run = nnkit("eval", str(out), "--plot", str(tmp_path / "f" / "sub" / "c.png"))
    assert run.code == 1 \
        and f"--plot {tmp_path / 'f' / 'sub' / 'c.png'}: {tmp_path / 'f'} is a file, not a " \
                             f"directory" in run.err, run


def test_a_class_without_images_has_no_accuracy(nnkit, tmp_path):
    """An empty class reads as null (JSON) and '-' (table), not as 0% accuracy."""
    from tests.test_data import make_imagefolder

    root = make_imagefolder(tmp_path / "imgs")
    for f in (root / "val" / "stripe").iterdir():
        f.unlink()
    run = nnkit("train", "lenet5", "--dataset", "imagefolder", "--data-dir", str(root), "--epochs", "1",
                "--batch-size", "6", "--out", str(tmp_path / "run"))
    assert run.code == 0, run
    doc = nnkit("eval", str(tmp_path / "run"), "-f", "json").json()
    assert doc["per_class"]["stripe"] == {"images": 0, "accuracy": None} and doc["images"] == 12
    for name in ("circle", "square"):
        row = doc["confusion"][["circle", "square", "stripe"].index(name)]
        assert doc["per_class"][name]["accuracy"] == row[["circle", "square", "stripe"].index(name)] / 6
    table = nnkit("eval", str(tmp_path / "run")).out.splitlines()
    assert "stripe\t0\t-" in table


def test_eval_refuses_a_data_set_with_another_class_count(nnkit, run_dir, tmp_path):
    from tests.test_data import make_imagefolder

    out, _ = run_dir
    make_imagefolder(tmp_path / "imgs")
    run = nnkit("eval", str(out / "best.pt"), "--dataset", "imagefolder", "--data-dir",
                str(tmp_path / "imgs"))
    assert run.code == 1 and "the model has 10 classes, imagefolder has 3" in run.err, run


@pytest.mark.slow
def test_default_settings_reach_97_percent_and_eval_reports_it(nnkit, tmp_path):
    """The issue's acceptance test: `nnkit train lenet5` with defaults (30 epochs, ~20 s here)."""
    out = tmp_path / "run"
    run = nnkit("train", "lenet5", "--out", str(out), "-f", "json")
    assert run.code == 0, run
    doc = run.json()
    assert doc["test_accuracy"] >= 0.97 and doc["epochs_run"] == 30
    ev_val = nnkit("eval", doc["best_checkpoint"], "-f", "json").json()
    ev_test = nnkit("eval", doc["best_checkpoint"], "--split", "test", "-f", "json").json()
    assert ev_val["accuracy"] == doc["val_accuracy"] and ev_test["accuracy"] == doc["test_accuracy"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_accuracy"] == doc["test_accuracy"]


# ---------------------------------------------------------------------------------------------- ensembles

CHAIN = "1x8x8 conv(8,3,p=1) relu flatten fc(10)"


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    from nnkit.train.config import TrainConfig
    from nnkit.train.loop import train

    root = tmp_path_factory.mktemp("ensemble")
    for seed in (0, 1, 2):
        train(TrainConfig(arch=CHAIN, epochs=1, seed=seed, out=str(root / f"s{seed}")))
    return root


def test_ensemble_is_the_mean_of_the_members_probabilities(nnkit, members):
    """Against a hand-written ensemble: each member rebuilt from the printed source of its chain, its own
    normalisation, softmax, the mean over members."""
    import torch

    from nnkit.core.torchplan import plan, source
    from nnkit.train.config import TrainConfig
    from nnkit.train.data import load_data

    dirs = [members / f"s{seed}" for seed in (0, 1, 2)]
    run = nnkit("eval", *map(str, dirs), "-f", "json")
    assert run.code == 0, run
    doc = run.json()
    val = load_data(TrainConfig(), (8, 8), (1, 8, 8)).val
    probs = []
    for d, member in zip(dirs, doc["members"]):
        ck = torch.load(d / "best.pt", weights_only=True)
        scope: dict = {}
        exec(source(plan(ck["arch"])), scope)  # noqa: S102
        net = scope["Net"]()
        net.load_state_dict(ck["model"])
        mean = torch.tensor(ck["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(ck["std"]).view(1, -1, 1, 1)
        with torch.no_grad():
            p = torch.softmax(net.eval()((val.x.float() / 255 - mean) / std).double(), 1)
        probs.append(p)
        alone = nnkit("eval", str(d), "-f", "json").json()
        assert member["checkpoint"] == str(d / "best.pt") and member["accuracy"] == alone["accuracy"]
        assert member["accuracy"] == pytest.approx(float((p.argmax(1) == val.y).double().mean()), abs=1e-12)
        assert member["loss"] == pytest.approx(alone["loss"], rel=1e-5)
    ens = torch.stack(probs).mean(0)
    assert doc["accuracy"] == pytest.approx(float((ens.argmax(1) == val.y).double().mean()), abs=1e-12)
    assert doc["loss"] == pytest.approx(float(-ens[torch.arange(len(val.y)), val.y].log().mean()), rel=1e-5)
    assert doc["images"] == 180 and sum(map(sum, doc["confusion"])) == 180 and doc["checkpoint"] == "ensemble of 3"
    table = nnkit("eval", *map(str, dirs), "-f", "tsv")
    assert table.out.splitlines()[-1].startswith("ensemble of 3\t") and "the mean of 3 members' probabilities" \
        in table.err


def test_ensemble_members_must_agree_on_classes_and_input(nnkit, members, run_dir, tmp_path):
    from tests.test_data import make_imagefolder

    lenet, _ = run_dir
    other = nnkit("eval", str(members / "s0"), str(lenet), "-f", "json")
    assert other.code == 1 and other.err == (f"nnkit: {lenet}/best.pt: takes 1x32x32, {members}/s0/best.pt takes "
                                             "1x8x8; an ensemble's members take one input\n"), other
    make_imagefolder(tmp_path / "imgs")
    three = tmp_path / "three"
    run = nnkit("train", "1x8x8 flatten fc(3)", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "imgs"),
                "--epochs", "1", "--batch-size", "6", "--out", str(three))
    assert run.code == 0, run
    classes = nnkit("eval", str(members / "s0"), str(three))
    assert classes.code == 1 and classes.err == (f"nnkit: {three}/best.pt: its 3 classes (circle, square, stripe) "
                                                 f"differ from {members}/s0/best.pt's 10; an ensemble averages the "
                                                 "same classes\n"), classes
