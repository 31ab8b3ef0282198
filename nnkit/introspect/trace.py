"""One forward pass on the meta device that records every module call and runs under a dispatch mode that
counts MACs and follows receptive fields.

Each module call becomes an event with its input/output shapes and its inclusive MACs (the counter's total
before and after the call); `self` MACs are what a module computes outside its children (attention matmuls
written in a parent's forward, for instance), so that the rows always add up to the total.
"""

from __future__ import annotations

import functools
import sys
import threading
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
    follower: Any = None  # the follower itself (nnkit.introspect.rf.Fields), for what its notes need
    outputs: tuple[str, ...] = ()  # the names of the model's outputs when it returns several (dict keys)


def _parts(value: Any) -> Any:
    """The values inside a forward's output that may hold tensors: items of a tuple, list or dict (NamedTuples
    and HuggingFace's ModelOutput too), fields of a dataclass, attributes of another object (a
    torch.distributions.Normal holds loc and scale); None for a value without parts."""
    import dataclasses

    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, (list, tuple)):
        return value
    if isinstance(value, (str, bytes, int, float, complex, bool, type(None), type)) or callable(value):
        return None  # a module is callable: its parameters are not its output
    if dataclasses.is_dataclass(value):
        return [getattr(value, f.name, None) for f in dataclasses.fields(value)]
    attributes = getattr(value, "__dict__", None)
    return list(attributes.values()) if isinstance(attributes, dict) else None


def _tensors(value: Any, depth: int = 0, seen: set[int] | None = None) -> Any:
    """Every tensor of a forward's output, each once, in order (nested four deep at most: outputs are
    shallow, and an object's attributes could lead anywhere)."""
    import torch

    seen = set() if seen is None else seen
    if isinstance(value, torch.Tensor):
        if id(value) not in seen:
            seen.add(id(value))
            yield value
        return
    if depth > 4 or id(value) in seen:
        return
    parts = _parts(value)
    if parts is None:
        return
    seen.add(id(value))
    for v in parts:
        yield from _tensors(v, depth + 1, seen)


def _first_tensor(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value
    return next(iter(_tensors(value)), None)


def _tensor_bytes(value: Any) -> int:
    import torch

    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return sum(t.numel() * t.element_size() for t in _tensors(value))


def _output_shape(value: Any, first: Any) -> tuple[int, ...] | None:
    """The shape a forward's output stands for, without the batch: a torch.distributions object's is its batch
    and event shape (a MultivariateNormal's first tensor may be its covariance), anything else's its first
    tensor's."""
    distributions = sys.modules.get("torch.distributions")
    if distributions is not None and isinstance(value, distributions.Distribution):
        full = (*value.batch_shape, *value.event_shape)
        return tuple(full[1:])
    return _shape(first)


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


# Activations whose meta kernels are Python decompositions (hundreds of microseconds a call on the meta
# device, as the norms' are): they keep their input's shape, dtype and layout, and count no MACs.
ACTIVATIONS = ("relu", "hardtanh", "leaky_relu", "elu", "gelu", "silu", "mish", "hardswish", "hardsigmoid",
               "sigmoid", "tanh")
# Operators that keep the shape of their first input in their first output: activations and norms (dwsep's
# source follower passes a depthwise output through them, BatchNorm's three outputs included).
SHAPE_KEEPING = ACTIVATIONS + tuple(a + "_" for a in ACTIVATIONS) + (
    "native_batch_norm", "_native_batch_norm_legit_no_training", "native_layer_norm", "native_group_norm")


def _shortcuts() -> dict[Any, Any]:
    """Operators whose meta kernels are Python (torch._meta_registrations, torch._refs, torch._decomp) and that
    an analysis meets hundreds of times: convolutions, linear layers (addmm, mm), attention (bmm, softmax,
    scaling), residual adds, activations and norms (BatchNorm, LayerNorm, GroupNorm). Each answers its plain
    case (meta tensors of one dtype, matching shapes) with (output, op counted, MACs) and declines anything else
    with None, so that torch's kernel runs, errors included. MACs follow torch.utils.flop_counter's formulas
    (mm: n*k*m; bmm: b*n*k*m; conv: batch * prod(weight) * output positions). Without them a traced ViT-B/16
    spent most of its time in addmm's decomposition and in broadcasting checks.
    """
    import torch

    aten = torch.ops.aten
    tensor = torch.Tensor
    empty, empty_strided = torch.empty, torch.empty_strided
    f32 = torch.float32

    def same(*ts: Any) -> bool:
        return all(isinstance(t, tensor) and t.is_meta and t.dtype == ts[0].dtype for t in ts)

    def new(shape: Any, like: Any) -> Any:
        return empty(shape, dtype=like.dtype, device="meta")

    def like(a: Any) -> Any:  # a's strides too: torch's kernels keep them where size-1 dimensions leave a choice
        return empty_strided(a.shape, a.stride(), dtype=a.dtype, device="meta")

    def convolution(args: tuple[Any, ...]) -> Any:
        x, w, b = args[0], args[1], args[2]
        if not (x.is_meta and w.is_meta and (b is None or b.is_meta)):
            return None
        shape = _conv_shape(*args)
        return None if shape is None else (new(shape, x), "convolution", shape[0] * w.numel() * shape[2] * shape[3])

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
        return new((a.shape[0], a.shape[1], b.shape[2]), a), "bmm", a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]

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

    def activation(inplace: bool) -> Any:  # relu(x), hardtanh(x, lo, hi), ...: numbers besides the tensor
        def op(args: tuple[Any, ...]) -> Any:
            a = args[0]
            if not (isinstance(a, tensor) and a.is_meta and a.is_floating_point() and a.is_contiguous()
                    and all(type(v) in (int, float, bool) for v in args[1:])):
                return None
            return (a if inplace else like(a)), None, 0
        return op

    def plain(x: Any, *others: Any) -> bool:  # float32 and contiguous: the statistics are float32 too
        return isinstance(x, tensor) and x.is_meta and x.dtype == f32 and x.is_contiguous() and \
            all(t is None or (isinstance(t, tensor) and t.is_meta and t.dtype == f32) for t in others)

    def batch_norm(args: tuple[Any, ...]) -> Any:  # native_batch_norm(x, w, b, mean, var, training, momentum, eps)
        if len(args) != 8:
            return None
        x, w, b, mean, var, training = args[:6]
        c = x.shape[1] if isinstance(x, tensor) and x.dim() >= 2 else 0
        if not (plain(x, w, b, mean, var) and c and all(t is None or t.shape == (c,) for t in (w, b, mean, var))
                and (mean is not None and var is not None if not training else x.numel() > c)):
            return None  # training on one value per channel: torch's kernel raises (the unbiased variance)
        return (like(x), new((c,), x), new((c,), x)), None, 0

    def batch_norm_eval(args: tuple[Any, ...]) -> Any:  # _native_batch_norm_legit_no_training(x, w, b, mean, var, ..)
        return batch_norm((*args[:5], False, *args[5:])) if len(args) == 7 else None

    def layer_norm(args: tuple[Any, ...]) -> Any:  # native_layer_norm(x, normalized_shape, w, b, eps)
        if len(args) != 5:
            return None
        x, normalized, w, b = args[:4]
        k = len(normalized)
        if not (plain(x, w, b) and 0 < k <= x.dim() and tuple(x.shape[x.dim() - k:]) == tuple(normalized)
                and all(t is None or t.shape == tuple(normalized) for t in (w, b))):
            return None
        stats = (*x.shape[:x.dim() - k], *[1] * k)
        return (like(x), new(stats, x), new(stats, x)), None, 0

    def group_norm(args: tuple[Any, ...]) -> Any:  # native_group_norm(x, w, b, N, C, HxW, group, eps)
        if len(args) != 8:
            return None
        x, w, b, n, c, hw, group = args[:7]
        if not (plain(x, w, b) and x.dim() >= 2 and type(group) is int and group > 0 and c % group == 0
                and (n, c) == tuple(x.shape[:2]) and n * c * hw == x.numel()
                and all(t is None or t.shape == (c,) for t in (w, b))):
            return None
        # contiguous, as torch's kernel makes it (empty_like in contiguous_format), not x's strides: they differ
        # where size-1 dimensions leave a choice (a 1x1x2x1 map with strides 2, 1, 1, 2)
        return (new(x.shape, x), new((n, group), x), new((n, group), x)), None, 0

    truth = torch.ones((), dtype=torch.bool)

    def all_true(args: tuple[Any, ...]) -> Any:
        # torch.distributions' argument validation (Normal(loc, scale) checks scale > 0) and torch._check_tensor_all
        # ask whether a check holds everywhere: meta tensors hold no values to check, so every check passes (a
        # CPU answer, as bool() needs one), instead of "Tensor.item() cannot be called on meta tensors".
        return (truth, None, 0) if isinstance(args[0], tensor) and args[0].is_meta else None

    def validating() -> bool:
        """Whether torch.distributions is asking (a constraint's check, its `if not ok.all()`)."""
        frame = sys._getframe(2)  # noqa: SLF001
        for _ in range(12):
            if frame is None:
                return False
            if "distributions" in frame.f_code.co_filename and "torch" in frame.f_code.co_filename:
                return True
            frame = frame.f_back
        return False

    def scalar(args: tuple[Any, ...]) -> Any:
        # bool() of a meta tensor has no value to give; where torch.distributions validates its arguments
        # (MultivariateNormal's "is the covariance square, symmetric"), the check passes, as in all_true.
        # Any other forward that branches on a value still fails, and is told why (how_to_give).
        a = args[0]
        return (True, None, 0) if isinstance(a, tensor) and a.is_meta and a.dtype == torch.bool and \
            validating() else None

    table = {aten._is_all_true.default: all_true, aten._local_scalar_dense.default: scalar,  # noqa: SLF001
             aten.convolution.default: convolution, aten.mm.default: mm, aten.addmm.default: addmm,
             aten.bmm.default: bmm, aten.add.Tensor: pointwise(False), aten.mul.Tensor: pointwise(False),
             aten.add_.Tensor: pointwise(True), aten.mul_.Tensor: pointwise(True), aten.mul.Scalar: scaled,
             aten._safe_softmax.default: softmax, aten.native_batch_norm.default: batch_norm,  # noqa: SLF001
             aten._native_batch_norm_legit_no_training.default: batch_norm_eval,  # noqa: SLF001
             aten.native_layer_norm.default: layer_norm, aten.native_group_norm.default: group_norm}
    for name in ACTIVATIONS:
        table[getattr(aten, name).default] = activation(False)
        table[getattr(aten, name + "_").default] = activation(True)
    return table


@functools.cache
def _mode(dynamo: bool = True) -> Any:
    """A TorchDispatchMode that counts MACs with torch.utils.flop_counter's own formulas and hands every
    operator to the receptive-field tracker.

    Why not FlopCounterMode itself: it attributes every operator to all enclosing modules through a
    ModuleTracker of its own and pytree-maps the arguments of every call; the tracer already knows the modules,
    and that bookkeeping was most of the time an analysis took. The formulas, and FlopCounterMode's rule of
    decomposing operators it has no formula for, are kept, so counts stay equal to FlopCounterMode's.

    dynamo=False: without the torch._dynamo.disable wrapper torch puts around every mode's __torch_dispatch__,
    whose first call imports torch._dynamo, 1.2 s of a 5 s `nnkit summary lenet5` here. The wrapper keeps
    torch.compile from compiling into the mode; nothing can be compiled before torch._dynamo is imported, so
    run() asks for it only once it is (torchvision imports it, so its models keep the wrapper at no cost).
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    shortcuts, registry = _shortcuts(), _formulas()
    to_copy, meta = torch.ops.aten._to_copy.default, torch.device("meta")  # noqa: SLF001
    decomposable: dict[Any, bool] = {}  # per operator: has a CompositeImplicitAutograd kernel to decompose into

    class Counting(TorchDispatchMode):
        @classmethod
        def _should_skip_dynamo(cls) -> bool:  # read once, as the class is made (TorchDispatchMode.__init_subclass__)
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
                if func is to_copy and args[0].is_meta and kwargs.get("device") not in (None, meta):
                    # x.cpu() or x.to(device) in a forward: the copy stays on the meta device, with the dtype asked
                    kwargs = {**kwargs, "device": meta}
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


# The innermost trace running in each thread (our own state, not torch's): a call of the model's modules in
# another thread is one of its thread pool's unless that thread traces too (another analysis of the same
# model), and a trace nested in a forward (analysing a submodule) has its calls to itself.
_TRACING = threading.local()


def run(model: Any, shape: Any, name: str = "model", fields: bool = True,
        named: list[tuple[str, Any]] | None = None, tracker: Any = None) -> Trace:
    """Trace one item of `shape` through `model` (already on the meta device): a plain shape (C, H, W) is one
    float32 input; an nnkit.introspect.inputs.Inputs gives several, keywords and other dtypes. With `fields`,
    receptive fields are followed through the same pass (nnkit.introspect.rf). `tracker`: another follower of
    tensors with the interface of rf.Follower (nnkit.introspect.dwsep follows depthwise outputs), given where()
    as its argument.

    Everything is scoped to this call and this thread: hooks on the model's own modules, removed in `finally`
    (torchinfo's way), and a dispatch mode, which torch keeps per thread. No attribute of torch is set, so
    analyses in other threads, and models other threads build and train meanwhile, are untouched.
    """
    import torch

    from nnkit.introspect.build import walk

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
    paths = {id(m): p for p, m in named}
    own = threading.get_ident()
    get_ident = threading.get_ident
    exc_info = sys.exc_info
    elsewhere = [0]  # calls of the model's modules in other threads
    ids: tuple[int, ...] = ()  # our hooks' ids, for modules that carry them without being the model's (copies)
    live = [True]  # False once the trace is over: hooks a copy kept do nothing, and leave it

    def _input(args: Any) -> tuple[int, ...] | None:
        return _shape(args[0] if args and isinstance(args[0], tensor) else _first_tensor(args))

    def foreign(module: Any) -> None:
        """A call this trace does not record: another thread's (counted when it is the model's thread pool), or
        a module's that is not the model's (a copy made while it runs carries our hooks: they leave it now), or
        one after the trace (a copy somebody kept)."""
        if get_ident() != own:
            if live[0] and id(module) in paths and getattr(_TRACING, "on", None) is None:
                elsewhere[0] += 1
        elif not live[0] or id(module) not in paths:
            for hooks in (module._forward_pre_hooks, module._forward_hooks,  # noqa: SLF001
                          module._forward_hooks_always_called):  # noqa: SLF001
                for i in ids:
                    hooks.pop(i, None)

    # Each call of one of the model's modules is entered by a pre-hook put before the module's own (so that a
    # pre-hook of theirs that raises finds its call on the stack) and left by a hook after all of its own (rows
    # show what the model's hooks hand on), which torch calls on an exception too (always_call).
    def enter(module: Any, args: Any) -> None:
        path = paths.get(id(module))
        if path is None or get_ident() != own or _TRACING.on is not token:
            foreign(module)
            return
        parent = stack[-1] if stack else None
        c = Call(len(calls), path, type(module).__name__, _input(args), parent=parent, macs=-counter.macs)
        if parent is not None:
            calls[parent].children.append(c.order)
        calls.append(c)
        stack.append(c.order)
        if id(module) in weighted and id(module) not in hooked:  # else refresh checks, after their hooks
            _same_dtype(module, args)

    def refresh(module: Any, args: Any) -> None:  # after the module's own pre-hooks: the input it really gets
        if get_ident() == own and _TRACING.on is token and id(module) in paths:
            calls[stack[-1]].input = _input(args)
            if id(module) in weighted:
                _same_dtype(module, args)

    def leave(module: Any, args: Any, output: Any) -> None:
        path = paths.get(id(module))
        if path is None or get_ident() != own or _TRACING.on is not token or not stack or \
                calls[stack[-1]].path != path:
            return  # not ours, or not entered (a torch-wide pre-hook raised before ours ran)
        c = calls[stack.pop()]
        c.macs += counter.macs
        if c.parent is not None:
            calls[c.parent].child_macs += c.macs
        exc = exc_info()[1] if output is None else None  # torch calls us from its `except` on an exception
        if exc is not None:
            if failed[0] is None or failed[0][1] is not exc:  # innermost: the first call this exception leaves
                failed[0] = (c, exc)
            return  # the row keeps what it computed before it raised; the model may catch it and go on
        if isinstance(output, tensor):
            first = output
            c.out_bytes = output.numel() * output.element_size()
            c.output = _shape(first)
        else:
            first = _first_tensor(output)
            c.out_bytes = _tensor_bytes(output)
            c.output = _output_shape(output, first)
        if tracker is not None:
            c.rf = tracker.of(first)

    if not hasattr(shape, "tensors"):  # the plain call: one float32 item of this shape
        args, kwargs = (torch.empty((1, *shape), device="meta"),), {}
    else:  # nnkit.introspect.inputs.Inputs: several inputs, keywords, other dtypes
        args, kwargs = shape.tensors(1, "meta")
    x = args[0] if args else next(iter(kwargs.values()))
    if tracker is not None:
        tracker.start(x)
    handles: list[Any] = []
    compiled: list[tuple[Any, Any]] = []
    tracing = getattr(_TRACING, "on", None)  # an analysis of a submodule inside a model's forward: nested
    token = object()  # while this trace is the innermost in its thread, _TRACING.on is this
    hooked = {id(m) for _, m in named if m._forward_pre_hooks}  # noqa: SLF001 - the modules' own pre-hooks
    nn = torch.nn
    weighted = {id(m) for _, m in named if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                                                           nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear))}
    try:
        for _, m in named:
            if m._forward_pre_hooks:  # noqa: SLF001 - its own: record the input they hand on
                handles.append(m.register_forward_pre_hook(refresh))
            handles.append(m.register_forward_pre_hook(enter, prepend=True))
            handles.append(m.register_forward_hook(leave, always_call=True))
            if m._compiled_call_impl is not None:  # noqa: SLF001 - a compiled call would skip the hooks:
                compiled.append((m, m._compiled_call_impl))  # noqa: SLF001 - it runs uncompiled here
                vars(m)["_compiled_call_impl"] = None
        ids = tuple(h.id for h in handles)
        _TRACING.on = token
        try:
            with torch.no_grad(), counter:
                out = model(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the layer that failed is named by the caller
            raise TraceFailure(failed[0][0] if failed[0] and failed[0][1] is exc else None, exc) from None
    finally:
        _TRACING.on = tracing
        live[0] = False
        for h in handles:
            h.remove()
        for m, impl in compiled:
            vars(m)["_compiled_call_impl"] = impl
    first = _first_tensor(out)
    return Trace(calls=calls, macs=counter.macs, by_op=counter.by_op, output=_output_shape(out, first) or (),
                 elsewhere=elsewhere[0], rf=tracker.of(first) if tracker is not None else None,
                 misaligned=tracker.misaligned if tracker is not None else [],
                 gates=tracker.gates if tracker is not None else 0,
                 upsampled=tracker.upsampled if tracker is not None else [], follower=tracker,
                 outputs=tuple(map(str, out)) if isinstance(out, dict) else ())


class TraceFailure(Exception):
    """The model's forward failed during the trace: the call it failed in (None: outside any module's) and the
    exception, for failure_message to put in one line."""

    def __init__(self, call: Call | None, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.call = call
        self.exc = exc


# Words of torch's errors about sizes (a kernel larger than its input, an output below one, shapes that
# cannot be multiplied or added, torchvision's "Wrong image height!"), and of those about what no size can
# fix: dtypes, the meta device's missing values, channels (the search changes only height and width).
_SIZE_WORDS = ("size", "shape", "dimension", "too small", "greater than", "must match", "cannot be multiplied",
               "height", "width", "out of range", "out of bounds")
_OTHER_WORDS = ("dtype", "scalar type", "type (", "same type", "tensortype", "floattensor", "longtensor",
                "meta", "channels", "channel dimension", "argument #")


def _same_dtype(module: Any, args: Any) -> None:
    """A convolution or linear layer given another dtype than its weight's fails on every real device; meta
    kernels do not check (a half image through a float model, ids through a conv), so the trace checks."""
    import torch

    weight = getattr(module, "weight", None)
    x = args[0] if args else None
    if (isinstance(weight, torch.Tensor) and isinstance(x, torch.Tensor)
            and x.dtype != weight.dtype and not any(torch.is_autocast_enabled(d) for d in ("cpu", "cuda"))):
        raise RuntimeError(f"Input type ({x.dtype}) and weight type ({weight.dtype}) should be the same (as torch "
                           "says on a real device; the meta device does not check)")


def about_size(exc: BaseException) -> bool:
    """Whether a model's failure on an input could go away at another height and width, so that searching for
    the smallest working input makes sense: never for a missing or unexpected argument (TypeError), a module
    without forward (NotImplementedError), a wrong dtype or a forward that reads values the meta device has
    none of."""
    if not isinstance(exc, (RuntimeError, ValueError, IndexError, AssertionError)) or \
            isinstance(exc, NotImplementedError):
        return False
    text = str(exc).lower()
    return not any(w in text for w in _OTHER_WORDS) and any(w in text for w in _SIZE_WORDS)


def how_to_give(model: Any, exc: BaseException, call: Call | None = None) -> str:
    """For a failure no input size fixes, how to give the model what it lacks (one clause, or ''); `call`: the
    module call that failed."""
    import inspect

    low = str(exc).lower()
    layer = dict(model.named_modules()).get(call.path) if call is not None else None
    if "channel" in low and hasattr(layer, "in_channels") and call.input:  # type: ignore[union-attr]
        return f"; it takes {layer.in_channels} channels, not {call.input[0]}"  # type: ignore[union-attr]
    if isinstance(exc, TypeError) and ("argument" in low):
        try:
            signature = f"forward{inspect.signature(model.forward)}"
        except (TypeError, ValueError):
            signature = "its forward"
        return (f"; {type(model).__name__}.{signature}: give --input once for each positional input, in order, "
                "and NAME=SHAPE for a keyword one")
    if "nvidia driver" in low or "not compiled with cuda" in low:
        return ("; the forward moves a tensor to CUDA, which this machine lacks (nnkit traces on the meta "
                "device): move it to an input's or a parameter's device, x.to(self.conv.weight.device)")
    if "meta" in low and ("item()" in low or "data-dependent" in low or "no data" in low):
        return ("; the forward reads tensor values (.item(), bool(), nonzero), and nnkit traces on the meta "
                "device, where tensors have shapes but no values")
    if any(w in low for w in ("indices", "embedding")) and any(w in low for w in _OTHER_WORDS[:7]):
        return "; an embedding takes integer ids: give --input long:SHAPE"
    if any(w in low for w in _OTHER_WORDS[:7]):
        return "; give the input's dtype as --input DTYPE:SHAPE (float, half, bfloat16, double, long, int, bool)"
    return ""


def search_limit(sizes: int) -> int:
    """The largest size the smallest-input search (nnkit.introspect.smallest_input) tries on an axis, by the
    number of sizes of one item: a waveform (CxL) to a million samples (M5-style models need thousands),
    images and clips to 4096 pixels or frames."""
    return 1 << 20 if sizes == 2 else 4096


def failure_message(target: str, shape: Any, failure: TraceFailure, smallest: Any,
                    hint: str | None = None) -> GeometryError:
    """One line: the layer that failed, its input, the error and, for a failure about size, the smallest input
    that works (nnkit.introspect.Smallest, with the rule it was found by); `hint` (how_to_give's clause) for the
    others."""
    msg = str(failure.exc).strip().splitlines()[0] if str(failure.exc).strip() else type(failure.exc).__name__
    where = ""
    if failure.call is not None:
        c = failure.call
        inp = "x".join(map(str, c.input)) if c.input else "?"
        where = (f"layer {c.path} ({c.kind})" if c.path else f"the model ({c.kind})") + f" fails on its input {inp}: "
    shown = shape.text() if hasattr(shape, "text") else "x".join(map(str, shape))
    if not about_size(failure.exc):
        tail = hint or ""
    elif smallest is not None:
        rule = f" ({smallest.rule})" if smallest.rule else ""
        tail = f"; the smallest input that works is {'x'.join(map(str, smallest.item))}{rule}"
    elif not hasattr(shape, "text") and len(shape) in (2, 3):  # one size (L, or the side of a square) was searched
        tail = f"; no input size up to {search_limit(len(shape))} works"
    else:  # a clip's search only grows its short axes: one too large (mvit's 16 frames) is not what it finds
        tail = hint or ""
    return GeometryError(f"{target} on {shown}: {where}{msg}{tail}")
