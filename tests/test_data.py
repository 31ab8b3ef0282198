"""Data sets: the readers against files written here in the real formats, splits, resizing and augmentation.

Oracles: torchvision's own IDX readers, the arrays the test wrote, F.interpolate, torch.flip and plain
slicing.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import pytest

pytestmark = pytest.mark.torch


# ---------------------------------------------------------------------------------------------- writers


def write_idx(path: Path, array, gz: bool = False) -> None:
    """LeCun's IDX format: 0, 0, 0x08 (ubyte), ndim, then big-endian dims and the bytes."""
    raw = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if gz else raw)


def make_mnist(root: Path, folder: str = "MNIST", n_train: int = 48, n_test: int = 20, gz: bool = False):
    """Tiny MNIST in torchvision's layout: images whose brightness encodes the label (learnable)."""
    import numpy as np

    rng = np.random.default_rng(0)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = (np.arange(n) % 10).astype(np.uint8)
        x = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
        for i, label in enumerate(y):  # a bright bar whose row says the class
            x[i, 2 + 2 * label: 4 + 2 * label, 4:24] = 250
        suffix = ".gz" if gz else ""
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte{suffix}", x, gz)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte{suffix}", y, gz)
        out[prefix] = (x, y)
    return out


def make_cifar(root: Path, hundred: bool = False, per_batch: int = 8, byte_names: bool = False):
    """CIFAR python batches (pickles of dicts with numpy arrays, as Krizhevsky's files are); byte_names: the
    meta file as a Python 3 re-pickling of the originals writes it, with bytes keys and bytes class names."""
    import numpy as np

    rng = np.random.default_rng(1)
    n_classes = 100 if hundred else 10
    base = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    base.mkdir(parents=True, exist_ok=True)
    key = "fine_labels" if hundred else "labels"
    names = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    written = {}
    for name in names + ["test" if hundred else "test_batch"]:
        x = rng.integers(0, 256, size=(per_batch * (5 if hundred and name == "train" else 1), 3072),
                         dtype=np.uint8)
        y = list(rng.integers(0, n_classes, size=len(x)).tolist())
        with open(base / name, "wb") as f:
            pickle.dump({b"batch_label": b"x", key: y, "data": x}, f, protocol=2)
        written[name] = (x, y)
    meta = {"fine_label_names": [f"c{i}" for i in range(100)]} if hundred else \
        {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                         "truck"]}
    if byte_names:
        meta = {k.encode(): [n.encode() for n in v] for k, v in meta.items()}
    with open(base / ("meta" if hundred else "batches.meta"), "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return written


def make_imagefolder(root: Path, classes=("circle", "square", "stripe"), per_class: int = 6,
                     split: bool = True, parts: tuple[str, ...] | None = None, mode: str = "L",
                     colour: str = "white"):
    """PNG files, one folder per class under each of `parts` (default train/ and val/, or root alone); grey
    by default, as digits-trained models take them."""
    from PIL import Image, ImageDraw

    parts = parts if parts is not None else ("train", "val") if split else ("",)
    for part in parts:
        for c in classes:
            d = root / part / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                im = Image.new(mode, (20 + i, 24), "black")
                draw = ImageDraw.Draw(im)
                if c == "circle":
                    draw.ellipse((3, 3, 17, 17), fill=colour)
                elif c == "square":
                    draw.rectangle((4, 4, 16, 16), fill=colour)
                else:
                    draw.rectangle((0, 10, 19 + i, 13), fill=colour)
                im.save(d / f"{i}.png")
    return root


# ---------------------------------------------------------------------------------------------- readers


def test_idx_reader_matches_torchvision(tmp_path):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    from nnkit.train.data import read_idx

    written = make_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    images = read_idx(raw / "train-images-idx3-ubyte")
    labels = read_idx(raw / "train-labels-idx1-ubyte")
    assert (images == read_image_file(str(raw / "train-images-idx3-ubyte")).numpy()).all()
    assert (labels == read_label_file(str(raw / "train-labels-idx1-ubyte")).numpy()).all()
    assert (images == written["train"][0]).all()


def test_gzipped_idx_reads_the_same(tmp_path):
    from nnkit.train.data import read_idx

    written = make_mnist(tmp_path, "FashionMNIST", gz=True)
    assert (read_idx(tmp_path / "FashionMNIST/raw/t10k-images-idx3-ubyte.gz") == written["t10k"][0]).all()


def test_malformed_idx_is_a_data_error_naming_the_file(tmp_path):
    from nnkit.errors import DataError
    from nnkit.train.data import read_idx

    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x08\x03\x00\x00garbage")
    with pytest.raises(DataError, match="bad-idx: not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short-idx"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 100) + b"\x01" * 7)
    with pytest.raises(DataError, match="says 100 = 100 bytes, the file holds 7"):
        read_idx(short)


def test_cifar_pickle_with_code_is_refused_not_run(tmp_path):
    from nnkit.errors import DataError
    from nnkit.train.data import read_cifar_batch

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    bad = tmp_path / "data_batch_1"
    bad.write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(DataError, match="data_batch_1: not a CIFAR python batch"):
        read_cifar_batch(bad)
    assert not marker.exists()


@pytest.mark.parametrize("hundred", [False, True], ids=["cifar10", "cifar100"])
def test_cifar_loads_what_was_written(tmp_path, hundred):
    import numpy as np

    from nnkit.train.config import Dataset, TrainConfig
    from nnkit.train.data import load_data

    written = make_cifar(tmp_path, hundred)
    cfg = TrainConfig(dataset=Dataset.cifar100 if hundred else Dataset.cifar10, data_dir=str(tmp_path))
    data = load_data(cfg, (32, 32), (3, 32, 32))
    test_x, test_y = written["test" if hundred else "test_batch"]
    assert (data.test.x.numpy() == test_x.reshape(-1, 3, 32, 32)).all()
    assert data.test.y.tolist() == test_y
    train_rows = np.concatenate([written[k][0] for k in written if "test" not in k]).reshape(-1, 3, 32, 32)
    got = np.concatenate([data.train.x.numpy(), data.val.x.numpy()])
    assert len(got) == len(train_rows)  # the validation split is held out of the training files, nothing lost
    assert sorted(map(bytes, got)) == sorted(map(bytes, train_rows))
    assert len(data.classes) == (100 if hundred else 10)


def test_missing_data_dir_and_missing_files(nnkit, tmp_path):
    run = nnkit("train", "lenet5", "--dataset", "mnist", "--data-dir", str(tmp_path / "nope"),
                "--out", str(tmp_path / "run"))
    assert run.code == 1 and "nope: no such data directory" in run.err and run.err.count("\n") == 1, run
    (tmp_path / "empty").mkdir()
    run = nnkit("train", "lenet5", "--dataset", "cifar10", "--data-dir", str(tmp_path / "empty"),
                "--out", str(tmp_path / "run"))
    assert run.code == 1 and "no cifar-10-batches-py folder" in run.err, run
    run = nnkit("train", "lenet5", "--dataset", "mnist", "--out", str(tmp_path / "run"))
    assert run.code == 2 and "needs --data-dir" in run.err, run


# ---------------------------------------------------------------------------------------------- training on
# them


@pytest.mark.slow
@pytest.mark.parametrize("dataset,folder,gz",
                         [("mnist", "MNIST", False), ("fashion-mnist", "FashionMNIST", True)])
def test_train_on_idx_files(nnkit, tmp_path, dataset, folder, gz):
    make_mnist(tmp_path / "data", folder, gz=gz)
    run = nnkit("train", "lenet5", "--dataset", dataset, "--data-dir", str(tmp_path / "data"), "--epochs",
                "1",
                "--batch-size", "8", "--out", str(tmp_path / "run"), "-f", "json")
    assert run.code == 0, run
    doc = run.json()
    assert doc["epochs_run"] == 1 and doc["dataset"] == dataset
    assert doc["test_accuracy"] is not None  # the t10k files are the test split
    config = __import__("json").loads((tmp_path / "run" / "config.json").read_text())
    assert config["input"] == [1, 32, 32]  # 28x28 resized to LeNet-5's 32x32
    assert len(config["classes"]) == 10


@pytest.mark.slow
def test_train_on_cifar_batches(nnkit, tmp_path):
    make_cifar(tmp_path / "data")
    run = nnkit("train", "lenet5", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--epochs",
                "1",
                "--batch-size", "8", "--out", str(tmp_path / "run"), "-f", "json")
    assert run.code == 0, run
    import torch

    ck = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert ck["input"] == [3, 32, 32] and ck["classes"][0] == "airplane"
    assert ck["model"]["0.weight"].shape == (6, 3, 5, 5)  # LeNet-5 took three input channels from the data


@pytest.mark.slow
@pytest.mark.parametrize("split", [True, False], ids=["train-val", "one-folder"])
def test_train_on_imagefolder(nnkit, tmp_path, split):
    make_imagefolder(tmp_path / "imgs", split=split)
    run = nnkit("train", "lenet5", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "imgs"),
                "--epochs", "2", "--batch-size", "6", *([] if split else ["--val-split", "0.25"]),
                "--out", str(tmp_path / "run"), "-f", "json")
    assert run.code == 0, run
    config = __import__("json").loads((tmp_path / "run" / "config.json").read_text())
    assert config["classes"] == ["circle", "square", "stripe"]
    assert config["input"] == [1, 32, 32]  # grey PNGs stay one channel
    assert config["val_from"].endswith("val") if split else "0.25" in config["val_from"]


def test_imagefolder_without_classes_or_with_a_bad_image(tmp_path):
    from nnkit.errors import DataError
    from nnkit.train.config import Dataset, TrainConfig
    from nnkit.train.data import load_data

    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    cfg = TrainConfig(dataset=Dataset.imagefolder, data_dir=str(tmp_path / "flat"))
    with pytest.raises(DataError, match="no class folders"):
        load_data(cfg, (32, 32), (1, 32, 32))
    (tmp_path / "bad" / "cat").mkdir(parents=True)
    (tmp_path / "bad" / "cat" / "1.png").write_bytes(b"not a png")
    cfg = TrainConfig(dataset=Dataset.imagefolder, data_dir=str(tmp_path / "bad"))
    with pytest.raises(DataError, match=r"1\.png: cannot read image"):
        load_data(cfg, (32, 32), (1, 32, 32))


def test_data_dir_that_is_a_file_says_so_without_downloading(nnkit, tmp_path):
    f = tmp_path / "cifar-10-python.tar.gz"
    f.write_bytes(b"not a folder")
    for args in (("--dataset", "mnist", "--download"), ("--dataset", "imagefolder")):
        run = nnkit("train", "lenet5", *args, "--data-dir", str(f), "--out", str(tmp_path / "run"))
        assert run.code == 1 and f"{f}: not a directory (--data-dir takes the folder" in run.err, run
        assert run.err.count("\n") == 1 and f.read_bytes() == b"not a folder"


@pytest.mark.parametrize("hundred", [False, True], ids=["cifar10", "cifar100"])
def test_cifar_label_names_written_as_bytes_are_decoded(tmp_path, hundred):
    from nnkit.train.config import Dataset, TrainConfig
    from nnkit.train.data import load_data

    make_cifar(tmp_path, hundred, byte_names=True)
    meta = "cifar-100-python/meta" if hundred else "cifar-10-batches-py/batches.meta"
    with open(tmp_path / meta, "rb") as f:
        written = pickle.load(f)[b"fine_label_names" if hundred else b"label_names"]
    assert isinstance(written[0], bytes)
    cfg = TrainConfig(dataset=Dataset.cifar100 if hundred else Dataset.cifar10, data_dir=str(tmp_path))
    assert load_data(cfg, (32, 32), (3, 32, 32)).classes == tuple(n.decode() for n in written)


def test_val_split_is_refused_where_the_split_is_fixed(nnkit, tmp_path):
    from nnkit.train.config import TrainConfig

    for dataset in ("digits", "synthetic"):
        run = nnkit("train", "lenet5", "--dataset", dataset, "--val-split", "0.3",
                    "--out", str(tmp_path / "r"))
        assert run.code == 2 and run.err.count("\n") == 1, run
        assert "--val-split applies to mnist, fashion-mnist, cifar10, cifar100 and imagefolder; " \
               f"{dataset} has a fixed validation split" in run.err, run
    assert not (tmp_path / "r").exists()
    # A digits run saved before the refusal recorded the unused default 0.1; it still resumes.
    assert TrainConfig.from_dict({"dataset": "digits", "val_split": 0.1}).validate().val_split is None
    assert TrainConfig.from_dict({"dataset": "mnist", "val_split": 0.2, "data_dir": "d"}).val_fraction == 0.2


def test_data_dir_is_saved_absolute():
    import os

    from nnkit.train.config import Dataset, TrainConfig

    cfg = TrainConfig(dataset=Dataset.mnist, data_dir="data/../mnist").resolved()
    assert cfg.data_dir == os.path.join(os.getcwd(), "mnist")
    assert TrainConfig(dataset=Dataset.mnist, data_dir="~/d").resolved().data_dir == os.path.expanduser("~/d")
    assert TrainConfig().resolved().data_dir is None


# ---------------------------------------------------------------------------------------------- image folders


def _files(folder: Path, classes: tuple[str, ...], mode: str, size=(32, 32)) -> list[tuple[str, bytes]]:
    """Oracle: every image under `folder` read by PIL itself (converted, bilinear resize), with its class."""
    import numpy as np
    from PIL import Image

    out = []
    for p in sorted(folder.rglob("*.png")):
        with Image.open(p) as im:
            a = np.array(im.convert(mode).resize((size[1], size[0]), Image.BILINEAR), dtype=np.uint8)
        out.append((p.parent.name, (a[None] if a.ndim == 2 else a.transpose(2, 0, 1)).tobytes()))
    assert {c for c, _ in out} <= set(classes)
    return sorted(out)


def _pairs(split, classes) -> list[tuple[str, bytes]]:
    return sorted((classes[int(y)], x.numpy().tobytes()) for x, y in zip(split.x, split.y))


def test_imagefolder_val_and_test_folders_are_the_validation_and_test_splits(tmp_path):
    from nnkit.errors import DataError, UsageError
    from nnkit.train.config import Dataset, TrainConfig
    from nnkit.train.data import load_data

    root = tmp_path / "imgs"
    for part, n in (("train", 6), ("val", 2), ("test", 4)):
        make_imagefolder(root, parts=(part,), per_class=n, mode="RGB", colour="red")
    data = load_data(TrainConfig(dataset=Dataset.imagefolder, data_dir=str(root)), (32, 32), (1, 32, 32))
    assert (len(data.train), len(data.val), len(data.test)) == (18, 6, 12)
    for name in ("train", "val", "test"):
        assert _pairs(data.split(name), data.classes) == _files(root / name, data.classes, "RGB"), name
    assert data.val_from == f"imagefolder: {root / 'val'}"
    assert data.test_from == f"imagefolder: {root / 'test'}"
    with pytest.raises(UsageError, match=r"--val-split: .*imgs/val is the validation set"):
        load_data(TrainConfig(dataset=Dataset.imagefolder, data_dir=str(root), val_split=0.2), (32, 32),
                  (1, 32, 32))
    (root / "test" / "extra").mkdir()
    (root / "test" / "circle" / "0.png").rename(root / "test" / "extra" / "0.png")
    with pytest.raises(DataError, match=r"imgs/test: class folders .* differ from .*imgs/train's"):
        load_data(TrainConfig(dataset=Dataset.imagefolder, data_dir=str(root)), (32, 32), (1, 32, 32))


def test_imagefolder_with_train_and_test_only_holds_out_a_seeded_part_of_train(tmp_path):
    from nnkit.train.config import Dataset, TrainConfig
    from nnkit.train.data import load_data

    root = tmp_path / "imgs"
    for part, n in (("train", 10), ("test", 4)):
        make_imagefolder(root, parts=(part,), per_class=n, mode="RGB")
    cfg = TrainConfig(dataset=Dataset.imagefolder, data_dir=str(root), val_split=0.2)
    data = load_data(cfg, (32, 32), (1, 32, 32))
    assert (len(data.train), len(data.val), len(data.test)) == (24, 6, 12)  # test/ is not the validation set
    assert sorted(_pairs(data.train, data.classes) + _pairs(data.val, data.classes)) == \
        _files(root / "train", data.classes, "RGB")
    assert _pairs(data.test, data.classes) == _files(root / "test", data.classes, "RGB")
    assert data.val_from == f"imagefolder: fixed seeded 0.2 of {root / 'train'}"  # a folder that exists
    again = load_data(cfg, (32, 32), (1, 32, 32))
    assert _pairs(again.val, again.classes) == _pairs(data.val, data.classes)  # the same split every time


@pytest.mark.parametrize("modes,channels", [(("L",), 1), (("RGB",), 3), (("L", "RGB"), 3), (("LA", "1"), 1)],
                         ids=["grey", "rgb", "one-colour-image", "grey-alpha-and-bilevel"])
def test_imagefolder_channels_come_from_the_images_not_the_architecture(tmp_path, modes, channels):
    from PIL import Image

    from nnkit.train.config import Dataset, TrainConfig
    from nnkit.train.data import load_data

    root = tmp_path / "imgs"
    make_imagefolder(root, parts=("",), per_class=3, mode=modes[0], colour="white")
    for k, mode in enumerate(modes[1:]):  # one image of another mode among them
        Image.new(mode, (24, 24), "white").save(root / "square" / f"other{k}.png")
    for arch_channels in (1, 3):  # LeNet-5's grey input, ResNet's RGB input: the data decides either way
        data = load_data(TrainConfig(dataset=Dataset.imagefolder, data_dir=str(root)), (32, 32),
                         (arch_channels, 32, 32))
        assert data.shape == (channels, 32, 32)
        got = sorted(_pairs(data.train, data.classes) + _pairs(data.val, data.classes))
        assert got == _files(root, data.classes, "L" if channels == 1 else "RGB")


@pytest.mark.slow
def test_imagefolder_run_keeps_rgb_and_test_and_finds_its_data_elsewhere(nnkit, tmp_path, monkeypatch):
    import json

    import torch

    root = tmp_path / "work" / "imgs"
    for part, n in (("train", 8), ("test", 4)):
        make_imagefolder(root, parts=(part,), per_class=n, mode="RGB", colour="red")
    monkeypatch.chdir(tmp_path / "work")
    run = nnkit("train", "lenet5", "--dataset", "imagefolder", "--data-dir", "imgs", "--epochs", "1",
                "--batch-size", "6", "--out", str(tmp_path / "run"), "-f", "json")
    assert run.code == 0, run
    doc = run.json()
    assert doc["test_accuracy"] is not None  # test/ is the test split
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data_dir"] == str(root)  # absolute, though given relative
    assert config["input"] == [3, 32, 32]  # RGB stays RGB under LeNet-5: in_channels follows the data
    assert config["val_from"] == f"imagefolder: fixed seeded 0.1 of {root / 'train'}"
    ck = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert ck["model"]["0.weight"].shape == (6, 3, 5, 5) and ck["config"]["data_dir"] == str(root)
    monkeypatch.chdir(tmp_path)  # somewhere else: the saved path still finds the data
    ev = nnkit("eval", str(tmp_path / "run" / "best.pt"), "--split", "test", "-f", "json")
    assert ev.code == 0, ev
    assert ev.json()["accuracy"] == pytest.approx(doc["test_accuracy"])


# ---------------------------------------------------------------------------------------------- digits,
# resize


def test_digits_split_is_fixed_disjoint_and_complete():
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    from nnkit.train.config import TrainConfig
    from nnkit.train.data import load_data

    a = load_data(TrainConfig(), (32, 32), (1, 32, 32))
    b = load_data(TrainConfig(seed=7), (32, 32), (1, 32, 32))
    digits = load_digits()
    n = len(digits.target)
    assert (len(a.train), len(a.val), len(a.test)) == (n - round(0.1 * n) - round(0.2 * n), round(0.1 * n),
                                                       round(0.2 * n))
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.test.y, b.test.y)  # --seed does not move the split
    assert a.shape == (1, 32, 32)
    # Every image once across the three splits, each the bilinear resize of an 8x8 original.
    src = torch.from_numpy(digits.images * (255 / 16)).round().float()[:, None]
    resized = F.interpolate(src, size=(32, 32), mode="bilinear", align_corners=False).round().clamp(0, 255)
    everything = torch.cat([a.train.x, a.val.x, a.test.x]).float()
    assert sorted(map(bytes, everything.to(torch.uint8).numpy())) == \
        sorted(map(bytes, resized.to(torch.uint8).numpy()))
    mean = everything[: len(a.train)].div(255).mean().item()
    assert a.mean[0] == pytest.approx(mean, rel=1e-6)


def test_synthetic_takes_the_architecture_input():
    from nnkit.train.config import Dataset, TrainConfig
    from nnkit.train.data import load_data

    d = load_data(TrainConfig(dataset=Dataset.synthetic, synthetic_size=16), (63, 63), (3, 224, 224))
    assert d.shape == (3, 224, 224) and len(d.train) == 16 and len(d.val) == 4


# ---------------------------------------------------------------------------------------------- augmentation


def _batch():
    import torch

    return torch.arange(4 * 2 * 8 * 8, dtype=torch.float32).view(4, 2, 8, 8)


def test_flip_flips_exactly_the_chosen_samples():
    import torch

    from nnkit.train.augment import augment

    x = _batch()
    y = augment(x, ("flip",), torch.Generator().manual_seed(3))
    flipped = [bool(torch.equal(y[i], x[i].flip(-1))) for i in range(4)]
    kept = [bool(torch.equal(y[i], x[i])) for i in range(4)]
    assert all(f != k for f, k in zip(flipped, kept))
    y2 = augment(x, ("flip",), torch.Generator().manual_seed(3))
    assert torch.equal(y, y2)  # the same seed, the same batch


def test_crop_is_a_window_of_the_zero_padded_image():
    import torch
    import torch.nn.functional as F

    from nnkit.train.augment import augment, crop_padding

    x = _batch()
    p = crop_padding(8, 8)
    y = augment(x, ("crop",), torch.Generator().manual_seed(0))
    padded = F.pad(x, (p, p, p, p))
    for i in range(4):
        windows = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                   if torch.equal(y[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
        assert windows, f"sample {i} is not a crop"


def test_rotate_scale_noise_keep_shape_and_stay_close():
    import torch

    from nnkit.train.augment import augment

    x = torch.randn(16, 3, 16, 16)
    for names in (("rotate",), ("scale",), ("noise",), ("flip", "vflip", "rotate", "crop", "scale", "noise")):
        y = augment(x, names, torch.Generator().manual_seed(1))
        assert y.shape == x.shape and torch.isfinite(y).all()
        assert not torch.equal(y, x)
    noise = augment(x, ("noise",), torch.Generator().manual_seed(1)) - x
    assert noise.std().item() == pytest.approx(0.1, rel=0.1)


def test_a_ranks_share_gets_the_augmentation_of_its_rows_in_the_global_batch():
    import torch

    from nnkit.train.augment import augment

    x = torch.randn(8, 2, 12, 12)
    names = ("flip", "vflip", "rotate", "crop", "scale", "noise")
    whole = augment(x, names, torch.Generator().manual_seed(5))
    half = augment(x[4:], names, torch.Generator().manual_seed(5), share=(4, 8, 8))
    assert torch.allclose(half, whole[4:], atol=1e-6)


@pytest.mark.slow
def test_streamed_image_folder_trains_exactly_like_the_in_memory_one(tmp_path):
    """--stream decodes in DataLoader workers in the loop's own order: the same numbers as in memory."""
    from nnkit.train.config import Dataset, TrainConfig
    from nnkit.train.data import Files, load_data
    from nnkit.train.loop import train

    make_imagefolder(tmp_path / "imgs", per_class=8)
    common = dict(dataset=Dataset.imagefolder, data_dir=str(tmp_path / "imgs"), epochs=2, batch_size=6,
                  augment=("flip", "crop"))
    streamed = load_data(TrainConfig(stream=True, **common), (32, 32), (1, 32, 32))
    assert isinstance(streamed.train.x, Files) and streamed.shape == (1, 32, 32)
    ram = train(TrainConfig(out=str(tmp_path / "ram"), stream=False, **common))
    disk = train(TrainConfig(out=str(tmp_path / "disk"), stream=True, workers=2, **common))
    strip = [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in ram.history]
    assert strip == [{k: v for k,
                      v in r.items() if k not in ("seconds", "images_per_s")} for r in disk.history]
    assert ram.val_accuracy == disk.val_accuracy
