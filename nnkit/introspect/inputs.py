"""A model's inputs: positional and keyword tensors, each one item's shape (without the batch) and a dtype.

`--input` is written `[NAME=][DTYPE:]SHAPE` and may be given several times: positional inputs in the order
given (RAFT's two images: `--input 3x520x960 --input 3x520x960`), keyword inputs by name (`--input
mask=bool:50`). DTYPE is one of DTYPES (float32 when left out).

Where the batch goes: every input is one item, without the batch; --batch N makes it N. Kept from the days of
one image: the first input, when floating, is read at the model's rank (nnkit.introspect.target.parse_input:
NxCxHxW has its batch first, HxW takes the channels), and when it has its batch first, every other input must
too. Other inputs, and integer and bool ones (ids have no channels), are taken as written.
Integer inputs are ids from 0 to the first nn.Embedding's num_embeddings - 1 (0..1 for a model without
one), so that a real forward indexes inside the table.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from nnkit.errors import SpecError, UsageError

# The dtypes a model's input may have, by the names torch itself gives them (torch.float16 is torch.half).
DTYPES = {"float": "float32", "float32": "float32", "half": "float16", "float16": "float16",
          "bfloat16": "bfloat16", "double": "float64", "float64": "float64",
          "long": "int64", "int64": "int64", "int": "int32", "int32": "int32", "bool": "bool"}
FLOATING = frozenset(("float32", "float16", "bfloat16", "float64"))
_SHORT = {"float32": "", "float16": "half", "bfloat16": "bfloat16", "float64": "double", "int64": "long",
          "int32": "int", "bool": "bool"}
_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4, "bool": 1}
_WORD = re.compile(r"^\s*(?:([A-Za-z_]\w*)\s*=\s*)?(?:([A-Za-z]\w*)\s*:\s*)?(.*?)\s*$")
SYNTAX = "[NAME=][DTYPE:]SHAPE, e.g. 3x224x224, long:50 or mask=bool:50"


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]  # one item, without the batch
    dtype: str = "float32"  # the name of a torch dtype (DTYPES' values)
    high: int | None = None  # integer inputs: ids are drawn from 0..high-1

    @property
    def floating(self) -> bool:
        return self.dtype in FLOATING

    def text(self) -> str:
        short = _SHORT[self.dtype]
        return (f"{short}:" if short else "") + "x".join(map(str, self.shape))

    def nbytes(self, batch: int = 1) -> int:
        return batch * math.prod(self.shape) * _BYTES[self.dtype]

    def make(self, batch: int, device: Any) -> Any:
        """One tensor of `batch` items: meta (no values) for tracing, or real for a run on the CPU (zeros,
        ids in range from a fixed seed, False masks)."""
        import torch

        dtype = getattr(torch, self.dtype)
        size = (batch, *self.shape)
        if torch.device(device).type == "meta":
            return torch.empty(size, dtype=dtype, device="meta")
        if self.dtype in ("int64", "int32"):
            return torch.randint(0, self.high or 2, size, dtype=dtype, device=device,
                                 generator=torch.Generator(device=device).manual_seed(0))
        return torch.zeros(size, dtype=dtype, device=device)


@dataclass(frozen=True)
class Inputs:
    """What a forward is called with: args in order and kwargs by name, each one TensorSpec."""

    args: tuple[TensorSpec, ...]
    kwargs: tuple[tuple[str, TensorSpec], ...] = ()

    @classmethod
    def of(cls, shape: tuple[int, ...]) -> Inputs:
        """One float32 input of `shape`: the only input a model had before several could be given."""
        return cls((TensorSpec(tuple(shape)),))

    @property
    def first(self) -> TensorSpec:
        return self.args[0] if self.args else self.kwargs[0][1]

    @property
    def plain(self) -> bool:
        """One positional float32 tensor, as every model took before: searchable, summable by the backends."""
        return len(self.args) == 1 and not self.kwargs and self.args[0].dtype == "float32"

    def tensors(self, batch: int = 1, device: Any = "meta") -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (tuple(s.make(batch, device) for s in self.args),
                {name: s.make(batch, device) for name, s in self.kwargs})

    def text(self) -> str:
        return ", ".join([s.text() for s in self.args] + [f"{n}={s.text()}" for n, s in self.kwargs])

    def numel(self) -> int:
        return sum(math.prod(s.shape) for s in (*self.args, *(s for _, s in self.kwargs)))

    def nbytes(self, batch: int = 1) -> int:
        """What the tensors of `batch` items take in memory, for a real forward (each dtype its own size)."""
        return sum(s.nbytes(batch) for s in (*self.args, *(s for _, s in self.kwargs)))


def as_inputs(shape: Any) -> Inputs:
    """A plain shape (what trace.run was always called with) or Inputs, as Inputs."""
    return shape if isinstance(shape, Inputs) else Inputs.of(tuple(shape))


def split(text: str) -> tuple[str | None, str, str]:
    """'mask=bool:50' -> ('mask', 'bool', '50'); the dtype is float32 when not written."""
    m = _WORD.match(text)
    name, dtype, shape = (m.group(1), m.group(2), m.group(3)) if m else (None, None, text)
    if dtype is None:
        return name, "float32", shape
    key = dtype.lower()
    if key not in DTYPES:
        import difflib

        close = difflib.get_close_matches(key, DTYPES, n=3)
        raise SpecError(f"--input {text}: dtype '{dtype}' is not one of {', '.join(DTYPES)}"
                        + (f" (did you mean {', '.join(close)}?)" if close else "")
                        + f"; write {SYNTAX}")
    return name, DTYPES[key], shape


def embedding_ids(model: Any) -> int:
    """How many ids an integer input may hold: the first nn.Embedding's (or EmbeddingBag's) num_embeddings,
    2 (ids 0 and 1) for a model without one."""
    from torch import nn

    for m in model.modules():
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
            return m.num_embeddings
    return 2


def read(texts: list[str], model: Any, read_first: Any) -> tuple[int | None, Inputs]:
    """--input words -> (batch or None, Inputs).

    The first input is what the model's first layer takes: a floating one is read by read_first(shape_text)
    -> (batch or None, item) (target.parse_input, at the model's rank: NxCxHxW has its batch first). Every
    other input is as written, except that when the first was written with its batch first, every input is.
    """
    from nnkit.introspect.target import parse_shape_words

    args: list[TensorSpec] = []
    kwargs: dict[str, TensorSpec] = {}
    batch: int | None = None
    high: int | None = None
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise UsageError(f"--input {text!r}: write {SYNTAX}")
        name, dtype, shape_text = split(text)
        if i == 0 and dtype in FLOATING:
            if shape_text != text:  # errors quote the word as written
                parse_shape_words(shape_text, text)
            batch, shape = read_first(shape_text)
        else:
            shape = parse_shape_words(shape_text, text)
            if batch is not None:
                if len(shape) < 2 or shape[0] != batch:
                    raise UsageError(f"--input {text}: the first input has its batch ({batch}) first, so every "
                                     f"input must; or give each without its batch, and --batch N")
                shape = shape[1:]
        if dtype not in FLOATING and dtype != "bool" and high is None:
            high = embedding_ids(model) if model is not None else 2
        spec = TensorSpec(tuple(shape), dtype, None if dtype in FLOATING or dtype == "bool" else high)
        if name is None:
            if kwargs:
                raise UsageError(f"--input {text}: a positional input after a keyword one "
                                 f"({next(iter(kwargs))}=...); give the positional inputs first, in order")
            args.append(spec)
        elif name in kwargs:
            raise UsageError(f"--input {text}: '{name}' is given twice")
        else:
            kwargs[name] = spec
    return batch, Inputs(tuple(args), tuple(kwargs.items()))
