"""Turn a target (an architecture name, file.py:Name or package.module:name) into a model on the meta device."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnkit.errors import ModelError, SpecError, UsageError


@dataclass
class Target:
    name: str
    model: Any
    input: tuple[int, ...]  # (C, H, W) without batch
    batch: int | None
    min_input: tuple[int, int] | None  # known smallest (H, W), for architectures
    rebuild: Any  # () -> a fresh model on the meta device (for searching the smallest input)


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
    except Exception as exc:  # noqa: BLE001 - any failure inside the user's module becomes one line
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen")]
        user = [f for f in frames if where.endswith(".py") and Path(f.filename).resolve() == Path(where).resolve()]
        frame = (user or frames or [None])[-1]
        loc = f"{frame.filename}, line {frame.lineno}: " if frame else ""
        raise ModelError(f"{loc}{type(exc).__name__}: {exc} (importing {where})") from None
    if not hasattr(module, attr):
        import difflib

        close = difflib.get_close_matches(attr, [n for n in dir(module) if not n.startswith("_")], n=4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelError(f"{where} has no '{attr}'{hint}")
    return getattr(module, attr)


def parse_input(text: str | None, channels: int | None) -> tuple[int | None, tuple[int, ...] | None]:
    """'3x224x224' / '1x3x224x224' as given; 'HxW' takes the model's channels (not parse_shape's 1)."""
    if text is None:
        return None, None
    from nnkit.core.spec import parse_shape

    batch, shape = parse_shape(text)
    dims = [d for d in text.lower().replace("×", "x").replace(",", "x").replace("*", "x").split("x") if d.strip()]
    if len(dims) == 2 and channels is not None:
        shape = (channels, *shape[1:])
    if len(shape) != 3:
        raise SpecError(f"input '{text}': a model needs CxHxW (or HxW, NxCxHxW)")
    return batch, shape


def resolve(target: str, *, input: str | None, num_classes: int | None, in_channels: int | None,
            width: float | None) -> Target:
    from nnkit.introspect.build import on_meta

    if not is_user_model(target):
        from nnkit.archs import build, get_arch

        info = get_arch(target)
        channels = in_channels or info.input[0]
        batch, shape = parse_input(input, channels)
        shape = shape or (channels, *info.input[1:])
        if shape[0] != channels:
            raise UsageError(f"--input {input}: {info.name} takes {channels} channels"
                             + ("" if in_channels else " (--in-channels changes that)"))

        def make() -> Any:
            return on_meta(lambda: build(info.name, num_classes=num_classes, in_channels=in_channels, width=width))

        return Target(info.name, make(), shape, batch, info.min_input, make)
    given = [o for o, v in (("--num-classes", num_classes), ("--in-channels", in_channels), ("--width", width))
             if v is not None]
    if given:
        raise UsageError(f"{', '.join(given)} apply to named architectures; a user model is built as written")
    if input is None:
        raise UsageError(f"model '{target}': give its input shape, e.g. --input 3x32x32")
    obj = _load_object(target)
    batch, shape = parse_input(input, None)

    def make_user() -> Any:
        from torch import nn

        if isinstance(obj, nn.Module):
            return obj
        try:
            model = on_meta(obj)
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"model '{target}': calling {obj!r} failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(model, nn.Module):
            raise ModelError(f"model '{target}': {type(obj).__name__} gave a {type(model).__name__}, "
                             "not a torch.nn.Module")
        return model

    return Target(target, make_user(), shape, batch, None, make_user)  # type: ignore[arg-type]


def module_target(model: Any, input: str | None) -> Target:
    """A live nn.Module as a target (nnkit.analyze(model, input=...)): analysed on a meta copy, never changed."""
    if input is None:
        raise UsageError(f"{type(model).__name__}: give its input, e.g. input='3x224x224'")
    batch, shape = parse_input(input, None)
    return Target(type(model).__name__, model, shape, batch, None, lambda: model)  # type: ignore[arg-type]
