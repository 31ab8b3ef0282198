"""The layer language: input shapes and chains of layers, parsed into frozen LayerSpec objects.

    nnkit shape 3x32x32 "conv(6,5) maxpool(2) conv(16,5) maxpool(2) flatten fc(120) fc(84) fc(10)"

A chain is a list of layers separated by white space, ';', '->' or commas outside parentheses. A layer is a
name, optionally followed by (positional, ..., key=value, ...). Names and keys are case-insensitive. This
module only parses and validates the arguments of each layer on its own; whether a layer fits its input is
decided in nnkit.core.layers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Union

from nnkit.core.numbers import MAX_ELEMENTS, MAX_INPUT_ELEMENTS, MAX_SIZE, too_large
from nnkit.errors import SpecError

Value = Union[int, float, bool, str, tuple]

_SHAPE = re.compile(r"^\s*\d+(\s*[x,*×]\s*\d+)*\s*$", re.IGNORECASE)


def looks_like_shape(text: str) -> bool:
    """True for '3x32x32', '224,224', '128': the first word of a chain, never an architecture name."""
    return bool(_SHAPE.match(text))


def parse_shape(text: str) -> tuple[int | None, tuple[int, ...]]:
    """'3x32x32' -> (None, (3, 32, 32)); '32x32' -> (None, (1, 32, 32)); '8x3x32x32' -> (8, (3, 32, 32)).

    One number is a feature size (for fc and recurrent layers): '128' -> (None, (128,)). This is how a 2-D
    chain (or one without spatial layers) reads its input; read_input reads it for the chain's own
    dimensionality.
    """
    return read_input(text, 2)


TOKENS = "tokens"  # the form of a chain whose first shape-bearing layer works on TxD tokens (attn, cls, ...)
Form = int | str  # 1, 2, 3 (spatial axes after the channels) or TOKENS

# What each form reads: the spellings accepted (for messages), and the sizes -> (batch, shape) rules by count.
_FORMS: dict[Form, tuple[str, dict[int, Callable[[tuple[int, ...]], tuple[int | None, tuple[int, ...]]]]]] = {
    1: ("CxL, L (C = 1) or NxCxL", {1: lambda d: (None, (1, *d)), 2: lambda d: (None, d),
                                    3: lambda d: (d[0], d[1:])}),
    2: ("CxHxW, HxW (C = 1), NxCxHxW or a feature size F",
        {1: lambda d: (None, d), 2: lambda d: (None, (1, *d)),
                                                            3: lambda d: (None, d),
                                                            4: lambda d: (d[0], d[1:])}),
    3: ("CxDxHxW, DxHxW (C = 1) or NxCxDxHxW", {3: lambda d: (None, (1, *d)), 4: lambda d: (None, d),
                                               5: lambda d: (d[0], d[1:])}),
    TOKENS: ("TxD (T tokens of D features) or NxTxD", {2: lambda d: (None, d), 3: lambda d: (d[0], d[1:])}),
}


def read_sizes(text: str, shown: str | None = None, *, model: bool = False) -> tuple[int, ...]:
    """'3x224x224' -> (3, 224, 224): every size positive and the whole within what can exist, for a chain's input
    and a model's --input alike; errors quote `shown` (the word as the user wrote it) or the text.

    model: the input is traced by torch, whose meta tensors still count bytes in int64, so it is held to
    MAX_INPUT_ELEMENTS rather than to the largest tensor there can be.
    """
    shown = text if shown is None else shown
    if not looks_like_shape(text):
        sign = " (sizes must be positive)" if text.strip().startswith("-") else ""
        raise SpecError(f"input '{_cut(shown)}': expected a shape such as 3x32x32, 32x32, 8x3x32x32 or 128{sign}")
    words = re.split(r"\s*[x,*×]\s*", text.strip().lower())
    if any(too_large(d) for d in words):  # before int(): thousands of digits are Python's int-string limit
        raise SpecError(f"input '{_cut(shown)}': a size above {MAX_SIZE:,} (2**31 - 1) is beyond any network")
    dims = tuple(int(d) for d in words)
    if any(d <= 0 for d in dims):
        raise SpecError(f"input '{_cut(shown)}': every size must be positive")
    if model and math.prod(dims) > MAX_INPUT_ELEMENTS:
        raise SpecError(f"input '{_cut(shown)}': more than 2**48 elements, beyond any real input (a model's "
                        "activations are larger still)")
    if math.prod(dims) > MAX_ELEMENTS:
        raise SpecError(f"input '{_cut(shown)}': more than 2**63 elements, beyond any tensor")
    return dims


def read_input(text: str, form: Form = 2, why: str = "") -> tuple[int | None, tuple[int, ...]]:
    """The input shape as a chain of `form` reads it: (batch or None, shape without the batch).

    `why` names the layer that set the form, for the message when the sizes do not fit it.
    """
    dims = read_sizes(text)
    spellings, rules = _FORMS[form]
    if len(dims) not in rules:
        if form == 2:
            raise SpecError(f"input '{text}': at most 4 sizes (NxCxHxW), got {len(dims)}")
        kind = "a token" if form == TOKENS else f"a {form}-D"
        raise SpecError(f"input '{text}': {kind} chain{f' ({why})' if why else ''} reads {spellings}, got "
                        f"{len(dims)} size{'s' if len(dims) > 1 else ''}")
    return rules[len(dims)](dims)


# --- argument types -----------------------------------------------------------------------------------------


def _int(v: Value, key: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{key} must be a whole number, got {value_text(v)}")
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


_SPELL = {1: "one size", 2: "one size or HxW", 3: "one size or DxHxW"}


def _sizes(n: int, check: Callable[[Value, str], int]) -> Callable[[Value, str], tuple[int, ...]]:
    """A per-axis argument of an n-D layer: one size for every axis, or exactly one size per axis (3x7x7)."""
    def convert(v: Value, key: str) -> tuple[int, ...]:
        if isinstance(v, tuple):
            if len(v) != n:
                raise ValueError(f"{key} takes {_SPELL[n]}, got {value_text(v)}")
            return tuple(check(x, key) for x in v)
        return (check(v, key),) * n

    return convert


def _pair(check: Callable[[Value, str], int]) -> Callable[[Value, str], tuple[int, ...]]:
    return _sizes(2, check)


def _padding_of(n: int) -> Callable[[Value, str], tuple[int, ...] | str]:
    def convert(v: Value, key: str) -> tuple[int, ...] | str:
        if isinstance(v, str):
            if v in ("same", "valid"):
                return v
            sizes = {1: "a size", 2: "a size, HxW", 3: "a size, DxHxW"}[n]
            raise ValueError(f"{key} takes {sizes}, 'same' or 'valid', got {value_text(v)}")
        return _sizes(n, _nonneg_int)(v, key)

    return convert


def _size_or_sizes(v: Value, key: str) -> int | tuple[int, ...]:
    """An output size for a layer of any rank (adaptive pooling): one size, or one per axis, checked later."""
    if isinstance(v, tuple):
        return tuple(_pos_int(x, key) for x in v)
    return _pos_int(v, key)


def _bool(v: Value, key: str) -> bool:
    if isinstance(v, bool):
        return v
    if v in (0, 1):
        return bool(v)
    raise ValueError(f"{key} must be true or false, got {value_text(v)}")


def _prob(v: Value, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
        raise ValueError(f"{key} must be a probability between 0 and 1, got {value_text(v)}")
    return float(v)


def _scale(v: Value, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1e6:
        raise ValueError(f"{key} must be a positive number below a million, got {value_text(v)}")
    return v


UPSAMPLE_MODES = ("nearest", "bilinear")


def _mode(v: Value, key: str) -> str:
    if not isinstance(v, str) or v not in UPSAMPLE_MODES:
        raise ValueError(f"{key} must be {' or '.join(UPSAMPLE_MODES)}, got {value_text(v)}")
    return v


def value_text(v: Value) -> str:
    """A value as the layer language writes it: 3x7x7, true, 0.5."""
    if isinstance(v, tuple):
        return "x".join(str(x) for x in v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


_POS_PAIR = _pair(_pos_int)


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


_RNN = _sig(("hidden", "layers"), 1, hidden=(None, _pos_int), layers=(1, _pos_int), bidir=(False, _bool),
            bias=(True, _bool), batch_first=(False, _bool))


def _windowed(n: int) -> dict[str, Signature]:
    """The sliding-window layers of an n-D chain (nn.Conv{n}d, ConvTranspose{n}d, MaxPool{n}d, AvgPool{n}d),
    each argument as its torch module takes it; per-axis arguments are n-tuples."""
    pos, nonneg = _sizes(n, _pos_int), _sizes(n, _nonneg_int)
    conv = {"s": (1, pos), "p": (0, _padding_of(n)), "d": (1, pos), "bias": (True, _bool)}
    suffix = "" if n == 2 else f"{n}d"
    sigs = {
        "conv": _sig(("out", "k", "s", "p"), 2, out=(None, _pos_int), k=(None, pos), g=(1, _pos_int), **conv),
        "dwconv": _sig(("k", "s", "p"), 1, k=(None, pos), m=(1, _pos_int), **conv),
        "pwconv": _sig(("out",), 1, out=(None, _pos_int), s=(1, pos), g=(1, _pos_int), bias=(True, _bool)),
        "dwsep": _sig(("out", "k", "s", "p"), 2, out=(None, _pos_int), k=(None, pos), **conv),
        "tconv": _sig(("out", "k", "s", "p"), 2, out=(None, _pos_int), k=(None, pos), op=(0, nonneg),
                      g=(1, _pos_int), s=(1, pos), p=(0, nonneg), d=(1, pos), bias=(True, _bool)),
        "maxpool": _sig(("k", "s", "p"), 1, k=(None, pos), s=(None, pos), p=(0, nonneg), d=(1, pos),
                        ceil=(False, _bool)),
        "avgpool": _sig(("k", "s", "p"), 1, k=(None, pos), s=(None, pos), p=(0, nonneg), ceil=(False, _bool)),
    }
    return {name + suffix: sig for name, sig in sigs.items()}


# The layers, their arguments (positional order first), defaults and types: the contract of the layer
# language.
SIGNATURES: dict[str, Signature] = {
    **_windowed(2),
    "gap": _sig((), 0),
    "adaptivepool": _sig(("size",), 1, size=(None, _size_or_sizes)),
    "fc": _sig(("out",), 1, out=(None, _pos_int), bias=(True, _bool)),
    "flatten": _sig((), 0),
    "bn": _sig((), 0),
    "dropout": _sig(("p",), 0, p=(0.5, _prob)),
    "upsample": _sig(("scale",), 1, scale=(None, _scale), mode=("nearest", _mode)),
    "lstm": _RNN,
    "gru": _RNN,
    "rnn": _RNN,
    **_windowed(1),
    **_windowed(3),
    # Normalisations beside bn (nn.LayerNorm over the last axis, nn.GroupNorm, nn.InstanceNorm1d/2d/3d by
    # rank).
    "ln": _sig((), 0, affine=(True, _bool), bias=(True, _bool)),
    "gn": _sig(("g",), 1, g=(None, _pos_int), affine=(True, _bool)),
    "in": _sig((), 0, affine=(False, _bool)),
    # Transformer layers on T tokens of D features (torchvision's VisionTransformer, Dosovitskiy et al. 2021).
    "patch": _sig(("dim", "size"), 2, dim=(None, _pos_int), size=(None, _POS_PAIR), bias=(True, _bool)),
    "cls": _sig((), 0),
    "pos": _sig((), 0),
    "attn": _sig(("heads",), 1, heads=(None, _pos_int), bias=(True, _bool)),
    "mlp": _sig(("hidden",), 1, hidden=(None, _pos_int), bias=(True, _bool)),
    "encoder": _sig(("heads", "mlp"), 2, heads=(None, _pos_int), mlp=(None, _pos_int)),
    "token": _sig(("i",), 0, i=(0, _int)),
}
# The spatial dimensionality each layer kind fixes for its chain (the rest work at any rank).
RANK: dict[str, int] = {name + ("" if n == 2 else f"{n}d"): n for n in (1, 2, 3)
                        for name in ("conv", "dwconv", "pwconv", "dwsep", "tconv", "maxpool", "avgpool")}
RANK["patch"] = 2  # a Conv2d on CxHxW, whose map becomes tokens
# Layers that take TxD tokens: a chain that starts with one reads its input as TxD.
TOKEN_KINDS = ("cls", "pos", "attn", "mlp", "encoder", "token")
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
    "convtranspose1d": "tconv1d", "convtranspose3d": "tconv3d", "batchnorm1d": "bn", "batchnorm3d": "bn",
    "adaptiveavgpool1d": "adaptivepool", "adaptiveavgpool3d": "adaptivepool", "layernorm": "ln",
    "groupnorm": "gn", "instancenorm": "in", "instancenorm1d": "in", "instancenorm2d": "in",
    "instancenorm3d": "in", "multiheadattention": "attn", "mha": "attn", "encoderblock": "encoder",
}
KEY_ALIASES = {
    "stride": "s", "padding": "p", "pad": "p", "dilation": "d", "groups": "g", "kernel": "k",
    "kernel_size": "k", "output_padding": "op", "ceil_mode": "ceil", "bidirectional": "bidir",
    "num_layers": "layers", "mult": "m", "multiplier": "m", "out_channels": "out", "out_features": "out",
    "hidden_size": "hidden", "scale_factor": "scale", "output_size": "size", "num_groups": "g",
    "elementwise_affine": "affine", "num_heads": "heads", "mlp_dim": "mlp", "patch_size": "size",
    "hidden_dim": "dim", "index": "i",
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
MAX_NESTING = 32  # [..] groups inside groups; deeper is no network, and each level is one recursive call


def _cut(text: str, limit: int = 40) -> str:
    """A long hostile token, shortened for a one-line message."""
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _glue_stars(text: str) -> str:
    """'] * 2' -> ']*2' in linear time (a regex over white space around '*' rescans each run: quadratic)."""
    parts = text.split("*")
    if len(parts) == 1:
        return text
    return "*".join([parts[0].rstrip(), *(p.strip() for p in parts[1:-1]), parts[-1].lstrip()])


def split_chain(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """Split a chain into layer tokens; several arguments are joined first, so quoting is optional.

    Repetition: `conv(64,3,p=1)*2` and `[conv(64,3,p=1) relu]*2` (a VGG block) expand in place.
    """
    if not isinstance(text, str):
        text = " ".join(text)
    text = _glue_stars(text)  # "] * 2" -> "]*2"
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
            if square > MAX_NESTING:
                raise SpecError(f"layer {len(tokens) + 1}: groups nested more than {MAX_NESTING} deep")
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
        body, times = (m.group(1), 0 if too_large(m.group(2)) else int(m.group(2))) if m else (tok, 1)
        if m and not 1 <= times <= 1000:
            raise SpecError(f"layer {len(expanded) + 1} '{_cut(tok)}': repeat count must be 1 to 1000, got "
                            f"{_cut(m.group(2))}")
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
_SIZES_VALUE = re.compile(r"^\d+(\s*[x×]\s*\d+)+$", re.IGNORECASE)  # 3x3, 3x7x7: one size per axis


def read_value(raw: str) -> Value:
    """One argument's value as the layer language reads it: true/false, a whole number, sizes per axis (3x7x7),
    a number, else the word itself."""
    raw = raw.strip()
    low = raw.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if _NUMBER.match(raw):
        if too_large(raw):
            raise ValueError(f"{_cut(raw)} is above {MAX_SIZE:,} (2**31 - 1), beyond any network")
        return int(raw)
    if _SIZES_VALUE.match(raw):
        parts = re.split(r"\s*[x×]\s*", low)
        if any(too_large(x) for x in parts):
            raise ValueError(f"{_cut(raw)} has a size above {MAX_SIZE:,} (2**31 - 1), beyond any network")
        return tuple(int(x) for x in parts)
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
                given[key] = read_value(raw)
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
    "gru": "gru(256)", "rnn": "rnn(256)", "conv1d": "conv1d(32,3,p=1)", "conv3d": "conv3d(64,3x7x7,s=1x2x2)",
    "gn": "gn(8)", "patch": "patch(768,16)", "attn": "attn(12)", "mlp": "mlp(3072)",
    "encoder": "encoder(12,3072)",
}


def _example(kind: str) -> str:
    base = kind[:-2] if kind in RANK and kind[-2:] in ("1d", "3d") else None
    if kind not in _EXAMPLES and base in _EXAMPLES:  # maxpool1d(2), written as its 2-D form
        return _EXAMPLES[base].replace(f"{base}(", f"{kind}(")
    return _EXAMPLES.get(kind, kind)


def parse_chain(text: str | list[str] | tuple[str, ...]) -> list[LayerSpec]:
    tokens = split_chain(text)
    return [parse_layer(tok, i + 1) for i, tok in enumerate(tokens)]
