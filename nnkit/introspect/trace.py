"""One forward pass on the meta device that records every module call and runs under a dispatch mode that
counts MACs and follows receptive fields.

Each module call becomes an event with its input/output shapes and its inclusive MACs (the counter's total
before and after the call); `self` MACs are what a module computes outside its children (attention matmuls
written in a parent's forward, for instance), so that the rows always add up to the total.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from nnkit.errors import GeometryError


@dataclass(slots=True)
class Call:
    order: int
    path: str
    kind: str
    input: tuple[int, ...] | None
    output: tuple[int, ...] | None = None
    out_bytes: int = 0
    macs: int = 0  # inclusive of children
    child_macs: int = 0
    parent: int | None = None  # index of the enclosing call
    children: list[int] = field(default_factory=list)
    rf: Any = None  # receptive-field state of the output (nnkit.introspect.rf), when fields are followed


@dataclass
class Trace:
    calls: list[Call]
    macs: int
    by_op: dict[str, int]  # MACs per aten op (convolution, addmm, mm, bmm, ...)
    output: tuple[int, ...]
    elsewhere: int = 0  # calls of the model's modules in other threads: not seen (no rows, no MACs)
    rf: Any = None  # receptive-field state of the model's output
    misaligned: list[str] = field(default_factory=list)  # modules where paths with misaligned fields merge
    gates: int = 0  # multiplications by a global gate (squeeze-excitation)
    upsampled: list[str] = field(default_factory=list)  # modules where upsampling ends the fields


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


def _shape(t: Any) -> tuple[int, ...] | None:
    """A tensor's shape without its batch dimension (a 0-d tensor: ())."""
    return None if t is None else tuple(t.shape[1:]) if t.dim() else ()


def _shapes(value: Any, tensor: type) -> Any:
    if isinstance(value, tensor):
        return value.shape
    if isinstance(value, (list, tuple)) and any(isinstance(v, tensor) for v in value):
        return type(value)(_shapes(v, tensor) for v in value)
    return value


def _formulas() -> dict[Any, Any]:
    """torch.utils.flop_counter's formulas, called on shapes as its shape_wrapper does, without pytree-mapping
    every argument (that mapping cost more than the rest of the pass on MobileNetV2)."""
    import torch
    from torch.utils.flop_counter import flop_registry

    tensor = torch.Tensor

    def on_shapes(f: Any) -> Any:
        def count(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
            return f(*(_shapes(a, tensor) for a in args), out_shape=_shapes(out_val, tensor),
                     **{k: _shapes(v, tensor) for k, v in kwargs.items()})
        return count

    return {k: on_shapes(f.__wrapped__) if hasattr(f, "__wrapped__") else f for k, f in flop_registry.items()}


def _conv_shape(x: Any, w: Any, bias: Any, stride: Any, padding: Any, dilation: Any, transposed: bool,
                output_padding: Any, groups: int) -> list[int] | None:
    """Output shape of a plain 2-d aten.convolution on contiguous meta tensors, or None for anything else.

    Why our own: torch's meta kernel for convolution is Python (torch._meta_registrations.meta_conv) and was
    half the time of a traced MobileNetV2. Every case it would reject, and every unusual one (transposed,
    1-d/3-d, channels-last, mixed dtypes), goes to torch's kernel, so errors and results stay torch's own.
    """
    if transposed or x.dim() != 4 or w.dim() != 4 or not x.is_contiguous() or not w.is_contiguous():
        return None
    if x.dtype != w.dtype or groups < 1 or len(stride) != 2 or len(padding) != 2 or len(dilation) != 2:
        return None
    n, c, *hw = x.shape
    o, ci, *k = w.shape
    if c != ci * groups or o % groups or (bias is not None and (bias.dim() != 1 or bias.shape[0] != o)):
        return None
    out = [n, o]
    for i in range(2):
        s, p, d = stride[i], padding[i], dilation[i]
        if s < 1 or d < 1 or p < 0:
            return None
        span = hw[i] + 2 * p - d * (k[i] - 1) - 1
        if span < 0:
            return None
        out.append(span // s + 1)
    return out


def _shortcuts() -> dict[Any, Any]:
    """Operators whose meta kernels are Python (torch._meta_registrations, torch._refs, torch._decomp) and
    that an analysis meets hundreds of times: convolutions, linear layers (addmm, mm), attention (bmm,
    softmax, scaling) and residual adds. Each answers its plain case (meta tensors of one dtype, matching
    shapes) with (output, op counted, MACs) and declines anything else with None, so that torch's kernel runs,
    errors included. MACs follow torch.utils.flop_counter's formulas (mm: n*k*m; bmm: b*n*k*m; conv: batch *
    prod(weight) * output positions). Without them a traced ViT-B/16 spent most of its time in addmm's
    decomposition and in broadcasting checks.
    """
    import torch

    aten = torch.ops.aten
    tensor = torch.Tensor
    empty = torch.empty

    def same(*ts: Any) -> bool:
        return all(isinstance(t, tensor) and t.is_meta and t.dtype == ts[0].dtype for t in ts)

    def new(shape: Any, like: Any) -> Any:
        return empty(shape, dtype=like.dtype, device="meta")

    def convolution(args: tuple[Any, ...]) -> Any:
        x, w, b = args[0], args[1], args[2]
        if not (x.is_meta and w.is_meta and (b is None or b.is_meta)):
            return None
        shape = _conv_shape(*args)
        return None if shape is None else (new(shape, x), "convolution",
                                           shape[0] * w.numel() * shape[2] * shape[3])

    def mm(args: tuple[Any, ...]) -> Any:
        a, b = args
        if not (same(a, b) and a.dim() == 2 and b.dim() == 2 and a.shape[1] == b.shape[0]):
            return None
        return new((a.shape[0], b.shape[1]), a), "mm", a.shape[0] * a.shape[1] * b.shape[1]

    def addmm(args: tuple[Any, ...]) -> Any:  # beta = alpha = 1 (they come as keywords otherwise)
        if len(args) != 3:
            return None
        bias, a, b = args
        if not (same(bias, a, b) and a.dim() == 2 and b.dim() == 2 and a.shape[1] == b.shape[0]
                and bias.dim() == 1 and bias.shape[0] == b.shape[1]):
            return None
        return new((a.shape[0], b.shape[1]), a), "addmm", a.shape[0] * a.shape[1] * b.shape[1]

    def bmm(args: tuple[Any, ...]) -> Any:
        a, b = args
        if not (same(a, b) and a.dim() == 3 and b.dim() == 3 and a.shape[0] == b.shape[0]
                and a.shape[2] == b.shape[1]):
            return None
        return new((a.shape[0], a.shape[1], b.shape[2]),
                   a), "bmm", a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]

    def pointwise(inplace: bool) -> Any:  # same shapes, no broadcasting, no alpha
        def op(args: tuple[Any, ...]) -> Any:
            if len(args) != 2:
                return None
            a, b = args
            if not (same(a, b) and a.shape == b.shape and a.is_contiguous() and b.is_contiguous()):
                return None
            return (a if inplace else new(a.shape, a)), None, 0
        return op

    def scaled(args: tuple[Any, ...]) -> Any:  # float tensor times a Python number: same dtype
        a, k = args
        if not (a.is_meta and a.is_floating_point() and type(k) in (int, float) and a.is_contiguous()):
            return None
        return new(a.shape, a), None, 0

    def softmax(args: tuple[Any, ...]) -> Any:  # _safe_softmax(x, dim) without a dtype
        a = args[0]
        if len(args) != 2 or not (a.is_meta and a.is_floating_point() and a.is_contiguous()):
            return None
        return new(a.shape, a), None, 0

    return {aten.convolution.default: convolution, aten.mm.default: mm, aten.addmm.default: addmm,
            aten.bmm.default: bmm, aten.add.Tensor: pointwise(False), aten.mul.Tensor: pointwise(False),
            aten.add_.Tensor: pointwise(True), aten.mul_.Tensor: pointwise(True), aten.mul.Scalar: scaled,
            aten._safe_softmax.default: softmax}  # noqa: SLF001


@functools.cache
def _mode(dynamo: bool = True) -> Any:
    """A TorchDispatchMode that counts MACs with torch.utils.flop_counter's own formulas and hands every
    operator to the receptive-field tracker.

    Why not FlopCounterMode itself: it attributes every operator to all enclosing modules through a
    ModuleTracker of its own and pytree-maps the arguments of every call; the tracer already knows the
    modules, and that bookkeeping was most of the time an analysis took. The formulas, and FlopCounterMode's
    rule of decomposing operators it has no formula for, are kept, so counts stay equal to FlopCounterMode's.

    dynamo=False: without the torch._dynamo.disable wrapper torch puts around every mode's __torch_dispatch__,
    whose first call imports torch._dynamo, 1.2 s of a 5 s `nnkit summary lenet5` here. The wrapper keeps
    torch.compile from compiling into the mode; nothing can be compiled before torch._dynamo is imported, so
    run() asks for it only once it is (torchvision imports it, so its models keep the wrapper at no cost).
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    shortcuts, registry = _shortcuts(), _formulas()
    # per operator: has a CompositeImplicitAutograd kernel to decompose into
    decomposable: dict[Any, bool] = {}

    class Counting(TorchDispatchMode):
        convolution = staticmethod(shortcuts[torch.ops.aten.convolution.default])

        @classmethod
        # read once, as the class is made (TorchDispatchMode.__init_subclass__)
        def _should_skip_dynamo(cls) -> bool:
            return dynamo

        def __init__(self, fields: Any) -> None:
            super().__init__()
            self.macs = 0
            self.by_op: dict[str, int] = {}
            self.fields = fields

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            packet = getattr(func, "_overloadpacket", func)
            quick = shortcuts.get(func)
            answer = quick(args) if quick is not None and not kwargs else None
            if answer is not None:
                out, op, macs = answer
                if op is not None:
                    self.add(op, macs)
            else:
                kwargs = kwargs or {}
                formula = registry.get(packet)
                if formula is None:
                    can = decomposable.get(func)
                    if can is None:
                        can = decomposable[func] = torch._C._dispatch_has_kernel_for_dispatch_key(  # noqa: SLF001
                            func.name(), torch._C.DispatchKey.CompositeImplicitAutograd)  # noqa: SLF001
                    if can:
                        with self:
                            out = func.decompose(*args, **kwargs)
                        if out is not NotImplemented:
                            return out
                out = func(*args, **kwargs)
                if formula is not None:
                    self.add(packet.__name__, formula(*args, **kwargs, out_val=out) // 2)  # 2 FLOPs per MAC
            if self.fields is not None:
                self.fields.op(packet, args, out)
            return out

        def add(self, name: str, macs: int) -> None:
            self.macs += macs
            self.by_op[name] = self.by_op.get(name, 0) + macs

    return Counting


@contextlib.contextmanager
def _direct_convolutions(named: list[tuple[str, Any]], counter: Any) -> Iterator[None]:
    """A context in which this model's plain nn.Conv2d modules answer with the convolution shortcut
    themselves, as the dispatch mode would for the aten.convolution that F.conv2d calls (same arguments, same
    MACs, the same operator handed to the field follower), without the way through torch's dispatcher into
    Python and back, which was more than half of each call (14 us against 6 on this machine; MobileNetV2 has
    52). nn.Conv2d.forward is replaced for the duration (build.replaced), for calls in this thread; anything
    else runs torch's: subclasses, copies made while the model runs, instances with a _conv_forward or forward
    of their own, a class whose forward someone else replaced, and whatever the shortcut declines (padding
    modes, string padding, settings that are not pairs)."""
    import torch
    from torch import nn

    from nnkit.introspect.build import replaced, this_thread, torchs_own

    forward = nn.Conv2d.forward
    convs = {id(m) for _, m in named if type(m) is nn.Conv2d}
    if not convs or not (torchs_own(forward, "Conv2d.forward")
                         and torchs_own(nn.Conv2d._conv_forward, "Conv2d._conv_forward")):  # noqa: SLF001
        yield
        return
    get_ident = threading.get_ident
    aten_conv = torch.ops.aten.convolution
    convolution = counter.convolution
    tensor = torch.Tensor
    no_dispatch = torch._C._DisableTorchDispatch  # noqa: SLF001

    # settings read at each call: a model may change them
    def direct(self: Any, *args: Any, **kwargs: Any) -> Any:
        if id(self) in convs and len(args) == 1 and not kwargs and isinstance(args[0], tensor) \
                and self.padding_mode == "zeros" and "_conv_forward" not in vars(self) \
                and get_ident() == scope.thread:
            params = self._parameters  # noqa: SLF001
            w, b = params.get("weight"), params.get("bias")
            stride, padding, dilation = self.stride, self.padding, self.dilation
            if isinstance(w, tensor) and (b is None or isinstance(b, tensor)) and type(stride) is tuple \
                    and type(padding) is tuple and type(dilation) is tuple:
                full = (args[0], w, b, stride, padding, dilation, False, (0, 0), self.groups)
                with no_dispatch():  # its torch.empty, which the mode would otherwise see (5 times the cost)
                    answer = convolution(full)
                if answer is not None:
                    out, op, macs = answer
                    counter.add(op, macs)
                    if counter.fields is not None:
                        counter.fields.op(aten_conv, full, out)
                    return out
        return forward(self, *args, **kwargs)

    with this_thread() as scope, replaced(nn.Conv2d, "forward", direct):
        yield


def run(model: Any, shape: tuple[int, ...], name: str = "model", fields: bool = True,
        named: list[tuple[str, Any]] | None = None, tracker: Any = None) -> Trace:
    """Trace one item of `shape` through `model` (already on the meta device); with `fields`, receptive fields
    are followed through the same pass (nnkit.introspect.rf). `tracker`: another follower of tensors with the
    interface of rf.Follower (nnkit.introspect.dwsep follows depthwise outputs), given where() as its
    argument."""
    import torch
    from torch import nn
    from torch.nn.modules import module as nn_module

    from nnkit.introspect.build import PATCHING, pass_through, replaced, this_thread, walk

    calls: list[Call] = []
    stack: list[int] = []

    named = named or walk(model)

    def where() -> str:
        return calls[stack[-1]].path if stack else ""

    if tracker is not None:
        tracker = tracker(where)
    elif fields:
        from nnkit.introspect.rf import Fields

        tracker = Fields(where)
    counter = _mode("torch._dynamo" in sys.modules)(tracker)

    tensor = torch.Tensor
    failed: list[Any] = [None]  # (innermost call, the exception propagating out of it)

    def _input(args: Any) -> tuple[int, ...] | None:
        return _shape(args[0] if args and isinstance(args[0], tensor) else _first_tensor(args))

    def enter(path: str, kind: str, args: Any) -> None:
        parent = stack[-1] if stack else None
        c = Call(len(calls), path, kind, _input(args), parent=parent, macs=-counter.macs)
        if parent is not None:
            calls[parent].children.append(c.order)
        calls.append(c)
        stack.append(c.order)

    def refresh(module: Any, args: Any) -> None:  # after the pre-hooks: the input the module really gets
        calls[stack[-1]].input = _input(args)

    def leave(output: Any, exc: BaseException | None) -> None:
        c = calls[stack.pop()]
        c.macs += counter.macs
        if c.parent is not None:
            calls[c.parent].child_macs += c.macs
        if exc is not None:
            # innermost: the first call this exception leaves
            if failed[0] is None or failed[0][1] is not exc:
                failed[0] = (c, exc)
            return  # the row keeps what it computed before it raised; the model may catch it and go on
        if isinstance(output, tensor):
            first = output
            c.out_bytes = output.numel() * output.element_size()
        else:
            first = _first_tensor(output)
            c.out_bytes = _tensor_bytes(output)
        c.output = _shape(first)
        if tracker is not None:
            c.rf = tracker.of(first)

    # Every call of one of the model's modules is recorded around torch's own nn.Module._call_impl, which
    # nn.Module.__call__ runs and which is replaced for the duration (build.replaced): the call is entered
    # before any hook runs (so that a pre-hook that raises finds its call on the stack) and left after all of
    # them (rows show what the model's own hooks hand on). Why not global module hooks, as before: with any
    # hook registered, torch takes the slow path of _call_impl for every module, which with our two hooks cost
    # a tenth of a traced MobileNetV2. Modules that are not the model's (made or copied while it runs, another
    # thread's) go straight to torch's, and so do the model's own called in other threads (a thread pool in
    # its forward): the dispatch mode that counts is this thread's alone, so they are counted as unseen
    # instead.
    call_impl = nn.Module._call_impl  # noqa: SLF001
    paths = {id(m): p for p, m in named}
    global_pre_hooks = nn_module._global_forward_pre_hooks  # noqa: SLF001
    get_ident = threading.get_ident
    elsewhere = [0]  # calls of the model's modules in other threads

    def traced_call_impl(module: Any, *args: Any, **kwargs: Any) -> Any:
        path = paths.get(id(module))
        if path is None or get_ident() != scope.thread:
            if path is not None:
                elsewhere[0] += 1
            return call_impl(module, *args, **kwargs)
        enter(path, type(module).__name__, args)
        # Pre-hooks may change the input: `refresh`, run after them for this call only, records what it gets.
        hooked = module._forward_pre_hooks or global_pre_hooks  # noqa: SLF001
        hook = module.register_forward_pre_hook(refresh) if hooked else None
        try:
            output = call_impl(module, *args, **kwargs)
        except BaseException as exc:  # a model may catch it and go on: the stack stays consistent
            leave(None, exc)
            raise
        finally:
            if hook is not None:
                hook.remove()
        leave(output, None)
        return output

    x = torch.empty((1, *shape), device="meta")
    if tracker is not None:
        tracker.start(x)
    with PATCHING, this_thread() as scope, contextlib.ExitStack() as patches:
        patches.enter_context(replaced(nn.Module, "_call_impl", traced_call_impl))
        patches.enter_context(_direct_convolutions(named, counter))
        patches.enter_context(pass_through(model, named, tracker.copy if tracker is not None else None))
        for _, m in named:  # a compiled module's call would skip _call_impl: it runs uncompiled here
            if m._compiled_call_impl is not None:  # noqa: SLF001
                patches.callback(setattr, m, "_compiled_call_impl", m._compiled_call_impl)  # noqa: SLF001
                vars(m)["_compiled_call_impl"] = None
        try:
            with torch.no_grad(), counter:
                out = model(x)
        except Exception as exc:  # noqa: BLE001 - the layer that failed is named by the caller
            raise _Failure(failed[0][0] if failed[0] and failed[0][1] is exc else None, exc) from None
    first = _first_tensor(out)
    return Trace(calls=calls, macs=counter.macs, by_op=counter.by_op, output=_shape(first) or (),
                 elsewhere=elsewhere[0], rf=tracker.of(first) if tracker is not None else None,
                 misaligned=tracker.misaligned if tracker is not None else [],
                 gates=tracker.gates if tracker is not None else 0,
                 upsampled=tracker.upsampled if tracker is not None else [])


class _Failure(Exception):
    def __init__(self, call: Call | None, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.call = call
        self.exc = exc


def failure_message(target: str, shape: tuple[int, ...], failure: _Failure,
                    smallest: tuple[int, int] | None) -> GeometryError:
    msg = str(failure.exc).strip().splitlines()[0] if str(failure.exc).strip() else type(failure.exc).__name__
    where = ""
    if failure.call is not None:
        c = failure.call
        inp = "x".join(map(str, c.input)) if c.input else "?"
        where = (f"layer {c.path} ({c.kind})" if c.path else f"the model ({c.kind})") \
            + f" fails on its input {inp}: "
    hint = (f"; the smallest input that works is {shape[0]}x{smallest[0]}x{smallest[1]}" if smallest
            else "; no input size up to 4096 works")
    return GeometryError(f"{target} on {'x'.join(map(str, shape))}: {where}{msg}{hint}")
