"""Turn a target (an architecture name, file.py:Name or package.module:name) into a model on the meta
device."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nnkit.errors import ModelError, SpecError, UsageError, refuse_given

if TYPE_CHECKING:
    from nnkit.introspect.inputs import Inputs


@dataclass
class Target:
    name: str
    model: Any
    input: tuple[int, ...]  # (C, H, W) without batch
    batch: int | None
    min_input: tuple[int, int] | None  # known smallest (H, W), for architectures
    rebuild: Any  # () -> a fresh model on the meta device (for searching the smallest input)
    inputs: Inputs | None = None  # every input of the forward; None: one float32 tensor of `input`

    @property
    def given(self) -> Any:
        """What trace.run and analyze_model take: `inputs`, or the plain shape `input`."""
        return self.input if self.inputs is None or self.inputs.plain else self.inputs


def is_user_model(target: str) -> bool:
    return ":" in target


def _load_object(target: str) -> Any:
    """'path/to/model.py:Net' or 'package.module:Net' -> the object, import errors as one line."""
    where, _, attr = target.rpartition(":")
    if not where or not attr:
        raise UsageError(f"model '{target}': write file.py:ClassOrFactory or package.module:name")
    try:
        if where.endswith(".py") or "/" in where or Path(where).is_file():
            path = Path(where)
            if not path.is_file():
                raise UsageError(f"model '{target}': no such file {where}")
            name = f"nnkit_user_{abs(hash(str(path.resolve())))}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[name] = module
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(where)
    except UsageError:
        raise
    except SyntaxError as exc:
        raise ModelError(f"{exc.filename}, line {exc.lineno}: {exc.msg} (importing {where})") from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure inside the user's module is one line;
        # sys.exit() at import time too, which would otherwise end nnkit silently with the module's exit code
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen")]
        user = [f for f in frames
                if where.endswith(".py") and Path(f.filename).resolve() == Path(where).resolve()]
        frame = (user or frames or [None])[-1]
        loc = f"{frame.filename}, line {frame.lineno}: " if frame else ""
        raise ModelError(f"{loc}{type(exc).__name__}: {exc} (importing {where})") from None
    if not hasattr(module, attr):
        import difflib

        close = difflib.get_close_matches(attr, [n for n in dir(module) if not n.startswith("_")], n=4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelError(f"{where} has no '{attr}'{hint}")
    return getattr(module, attr)


_ITEM = {2: "CxL", 3: "CxHxW", 4: "CxTxHxW"}  # one item of a 1-D, 2-D or 3-D model, by its number of sizes


def parse_shape_words(text: str, shown: str | None = None) -> tuple[int, ...]:
    """'3x224x224' -> (3, 224, 224), read as a chain's input is (nnkit.core.spec.read_sizes) and held to what torch
    can trace; errors quote `shown` (the --input word as written) or the text."""
    from nnkit.core.spec import looks_like_shape, read_sizes

    shown = text if shown is None else shown
    if not looks_like_shape(text) and (shown != text or any(c in text for c in ":=")):  # [NAME=][DTYPE:]SHAPE
        raise SpecError(f"--input {shown}: '{text}' is not a shape; write [NAME=][DTYPE:]SHAPE, e.g. "
                        "3x224x224, long:50 or mask=bool:50")
    return read_sizes(text, shown, model=True)


def parse_input(text: str | None, channels: int | None, rank: int | None = 3, name: str = "this model") -> \
        tuple[int | None, tuple[int, ...] | None]:
    """--input for a model whose items have `rank` sizes (3 for images CxHxW, 4 for clips CxTxHxW, 2 for
    sequences CxL; None when the model has no convolution or pooling to tell): (batch or None, one item).

    The rule: --input is one item, without the batch (--batch N gives that). Two forms are kept from the 2-D
    days: one size more than an item is the batch first (NxCxHxW), and an image's HxW takes the model's
    channels (1 for a user model). A model of unknown rank takes its item as given, except four sizes
    (NxCxHxW, as before).
    """
    if text is None:
        return None, None
    dims = parse_shape_words(text)
    n = len(dims)
    if rank is None:
        return (dims[0], dims[1:]) if n == 4 else (None, dims)
    if n == rank:
        return None, dims
    if n == rank + 1:
        return dims[0], dims[1:]
    if rank == 3 and n == 2:
        return None, (channels or 1, *dims)
    what = _ITEM.get(rank, f"{rank} sizes")
    raise SpecError(f"--input {text}: {name} takes {what}" + (" (or HxW)" if rank == 3 else "")
                    + f", or Nx{what} with the batch first")


def _texts(input: Any) -> list[str]:
    """--input as given once (a string) or several times (a list): the words, in order."""
    if input is None:
        return []
    return [input] if isinstance(input, str) else list(input)


def read_inputs(input: Any, model: Any, channels: int | None, rank: int | None, name: str) -> \
        tuple[int | None, Inputs | None]:
    """Every --input of a model (inputs.read's rules) -> (batch or None, Inputs or None when none given)."""
    from nnkit.introspect.inputs import read

    texts = _texts(input)
    if not texts:
        return None, None
    return read(texts, model, lambda text: parse_input(text, channels, rank, name))


def item_rank(model: Any) -> int | None:
    """Sizes of one input item, read off the model's first convolution or pooling module: Conv1d 2 (CxL),
    Conv2d 3 (CxHxW), Conv3d 4 (CxTxHxW); None for a model without one (MLPs, recurrent, token models)."""
    from torch import nn

    kinds = ((1, (nn.Conv1d, nn.ConvTranspose1d, nn.MaxPool1d, nn.AvgPool1d, nn.BatchNorm1d)),
             (2, (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.AvgPool2d, nn.BatchNorm2d)),
             (3, (nn.Conv3d, nn.ConvTranspose3d, nn.MaxPool3d, nn.AvgPool3d, nn.BatchNorm3d)))
    for m in model.modules():
        for spatial, classes in kinds:
            if isinstance(m, classes) and not (spatial == 1 and isinstance(m, nn.BatchNorm1d)):
                return spatial + 1
    return None


def resolve(target: str, *, input: Any, num_classes: int | None, in_channels: int | None,
            width: float | None) -> Target:
    from nnkit.introspect.build import on_meta

    if not is_user_model(target):
        from nnkit.archs import build, get_arch

        info = get_arch(target)
        channels = in_channels or info.input[0]
        batch, inputs = read_inputs(input, None, channels, len(info.input), info.name)
        shape = inputs.first.shape if inputs else (channels, *info.input[1:])
        if inputs and inputs.first.floating and shape[0] != channels:
            raise UsageError(f"--input {', '.join(_texts(input))}: {info.name} takes {channels} channels"
                             + ("" if in_channels else " (--in-channels changes that)"))

        def make() -> Any:
            return on_meta(lambda: build(info.name, num_classes=num_classes, in_channels=in_channels,
                                         width=width))

        model = make()
        _both_images(info.name, model, inputs)  # without --input: two images of the entry's size
        return Target(info.name, model, shape, batch, info.min_input, make, inputs)
    refuse_given((("--num-classes", num_classes), ("--in-channels", in_channels), ("--width", width)),
                 "to named architectures; a user model is built as written")
    if not _texts(input):
        raise UsageError(f"model '{target}': give its input shape, e.g. --input 3x32x32 (several inputs: "
                         "--input once for each, in order)")
    obj = _load_object(target)

    def make_user() -> Any:
        from torch import nn

        if isinstance(obj, nn.Module):
            return obj
        if not callable(obj) or (isinstance(obj, type) and not issubclass(obj, nn.Module)):
            raise ModelError(f"model '{target}': {type(obj).__name__} {obj!r} is not a torch.nn.Module class, "
                             f"instance or factory")
        try:
            model = on_meta(obj)
        except SystemExit as exc:  # builtins:exit, or a factory calling sys.exit(): not a model, not our exit
            raise ModelError(f"model '{target}': calling {obj!r} exited (SystemExit {exc.code!r}) instead of "
                             f"returning a torch.nn.Module") from None
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"model '{target}': calling {obj!r} failed: {type(exc).__name__}: "
                             f"{exc}") from None
        if not isinstance(model, nn.Module):
            raise ModelError(f"model '{target}': {type(obj).__name__} gave a {type(model).__name__}, "
                             "not a torch.nn.Module")
        return model

    model = make_user()
    batch, inputs = read_inputs(input, model, None, item_rank(model), target)
    _both_images(target, model, inputs)
    return Target(target, model, inputs.first.shape, batch, None, make_user, inputs)  # type: ignore[union-attr]


def _both_images(name: str, model: Any, inputs: Any) -> None:
    """RAFT given one --input: refused, as every forward given fewer inputs than it takes (the registry's entry
    without --input takes two images of its size)."""
    from nnkit.introspect import detection

    if inputs is not None and len(inputs.args) == 1 and not inputs.kwargs and detection.kind(model) == "flow":
        raise UsageError(f"--input {inputs.text()}: {name} takes two images, image1 and image2: give --input "
                         f"twice (--input {inputs.text()} --input {inputs.text()})")


def module_target(model: Any, input: Any) -> Target:
    """A live nn.Module as a target (nnkit.analyze(model, input=...)): analysed on a meta copy, never
    changed."""
    if not _texts(input):
        raise UsageError(f"{type(model).__name__}: give its input, e.g. input='3x224x224'")
    batch, inputs = read_inputs(input, model, None, item_rank(model), "this model")
    _both_images(type(model).__name__, model, inputs)
    return Target(type(model).__name__, model, inputs.first.shape, batch, None,  # type: ignore[union-attr]
                  lambda: model, inputs)
