"""The optimizers nnkit trains with and counts the memory of (`nnkit train --optimizer`, `nnkit summary --train
--optimizer`), and the state each keeps per parameter (PyTorch's torch.optim: SGD with momentum one
momentum_buffer; Adam and AdamW exp_avg and exp_avg_sq); and the transfer-learning vocabularies of `--freeze`
and `--head`, which train, tune and summary share (here, not in train/config.py: every command's options are
built at start-up, and the arithmetic commands must not pay for the training configuration)."""

from __future__ import annotations

from enum import Enum


class Optimizer(str, Enum):
    sgd = "sgd"  # with momentum: one buffer per parameter (plain SGD holds none)
    adam = "adam"  # exp_avg and exp_avg_sq
    adamw = "adamw"


STATE_PER_PARAM = {Optimizer.sgd: 1, Optimizer.adam: 2, Optimizer.adamw: 2}


class Freeze(str, Enum):
    """--freeze's named values; any other value names a module (frozen up to and including it)."""

    none = "none"
    backbone = "backbone"


class Head(str, Enum):
    own = "own"  # the architecture's classifier, sized to the data's classes (loaded where the shapes match)
    new = "new"  # the loaded network whole, its outputs included, and one new fc layer on top: only it trains
