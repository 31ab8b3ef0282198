"""A chain in the layer language as a plan of torch.nn modules, and that plan as PyTorch source.

    plan("3x32x32 conv(6,5) relu maxpool(2) flatten fc(10)")  ->  conv1 = Conv2d(3, 6, kernel_size=5), relu2, ...

Pure Python (no torch): the plan names each module's class and arguments; nnkit.train.chain_model builds the
modules from it, and `nnkit code` prints it as one nn.Module class. Both read the same plan, so the module the
trainer trains and the source the user reads have the same parameters under the same names (a checkpoint's
"model" loads into the printed class).

Every layer kind with a torch module has one builder in BUILDERS; a kind without one is refused by name. The
arguments mirror tests/torch_oracle.py, the module each layer's arithmetic is checked against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nnkit.core.report import Shape
from nnkit.core.spec import RANK, LayerSpec, looks_like_shape, parse_chain
from nnkit.errors import SpecError


@dataclass(frozen=True)
class Call:
    """`nn.<cls>(*args, **kwargs)`; an argument may be a Call itself (nn.Sequential's parts). `home` says where
    the class lives: torch.nn, torchvision's ViT module (the encoder block exactly as vit_b_16 has it), or ""
    for the few modules torch lacks (HELPERS), written into the printed file."""

    cls: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    home: str = "nn"

    def source(self) -> str:
        parts = [_literal(a) for a in self.args] + [f"{k}={_literal(v)}" for k, v in self.kwargs]
        return f"{'nn.' if self.home == 'nn' else ''}{self.cls}({', '.join(parts)})"

    def calls(self) -> list[Call]:
        """This call and every call among its arguments."""
        return [self] + [c for a in self.args if isinstance(a, Call) for c in a.calls()]


@dataclass(frozen=True)
class Module:
    name: str  # the attribute: kind and layer number (conv1, relu2), so parameter names say where they are
    call: Call
    spec: LayerSpec
    input: Shape
    output: Shape
    sequence: bool = False  # recurrent: called on (N, steps, features), the leading sizes being the steps

    @property
    def steps(self) -> int:
        return math.prod(self.input[:-1])


@dataclass(frozen=True)
class Plan:
    source: str  # the chain as nnkit writes it: "3x32x32 conv(6,5) relu ..."
    batch: int | None  # the N of an NxCxHxW input, when given
    input: Shape
    output: Shape
    params: int
    modules: tuple[Module, ...]


def split_target(text: str | list[str] | tuple[str, ...]) -> tuple[str, str]:
    """'3x32x32 conv(6,5) relu' -> ('3x32x32', 'conv(6,5) relu'); several words are joined first."""
    if not isinstance(text, str):
        text = " ".join(text)
    first, _, rest = text.strip().partition(" ")
    return first, rest.strip()


def is_chain(text: str | None) -> bool:
    """True when `text` starts with an input shape and has layers after it (not an architecture name)."""
    if not text:
        return False
    first, rest = split_target(text)
    return looks_like_shape(first) and bool(rest)


def plan(text: str | list[str] | tuple[str, ...]) -> Plan:
    """The chain's modules, each with its input and output shape; geometry checked by nnkit.core.chain."""
    from nnkit.core.chain import analyze_chain

    first, rest = split_target(text)
    if not looks_like_shape(first):
        raise SpecError(f"chain '{first}': expected an input shape first, e.g. 3x32x32 \"conv(6,5) relu\"")
    specs = parse_chain(rest)
    analysis = analyze_chain(first, specs)  # every shape error as nnkit's own one-line message
    batch, shape = analysis.batch, analysis.input  # read as the chain's own dimensionality reads it
    modules = []
    for spec, row in zip(specs, analysis.layers):
        build = BUILDERS.get(spec.kind)
        if build is None:
            raise SpecError(f"layer {row.index} {spec.text}: no torch module for '{spec.kind}' layers yet, so the "
                            "chain cannot be built (shape, params and flops still compute it)")
        call, sequence = build(spec, row.input)
        modules.append(Module(f"{spec.kind}{row.index}", call, spec, row.input, row.output, sequence))
    source = f"{'x'.join(map(str, (*((batch,) if batch else ()), *shape)))} {' '.join(s.text for s in specs)}"
    return Plan(source=source, batch=batch, input=shape, output=analysis.output, params=analysis.params,
                modules=tuple(modules))


# ---------------------------------------------------------------------------------------------- builders


VIT = "torchvision.models.vision_transformer"
# Modules the layer language has and torch.nn does not, as source: `nnkit code` prints the ones a chain uses, and
# nnkit.train.chain_model executes the same text, so the trained module and the printed one cannot drift apart.
# Parameters are named and initialised as torchvision's VisionTransformer names and initialises them.
HELPERS: dict[str, str] = {
    "Patches": '''class Patches(nn.Module):
    """A Conv2d with stride = kernel size, its map read as tokens: (N, C, H, W) -> (N, H*W/size^2, dim)."""

    def __init__(self, channels: int, dim: int, size, bias: bool = True) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, size, stride=size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)
''',
    "ClassToken": '''class ClassToken(nn.Module):
    """A learned token put before the others: (N, T, D) -> (N, T + 1, D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
''',
    "PositionEmbedding": '''class PositionEmbedding(nn.Module):
    """A learned embedding added to every token: (N, T, D) -> (N, T, D)."""

    def __init__(self, tokens: int, dim: int) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, tokens, dim).normal_(std=0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pos_embedding
''',
    "SelfAttention": '''class SelfAttention(nn.Module):
    """nn.MultiheadAttention on its own tokens (query = key = value), as torchvision's EncoderBlock calls it."""

    def __init__(self, dim: int, heads: int, bias: bool = True) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, bias=bias, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]
''',
    "Token": '''class Token(nn.Module):
    """One token of each item: (N, T, D) -> (N, D)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.index]
''',
}


def _kw(**given: tuple[Any, Any]) -> tuple[tuple[str, Any], ...]:
    """Keyword arguments that differ from torch's defaults: key=(value, default)."""
    return tuple((k, _short(v)) for k, (v, default) in given.items() if _short(v) != _short(default))


def _short(v: Any) -> Any:
    """(5, 5) -> 5: a cube or square kernel written once, as people write it (and a 1-D kernel (3,) as 3)."""
    if isinstance(v, tuple) and v and all(x == v[0] for x in v):
        return v[0]
    return v


def _rank(spec: LayerSpec, shape: Shape) -> int:
    """The layer's spatial rank: its kind's (conv1d: 1), else its input's (bn, gap, upsample work at any)."""
    return RANK.get(spec.kind, len(shape) - 1)


def _nd(cls: str, spec: LayerSpec, shape: Shape) -> str:
    """"Conv" -> "Conv1d" / "Conv2d" / "Conv3d" by the layer's rank."""
    return f"{cls}{_rank(spec, shape)}d"


def _conv(spec: LayerSpec, shape: Shape) -> tuple[Call, bool]:
    c = shape[0]
    p = spec["p"] if spec["p"] != "valid" else 0
    return Call(_nd("Conv", spec, shape), (c, spec["out"]), (("kernel_size", _short(spec["k"])),) + _kw(
        stride=(spec["s"], 1), padding=(p, 0), dilation=(spec["d"], 1), groups=(spec["g"], 1),
        bias=(spec["bias"], True))), False


def _pwconv(spec: LayerSpec, shape: Shape) -> tuple[Call, bool]:
    return Call(_nd("Conv", spec, shape), (shape[0], spec["out"]), (("kernel_size", 1),) + _kw(
        stride=(spec["s"], 1), groups=(spec["g"], 1), bias=(spec["bias"], True))), False


def _depthwise(spec: LayerSpec, shape: Shape, out: int) -> Call:
    c = shape[0]
    p = spec["p"] if spec["p"] != "valid" else 0
    return Call(_nd("Conv", spec, shape), (c, out), (("kernel_size", _short(spec["k"])),) + _kw(
        stride=(spec["s"], 1), padding=(p, 0), dilation=(spec["d"], 1)) + (("groups", c),)
        + _kw(bias=(spec["bias"], True)))


def _dwconv(spec: LayerSpec, shape: Shape) -> tuple[Call, bool]:
    return _depthwise(spec, shape, shape[0] * spec["m"]), False


def _dwsep(spec: LayerSpec, shape: Shape) -> tuple[Call, bool]:
    c = shape[0]
    pointwise = Call(_nd("Conv", spec, shape), (c, spec["out"]), (("kernel_size", 1),)
                     + _kw(bias=(spec["bias"], True)))
    return Call("Sequential", (_depthwise(spec, shape, c), pointwise)), False


def _tconv(spec: LayerSpec, shape: Shape) -> tuple[Call, bool]:
    return Call(_nd("ConvTranspose", spec, shape), (shape[0], spec["out"]), (("kernel_size", _short(spec["k"])),)
                + _kw(stride=(spec["s"], 1), padding=(spec["p"], 0), output_padding=(spec["op"], 0),
                      groups=(spec["g"], 1), bias=(spec["bias"], True), dilation=(spec["d"], 1))), False


def _pool(spec: LayerSpec, shape: Shape) -> tuple[Call, bool]:
    k = spec["k"]
    given = {"stride": (spec["s"] or k, k), "padding": (spec["p"], 0)}
    is_max = spec.kind.startswith("maxpool")
    if is_max:
        given["dilation"] = (spec["d"], 1)
    given["ceil_mode"] = (spec["ceil"], False)
    return Call(_nd("MaxPool" if is_max else "AvgPool", spec, shape), (_short(k),), _kw(**given)), False


def _adaptive(spec: LayerSpec, shape: Shape) -> tuple[Call, bool]:
    return Call(_nd("AdaptiveAvgPool", spec, shape), (1 if spec.kind == "gap" else _short(spec["size"]),)), False


def _fc(spec: LayerSpec, shape: Shape) -> tuple[Call, bool]:
    return Call("Linear", (shape[-1], spec["out"]), _kw(bias=(spec["bias"], True))), False


def _bn(spec: LayerSpec, shape: Shape) -> tuple[Call, bool]:
    # by rank as the core counts it: BatchNorm1d also for a vector (C) and for tokens (T channels of D)
    return Call(f"BatchNorm{len(shape) - 1 if len(shape) in (3, 4) else 1}d", (shape[0],)), False


def _ln(spec: LayerSpec, shape: Shape) -> tuple[Call, bool]:
    return Call("LayerNorm", (shape[-1],), _kw(elementwise_affine=(spec["affine"], True),
                                              bias=(spec["bias"], True))), False


def _gn(spec: LayerSpec, shape: Shape) -> tuple[Call, bool]:
    return Call("GroupNorm", (spec["g"], shape[0]), _kw(affine=(spec["affine"], True))), False


def _in(spec: LayerSpec, shape: Shape) -> tuple[Call, bool]:
    return Call(_nd("InstanceNorm", spec, shape), (shape[0],), _kw(affine=(spec["affine"], False))), False


def _upsample(spec: LayerSpec, shape: Shape) -> tuple[Call, bool]:
    if spec["mode"] == "nearest":
        return Call("Upsample", (), (("scale_factor", spec["scale"]),)), False
    # nnkit's bilinear is per axis at any rank: PyTorch names it linear (1-D) and trilinear (3-D)
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[_rank(spec, shape)]
    return Call("Upsample", (), (("scale_factor", spec["scale"]), ("mode", mode), ("align_corners", False))), False


def _rnn(spec: LayerSpec, shape: Shape) -> tuple[Call, bool]:
    cls = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[spec.kind]
    return Call(cls, (shape[-1], spec["hidden"]), _kw(num_layers=(spec["layers"], 1), bias=(spec["bias"], True))
                + (("batch_first", True),) + _kw(bidirectional=(spec["bidir"], False))), True


def _patch(spec: LayerSpec, shape: Shape) -> tuple[Call, bool]:
    return Call("Patches", (shape[0], spec["dim"], _short(spec["size"])), _kw(bias=(spec["bias"], True)),
                home=""), False


def _mlp(spec: LayerSpec, shape: Shape) -> tuple[Call, bool]:
    d, hidden = shape[-1], spec["hidden"]
    if spec["bias"]:  # torchvision's MLPBlock (fc, GELU, dropout, fc, dropout), dropout 0 as nnkit counts it
        return Call("MLPBlock", (d, hidden, 0.0), home=VIT), False
    return Call("Sequential", (Call("Linear", (d, hidden), (("bias", False),)), Call("GELU"),
                               Call("Linear", (hidden, d), (("bias", False),)))), False


def _simple(cls: str, *args: Any, **kwargs: Any) -> Callable[[LayerSpec, Shape], tuple[Call, bool]]:
    return lambda spec, shape: (Call(cls, args, tuple(kwargs.items())), False)


def _rank_free(kind: str) -> str:
    return kind[:-2] if kind in RANK and kind[-2:] in ("1d", "3d") else kind


_BY_BASE: dict[str, Callable[[LayerSpec, Shape], tuple[Call, bool]]] = {
    "conv": _conv, "pwconv": _pwconv, "dwconv": _dwconv, "dwsep": _dwsep, "tconv": _tconv,
    "maxpool": _pool, "avgpool": _pool,
}
BUILDERS: dict[str, Callable[[LayerSpec, Shape], tuple[Call, bool]]] = {
    **{kind: _BY_BASE[_rank_free(kind)] for kind in RANK if _rank_free(kind) in _BY_BASE},
    "gap": _adaptive, "adaptivepool": _adaptive, "fc": _fc,
    "flatten": _simple("Flatten"), "bn": _bn, "ln": _ln, "gn": _gn, "in": _in,
    "dropout": lambda spec, shape: (Call("Dropout", (), (("p", spec["p"]),)), False),
    "upsample": _upsample,
    "lstm": _rnn, "gru": _rnn, "rnn": _rnn,
    "patch": _patch,
    "cls": lambda spec, shape: (Call("ClassToken", (shape[-1],), home=""), False),
    "pos": lambda spec, shape: (Call("PositionEmbedding", (shape[0], shape[-1]), home=""), False),
    "attn": lambda spec, shape: (Call("SelfAttention", (shape[-1], spec["heads"]),
                                      _kw(bias=(spec["bias"], True)), home=""), False),
    "mlp": _mlp,
    # torchvision's pre-norm block (ln, attention, residual, ln, MLP, residual); dropouts 0 as nnkit counts it
    "encoder": lambda spec, shape: (Call("EncoderBlock", (spec["heads"], shape[-1], spec["mlp"], 0.0, 0.0),
                                         home=VIT), False),
    "token": lambda spec, shape: (Call("Token", (spec["i"],), home=""), False),
    "relu": _simple("ReLU"), "relu6": _simple("ReLU6"), "leakyrelu": _simple("LeakyReLU"), "elu": _simple("ELU"),
    "gelu": _simple("GELU"), "silu": _simple("SiLU"), "swish": _simple("SiLU"), "hardswish": _simple("Hardswish"),
    "mish": _simple("Mish"), "sigmoid": _simple("Sigmoid"), "tanh": _simple("Tanh"),
    "softmax": _simple("Softmax", dim=1), "identity": _simple("Identity"),
}


# ---------------------------------------------------------------------------------------------- source


def _literal(v: Any) -> str:
    return v.source() if isinstance(v, Call) else repr(v)


def _dims(shape: Shape) -> str:
    return "x".join(map(str, shape))


def forward_line(m: Module) -> str:
    """The statement of forward() that runs module `m` on x."""
    if not m.sequence:
        return f"x = self.{m.name}(x)"
    # (N, *lead, F) -> N sequences of prod(lead) steps of F features, and back (tests/torch_oracle.py's _Rnn)
    lead = ", ".join(str(d) for d in m.output[:-1])
    return (f"x = self.{m.name}(x.reshape(-1, {m.steps}, {m.input[-1]}))[0]"
            f".reshape(-1, {lead + ', ' if lead else ''}{m.output[-1]})")


def source(p: Plan, name: str = "Net") -> str:
    """The plan as a Python file: one nn.Module class, with each layer's shapes as comments, and a check that runs
    it when the file is executed."""
    if not name.isidentifier():
        raise SpecError(f"--name {name}: not a Python class name")
    import textwrap

    doc = textwrap.wrap(f"{p.source}: written by `nnkit code` as a PyTorch module.", 105, break_long_words=False,
                        break_on_hyphens=False)
    calls = [c for m in p.modules for c in m.call.calls()]
    imports = ["import torch", "from torch import nn"]
    from_vit = sorted({c.cls for c in calls if c.home == VIT})
    if from_vit:
        imports.append(f"from {VIT} import {', '.join(from_vit)}")
    used = [cls for cls in HELPERS if any(c.home == "" and c.cls == cls for c in calls)]
    helpers = [HELPERS[cls] for cls in used]
    taken = {"torch", "nn", *from_vit, *used}
    if name in taken:
        raise SpecError(f"--name {name}: the printed file already uses that name ({', '.join(sorted(taken))}); "
                        "choose another")
    lines = ['"""' + "\n".join(doc) + '"""', "", *imports, "", "",
             *(line for h in helpers for line in (*h.rstrip("\n").split("\n"), "", "")),
             f"class {name}(nn.Module):",
             f'    """Input {_dims(p.input)}, output {_dims(p.output)}; {p.params:,} parameters."""', "",
             "    def __init__(self) -> None:", "        super().__init__()"]
    for m in p.modules:
        lines.append(_commented(_assignment(m), f"{m.spec.text}: {_dims(m.input)} -> {_dims(m.output)}"))
    lines += ["", "    def forward(self, x: torch.Tensor) -> torch.Tensor:"]
    for m in p.modules:
        lines.append(_commented(f"        {forward_line(m)}", _dims(m.output)))
    lines += ["        return x", "", "", 'if __name__ == "__main__":', f"    net = {name}()",
              f"    y = net(torch.zeros(2, {', '.join(map(str, p.input))}))",
              f"    print(tuple(y.shape[1:]), sum(q.numel() for q in net.parameters()))"
              f"  # {tuple(p.output)} {p.params}", ""]
    return "\n".join(lines)


def _assignment(m: Module, width: int = 110) -> str:
    """`self.name = nn.X(...)`; a Sequential too long for one line gets one part per line."""
    line = f"        self.{m.name} = {m.call.source()}"
    if len(line) <= width or m.call.cls != "Sequential":
        return line
    parts = "".join(f"            {_literal(a)},\n" for a in m.call.args)
    return f"        self.{m.name} = nn.Sequential(\n{parts}        )"


def _commented(code: str, comment: str, width: int = 110) -> str:
    """`code  # comment`, the comment on the line above when the two would pass the line length."""
    line = f"{code}  # {comment}"
    if len(line) <= width and "\n" not in code:
        return line
    indent = code[: len(code) - len(code.lstrip())]
    return f"{indent}# {comment}\n{code}"
