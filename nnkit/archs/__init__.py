"""The registry of named architectures: names, defaults and a dotted path to each builder.

Listing names, shell completion and `nnkit models` never import torch: what they show comes from the generated
table in nnkit/archs/_table.py (regenerate with `python -m nnkit.introspect.registry`, which measures the models
and so lives with the analysis; tests/test_archs.py fails when it drifts). `build` imports torch and the builder
only when a model is wanted. Stock models are delegated to torchvision's own registry (STYLE.md, practice 3);
lenet5 and mobilenet_v1 are ours.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

from nnkit.errors import UnknownNameError, UsageError

OPTIONS = ("num_classes", "in_channels", "width")


@dataclass(frozen=True)
class ArchInfo:
    name: str
    builder: str  # "module:function", imported only by build()
    input: tuple[int, ...]  # default (C, H, W), (C, T, H, W) for video: what the weights were measured at
    min_input: tuple[int, int]  # smallest (H, W) the network accepts
    family: str
    params: int  # at default settings
    macs: int  # at the default input (conv + linear + matmul, docs/conventions.md)
    weights: str | None = None  # torchvision weights enum member, e.g. "ResNet50_Weights.IMAGENET1K_V2"
    options: tuple[str, ...] = ("num_classes", "in_channels")
    kwargs: tuple[tuple[str, Any], ...] = field(default=())  # builder arguments that make the default model
    width_kwarg: str | None = None  # the builder's name for the width multiplier, where it has one
    in_channels_native: bool = False  # the builder takes in_channels itself (else the stem conv is replaced)
    task: str = "classification"  # or segmentation, video, detection, flow: what it does (nnkit models --task)

    @property
    def published(self) -> tuple[int, float] | None:
        """torchvision's (num_params, GMACs) for the weights, read from the table (no torch)."""
        from nnkit.archs._table import PUBLISHED

        return PUBLISHED.get(self.name)


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _registry() -> dict[str, ArchInfo]:
    from nnkit.archs._table import ARCHS

    return ARCHS


def arch_names() -> list[str]:
    return sorted(_registry(), key=_natural)


TASKS = ("classification", "segmentation", "video", "detection", "flow")


def list_archs(pattern: str | None = None, task: str | None = None) -> list[ArchInfo]:
    """Every architecture, or those matching a shell wildcard ('resnet*', '*_bn') and doing `task`, in natural
    order."""
    reg = _registry()
    names = arch_names()
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern.lower())]
    if task is not None:
        if task not in TASKS:
            raise UnknownNameError("task", task, TASKS)
        names = [n for n in names if reg[n].task == task]
    return [reg[n] for n in names]


def get_arch(name: str) -> ArchInfo:
    reg = _registry()
    key = name.strip().lower().replace("-", "_")
    if key not in reg:
        raise UnknownNameError("architecture", name, reg)
    return reg[key]


def _import(dotted: str) -> Any:
    import importlib

    module, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(module), attr)


def build(name: str, *, num_classes: int | None = None, in_channels: int | None = None,
          width: float | None = None, **kw: Any) -> Any:
    """The model `name` as a torch.nn.Module, built on the current default device, never with weights.

    Build on the meta device (nnkit.introspect.build_meta) to analyse without allocating.
    """
    return build_info(get_arch(name), num_classes=num_classes, in_channels=in_channels, width=width, **kw)


def build_info(info: ArchInfo, *, num_classes: int | None = None, in_channels: int | None = None,
               width: float | None = None, **kw: Any) -> Any:
    """`build` for an ArchInfo that need not be registered yet (the table generator uses it)."""
    asked = {"num_classes": num_classes, "in_channels": in_channels, "width": width}
    for option, value in asked.items():
        if value is None:
            continue
        if option not in info.options:
            can = ", ".join("--" + o.replace("_", "-") for o in info.options) or "no options"
            raise UsageError(f"{info.name} does not take --{option.replace('_', '-')} (it takes {can})")
        if value <= 0:
            raise UsageError(f"--{option.replace('_', '-')} must be positive, got {value:g}")
    args: dict[str, Any] = dict(info.kwargs)
    args.update(kw)
    if num_classes is not None:
        args["num_classes"] = num_classes
    if width is not None:
        args[info.width_kwarg or "width"] = width
    if in_channels is not None and info.in_channels_native:
        args["in_channels"] = in_channels
    if info.weights is not None:
        args["weights"] = None  # never download
    import warnings

    builder = _import(info.builder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's init warnings (googlenet, inception) say nothing here
        model = builder(**args)
    if in_channels is not None and not info.in_channels_native:
        _replace_stem(model, in_channels)
    return model


def _replace_stem(model: Any, in_channels: int) -> None:
    """Swap the first convolution (the stem: Conv2d, Conv3d for video) for one with the same settings and
    `in_channels` inputs."""
    from torch import nn

    for path, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            break
    else:  # pragma: no cover - every registered architecture has a conv stem
        raise UsageError("this model has no convolution to take --in-channels")
    if module.in_channels == in_channels:
        return
    if module.groups != 1:
        raise UsageError(f"--in-channels: the first convolution ({path}) is grouped")
    device = module.weight.device
    new = type(module)(in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                    module.dilation, module.groups, module.bias is not None, module.padding_mode,
                    device=device, dtype=module.weight.dtype)
    parent = model
    *parents, leaf = path.split(".")
    for p in parents:
        parent = getattr(parent, p)
    setattr(parent, leaf, new)
