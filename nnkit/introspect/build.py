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

    class Building(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if func in factories:
                if kwargs.get("device") is None:
                    kwargs["device"] = meta
            elif func in skipped:
                t = args[0] if args else kwargs.get("tensor")
                if isinstance(t, tensor) and t.is_meta:
                    return t
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
