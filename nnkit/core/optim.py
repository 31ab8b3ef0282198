"""The optimizers nnkit trains with and counts the memory of (`nnkit train --optimizer`, `nnkit summary --train
--optimizer`), and the state each keeps per parameter (PyTorch's torch.optim: SGD with momentum one
momentum_buffer; Adam and AdamW exp_avg and exp_avg_sq)."""

from __future__ import annotations

from enum import Enum


class Optimizer(str, Enum):
    sgd = "sgd"  # with momentum: one buffer per parameter (plain SGD holds none)
    adam = "adam"  # exp_avg and exp_avg_sq
    adamw = "adamw"


STATE_PER_PARAM = {Optimizer.sgd: 1, Optimizer.adam: 2, Optimizer.adamw: 2}
