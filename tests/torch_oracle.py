"""Build the real torch module for a parsed layer: the oracle the pure core is checked against."""

from __future__ import annotations

import torch
from torch import nn

from nnkit.core.spec import LayerSpec

ACT = {"relu": nn.ReLU, "relu6": nn.ReLU6, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU,
       "silu": nn.SiLU, "swish": nn.SiLU, "hardswish": nn.Hardswish, "leakyrelu": nn.LeakyReLU, "elu": nn.ELU,
       "mish": nn.Mish, "identity": nn.Identity}


class _Rnn(nn.Module):
    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, *lead, F) -> one sequence of prod(lead) steps per item, as nnkit counts it
        n, feat = x.shape[0], x.shape[-1]
        y, _ = self.rnn(x.reshape(n, -1, feat))
        return y.reshape(*x.shape[:-1], y.shape[-1])


class _Lambda(nn.Module):
    def __init__(self, fn, **params: nn.Parameter) -> None:
        super().__init__()
        self.fn = fn
        for name, p in params.items():
            self.register_parameter(name, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self, x)


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, bias=bias, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]  # torchvision's EncoderBlock calls it this way


def _rank(spec: LayerSpec, shape: tuple[int, ...]) -> int:
    """A layer's spatial rank: its kind's (conv1d: 1), or its input's for the layers that work at any rank."""
    from nnkit.core.spec import RANK

    return RANK.get(spec.kind, len(shape) - 1)


def _base(kind: str) -> str:
    return kind[:-2] if kind[-2:] in ("1d", "3d") else kind


def module(spec: LayerSpec, shape: tuple[int, ...]) -> nn.Module:
    k, n = _base(spec.kind), _rank(spec, shape)
    c = shape[0]
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}.get(n)
    if k == "conv":
        return conv(c, spec["out"], spec["k"], spec["s"], spec["p"], spec["d"], spec["g"], spec["bias"])
    if k == "pwconv":
        return conv(c, spec["out"], 1, spec["s"], 0, 1, spec["g"], spec["bias"])
    if k == "dwconv":
        return conv(c, c * spec["m"], spec["k"], spec["s"], spec["p"], spec["d"], c, spec["bias"])
    if k == "dwsep":
        return nn.Sequential(conv(c, c, spec["k"], spec["s"], spec["p"], spec["d"], c, spec["bias"]),
                             conv(c, spec["out"], 1, bias=spec["bias"]))
    if k == "tconv":
        cls = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[n]
        return cls(c, spec["out"], spec["k"], spec["s"], spec["p"], spec["op"], spec["g"], spec["bias"],
                   spec["d"])
    if k == "maxpool":
        cls = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[n]
        return cls(spec["k"], spec["s"], spec["p"], spec["d"], ceil_mode=spec["ceil"])
    if k == "avgpool":
        cls = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}[n]
        return cls(spec["k"], spec["s"], spec["p"], ceil_mode=spec["ceil"])
    if k in ("gap", "adaptivepool"):
        cls = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[n]
        return cls(1 if k == "gap" else spec["size"])
    if k == "fc":
        return nn.Linear(shape[-1], spec["out"], spec["bias"])
    if k == "flatten":
        return nn.Flatten()
    if k == "bn":
        return {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}.get(n, nn.BatchNorm1d)(c)
    if k == "ln":
        return nn.LayerNorm(shape[-1], elementwise_affine=spec["affine"], bias=spec["bias"])
    if k == "gn":
        return nn.GroupNorm(spec["g"], c, affine=spec["affine"])
    if k == "in":
        return {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[n](c, affine=spec["affine"])
    if k == "dropout":
        return nn.Dropout(spec["p"])
    if k == "softmax":
        return nn.Softmax(dim=1)
    if k == "upsample":
        mode = spec.get("mode", "nearest")
        if mode == "nearest":
            return nn.Upsample(scale_factor=spec["scale"])
        # nnkit's bilinear is per axis at any rank: PyTorch names it linear (1-D) and trilinear (3-D)
        return nn.Upsample(scale_factor=spec["scale"], mode={1: "linear", 2: "bilinear", 3: "trilinear"}[n],
                           align_corners=False)
    if k in ("lstm", "gru", "rnn"):
        cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[k]
        return _Rnn(cls(shape[-1], spec["hidden"], spec["layers"], bias=spec["bias"], batch_first=True,
                        bidirectional=spec["bidir"]))
    return _token_module(spec, shape) or ACT[k]()


def _token_module(spec: LayerSpec, shape: tuple[int, ...]) -> nn.Module | None:
    """The transformer layers as torchvision's VisionTransformer builds them
    (torchvision.models.vision_transformer)."""
    from torchvision.models.vision_transformer import EncoderBlock, MLPBlock

    k = spec.kind
    if k == "patch":
        proj = nn.Conv2d(shape[0], spec["dim"], spec["size"], stride=spec["size"], bias=spec["bias"])
        # conv_proj, reshape
        return nn.Sequential(proj, nn.Flatten(2), _Lambda(lambda m, x: x.transpose(1, 2)))
    if k == "cls":
        return _Lambda(lambda m, x: torch.cat([m.class_token.expand(x.shape[0], -1, -1), x], dim=1),
                       class_token=nn.Parameter(torch.zeros(1, 1, shape[-1])))
    if k == "pos":
        return _Lambda(lambda m, x: x + m.pos_embedding, pos_embedding=nn.Parameter(torch.zeros(1, *shape)))
    if k == "attn":
        return _SelfAttention(shape[-1], spec["heads"], spec["bias"])
    if k == "mlp":
        if spec["bias"]:
            return MLPBlock(shape[-1], spec["hidden"], 0.0)
        return nn.Sequential(nn.Linear(shape[-1], spec["hidden"], bias=False), nn.GELU(),
                             nn.Linear(spec["hidden"], shape[-1], bias=False))
    if k == "encoder":
        return EncoderBlock(spec["heads"], shape[-1], spec["mlp"], 0.0, 0.0)
    if k == "token":
        return _Lambda(lambda m, x: x[:, spec["i"]])
    return None


# FlopCounterMode counts these on the meta device only: on CPU, aten.lstm and the fused CPU attention kernel
# have no flop formula, while on meta they decompose into the matmuls it counts.
META_KINDS = ("lstm", "gru", "rnn", "attn", "encoder")


def run(spec: LayerSpec, shape: tuple[int, ...], batch: int = 1) -> tuple[tuple[int, ...], int, int]:
    """Output shape (without batch), parameter count and MACs (FlopCounterMode / 2) of the real module."""
    from torch.utils.flop_counter import FlopCounterMode

    device = "meta" if spec.kind in META_KINDS else "cpu"
    with torch.device(device):
        m = module(spec, shape).eval()
        x = torch.zeros(batch, *shape)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        y = m(x)
    return tuple(y.shape[1:]), sum(p.numel() for p in m.parameters()), counter.get_total_flops() // 2


def gradient_spans(model: nn.Module, shape: tuple[int, ...], ax: int, positions: list[int] | None = None,
                   pick=lambda y: y) -> dict[int, tuple[int, int] | None]:
    """The receptive-field oracle: along spatial axis `ax` of the picked output, the first and last input
    position each output position's gradient reaches (the other axes at their centre), or None where it reaches
    none; every position of that axis when `positions` is None."""
    x = torch.rand((1, *shape), requires_grad=True)
    y = pick(model(x))
    out = y.shape[2:]
    js = list(positions if positions is not None else range(out[ax]))
    # One backward pass per output position, batched: each cotangent is 1 at that position (all channels, the
    # other axes at their centre) and 0 elsewhere.
    seeds = torch.zeros((len(js), *y.shape))
    for b, j in enumerate(js):
        where = [n // 2 for n in out]
        where[ax] = j
        seeds[(b, 0, slice(None), *where)] = 1.0
    (g,) = torch.autograd.grad(y, x, seeds, is_grads_batched=True)
    g = g[:, 0].abs().sum(1)  # (positions, *spatial)
    other = tuple(1 + i for i in range(g.dim() - 1) if i != ax)
    reach = (g.sum(other) if other else g) > 0
    spans: dict[int, tuple[int, int] | None] = {}
    for b, j in enumerate(js):
        hit = reach[b].nonzero().flatten()
        spans[j] = (int(hit[0]), int(hit[-1])) if len(hit) else None
    return spans

