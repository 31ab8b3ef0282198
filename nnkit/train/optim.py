"""The optimizer, the learning-rate schedule step by step, and the gradient norm of each step."""

from __future__ import annotations

import math
from typing import Any

from nnkit.train.config import Optimizer, Schedule, TrainConfig


def make_optimizer(cfg: TrainConfig, params: list[Any]) -> Any:
    import torch

    lr, wd = cfg.learning_rate, cfg.weight_decay
    if cfg.optimizer is Optimizer.sgd:
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=wd)
    if cfg.optimizer is Optimizer.adam:
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


def lr_at(step: int, total: int, per_epoch: int, cfg: TrainConfig) -> float:
    """The learning rate of step `step` (0-based) of `total`: linear warmup, then the schedule.

    onecycle is torch.optim.lr_scheduler.OneCycleLR with its defaults (Smith & Topin 2019; pct_start 0.3,
    div_factor 25, final_div_factor 1e4, cosine annealing), step for step; --warmup-epochs sets its rising phase.
    step multiplies by 0.1 after a third and after two thirds of the steps (MultiStepLR, gamma 0.1).
    """
    base = cfg.learning_rate
    warm = int(round(cfg.warmup_epochs * per_epoch))
    if cfg.schedule is Schedule.onecycle:
        lo, end = base / 25, base / 25 / 1e4
        up_end = float(warm - 1) if warm else 0.3 * total - 1  # OneCycleLR's phase end: pct_start*total - 1

        def anneal(start: float, stop: float, pct: float) -> float:
            return stop + (start - stop) / 2 * (math.cos(math.pi * pct) + 1)

        if step <= up_end:
            return anneal(lo, base, step / up_end) if up_end > 0 else base
        return anneal(base, end, (step - up_end) / max(1e-12, total - 1 - up_end))
    if step < warm:
        return base * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    if cfg.schedule is Schedule.cosine:
        return base * (1 + math.cos(math.pi * t)) / 2
    if cfg.schedule is Schedule.step:
        return base * 0.1 ** min(2, (3 * (step - warm)) // max(1, total - warm))
    return base


def grad_norm(params: list[Any], clip: float | None, acc: Any) -> None:
    """The total 2-norm of the gradients (clipped to `clip` when given, torch.nn.utils.clip_grad_norm_), added to
    acc = (sum, steps, max) on the device, without a synchronisation. A step whose gradients are not finite
    (fp16 overflow, which the GradScaler skips) is left out of the statistics."""
    import torch

    if clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    norm = norm.detach().double()
    ok = torch.isfinite(norm)
    acc[0] += torch.where(ok, norm, 0.0)
    acc[1] += ok.double()
    acc[2] = torch.maximum(acc[2], torch.where(ok, norm, 0.0))
