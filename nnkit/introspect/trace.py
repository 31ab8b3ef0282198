"""One forward pass on the meta device with hooks on every module and FlopCounterMode around it.

Each module call becomes an event with its input/output shapes and its inclusive MACs (the counter's total
before and after the call); `self` MACs are what a module computes outside its children (attention matmuls
written in a parent's forward, for instance), so that the rows always add up to the total.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nnkit.errors import GeometryError


@dataclass
class Call:
    order: int
    path: str
    kind: str
    leaf: bool
    input: tuple[int, ...] | None
    output: tuple[int, ...] | None = None
    out_bytes: int = 0
    macs: int = 0  # inclusive of children
    child_macs: int = 0
    parent: int | None = None  # index of the enclosing call
    children: list[int] = field(default_factory=list)


@dataclass
class Trace:
    calls: list[Call]
    macs: int
    by_op: dict[str, int]  # MACs per aten op (convolution, addmm, mm, bmm, ...)
    output: tuple[int, ...]


def _first_tensor(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for v in value:
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


def _tensor_bytes(value: Any) -> int:
    import torch

    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def _shape(t: Any, batched: bool = True) -> tuple[int, ...] | None:
    if t is None:
        return None
    return tuple(t.shape[1:]) if batched and t.dim() > 0 else tuple(t.shape)


def run(model: Any, shape: tuple[int, ...], name: str = "model") -> Trace:
    """Trace one item of `shape` through `model` (already on the meta device)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    calls: list[Call] = []
    stack: list[int] = []
    paths = {id(m): p for p, m in model.named_modules()}
    leaves = {id(m) for m in model.modules() if next(iter(m.children()), None) is None}

    def total() -> int:
        return sum(counter.flop_counts["Global"].values()) // 2 if "Global" in counter.flop_counts else 0

    def pre(module: Any, args: Any) -> None:
        c = Call(order=len(calls), path=paths.get(id(module), "?"), kind=type(module).__name__,
                 leaf=id(module) in leaves, input=_shape(_first_tensor(args)),
                 parent=stack[-1] if stack else None)
        c.macs = -total()
        if c.parent is not None:
            calls[c.parent].children.append(c.order)
        calls.append(c)
        stack.append(c.order)

    def post(module: Any, args: Any, output: Any) -> None:
        c = calls[stack.pop()]
        c.macs += total()
        c.output = _shape(_first_tensor(output))
        c.out_bytes = _tensor_bytes(output)
        if c.parent is not None:
            calls[c.parent].child_macs += c.macs

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    from nnkit.introspect.build import pass_through

    x = torch.empty((1, *shape), device="meta")
    try:
        with torch.no_grad(), pass_through(model), counter:
            out = model(x)
    except Exception as exc:  # noqa: BLE001 - the layer that failed is named by the caller
        failing = calls[stack[-1]] if stack else None
        raise _Failure(failing, exc) from None
    finally:
        for h in handles:
            h.remove()
    by_op: dict[str, int] = {}
    for op, flops in counter.flop_counts.get("Global", {}).items():
        key = str(op).split(".")[1] if "." in str(op) else str(op)
        by_op[key] = by_op.get(key, 0) + flops // 2
    return Trace(calls=calls, macs=sum(by_op.values()), by_op=by_op, output=_shape(_first_tensor(out)) or ())


class _Failure(Exception):
    def __init__(self, call: Call | None, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.call = call
        self.exc = exc


def failure_message(target: str, shape: tuple[int, ...], failure: _Failure, smallest: tuple[int, int] | None) -> \
        GeometryError:
    msg = str(failure.exc).strip().splitlines()[0] if str(failure.exc).strip() else type(failure.exc).__name__
    where = ""
    if failure.call is not None:
        c = failure.call
        inp = "x".join(map(str, c.input)) if c.input else "?"
        where = (f"layer {c.path} ({c.kind})" if c.path else f"the model ({c.kind})") + f" fails on its input {inp}: "
    hint = (f"; the smallest input that works is {shape[0]}x{smallest[0]}x{smallest[1]}" if smallest
            else "; no input size up to 4096 works")
    return GeometryError(f"{target} on {'x'.join(map(str, shape))}: {where}{msg}{hint}")
