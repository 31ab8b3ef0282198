"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document recognition", 1998).

The paper's layout on a 1x32x32 input: C1 6@5x5 -> S2 -> C3 16@5x5 -> S4 -> C5 120@5x5 -> F6 84 -> 10 outputs.
Choices where a modern network cannot follow the paper exactly, stated once:
  - activation: tanh (the paper's squashing function is a scaled tanh, 1.7159 tanh(2x/3); plain tanh here);
  - S2/S4: 2x2 average pooling, stride 2, without the paper's trainable coefficient and bias per map;
  - C3: connected to all 6 maps of S2 (the paper's Table I connects each C3 map to a subset of them);
  - C5: a 5x5 convolution to 120 maps of 1x1, as in the paper (it then acts as a fully connected layer);
  - output: a linear layer of 10 (the paper's Euclidean RBF units are replaced by logits for cross-entropy).
Parameters: 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706.
"""

from __future__ import annotations

from typing import Any


def lenet5(num_classes: int = 10, in_channels: int = 1) -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5),  # C1: 6@28x28
        nn.Tanh(),
        nn.AvgPool2d(2),  # S2: 6@14x14
        nn.Conv2d(6, 16, 5),  # C3: 16@10x10
        nn.Tanh(),
        nn.AvgPool2d(2),  # S4: 16@5x5
        nn.Conv2d(16, 120, 5),  # C5: 120@1x1
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(120, 84),  # F6
        nn.Tanh(),
        nn.Linear(84, num_classes),
    )
