"""Checkpoints and run-directory files: written atomically (temp file + os.replace), read with
weights_only=True.

A checkpoint is a dict of tensors, numbers, strings and lists only, so `torch.load(weights_only=True)` reads
it and a checkpoint from elsewhere can never run code. FORMAT marks ours; anything else is a foreign
checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from nnkit.core.numbers import MAX_ELEMENTS, MAX_SIZE, finite_json
from nnkit.errors import CheckpointError, RunDirError, UsageError, first_line
from nnkit.train.config import TrainConfig

FORMAT = "nnkit-checkpoint"
VERSION = 1


def atomic_write(path: Path, write: Any, mode: str = "wb") -> None:
    """Call write(file) on a temp file beside `path`, then rename it over `path`: readers see old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the file should get the usual permissions
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), mode="w")


def save(obj: dict[str, Any], path: Path) -> None:
    import torch

    try:
        atomic_write(path, lambda f: torch.save(obj, f))
    except OSError as exc:
        raise RunDirError(f"{path}: cannot write checkpoint ({exc.strerror or exc})") from exc


def _torch_load(p: Path, map_location: Any, what: str) -> Any:
    """torch.load(weights_only=True), its failures as one sentence of ours (torch's own advice for pickled
    code is to load the file unsafely, which nnkit never does)."""
    import pickle
    import zipfile

    import torch

    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{what}{p}: not a plain checkpoint: it holds pickled Python objects beyond "
                              f"tensors and plain values, which could run code, so nnkit refuses to load it "
                              f"for safety") from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, IndexError) as exc:
        raise CheckpointError(f"{what}{p}: truncated or corrupt checkpoint, torch cannot read it "
                              f"({type(exc).__name__}: {first_line(exc, 80)})") from exc


def load(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """An nnkit checkpoint, checked: a directory means its last.pt."""

    p = Path(os.path.expanduser(str(path)))
    if p.is_dir():
        p = p / "last.pt"
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint")
    ck = _torch_load(p, map_location, "")
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not an nnkit checkpoint (a foreign file; use --weights to start from "
                              f"plain weights)")
    if ck.get("version") != VERSION:
        raise CheckpointError(f"{p}: checkpoint version {ck.get('version')}, this nnkit reads {VERSION}")
    for key in ("arch", "model", "config", "classes", "input", "mean", "std"):
        if key not in ck:
            raise CheckpointError(f"{p}: nnkit checkpoint without '{key}' (truncated or edited)")
    shape = ck["input"]
    if not (isinstance(shape, list) and len(shape) == 3
            and all(type(v) is int and 0 < v <= MAX_SIZE for v in shape)  # noqa: E721 - bool is no size
            and math.prod(shape) <= MAX_ELEMENTS):
        raise CheckpointError(f"{p}: the recorded input {str(shape)[:60]} is no CxHxW of positive sizes up to "
                              f"{MAX_SIZE:,} (an edited checkpoint?)")
    if not isinstance(ck["config"], dict) or not isinstance(ck["classes"], list) or not ck["classes"]:
        raise CheckpointError(f"{p}: nnkit checkpoint with a malformed config or class list (edited?)")
    ck["path"] = str(p)
    ck["file_id"] = file_id(p)
    return ck


def file_id(path: str | Path) -> list[int] | None:
    """What changes when a file is rewritten (atomic writes make a new inode): to see whether another run
    replaced a checkpoint after it was read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """Weights for transfer learning: an nnkit checkpoint or a plain state_dict (torchvision's .pth files)."""
    import torch

    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise CheckpointError(f"--weights {p}: no such file")
    obj = _torch_load(p, "cpu", "--weights ")
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"--weights {p}: not a state dict of tensors")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}


def write_json(path: Path, doc: Any) -> None:
    atomic_text(path, json.dumps(finite_json(doc), indent=2, allow_nan=False) + "\n")


def saved_config(state: dict[str, Any]) -> TrainConfig:
    """The TrainConfig a checkpoint recorded; an edited one (a wrong type, an unknown choice, a value that
    makes no sense) is a CheckpointError, not an internal error."""
    try:
        return TrainConfig.from_dict(state["config"]).validate()
    except UsageError as exc:
        raise CheckpointError(f"{state['path']}: its recorded settings do not hold ({exc}); edited?") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{state['path']}: its recorded settings are malformed ({first_line(exc, 80)}); "
                              f"edited?") from None
