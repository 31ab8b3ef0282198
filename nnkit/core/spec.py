"""The layer language: input shapes and chains of layers, parsed into frozen LayerSpec objects.

    nnkit shape 3x32x32 "conv(6,5) maxpool(2) conv(16,5) maxpool(2) flatten fc(120) fc(84) fc(10)"

A chain is a list of layers separated by white space, ';', '->' or commas outside parentheses. A layer is a
name, optionally followed by (positional, ..., key=value, ...). Names and keys are case-insensitive. This
module only parses and validates the arguments of each layer on its own; whether a layer fits its input is
decided in nnkit.core.layers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Union

from nnkit.errors import SpecError

Value = Union[int, float, bool, str, tuple]

_SHAPE = re.compile(r"^\s*\d+(\s*[x,*×]\s*\d+)*\s*$", re.IGNORECASE)


def looks_like_shape(text: str) -> bool:
    """True for '3x32x32', '224,224', '128': the first word of a chain, never an architecture name."""
    return bool(_SHAPE.match(text))


def parse_shape(text: str) -> tuple[int | None, tuple[int, ...]]:
    """'3x32x32' -> (None, (3, 32, 32)); '32x32' -> (None, (1, 32, 32)); '8x3x32x32' -> (8, (3, 32, 32)).

    One number is a feature size (for fc and recurrent layers): '128' -> (None, (128,)).
    """
    if not looks_like_shape(text):
        sign = " (sizes must be positive)" if text.strip().startswith("-") else ""
        raise SpecError(f"input '{text}': expected a shape such as 3x32x32, 32x32, 8x3x32x32 or 128{sign}")
    dims = tuple(int(d) for d in re.split(r"\s*[x,*×]\s*", text.strip().lower()))
    if any(d <= 0 for d in dims):
        raise SpecError(f"input '{text}': every size must be positive")
    if len(dims) == 1:
        return None, dims
    if len(dims) == 2:
        return None, (1, *dims)
    if len(dims) == 3:
        return None, dims
    if len(dims) == 4:
        return dims[0], dims[1:]
    raise SpecError(f"input '{text}': at most 4 sizes (NxCxHxW), got {len(dims)}")


# --- argument types -----------------------------------------------------------------------------------------


def _int(v: Value, key: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{key} must be a whole number, got {_show(v)}")
    return v


def _pos_int(v: Value, key: str) -> int:
    v = _int(v, key)
    if v <= 0:
        raise ValueError(f"{key} must be positive, got {v}")
    return v


def _nonneg_int(v: Value, key: str) -> int:
    v = _int(v, key)
    if v < 0:
        raise ValueError(f"{key} must not be negative, got {v}")
    return v


def _pair(check: Callable[[Value, str], int]) -> Callable[[Value, str], tuple[int, int]]:
    def convert(v: Value, key: str) -> tuple[int, int]:
        if isinstance(v, tuple):
            if len(v) != 2:
                raise ValueError(f"{key} takes one size or HxW, got {_show(v)}")
            return (check(v[0], key), check(v[1], key))
        n = check(v, key)
        return (n, n)

    return convert


def _padding(v: Value, key: str) -> tuple[int, int] | str:
    if isinstance(v, str):
        if v in ("same", "valid"):
            return v
        raise ValueError(f"{key} takes a size, HxW, 'same' or 'valid', got {_show(v)}")
    return _pair(_nonneg_int)(v, key)


def _bool(v: Value, key: str) -> bool:
    if isinstance(v, bool):
        return v
    if v in (0, 1):
        return bool(v)
    raise ValueError(f"{key} must be true or false, got {_show(v)}")


def _prob(v: Value, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
        raise ValueError(f"{key} must be a probability between 0 and 1, got {_show(v)}")
    return float(v)


def _scale(v: Value, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1e6:
        raise ValueError(f"{key} must be a positive number below a million, got {_show(v)}")
    return v


def _show(v: Value) -> str:
    if isinstance(v, tuple):
        return "x".join(str(x) for x in v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


_POS_PAIR = _pair(_pos_int)
_NONNEG_PAIR = _pair(_nonneg_int)


@dataclass(frozen=True)
class Signature:
    positional: tuple[str, ...]  # in order; the first `required` of them must be given
    required: int
    defaults: dict[str, Any]
    types: dict[str, Callable[[Value, str], Any]]


def _sig(positional: tuple[str, ...], required: int,
         **params: tuple[Any, Callable[[Value, str], Any]]) -> Signature:
    return Signature(positional, required, {k: d for k, (d, _) in params.items()},
                     {k: t for k, (_, t) in params.items()})


_CONV = dict(s=(1, _POS_PAIR), p=(0, _padding), d=(1, _POS_PAIR), bias=(True, _bool))
_RNN = _sig(("hidden", "layers"), 1, hidden=(None, _pos_int), layers=(1, _pos_int), bidir=(False, _bool),
            bias=(True, _bool))

# The layers, their arguments (positional order first), defaults and types: the contract of the layer
# language.
SIGNATURES: dict[str, Signature] = {
    "conv": _sig(("out", "k", "s", "p"), 2, out=(None, _pos_int), k=(None, _POS_PAIR), g=(1, _pos_int),
                 **_CONV),
    "dwconv": _sig(("k", "s", "p"), 1, k=(None, _POS_PAIR), m=(1, _pos_int), **_CONV),
    "pwconv": _sig(("out",), 1, out=(None, _pos_int), s=(1, _POS_PAIR), g=(1, _pos_int), bias=(True, _bool)),
    "dwsep": _sig(("out", "k", "s", "p"), 2, out=(None, _pos_int), k=(None, _POS_PAIR), **_CONV),
    "tconv": _sig(("out", "k", "s", "p"), 2, out=(None, _pos_int), k=(None, _POS_PAIR), op=(0, _NONNEG_PAIR),
                  g=(1, _pos_int), s=(1, _POS_PAIR), p=(0, _NONNEG_PAIR), d=(1, _POS_PAIR),
                  bias=(True, _bool)),
    "maxpool": _sig(("k", "s", "p"), 1, k=(None, _POS_PAIR), s=(None, _POS_PAIR), p=(0, _NONNEG_PAIR),
                    d=(1, _POS_PAIR), ceil=(False, _bool)),
    "avgpool": _sig(("k", "s", "p"), 1, k=(None, _POS_PAIR), s=(None, _POS_PAIR), p=(0, _NONNEG_PAIR),
                    ceil=(False, _bool)),
    "gap": _sig((), 0),
    "adaptivepool": _sig(("size",), 1, size=(None, _POS_PAIR)),
    "fc": _sig(("out",), 1, out=(None, _pos_int), bias=(True, _bool)),
    "flatten": _sig((), 0),
    "bn": _sig((), 0),
    "dropout": _sig(("p",), 0, p=(0.5, _prob)),
    "upsample": _sig(("scale",), 1, scale=(None, _scale)),
    "lstm": _RNN,
    "gru": _RNN,
    "rnn": _RNN,
}
# Shape-preserving layers that take no arguments.
POINTWISE = ("relu", "relu6", "leakyrelu", "elu", "gelu", "silu", "swish", "hardswish", "mish", "sigmoid",
             "tanh", "softmax", "identity")
for _name in POINTWISE:
    SIGNATURES[_name] = _sig((), 0)

ALIASES = {
    "linear": "fc", "dense": "fc", "conv2d": "conv", "convtranspose": "tconv", "convtranspose2d": "tconv",
    "deconv": "tconv", "maxpool2d": "maxpool", "avgpool2d": "avgpool", "batchnorm": "bn", "batchnorm2d": "bn",
    "globalavgpool": "gap", "adaptiveavgpool": "adaptivepool", "adaptiveavgpool2d": "adaptivepool",
    "depthwise": "dwconv", "pointwise": "pwconv", "separable": "dwsep", "upsampling": "upsample",
    "dwconv2d": "dwconv",
}
KEY_ALIASES = {
    "stride": "s", "padding": "p", "pad": "p", "dilation": "d", "groups": "g", "kernel": "k",
    "kernel_size": "k", "output_padding": "op", "ceil_mode": "ceil", "bidirectional": "bidir",
    "num_layers": "layers", "mult": "m", "multiplier": "m", "out_channels": "out", "out_features": "out",
    "hidden_size": "hidden", "scale_factor": "scale", "output_size": "size",
}


@dataclass(frozen=True)
class LayerSpec:
    """One parsed layer: its canonical kind, its complete arguments, and the text the user wrote."""

    kind: str
    args: tuple[tuple[str, Any], ...]
    text: str

    def __getitem__(self, key: str) -> Any:
        return dict(self.args)[key]

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.args).get(key, default)


# --- tokenizing ---------------------------------------------------------------------------------------------


def _flat(buf: list[str]) -> str:
    """A token for a one-line message: its white space (newlines too) folded to single spaces."""
    return " ".join("".join(buf).split())


MAX_LAYERS = 100_000  # repetition nests; a chain longer than this is a typo, not a network


def split_chain(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """Split a chain into layer tokens; several arguments are joined first, so quoting is optional.

    Repetition: `conv(64,3,p=1)*2` and `[conv(64,3,p=1) relu]*2` (a VGG block) expand in place.
    """
    if not isinstance(text, str):
        text = " ".join(text)
    text = re.sub(r"\s*\*\s*", "*", text)  # "] * 2" -> "]*2"
    tokens: list[str] = []
    buf: list[str] = []
    depth = square = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SpecError(f"layer {len(tokens) + 1} '{_flat(buf)})': unbalanced ')'")
        elif ch == "[" and depth == 0:
            square += 1
        elif ch == "]" and depth == 0:
            square -= 1
            if square < 0:
                raise SpecError(f"layer {len(tokens) + 1} '{_flat(buf)}]': unbalanced ']'")
        if depth == 0 and square == 0 and (ch.isspace() or ch in ",;|" or text.startswith("->", i)):
            if buf:
                tokens.append("".join(buf))
                buf = []
            i += 2 if text.startswith("->", i) else 1
            continue
        if depth == 0 and square == 0 and buf and buf[-1] in ")]" and ch not in "*]":
            tokens.append("".join(buf))  # "conv(6,5)relu": a new layer starts after ')'
            buf = []
        buf.append(ch)
        i += 1
    if depth > 0:
        raise SpecError(f"layer {len(tokens) + 1} '{_flat(buf)}': missing ')'")
    if square > 0:
        raise SpecError(f"layer {len(tokens) + 1} '{_flat(buf)}': missing ']'")
    if buf:
        tokens.append("".join(buf))
    # Allow spaces before '(' as in "conv (6,5)": glue a parenthesised token to the name before it.
    glued: list[str] = []
    for tok in tokens:
        if tok.startswith("(") and glued and "(" not in glued[-1]:
            glued[-1] += tok
        else:
            glued.append(tok)
    expanded: list[str] = []
    for tok in glued:
        m = _REPEAT.match(tok)
        body, times = (m.group(1), int(m.group(2))) if m else (tok, 1)
        if m and not 1 <= times <= 1000:
            raise SpecError(f"layer {len(expanded) + 1} '{tok}': repeat count must be 1 to 1000, got {times}")
        inner = split_chain(body[1:-1]) if body.startswith("[") and body.endswith("]") else [body]
        if len(expanded) + len(inner) * times > MAX_LAYERS:
            raise SpecError(f"layer {len(expanded) + 1} '{tok}': the chain would have more than "
                            f"{MAX_LAYERS:,} "
                            "layers")
        expanded += inner * times
    return expanded


_REPEAT = re.compile(r"^(.*)\*(\d+)$", re.DOTALL)


_TOKEN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?$", re.DOTALL)
_NUMBER = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")
_PAIR_VALUE = re.compile(r"^\d+\s*[x×]\s*\d+$", re.IGNORECASE)


def _value(raw: str) -> Value:
    raw = raw.strip()
    low = raw.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if _NUMBER.match(raw):
        return int(raw)
    if _PAIR_VALUE.match(raw):
        return tuple(int(x) for x in re.split(r"\s*[x×]\s*", low))
    if _FLOAT.match(raw):
        return float(raw)
    if re.match(r"^[a-z_]+$", low):
        return low
    raise ValueError(f"cannot read the value '{raw}'")


def parse_layer(token: str, index: int | None = None) -> LayerSpec:
    where = f"layer {index} " if index is not None else "layer "
    token = " ".join(token.split())  # one line in every message and table, whatever white space it held
    m = _TOKEN.match(token)
    if not m:
        raise SpecError(f"{where}'{token}': expected name or name(arguments), e.g. conv(16,3,s=2)")
    name, argtext = m.group(1).lower(), m.group(2)
    kind = ALIASES.get(name, name)
    sig = SIGNATURES.get(kind)
    if sig is None:
        import difflib

        close = difflib.get_close_matches(name, list(SIGNATURES) + list(ALIASES), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close \
            else f"; known layers: {', '.join(sorted(SIGNATURES))}"
        raise SpecError(f"{where}'{token}': unknown layer '{name}'{hint}")
    given: dict[str, Value] = {}
    if argtext is not None and argtext.strip():
        seen_keyword = False
        for pos, part in enumerate(argtext.split(",")):
            if not part.strip():
                raise SpecError(f"{where}{token}: empty argument {pos + 1}")
            if "=" in part:
                key, raw = (x.strip() for x in part.split("=", 1))
                key = KEY_ALIASES.get(key.lower(), key.lower())
                seen_keyword = True
                if key not in sig.types:
                    options = ", ".join(sig.types) or "no arguments"
                    raise SpecError(f"{where}{token}: {kind} has no argument '{key}' (it takes {options})")
            else:
                if seen_keyword:
                    raise SpecError(f"{where}{token}: positional argument after a keyword argument")
                if not sig.types:
                    raise SpecError(f"{where}{token}: {kind} takes no arguments")
                if pos >= len(sig.positional):
                    raise SpecError(f"{where}{token}: {kind} takes at most {len(sig.positional)} positional "
                                    f"argument{'s' if len(sig.positional) != 1 else ''} "
                                    f"({', '.join(sig.positional)})")
                key, raw = sig.positional[pos], part
            if key in given:
                raise SpecError(f"{where}{token}: '{key}' given twice")
            try:
                given[key] = _value(raw)
            except ValueError as exc:
                raise SpecError(f"{where}{token}: {exc}") from None
    missing = [k for k in sig.positional[: sig.required] if k not in given]
    if missing:
        raise SpecError(f"{where}{token}: {kind} needs {', '.join(missing)} "
                        f"(e.g. {_example(kind)})")
    args: dict[str, Any] = {}
    for key, default in sig.defaults.items():
        if key in given:
            try:
                args[key] = sig.types[key](given[key], key)
            except ValueError as exc:
                raise SpecError(f"{where}{token}: {exc}") from None
        else:
            args[key] = default if default is None else sig.types[key](default, key)
    return LayerSpec(kind=kind, args=tuple(args.items()), text=token)


_EXAMPLES = {
    "conv": "conv(16,3) or conv(16,3,s=2,p=1)", "dwconv": "dwconv(3,s=2,p=1)", "pwconv": "pwconv(64)",
    "dwsep": "dwsep(64,3,p=1)", "tconv": "tconv(16,2,s=2)", "maxpool": "maxpool(2)", "avgpool": "avgpool(2)",
    "adaptivepool": "adaptivepool(7x7)", "fc": "fc(10)", "upsample": "upsample(2)", "lstm": "lstm(256,2)",
    "gru": "gru(256)", "rnn": "rnn(256)",
}


def _example(kind: str) -> str:
    return _EXAMPLES.get(kind, kind)


def parse_chain(text: str | list[str] | tuple[str, ...]) -> list[LayerSpec]:
    tokens = split_chain(text)
    return [parse_layer(tok, i + 1) for i, tok in enumerate(tokens)]
