"""Models built on the meta device: shapes and dtypes without storage, so analysis allocates nothing."""

from __future__ import annotations

import contextlib
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any


_MISSING = object()


@contextlib.contextmanager
def replaced(owner: Any, name: str, value: Any) -> Iterator[None]:
    """owner.<name> = value for the duration (a class's attribute, or a module's function), then as it was:
    its own again, or none (inherited). Unless somebody replaced ours meanwhile (a library patching torch
    while the model runs): theirs stays.

    Analysis patches classes, never the user's module instances: a model that deep-copies a submodule while it
    runs (an EMA or teacher copy) would copy anything set on the instance, and keep it after the analysis."""
    saved = vars(owner).get(name, _MISSING)
    setattr(owner, name, value)
    try:
        yield
    finally:
        if vars(owner).get(name, _MISSING) is value:
            if saved is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, saved)


@contextlib.contextmanager
def this_thread() -> Iterator[Any]:
    """Whom a patch acts for: `scope.thread` is the id of the thread that opened the context, and None once it
    is closed. Every patch of ours compares threading.get_ident() with it, so that it acts for its own thread
    only (other threads build and run their models meanwhile as ever), and does nothing any more where
    somebody kept it inside a wrapper of theirs (replaced leaves theirs in place): the kept copy runs what it
    replaced."""
    scope = types.SimpleNamespace(thread=threading.get_ident())
    try:
        yield scope
    finally:
        scope.thread = None


def torchs_own(f: Any, qualname: str | None = None) -> bool:
    """f is torch.nn's own function (of that qualified name), not a replacement a profiler or library
    installed."""
    return (getattr(f, "__module__", None) or "").startswith("torch.nn.") and not hasattr(f, "__wrapped__") \
        and (qualname is None or getattr(f, "__qualname__", None) == qualname)


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Every parameter and buffer a module registers in this thread goes to the meta device as soon as it is
    made.

    For builders that compute with tensors while they build (torchvision's RegNets round widths with torch),
    which the plain `with torch.device("meta")` cannot run: only storage moves, the arithmetic stays on CPU.
    Other threads, which share nn.Module, register theirs as ever.
    """
    from torch import nn

    register_parameter = nn.Module.register_parameter
    register_buffer = nn.Module.register_buffer

    def parameter(self: Any, name: str, param: Any) -> None:
        register_parameter(self, name, param)
        if param is not None and threading.get_ident() == scope.thread:
            kind = type(self._parameters[name])
            self._parameters[name] = kind(self._parameters[name].to("meta"),
                                          requires_grad=param.requires_grad)

    def buffer(self: Any, name: str, tensor: Any, persistent: bool = True) -> None:
        mine = tensor is not None and threading.get_ident() == scope.thread
        register_buffer(self, name, tensor.to("meta") if mine else tensor, persistent)

    with this_thread() as scope, replaced(nn.Module, "register_parameter", parameter), \
            replaced(nn.Module, "register_buffer", buffer):
        yield


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """torch.nn.init's in-place initialisers do nothing in this thread: meta tensors hold no values to
    initialise, and on the meta device each call still runs a Python decomposition (ResNet-50's 53
    kaiming_normal_ cost 40 ms). Models other threads build meanwhile are initialised as ever."""
    from torch.nn import init

    names = [n for n in dir(init) if n.endswith("_") and not n.startswith("_") and callable(getattr(init, n))]

    def skipping(real: Any) -> Any:
        def initialiser(tensor: Any, *args: Any, **kwargs: Any) -> Any:
            return tensor if threading.get_ident() == scope.thread else real(tensor, *args, **kwargs)
        return initialiser

    with this_thread() as scope, contextlib.ExitStack() as patches:
        for n in names:
            patches.enter_context(replaced(init, n, skipping(getattr(init, n))))
        yield


# Building on the meta device and tracing replace attributes of torch for their duration (torch.nn.init's
# initialisers, nn.Module.register_parameter, forwards and _call_impl of torch.nn classes): one at a time in a
# process, or two threads restoring them in another order than they set them would leave one's behind
# (untrained weights in every model built afterwards).
PATCHING = threading.RLock()


def on_meta(make: Callable[[], Any]) -> Any:
    """make() with every tensor on the meta device; falls back to moving only parameters and buffers."""
    import torch

    with PATCHING:
        try:
            with torch.device("meta"), _no_init():
                return make()
        except NotImplementedError:  # the builder needed real data ("Cannot copy out of meta tensor")
            with _parameters_on_meta(), _no_init():
                return make()


def build_meta(name: str, **options: Any) -> Any:
    from nnkit.archs import build

    return on_meta(lambda: build(name, **options))


def walk(model: Any) -> list[tuple[str, Any]]:
    """model.named_modules() as a list, in the same order (pre-order, a shared module once, at its first
    path).

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


def _shape_keeping() -> tuple[type, ...]:
    """torch.nn modules whose output has their input's shape and dtype, and no MACs (docs/conventions.md)."""
    from torch import nn

    return (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d,
            nn.LocalResponseNorm, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish,
            nn.Hardswish,
            nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Dropout, nn.Dropout2d, nn.Identity)


@contextlib.contextmanager
def pass_through(model: Any, named: list[tuple[str, Any]] | None = None,
                 follow: Callable[[Any, Any], None] | None = None) -> Iterator[None]:
    """Shape-keeping modules return their input (or a new tensor like it) while analysis traces the model.

    On the meta device BatchNorm, LayerNorm and most activations run as Python decompositions (about 1 ms
    each); they change neither shapes nor MACs, so skipping them makes a trace of ResNet-50 ten times faster.
    The stand-in is each such class's forward for the duration (replaced), for this model's modules of exactly
    that class and without a forward of their own, called in this thread; every other module of the class (a
    subclass's, a copy made while the model runs, another thread's) runs its real forward, and so does every
    module of a class whose forward somebody else replaced. Hooks still fire. With `follow`, stand-ins of
    modules that return a new tensor return a new tensor object too, and call follow(input, output) so that
    the tracer's follower copies the input's state to it; without it every stand-in returns its input, enough
    where no tensor is followed.
    """
    import torch
    from torch import nn

    kinds = frozenset(_shape_keeping())  # exact types: a subclass may do more than keep the shape
    mine = [m for _, m in named or walk(model) if type(m) in kinds and "forward" not in vars(m)]
    theirs = {cls for cls in {type(m) for m in mine} if not torchs_own(cls.forward)}  # replaced by somebody
    mine = [m for m in mine if type(m) not in theirs]
    # The new tensor object is made with Python dispatch off (through the tracer's dispatch mode it cost 10
    # times as much); follow() gives it the input's receptive field, since the tracer never sees this
    # operator.
    no_dispatch = torch._C._DisableTorchDispatch  # noqa: SLF001
    get_ident = threading.get_ident

    def same(*args: Any, **kwargs: Any) -> Any:  # nn.Identity, eval-mode dropout, in-place activations
        return args[0] if args else next(iter(kwargs.values()))

    def new(*args: Any, **kwargs: Any) -> Any:  # a new tensor object, as the module returns one, so that an
        # in-place op on it does not touch its input's field
        x = args[0] if args else next(iter(kwargs.values()))
        with no_dispatch():
            y = x.detach()  # same shape and strides, and no _base: not a view in the tracer's eyes
        follow(x, y)  # type: ignore[misc]
        return y

    def returns_input(m: Any) -> bool:
        return follow is None or vars(m).get("inplace", False) \
            or isinstance(m, (nn.Identity, nn.Dropout, nn.Dropout2d))

    chosen = {id(m): same if returns_input(m) else new for m in mine}

    def stand_in(real: Any) -> Any:
        def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
            f = chosen.get(id(self))
            if f is not None and get_ident() == scope.thread:
                return f(*args, **kwargs)
            return real(self, *args, **kwargs)
        return forward

    with this_thread() as scope, contextlib.ExitStack() as patches:
        for cls in {type(m) for m in mine}:
            patches.enter_context(replaced(cls, "forward", stand_in(cls.forward)))
        yield
