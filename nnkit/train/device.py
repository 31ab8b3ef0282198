"""The device a run or an evaluation uses, from --device (default: CUDA where there is one), and its --amp dtype."""

from __future__ import annotations

from typing import Any

from nnkit.errors import UsageError
from nnkit.train import dist as D


def resolve_device(name: str | None, d: D.Dist | None = None) -> Any:
    import torch

    if name is None:
        if torch.cuda.is_available():
            name = "cuda"
        else:
            name = "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"--device {name}: not a device (cpu, cuda, cuda:1, mps)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine")
        if d is not None and d.on and dev.index is None:
            dev = torch.device("cuda", d.local_rank)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available on this machine")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {name}: unsupported device type {dev.type}")
    return dev


def amp_dtype(device: Any) -> Any:
    """bf16 where the device has it (CPU, Ampere+ CUDA), else fp16 (older CUDA, with a GradScaler)."""
    import torch

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16
    raise UsageError(f"--amp: mixed precision is not supported on {device.type} by nnkit (use cpu or cuda)")
