"""The torch module of a chain written in the layer language (nnkit.core.torchplan's plan, built), the network
builder the trainer and `nnkit eval` share, and the check that a chain fits its data set.

    nnkit train "1x8x8 conv(8,3,p=1) relu flatten fc(10)"      # digits: 8x8 grey images, 10 classes
"""

from __future__ import annotations

from typing import Any

from nnkit.core.torchplan import Plan, is_chain, plan
from nnkit.errors import DataError, UsageError

__all__ = ["chain_info", "chain_net", "chain_target", "check_fits", "is_chain", "network"]


def _make(call: Any) -> Any:
    args = [_make(a) if hasattr(a, "cls") else a for a in call.args]
    return _class(call.home, call.cls)(*args, **dict(call.kwargs))


def _class(home: str, cls: str) -> Any:
    """torch.nn's class, torchvision's, or one of torchplan's HELPERS built from the very text `nnkit code`
    prints."""
    import importlib

    if home == "nn":
        from torch import nn

        return getattr(nn, cls)
    if home:
        return getattr(importlib.import_module(home), cls)
    if cls not in _HELPERS:
        import torch
        from torch import nn

        from nnkit.core.torchplan import HELPERS

        scope: dict[str, Any] = {"torch": torch, "nn": nn, "__name__": "nnkit.train.chain_model"}
        exec(compile(HELPERS[cls], f"<nnkit helper {cls}>", "exec"), scope)  # noqa: S102 - nnkit's own text
        _HELPERS[cls] = scope[cls]
    return _HELPERS[cls]


_HELPERS: dict[str, Any] = {}


def chain_net(p: Plan) -> Any:
    """An nn.Module whose attributes and forward are those `nnkit code` prints for the same plan."""
    from torch import nn

    class ChainNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for m in p.modules:
                self.add_module(m.name, _make(m.call))
            self.sequence = tuple(m.sequence for m in p.modules)

        def forward(self, x: Any) -> Any:
            for seq, layer in zip(self.sequence, self.children()):
                if seq:  # (N, *lead, F): N sequences of prod(lead) steps, as nnkit.core.torchplan.forward_line
                    lead = x.shape[:-1]
                    x = layer(x.reshape(lead[0], -1, x.shape[-1]))[0].reshape(*lead, -1)
                else:
                    x = layer(x)
            return x

        def extra_repr(self) -> str:
            return p.source

    return ChainNet()


def chain_target(text: str) -> Any:
    """The chain's module on the meta device as an analysis Target (nnkit summary --train, --freeze, ...)."""
    from nnkit.introspect.build import on_meta
    from nnkit.introspect.target import Target

    p = plan(text)

    def make() -> Any:
        return on_meta(lambda: chain_net(p))

    return Target(p.source, make(), tuple(p.input), p.batch, None, make)


def chain_info(text: str) -> Any:
    """An ArchInfo for a chain, so the trainer treats it as it treats a named architecture (input, minimum)."""
    from nnkit.archs import ArchInfo

    p = plan(text)
    if len(p.input) != 3:
        raise UsageError(f"chain '{p.source}': takes {_dims(p.input)} features, but training data are images; "
                         "start the chain with CxHxW (digits: 1x8x8)")
    if p.batch is not None:
        raise UsageError(f"chain '{p.source}': the batch comes from --batch-size; write the input as "
                         f"{_dims(p.input)}")
    c, h, w = p.input
    # min_input (1, 1): a data set keeps its own size (no resizing to fit a chain); image folders and synthetic
    # data are read at the chain's input (`input`), as they are read at an architecture's.
    return ArchInfo(name=p.source, builder="nnkit.train.chain_model:network", input=(c, h, w), min_input=(1, 1),
                    family="chain", params=p.params, macs=0, options=())


def check_fits(text: str, shape: tuple[int, ...], classes: int, data: str, new_head: bool = False) -> None:
    """Refuse, before training, a chain whose input is not the data's images or whose output is not one score per
    class (with --head new: a vector, which the new layer maps to the classes)."""
    p = plan(text)
    if tuple(p.input) != tuple(shape):
        raise DataError(f"chain '{p.source}': takes {_dims(p.input)} images, {data} gives {_dims(shape)}; "
                        f"start the chain with {_dims(shape)}")
    if len(p.output) != 1:
        what = "a vector for --head new to put its layer on" if new_head else "one score per class"
        raise DataError(f"chain '{p.source}': ends in {_dims(p.output)}, not {what}; {data} has "
                        f"{classes} classes: end it with flatten fc({classes})")
    if p.output[0] != classes and not new_head:
        raise DataError(f"chain '{p.source}': ends in {p.output[0]} outputs, {data} has {classes} classes: end it "
                        f"with fc({classes})")


def network(arch: str, *, num_classes: int, in_channels: int, width: float | None = None) -> Any:
    """The module to train or evaluate: a chain as written, or a named architecture for this data."""
    if is_chain(arch):
        if width is not None:
            raise UsageError("--width applies to named architectures; a chain is built as written")
        return chain_net(plan(arch))
    from nnkit.archs import build

    return build(arch, num_classes=num_classes, in_channels=in_channels, width=width)


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))
