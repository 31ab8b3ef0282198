"""Models built on the meta device: shapes and dtypes without storage, so analysis allocates nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


# torch.nn.init's in-place initialisers as they reach a torch function mode: the four that hand themselves to
# it whole (uniform_, normal_, constant_, kaiming_uniform_), and the tensor methods the others end in.
_INITIALISERS = ("uniform_", "normal_", "constant_", "kaiming_uniform_")
_FILLS = ("uniform_", "normal_", "fill_", "zero_", "erfinv_", "exponential_", "log_normal_", "cauchy_",
          "geometric_", "random_", "bernoulli_")


def _building_mode(everything: bool) -> Any:
    """A TorchFunctionMode (thread-local, like every torch mode) in which tensors are made on the meta device
    and torch.nn.init's initialisers do nothing to meta tensors.

    everything: every factory without a device of its own makes meta tensors, as `with torch.device("meta")`
    does (torch's own context also sets a process-wide torch.utils._device.CURRENT_DEVICE, which compiled code
    in other threads guards on: not used). Else only torch.empty does: every torch.nn layer makes its
    parameters with it, so builders that compute with tensors while they build (torchvision's RegNets round
    widths with torch) compute on the CPU, and the rest of the model goes to meta when it is built.
    Initialisers are skipped because meta tensors hold no values, and on the meta device each call still runs
    a Python decomposition (ResNet-50's 53 kaiming_normal_ cost 40 ms).
    """
    import torch
    from torch.nn import init
    from torch.overrides import TorchFunctionMode
    from torch.utils._device import _device_constructors

    factories = frozenset(_device_constructors()) if everything else frozenset((torch.empty,))
    skipped = frozenset([getattr(init, n) for n in _INITIALISERS]
                        + [getattr(torch.Tensor, n) for n in _FILLS if hasattr(torch.Tensor, n)])
    tensor, meta = torch.Tensor, torch.device("meta")
    moves = frozenset((tensor.to, tensor.cpu, tensor.cuda))
    all_true = torch._is_all_true  # noqa: SLF001

    def elsewhere(device: Any) -> bool:
        """A device other than the CPU (cuda, cuda:1, mps, 0): the model is being built on meta instead."""
        try:
            return torch.device(device).type not in ("cpu", "meta")
        except (RuntimeError, TypeError):
            return False

    def move(func: Any, args: Any, kwargs: dict[str, Any]) -> Any:
        """t.cpu(), t.cuda(), t.to(device[, dtype]) while building, as Module.cpu/cuda/to call them: a meta
        tensor stays on meta (its dtype may change), and a CPU tensor bound for an absent accelerator goes to
        meta, where the rest of the model is, instead of failing ("Found no NVIDIA driver")."""
        t = args[0]
        if func is tensor.cpu:
            return t if t.is_meta else None
        devices = [a for a in args[1:] if not isinstance(a, (torch.dtype, bool, tensor))]
        others = [a for a in args[1:] if isinstance(a, tensor)]  # t.to(other): other's device and dtype
        target = kwargs.get("device", devices[0] if devices else None)
        if func is tensor.cuda:
            target = "cuda"
        if not t.is_meta and not (elsewhere(target) and not torch.cuda.is_available()):
            return None  # a real move torch can make (builders that compute on the CPU)
        if func is tensor.cuda:
            return t.to(meta)
        dtype = kwargs.get("dtype", next((a for a in args[1:] if isinstance(a, torch.dtype)),
                                         others[0].dtype if others else None))
        return t.to(meta, dtype) if dtype is not None else t.to(meta)

    class Building(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if func in factories:
                device = kwargs.get("device")
                if device is None or (everything and elsewhere(device)):
                    kwargs["device"] = meta  # "cuda" too: nothing is allocated, on an accelerator or not
            elif func in skipped:
                t = args[0] if args else kwargs.get("tensor")
                if isinstance(t, tensor) and t.is_meta:
                    return t
            elif func in moves and args and isinstance(args[0], tensor):
                moved = move(func, args, kwargs)
                if moved is not None:
                    return moved
            elif func is all_true and args and isinstance(args[0], tensor) and args[0].is_meta:
                # torch.distributions validating a prior's parameters while the model is built: meta tensors
                # hold no values, so the check passes (trace.py answers the same while tracing)
                return torch.ones((), dtype=torch.bool)
            return func(*args, **kwargs)

    return Building()


def _without_downloads(make: Callable[[], Any]) -> Callable[[], Any]:
    """torchvision's detection and segmentation builders default weights_backbone to ImageNet weights, so a user
    target such as torchvision.models.detection:fasterrcnn_resnet50_fpn would download them when called as is:
    nnkit never downloads, it calls them with weights_backbone=None (the weights themselves default to None)."""
    import functools
    import inspect

    if not getattr(make, "__module__", "").startswith("torchvision."):
        return make
    try:
        given = inspect.signature(make).parameters.get("weights_backbone")
    except (TypeError, ValueError):  # a builtin or a C callable: nothing to pass
        return make
    if given is None or given.default in (None, inspect.Parameter.empty):
        return make
    return functools.partial(make, weights_backbone=None)


def on_meta(make: Callable[[], Any]) -> Any:
    """make() with every tensor on the meta device; falls back to making only parameters and buffers there.
    torchvision's builders never download backbone weights here (_without_downloads)."""
    from torch import nn

    make = _without_downloads(make)
    try:
        with _building_mode(everything=True):
            return make()
    except NotImplementedError:  # the builder needed real data ("Cannot copy out of meta tensor")
        with _building_mode(everything=False):
            model = make()
        return model.to("meta") if isinstance(model, nn.Module) else model


def build_meta(name: str, **options: Any) -> Any:
    from nnkit.archs import build

    return on_meta(lambda: build(name, **options))


def walk(model: Any) -> list[tuple[str, Any]]:
    """model.named_modules() as a list, in the same order (pre-order, a shared module once, at its first path).

    Why our own: torch's named_modules is a recursive generator, and an analysis walks the model five times;
    on MobileNetV2 those walks cost as much as tracing it.
    """
    out: list[tuple[str, Any]] = []
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [("", model)]
    while stack:
        path, m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        out.append((path, m))
        prefix = path + "." if path else ""
        stack.extend(reversed([(prefix + name, child) for name, child in m._modules.items()  # noqa: SLF001
                               if child is not None]))
    return out
