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


def module(spec: LayerSpec, shape: tuple[int, ...]) -> nn.Module:
    k = spec.kind
    c = shape[0]
    if k == "conv":
        return nn.Conv2d(c, spec["out"], spec["k"], spec["s"], spec["p"], spec["d"], spec["g"], spec["bias"])
    if k == "pwconv":
        return nn.Conv2d(c, spec["out"], 1, spec["s"], 0, 1, spec["g"], spec["bias"])
    if k == "dwconv":
        return nn.Conv2d(c, c * spec["m"], spec["k"], spec["s"], spec["p"], spec["d"], c, spec["bias"])
    if k == "dwsep":
        return nn.Sequential(nn.Conv2d(c, c, spec["k"], spec["s"], spec["p"], spec["d"], c, spec["bias"]),
                             nn.Conv2d(c, spec["out"], 1, bias=spec["bias"]))
    if k == "tconv":
        return nn.ConvTranspose2d(c, spec["out"], spec["k"], spec["s"], spec["p"], spec["op"], spec["g"],
                                  spec["bias"], spec["d"])
    if k == "maxpool":
        return nn.MaxPool2d(spec["k"], spec["s"], spec["p"], spec["d"], ceil_mode=spec["ceil"])
    if k == "avgpool":
        return nn.AvgPool2d(spec["k"], spec["s"], spec["p"], ceil_mode=spec["ceil"])
    if k == "gap":
        return nn.AdaptiveAvgPool2d(1)
    if k == "adaptivepool":
        return nn.AdaptiveAvgPool2d(spec["size"])
    if k == "fc":
        return nn.Linear(shape[-1], spec["out"], spec["bias"])
    if k == "flatten":
        return nn.Flatten()
    if k == "bn":
        return nn.BatchNorm2d(c) if len(shape) == 3 else nn.BatchNorm1d(c)
    if k == "dropout":
        return nn.Dropout(spec["p"])
    if k == "softmax":
        return nn.Softmax(dim=1)
    if k == "upsample":
        return nn.Upsample(scale_factor=spec["scale"])
    if k in ("lstm", "gru", "rnn"):
        cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[k]
        return _Rnn(cls(shape[-1], spec["hidden"], spec["layers"], bias=spec["bias"], batch_first=True,
                        bidirectional=spec["bidir"]))
    return ACT[k]()


def run(spec: LayerSpec, shape: tuple[int, ...], batch: int = 1) -> tuple[tuple[int, ...], int, int]:
    """Output shape (without batch), parameter count and MACs (FlopCounterMode / 2) of the real module."""
    from torch.utils.flop_counter import FlopCounterMode

    m = module(spec, shape).eval()
    x = torch.zeros(batch, *shape)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        y = m(x)
    return tuple(y.shape[1:]), sum(p.numel() for p in m.parameters()), counter.get_total_flops() // 2
