"""MobileNet v1 (Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
Applications", 2017), Table 1, with the width multiplier alpha of section 3.3.

Every convolution is followed by BatchNorm and ReLU and has no bias (section 3). Table 1 lists the 13th
depthwise layer with stride 2, but its input and output are both 7x7 and every reference implementation uses
stride 1; so do we. At alpha = 1 and 224x224 this gives 4,231,976 parameters and 568.7M mult-adds (conv) +
1.0M (fc): the paper's 4.2M and 569M (Table 4). `standard=True` builds Table 4's "Conv MobileNet": each
depthwise-separable pair replaced by one full 3x3 convolution (29.3M parameters, 4866M mult-adds).
"""

from __future__ import annotations

from typing import Any

# (output channels of the pointwise conv, stride of the depthwise conv), Table 1 after the first conv
CONFIG: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),
)


def channels(c: int, alpha: float) -> int:
    """A layer's channels at width multiplier alpha (Howard et al. 2017, section 4.2), at least one."""
    return max(1, int(c * alpha))


def mobilenet_v1(num_classes: int = 1000, in_channels: int = 3, width: float = 1.0,
                 standard: bool = False) -> Any:
    from torch import nn

    def cbr(cin: int, cout: int, stride: int, groups: int = 1, kernel: int = 3) -> list[Any]:
        return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    c = channels(32, width)
    layers: list[Any] = [nn.Sequential(*cbr(in_channels, c, 2))]
    for out, stride in CONFIG:
        o = channels(out, width)
        if standard:
            layers.append(nn.Sequential(*cbr(c, o, stride)))
        else:
            layers.append(nn.Sequential(*cbr(c, c, stride, groups=c), *cbr(c, o, 1, kernel=1)))
        c = o
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(*layers))
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flatten", nn.Flatten())
    model.add_module("classifier", nn.Linear(c, num_classes))
    return model
