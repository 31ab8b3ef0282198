"""A sentence classifier on token ids: an embedding, a two-layer bidirectional LSTM and a linear head over the
mean of its outputs; `mask` (True for real tokens) leaves padding out of the mean.

    nnkit summary examples/text_lstm.py:TextLSTM --input long:50
    nnkit flops examples/text_lstm.py:TextLSTM --input long:50 --input mask=bool:50 --batch 32
"""

from torch import nn


class TextLSTM(nn.Module):
    def __init__(self, vocab: int = 20_000, dim: int = 128, hidden: int = 256, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.lstm = nn.LSTM(dim, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, ids, mask=None):  # ids: (N, T) int64; mask: (N, T) bool
        out, _ = self.lstm(self.embed(ids))  # (N, T, 2 * hidden)
        if mask is None:
            pooled = out.mean(1)
        else:
            weight = mask.unsqueeze(-1).to(out.dtype)
            pooled = (out * weight).sum(1) / weight.sum(1).clamp(min=1)
        return self.head(pooled)
