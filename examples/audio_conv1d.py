"""A keyword spotter on raw 16 kHz audio: a 1-D CNN in the style of M5 (Dai et al., "Very deep convolutional
neural networks for raw waveforms", 2017), for 35 Speech Commands words.

    nnkit summary examples/audio_conv1d.py:KeywordSpotter --input 1x16000
"""

from torch import nn


class KeywordSpotter(nn.Module):
    def __init__(self, classes: int = 35, width: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv1d(cin, cout, kernel, stride=stride), nn.BatchNorm1d(cout), nn.ReLU(),
                                 nn.MaxPool1d(4))

        # 80 samples with a stride of 16 is a 5 ms window every 1 ms: M5's first layer
        self.features = nn.Sequential(block(1, width, 80, stride=16), block(width, width, 3),
                                      block(width, 2 * width, 3), block(2 * width, 2 * width, 3))
        self.head = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(2 * width, classes))

    def forward(self, waveform):  # (N, 1, samples)
        return self.head(self.features(waveform))
