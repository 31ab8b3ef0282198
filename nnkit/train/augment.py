"""Batched augmentation on tensors already on the device: one call per batch, no per-sample Python (issue 5).

Each transform draws its own random numbers per sample from the generator it is given, so a seeded generator
gives the same batch on every run (and on resume). Images arrive normalised (mean 0 per channel), so padding
with 0 pads with the data set's mean colour.
"""

from __future__ import annotations

import math
from typing import Any

ROTATE_DEGREES = 15.0  # rotate: uniform in [-15, 15] degrees
SCALE_RANGE = (0.9, 1.1)  # scale: uniform zoom factor
NOISE_STD = 0.1  # noise: Gaussian, in units of the normalised image (about a tenth of one std)


def crop_padding(h: int, w: int) -> int:
    """The classic CIFAR recipe pads 32x32 by 4: an eighth of the side."""
    return max(1, round(min(h, w) / 8))


def augment(x: Any, names: tuple[str, ...], g: Any, share: tuple[int, int, int] | None = None) -> Any:
    """x: (B, C, H, W) float on any device; names from config.AUGMENTS, applied in a fixed order.

    share=(lo, hi, total): x is rows lo:hi of a global batch of `total` (one rank's share under torchrun); the
    random numbers are drawn for the whole global batch and sliced, so every image gets what it would get in a
    single process.
    """
    import torch
    import torch.nn.functional as F

    if not names:
        return x
    b, _, h, w = x.shape
    dev = x.device
    lo, hi, total = share or (0, b, b)

    def rand(*shape: int) -> Any:
        return torch.rand((total, *shape), device=dev, generator=g)[lo:hi]

    def coin() -> Any:
        return (rand() < 0.5).view(b, 1, 1, 1)

    if "flip" in names:
        x = torch.where(coin(), x.flip(-1), x)
    if "vflip" in names:
        x = torch.where(coin(), x.flip(-2), x)
    if "rotate" in names or "scale" in names:
        angle = torch.zeros(b, device=dev)
        zoom = torch.ones(b, device=dev)
        if "rotate" in names:
            angle = (rand() * 2 - 1) * math.radians(ROTATE_DEGREES)
        if "scale" in names:
            zoom = SCALE_RANGE[0] + (SCALE_RANGE[1] - SCALE_RANGE[0]) * rand()
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # sampling grid: inverse of the zoom
        theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], 1),
                             torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if "crop" in names:
        p = crop_padding(h, w)
        padded = F.pad(x, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (total,), device=dev, generator=g)[lo:hi]
        ox = torch.randint(0, 2 * p + 1, (total,), device=dev, generator=g)[lo:hi]
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, :, None]  # (B, H, 1)
        cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, :]  # (B, 1, W)
        batch = torch.arange(b, device=dev)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
    if "noise" in names:
        x = x + NOISE_STD * torch.randn((total, *x.shape[1:]), device=dev, generator=g, dtype=x.dtype)[lo:hi]
    return x.contiguous()
