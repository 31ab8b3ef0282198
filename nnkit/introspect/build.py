"""Models built on the meta device: shapes and dtypes without storage, so analysis allocates nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Every parameter and buffer a module registers goes to the meta device as soon as it is created.

    For builders that compute with tensors while they build (torchvision's RegNets round widths with torch),
    which the plain `with torch.device("meta")` cannot run: only storage moves, the arithmetic stays on CPU.
    """
    from torch import nn

    register_parameter = nn.Module.register_parameter
    register_buffer = nn.Module.register_buffer

    def parameter(self: Any, name: str, param: Any) -> None:
        register_parameter(self, name, param)
        if param is not None:
            kind = type(self._parameters[name])
            self._parameters[name] = kind(self._parameters[name].to("meta"),
                                          requires_grad=param.requires_grad)

    def buffer(self: Any, name: str, tensor: Any, persistent: bool = True) -> None:
        register_buffer(self, name, tensor.to("meta") if tensor is not None else None, persistent)

    nn.Module.register_parameter = parameter  # type: ignore[method-assign]
    nn.Module.register_buffer = buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
        nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]


def on_meta(make: Callable[[], Any]) -> Any:
    """make() with every tensor on the meta device; falls back to moving only parameters and buffers."""
    import torch

    try:
        with torch.device("meta"):
            return make()
    except NotImplementedError:  # the builder needed real data ("Cannot copy out of meta tensor")
        with _parameters_on_meta():
            return make()


def build_meta(name: str, **options: Any) -> Any:
    from nnkit.archs import build

    return on_meta(lambda: build(name, **options))
