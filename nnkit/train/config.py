"""Every setting of a training run, as one frozen dataclass that round-trips through JSON (the run's
`config`).

Pure Python: the CLI builds a TrainConfig, validates it here, and only then imports torch.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any

from nnkit.core.numbers import physical_memory
from nnkit.core.optim import Freeze, Head, Optimizer
from nnkit.errors import UnknownNameError, UsageError


class Dataset(str, Enum):
    digits = "digits"
    mnist = "mnist"
    fashion_mnist = "fashion-mnist"
    cifar10 = "cifar10"
    cifar100 = "cifar100"
    imagefolder = "imagefolder"
    synthetic = "synthetic"


class Schedule(str, Enum):
    cosine = "cosine"
    step = "step"
    onecycle = "onecycle"
    none = "none"


class Split(str, Enum):
    train = "train"
    val = "val"
    test = "test"


AUGMENTS = ("flip", "vflip", "rotate", "crop", "scale", "noise")
# Without --augment, each data set gets its reference recipe: random crop with padding for digits (measured:
# test accuracy of LeNet-5 from 96.7-97.5% to 97.8-98.3% over seeds 0-3), flips only where mirror images are
# the same class (CIFAR, photos), none for synthetic timing data.
DEFAULT_AUGMENT = {
    "digits": ("crop",), "mnist": ("crop",), "fashion-mnist": ("crop",), "cifar10": ("flip", "crop"),
    "cifar100": ("flip", "crop"), "imagefolder": ("flip", "crop"), "synthetic": (),
}
NEEDS_DATA_DIR = {Dataset.mnist, Dataset.fashion_mnist, Dataset.cifar10, Dataset.cifar100,
                  Dataset.imagefolder}
# Digits has a fixed 70/10/20 split and synthetic data its own random validation set: --val-split means
# nothing there.
HAS_FIXED_SPLIT = {Dataset.digits, Dataset.synthetic}
DEFAULT_VAL_SPLIT = 0.1


def parse_augment(text: str | None) -> tuple[str, ...]:
    """--augment 'flip,crop' -> ('flip', 'crop') (a name given twice counts once); 'none' or None -> (). An
    unknown or empty name is refused with the valid ones listed (nnkit train and nnkit tune alike)."""
    if text is None or text.strip().lower() == "none":
        return ()
    valid = f"{', '.join(AUGMENTS)}, or none"
    words = [w.strip().lower() for w in text.split(",")]
    if not all(words):
        raise UsageError(f"--augment '{text}': an empty name in the list; give comma-separated names from "
                         f"{valid}")
    for word in words:
        if word not in AUGMENTS:
            close = difflib.get_close_matches(word, AUGMENTS, n=2, cutoff=0.5)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UsageError(f"--augment: unknown augmentation '{word}'{hint}; valid: {valid}")
    return tuple(dict.fromkeys(words))


@dataclass(frozen=True)
class TrainConfig:
    """The defaults train LeNet-5 on digits to >= 97% test accuracy in well under a minute on two slow
    cores."""

    arch: str = "lenet5"
    dataset: Dataset = Dataset.digits
    data_dir: str | None = None
    download: bool = False
    val_split: float | None = None  # the fraction of the training set held out where a data set has no
    # validation set (None: DEFAULT_VAL_SPLIT, or no split at all for digits and synthetic)
    out: str | None = None
    epochs: int = 30
    batch_size: int = 64  # the global batch: under torchrun each of N processes takes batch_size / N
    optimizer: Optimizer = Optimizer.adamw
    lr: float | None = None  # None: the optimizer's default (sgd 0.1, adam/adamw 0.003)
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    schedule: Schedule = Schedule.cosine
    warmup_epochs: float = 0.0
    seed: int = 0
    augment: tuple[str, ...] | None = None  # None: the data set's default (DEFAULT_AUGMENT)
    patience: int | None = None
    weights: str | None = None
    freeze: str = Freeze.none  # none, backbone (all but the classifier head), or a module frozen with all before it
    trainable: tuple[str, ...] | None = None  # only these modules train (transfer.py)
    head: Head = Head.own
    clip_grad: float | None = None  # clip the gradients' total 2-norm to this (torch.nn.utils.clip_grad_norm_)
    width: float | None = None
    device: str | None = None
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    stream: bool | None = None  # image folders: decode from disk each epoch (None: when above 4 GiB decoded)
    workers: int | None = None  # DataLoader workers for streamed images (None: min(8, CPU cores))
    synthetic_size: int = 2048  # images in the synthetic training set (val and test get a quarter each)
    dropout: float | None = None  # every dropout layer's probability (None: the architecture's own)

    def __post_init__(self) -> None:
        if isinstance(self.freeze, Enum):  # Freeze.backbone and "backbone" are one setting
            object.__setattr__(self, "freeze", self.freeze.value)

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.1 if self.optimizer is Optimizer.sgd else 3e-3

    @property
    def val_fraction(self) -> float:
        return DEFAULT_VAL_SPLIT if self.val_split is None else self.val_split

    def resolved(self) -> TrainConfig:
        """Defaults that depend on other settings filled in, so the saved config repeats the run exactly."""
        from dataclasses import replace

        return replace(self, lr=self.learning_rate,
                       augment=DEFAULT_AUGMENT[self.dataset.value] if self.augment is None else self.augment,
                       data_dir=absolute_dir(self.data_dir))

    def validate(self) -> TrainConfig:
        """Every check that needs no torch and no file, in one place; returns self."""
        self._validate_numbers()
        if self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.lr is not None and not self.lr > 0:
            raise UsageError(f"--lr must be positive, got {self.lr:g}")
        if self.weight_decay < 0:
            raise UsageError(f"--weight-decay must not be negative, got {self.weight_decay:g}")
        if not 0 <= self.label_smoothing < 1:
            raise UsageError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing:g}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise UsageError(f"--warmup-epochs must be between 0 and --epochs ({self.epochs}), "
                             f"got {self.warmup_epochs:g}")
        if self.val_split is not None and self.dataset in HAS_FIXED_SPLIT:
            raise UsageError(f"--val-split applies to mnist, fashion-mnist, cifar10, cifar100 and "
                             f"imagefolder; {self.dataset.value} has a fixed validation split")
        if self.val_split is not None and not 0 < self.val_split < 1:
            raise UsageError(f"--val-split must be between 0 and 1, got {self.val_split:g}")
        if self.patience is not None and self.patience < 1:
            raise UsageError(f"--patience must be at least 1, got {self.patience}")
        if self.nesterov and self.optimizer is not Optimizer.sgd:
            raise UsageError(f"--nesterov applies to --optimizer sgd, not {self.optimizer.value}")
        if self.dataset in NEEDS_DATA_DIR and not self.data_dir:
            raise UsageError(f"--dataset {self.dataset.value} needs --data-dir (add --download to fetch "
                             f"it there)" if self.dataset is not Dataset.imagefolder
                             else "--dataset imagefolder needs --data-dir")
        if self.download and self.dataset not in NEEDS_DATA_DIR - {Dataset.imagefolder}:
            raise UsageError(f"--download applies to mnist, fashion-mnist, cifar10 and cifar100, "
                             f"not {self.dataset.value}")
        self._validate_transfer()
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise UsageError(f"--clip-grad must be positive, got {self.clip_grad:g}")
        if self.workers is not None and self.workers < 0:
            raise UsageError(f"--workers must not be negative, got {self.workers}")
        if self.stream and self.dataset is not Dataset.imagefolder:
            raise UsageError(f"--stream applies to --dataset imagefolder; {self.dataset.value} is held in "
                             "memory")
        if self.dropout is not None and not (math.isfinite(self.dropout) and 0 <= self.dropout < 1):
            raise UsageError(f"--dropout must be in [0, 1), got {self.dropout:g}")
        if self.synthetic_size < 8:
            raise UsageError(f"--synthetic-size must be at least 8, got {self.synthetic_size}")
        return self

    def _validate_transfer(self) -> None:
        freezing = self.freeze not in (Freeze.none, "")
        if freezing and self.trainable is not None:
            raise UsageError("--freeze and --trainable both choose what trains; give one of them")
        if self.head is Head.new and (freezing or self.trainable is not None):
            raise UsageError("--head new trains only the new layer; leave out --freeze and --trainable")
        if not self.weights:
            if self.head is Head.new:
                raise UsageError("--head new needs --weights PATH: it keeps a trained network whole and trains "
                                 "one new layer on top")
            if freezing or self.trainable is not None:
                what = f"--freeze {self.freeze}" if freezing else "--trainable"
                raise UsageError(f"{what} needs --weights PATH: without it the frozen layers would stay randomly "
                                 "initialised")

    def _validate_numbers(self) -> None:
        """Numbers that are not numbers, refused before anything is built: NaN and infinity (typer reads 'nan'
        and 'inf' as floats), counts beyond any run, a seed torch cannot take."""
        for flag, value in (("--lr", self.lr), ("--momentum", self.momentum), ("--weight-decay", self.weight_decay),
                            ("--label-smoothing", self.label_smoothing), ("--warmup-epochs", self.warmup_epochs),
                            ("--val-split", self.val_split), ("--width", self.width)):
            if value is not None and not math.isfinite(value):
                raise UsageError(f"{flag} must be a finite number, got {value}")
        if not 0 <= self.momentum < 1:
            raise UsageError(f"--momentum must be in [0, 1), got {self.momentum:g}")
        if self.width is not None and not self.width > 0:
            raise UsageError(f"--width must be positive, got {self.width:g}")
        if not 0 <= self.seed < 2**64:  # torch.manual_seed takes 64 bits
            raise UsageError(f"--seed must be between 0 and 2**64 - 1, got {_short(self.seed)}")
        for flag, count in (("--epochs", self.epochs), ("--batch-size", self.batch_size),
                            ("--patience", self.patience), ("--synthetic-size", self.synthetic_size)):
            if count is not None and count > MAX_COUNT:
                raise UsageError(f"{flag} {_short(count)} is above {MAX_COUNT:,}, beyond any run")
        if self.workers is not None and self.workers > MAX_WORKERS:
            raise UsageError(f"--workers {_short(self.workers)}: at most {MAX_WORKERS} DataLoader processes")
        if self.dataset is Dataset.synthetic:
            self._check_synthetic_memory()

    def _check_synthetic_memory(self) -> None:
        """A synthetic set (training plus a quarter each for validation and test) held as uint8 in memory, and
        as float32 on the device up to 2 GiB (loop.DENSE_BYTES): refused when that exceeds this machine's
        memory, before torch tries to allocate it."""
        from nnkit.archs import get_arch

        try:
            info = get_arch(self.arch)
        except UnknownNameError:
            return  # the arch's own error comes later, with its hint
        if len(info.input) != 3:
            return  # not an image model: training refuses it with its own message
        c, h, w = info.input
        h, w = max(h, info.min_input[0]), max(w, info.min_input[1])
        n = self.synthetic_size
        need = (n + 2 * max(2, n // 4)) * c * h * w + min(4 * n * c * h * w, 2 << 30)  # + the float32 copy
        have = physical_memory()
        if have and need > have:
            raise UsageError(f"--synthetic-size {n:,}: {n:,} images of {c}x{h}x{w} take about "
                             f"{need / 2**30:,.1f} GiB, more than this machine's {have / 2**30:,.1f} GiB")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, Enum):
                d[k] = v.value
            elif isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        kinds = {f.name: f for f in fields(cls)}
        enums = {"dataset": Dataset, "optimizer": Optimizer, "schedule": Schedule, "head": Head}
        args: dict[str, Any] = {}
        for k, v in d.items():
            if k not in kinds:
                continue  # a setting from a newer nnkit: ignored rather than fatal
            if k in enums:
                v = enums[k](v)
            elif k in ("augment", "trainable") and v is not None:
                v = tuple(v)
            elif k == "val_split" and d.get("dataset") in {x.value for x in HAS_FIXED_SPLIT}:
                v = None  # runs saved before --val-split was refused there recorded the unused default
            args[k] = v
        return cls(**args)


MAX_COUNT = 2**31 - 1  # epochs, images, batch size, patience: more is a typo, and int32 in torch's samplers
MAX_WORKERS = 256


def _short(n: int) -> str:
    return f"{n:,}" if n.bit_length() < 100 else f"of {n.bit_length():,} bits"


def absolute_dir(path: str | None) -> str | None:
    """A --data-dir as an absolute path ('~' expanded, '..' folded, symlinks kept), so that a saved config
    still finds the data from another working directory (eval, --resume)."""
    return os.path.abspath(os.path.expanduser(path)) if path else path
