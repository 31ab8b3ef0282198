"""Data sets as uint8 tensors in memory: read from their standard formats, split, resized, ready for the
device.

Small data sets (digits, MNIST, Fashion-MNIST, CIFAR) are a few hundred MB at most as uint8, so they live as
tensors on the training device and batches are index gathers there, with no DataLoader, no per-sample PIL
transform and no worker processes (issue 5). Files are read here directly, in the formats torchvision's
datasets use and in the folders they write (`<data-dir>/MNIST/raw`, `<data-dir>/cifar-10-batches-py`);
torchvision itself is called only to download, and only with --download.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnkit.errors import DataError, UsageError
from nnkit.train.config import Dataset, TrainConfig, absolute_dir

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass(frozen=True)
class Split:
    x: Any  # uint8 tensor (N, C, H, W)
    y: Any  # int64 tensor (N,)

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Data:
    name: str
    classes: tuple[str, ...]
    train: Split
    val: Split
    test: Split | None
    mean: tuple[float, ...]  # per channel, in [0, 1], measured on the training split
    std: tuple[float, ...]
    val_from: str  # where the validation split comes from, in words (for the config and eval)
    test_from: str | None = None  # where the test split comes from, in words, when there is one

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.train.x.shape[1:])  # type: ignore[return-value]

    def split(self, name: str) -> Split:
        part = getattr(self, name)
        if part is None:
            raise DataError(f"data set {self.name} has no {name} split")
        return part


# ---------------------------------------------------------------------------------------------- file formats


def _open_maybe_gz(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def read_idx(path: Path) -> Any:
    """An IDX file (LeCun's MNIST format: magic 0x0000 | type | ndim, big-endian dims, then the data)."""
    import numpy as np

    try:
        raw = _open_maybe_gz(path)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:  # zlib.error: corrupt deflate data
        raise DataError(f"{path}: cannot read, truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    if not 1 <= ndim <= 4 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: malformed IDX header ({ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    count = 1
    for d in dims:
        count *= d
    body = raw[4 + 4 * ndim:]
    if len(body) != count:
        raise DataError(f"{path}: IDX header says {'x'.join(map(str, dims))} = {count} bytes, "
                        f"the file holds {len(body)}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims).copy()  # writable, as torch wants


class _NumpyOnly(pickle.Unpickler):
    """CIFAR batches are pickles: allow only what numpy arrays need, so a hostile file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: missing CIFAR batch file")
    try:
        with path.open("rb") as f:
            d = _NumpyOnly(f, encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a malformed file
        raise DataError(f"{path}: not a CIFAR python batch ({type(exc).__name__}: {exc})") from exc
    if not isinstance(d, dict):
        raise DataError(f"{path}: not a CIFAR python batch (a {type(d).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


# ---------------------------------------------------------------------------------------------- the data sets

_MNIST_FOLDERS = {Dataset.mnist: "MNIST", Dataset.fashion_mnist: "FashionMNIST"}
_FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                    "Bag",
                    "Ankle boot")


def _find_idx(root: Path, folder: str, stem: str) -> Path:
    for base in (root / folder / "raw", root / folder, root):
        for name in (stem, stem + ".gz"):
            if (base / name).is_file():
                return base / name
    raise DataError(f"{root}: no {stem} (looked in {root / folder / 'raw'}, {root / folder} and {root}; "
                    f"--download fetches it)")


def _mnist(cfg: TrainConfig, root: Path) -> tuple[tuple[Any, Any], tuple[Any, Any], tuple[str, ...]]:
    folder = _MNIST_FOLDERS[cfg.dataset]
    parts = []
    for prefix in ("train", "t10k"):
        images = read_idx(_find_idx(root, folder, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(root, folder, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{root / folder}: {prefix} images {images.shape} and labels {labels.shape} "
                            f"do not match")
        parts.append((images[:, None], labels.astype("int64")))
    classes = tuple(str(i) for i in range(10)) if cfg.dataset is Dataset.mnist else _FASHION_CLASSES
    return parts[0], parts[1], classes


def _cifar(cfg: TrainConfig, root: Path) -> tuple[tuple[Any, Any], tuple[Any, Any], tuple[str, ...]]:
    import numpy as np

    if cfg.dataset is Dataset.cifar10:
        base, train_files, key, meta_key = root / "cifar-10-batches-py", \
            [f"data_batch_{i}" for i in range(1, 6)], "labels", "label_names"
        meta_file, test_files = "batches.meta", ["test_batch"]
    else:
        base, train_files, key, meta_key = root / "cifar-100-python", ["train"], "fine_labels", \
            "fine_label_names"
        meta_file, test_files = "meta", ["test"]
    if not base.is_dir():
        raise DataError(f"{root}: no {base.name} folder (the CIFAR python version; --download fetches it)")

    def load(names: list[str]) -> tuple[Any, Any]:
        xs, ys = [], []
        for name in names:
            d = read_cifar_batch(base / name)
            if "data" not in d or key not in d:
                raise DataError(f"{base / name}: a CIFAR batch needs 'data' and '{key}'")
            x = np.asarray(d["data"], dtype=np.uint8)
            if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(d[key]):
                raise DataError(f"{base / name}: data {x.shape} is not N x 3072 with one label per row")
            xs.append(x.reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[key], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    train, test = load(train_files), load(test_files)
    meta = read_cifar_batch(base / meta_file)
    # Python 3 pickles of the original files hold the names as bytes (b'airplane'): decode them.
    classes = tuple(c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)
                    for c in meta.get(meta_key, []))
    n = 10 if cfg.dataset is Dataset.cifar10 else 100
    if len(classes) != n:
        raise DataError(f"{base / meta_file}: expected {n} class names under '{meta_key}', found "
                        f"{len(classes)}")
    return train, test, classes


def _digits() -> tuple[Any, Any, tuple[str, ...]]:
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # 0..16 grey levels -> 0..255
    return x, d.target.astype(np.int64), tuple(str(i) for i in range(10))


def _image_files(folder: Path) -> tuple[list[tuple[Path, int]], tuple[str, ...]]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{folder}: no class folders (an image folder holds one sub-folder per class)")
    items = []
    for i, c in enumerate(classes):
        for p in sorted((folder / c).rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                items.append((p, i))
    if not items:
        raise DataError(f"{folder}: the class folders hold no images ({', '.join(IMAGE_SUFFIXES)})")
    return items, tuple(classes)


def _read_one(p: Path, size: tuple[int, int], channels: int) -> Any:
    """One image as a uint8 array (C, H, W), converted and resized with PIL (bilinear)."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(p) as im:
            im = im.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.BILINEAR)
            a = np.array(im, dtype=np.uint8)  # a writable copy (torch warns on read-only arrays)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for a bad file
        raise DataError(f"{p}: cannot read image ({type(exc).__name__}: {exc})") from exc
    return a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))


class Files:
    """Images left on disk (an image folder too large for memory), decoded each epoch by DataLoader workers.

    A torch Dataset by duck typing: item i is the uint8 tensor (C, H, W) of image i; indexing with an index
    tensor gives the subset, as a uint8 tensor would.
    """

    def __init__(self, paths: tuple[Path, ...], size: tuple[int, int], channels: int) -> None:
        self.paths, self.size, self.channels = paths, size, channels

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), self.channels, *self.size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: Any) -> Any:
        import torch

        if isinstance(i, int):
            return torch.from_numpy(_read_one(self.paths[i], self.size, self.channels))
        return Files(tuple(self.paths[int(k)] for k in i), self.size, self.channels)


def loader(files: Files, batches: list[list[int]], workers: int | None, device: Any) -> Any:
    """A DataLoader that decodes `files` in the given batches (the loop's own order), in worker processes,
    into pinned memory, two batches ahead per worker."""
    import torch

    w = min(8, os.cpu_count() or 1) if workers is None else workers
    return torch.utils.data.DataLoader(files, batch_sampler=batches, num_workers=w,
                                       pin_memory=device.type == "cuda", prefetch_factor=2 if w else None)


def normaliser(mean: tuple[float, ...], std: tuple[float, ...], device: Any) -> tuple[Any, Any]:
    """uint8 -> (x/255 - mean)/std as one multiply-add: x*a + b."""
    import torch

    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    return 1.0 / (255.0 * s), -m / s


def _read_images(items: list[tuple[Path, int]], size: tuple[int, int], channels: int,
                 stream: bool) -> tuple[Any, Any]:
    import numpy as np

    y = np.array([c for _, c in items], dtype=np.int64)
    if stream:
        return Files(tuple(p for p, _ in items), size, channels), y
    xs = np.empty((len(items), channels, size[0], size[1]), dtype=np.uint8)
    for k, (p, _) in enumerate(items):
        xs[k] = _read_one(p, size, channels)
    return xs, y


STREAM_BYTES = 4 << 30  # decoded image folders above this stay on disk (Files), unless --stream/--no-stream


VAL_FOLDERS = ("val", "valid", "validation")
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
CHANNEL_SAMPLE = 20000  # image headers read to find the channel count (evenly spaced above this many images)


def _folders(root: Path) -> tuple[Path, Path | None, Path | None]:
    """The train, validation and test folders of an image folder: `root/train` with `root/val` (or valid/,
    validation/) and `root/test` where they exist; without `root/train`, `root` itself is the training set."""
    if not (root / "train").is_dir():
        return root, None, None
    val = next((root / n for n in VAL_FOLDERS if (root / n).is_dir()), None)
    return root / "train", val, root / "test" if (root / "test").is_dir() else None


def _is_grey(im: Any) -> bool:
    if im.mode in ("P", "PA"):  # a palette image is grey when every palette entry is
        pal = im.getpalette() or []
        return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))
    return im.mode in GREY_MODES


def _channels(paths: list[Path]) -> int:
    """The data set's channel count: 1 when every image is grey, 3 (RGB) when any is in colour. Reads headers
    only (PIL decodes lazily), of an evenly spaced sample of CHANNEL_SAMPLE images in a larger folder."""
    from PIL import Image

    for p in paths[::max(1, len(paths) // CHANNEL_SAMPLE)]:
        try:
            with Image.open(p) as im:
                if not _is_grey(im):
                    return 3
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for a bad file
            raise DataError(f"{p}: cannot read image ({type(exc).__name__}: {exc})") from exc
    return 1


def _load_imagefolder(cfg: TrainConfig, root: Path, min_input: tuple[int, int],
                      default_input: tuple[int, int, int]) -> Data:
    """An image folder at the architecture's input size, with the data's own channel count (grey or RGB)."""
    import torch

    _, h, w = default_input
    size = (max(h, min_input[0]), max(w, min_input[1]))
    train_dir, val_dir, test_dir = _folders(root)
    if val_dir is not None and cfg.val_split is not None:
        raise UsageError(f"--val-split: {val_dir} is the validation set; leave --val-split out, or remove "
                         f"that folder to split {train_dir} instead")
    items, classes = _image_files(train_dir)
    others: dict[str, list[tuple[Path, int]]] = {}
    for name, folder in (("val", val_dir), ("test", test_dir)):
        if folder is not None:
            o_items, o_classes = _image_files(folder)
            if o_classes != classes:
                raise DataError(f"{folder}: class folders {list(o_classes)} differ from "
                                f"{train_dir}'s {list(classes)}")
            others[name] = o_items
    channels = _channels([p for part in (items, *others.values()) for p, _ in part])

    def read(part: list[tuple[Path, int]]) -> Split:
        n_bytes = len(part) * channels * size[0] * size[1]
        stream = cfg.stream if cfg.stream is not None else n_bytes > STREAM_BYTES
        x, y = _read_images(part, size, channels, stream)
        return Split(_tensor(x), torch.from_numpy(y))

    train = read(items)
    test = read(others["test"]) if "test" in others else None
    if "val" in others:
        val, val_from = read(others["val"]), f"imagefolder: {val_dir}"
    else:
        if len(train) < 2:
            raise DataError(f"{train_dir}: {len(train)} image; need at least 2 to hold out a validation set")
        tr, va = _seeded_split(len(train), (cfg.val_fraction,), SPLIT_SEED)
        train, val = Split(train.x[tr], train.y[tr]), Split(train.x[va], train.y[va])
        val_from = f"imagefolder: fixed seeded {cfg.val_fraction:g} of {train_dir}"
    return _finish(cfg, classes, train, val, test, val_from, min_input,
                   f"imagefolder: {test_dir}" if test_dir is not None else None)


def _seeded_split(n: int, fractions: tuple[float, ...], seed: int) -> list[Any]:
    """Index sets for a fixed, seeded split: the same seed gives the same split on every machine."""
    import torch

    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    out, start = [], 0
    for f in fractions:
        k = max(1, int(round(n * f)))
        out.append(perm[start:start + k])
        start += k
    out.append(perm[start:])
    return [out[-1], *out[:-1]]  # the remainder (the training set) first, then one set per fraction


SPLIT_SEED = 20240601  # fixed, independent of --seed: the validation set must not move between runs


def check_memory(images: int, shape: tuple[int, ...], what: str) -> None:
    """Refuse, before torch tries, a uint8 tensor of `images` x `shape` larger than this machine's memory (an
    input size edited into a checkpoint, an architecture whose minimum input is huge)."""
    from nnkit.core.numbers import physical_memory

    need = images * math.prod(shape)
    have = physical_memory()
    if have and need > have:
        raise DataError(f"{what}: {images:,} images at {'x'.join(map(str, shape))} take {need / 2**30:,.1f} GiB, "
                        f"more than this machine's {have / 2**30:,.1f} GiB")


def _fit(x: Any, target: tuple[int, int]) -> Any:
    """Resize uint8 images up to at least `target` (the architecture's minimum input), bilinear."""
    import torch
    import torch.nn.functional as F

    if isinstance(x, Files):
        return x  # read at the right size already
    h, w = x.shape[-2:]
    th, tw = max(h, target[0]), max(w, target[1])
    if (th, tw) == (h, w):
        return x
    check_memory(x.shape[0], (x.shape[1], th, tw), f"resizing to the model's input {th}x{tw}")
    out = torch.empty((x.shape[0], x.shape[1], th, tw), dtype=torch.uint8)
    for i in range(0, x.shape[0], 4096):  # in chunks: a float copy of all of CIFAR would be large
        chunk = F.interpolate(x[i:i + 4096].float(), size=(th, tw), mode="bilinear", align_corners=False)
        out[i:i + 4096] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out


def load_data(cfg: TrainConfig, min_input: tuple[int, int], default_input: tuple[int, int, int],
              download: bool = False) -> Data:
    """The data set `cfg` names, split into train/val(/test), resized to at least `min_input`."""
    import numpy as np
    import torch

    test = None
    if cfg.dataset is Dataset.synthetic:
        c, h, w = default_input
        h, w = max(h, min_input[0]), max(w, min_input[1])
        g = torch.Generator().manual_seed(SPLIT_SEED)
        n = cfg.synthetic_size
        sizes = (n, max(2, n // 4), max(2, n // 4))
        check_memory(sum(sizes), (c, h, w), "--dataset synthetic")
        parts = [Split(torch.randint(0, 256, (k, c, h, w), dtype=torch.uint8, generator=g),
                       torch.randint(0, 10, (k,), generator=g)) for k in sizes]
        return _finish(cfg, tuple(str(i) for i in range(10)), parts[0], parts[1], parts[2],
                       "synthetic: random images and labels", min_input)

    if cfg.dataset is Dataset.digits:
        x, y, classes = _digits()
        tr, va, te = _seeded_split(len(y), (0.1, 0.2), SPLIT_SEED)  # train 70%, val 10%, test 20%
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        return _finish(cfg, classes, Split(xt[tr], yt[tr]), Split(xt[va], yt[va]), Split(xt[te], yt[te]),
                       "digits: fixed seeded split 70/10/20 of scikit-learn's 1,797 images", min_input)

    root = Path(absolute_dir(cfg.data_dir) or ".")
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: not a directory (--data-dir takes the folder that holds the "
                        + ("class folders, or train/ and val/)" if cfg.dataset is Dataset.imagefolder
                           else "data set's files)"))
    if download:
        _download(cfg, root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data directory" + ("" if cfg.dataset is Dataset.imagefolder
                                                              else " (--download fetches the data set "
                                                                   "there)"))
    if cfg.dataset in _MNIST_FOLDERS:
        (x, y), (xte, yte), classes = _mnist(cfg, root)
        test = (xte, yte)
    elif cfg.dataset in (Dataset.cifar10, Dataset.cifar100):
        (x, y), (xte, yte), classes = _cifar(cfg, root)
        test = (xte, yte)
    else:
        return _load_imagefolder(cfg, root, min_input, default_input)
    if len(y) and (y.min() < 0 or y.max() >= len(classes)):
        raise DataError(f"{root}: labels run from {y.min()} to {y.max()}, outside 0..{len(classes) - 1}")
    if len(y) < 2:
        raise DataError(f"{root}: {len(y)} training images; need at least 2 to hold out a validation split")
    tr, va = _seeded_split(len(y), (cfg.val_fraction,), SPLIT_SEED)
    xt, yt = _tensor(x), torch.from_numpy(y)
    te = Split(torch.from_numpy(np.ascontiguousarray(test[0])), torch.from_numpy(test[1])) if test else None
    return _finish(cfg, classes, Split(xt[tr], yt[tr]), Split(xt[va], yt[va]), te,
                   f"{cfg.dataset.value}: fixed seeded {cfg.val_fraction:g} of the training set", min_input,
                   f"{cfg.dataset.value}: the standard test files" if te is not None else None)


def _tensor(x: Any) -> Any:
    import numpy as np
    import torch

    return x if isinstance(x, Files) else torch.from_numpy(np.ascontiguousarray(x))


def _finish(cfg: TrainConfig, classes: tuple[str, ...], train: Split, val: Split, test: Split | None,
            val_from: str, min_input: tuple[int, int], test_from: str | None = None) -> Data:
    import torch

    train, val = Split(_fit(train.x, min_input), train.y), Split(_fit(val.x, min_input), val.y)
    if test is not None:
        test = Split(_fit(test.x, min_input), test.y)
    # Per-channel statistics of the training split (the per-data-set normalisation), in [0, 1] units; from an
    # evenly spaced sample of 2,000 images when they stay on disk.
    if isinstance(train.x, Files):
        pick = range(0, len(train.x), max(1, len(train.x) // 2000))
        xs = torch.stack([train.x[i] for i in pick]).to(torch.float64).div_(255.0)
    else:
        xs = train.x[: 50000].to(torch.float64).div_(255.0)
    mean = tuple(float(v) for v in xs.mean(dim=(0, 2, 3)))
    std = tuple(max(float(v), 1e-3) for v in xs.std(dim=(0, 2, 3)))
    return Data(cfg.dataset.value, classes, train, val, test, mean, std, val_from, test_from)


def _download(cfg: TrainConfig, root: Path) -> None:
    """Fetch through torchvision into `root`, in the layout the readers above expect (only with
    --download)."""
    from torchvision import datasets

    cls = {Dataset.mnist: datasets.MNIST, Dataset.fashion_mnist: datasets.FashionMNIST,
           Dataset.cifar10: datasets.CIFAR10, Dataset.cifar100: datasets.CIFAR100}[cfg.dataset]
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as exc:  # noqa: BLE001 - network and disk errors of every kind
        raise DataError(f"{root}: downloading {cfg.dataset.value} failed ({type(exc).__name__}: "
                        f"{exc})") from exc


