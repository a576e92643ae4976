"""A small PyTorch module for `edgestack import --torch` tests (tests/integration/test_import.py):
two inputs, two outputs, so the export, the parity gate and the serving path see more than one of each."""

from __future__ import annotations

import torch
from torch import nn


class TwoHeads(nn.Module):
    """features [N, 8] and a [N, 3] context -> class logits [N, 4] and a score [N, 1]."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8 + 3, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
        self.classes = nn.Linear(16, 4)
        self.score = nn.Linear(16, 1)

    def forward(self, features: torch.Tensor, context: torch.Tensor):
        hidden = self.body(torch.cat([features, context], dim=1))
        return self.classes(hidden), torch.sigmoid(self.score(hidden))


def two_heads() -> nn.Module:
    return TwoHeads()


class GreyCNN(nn.Module):
    """grey images [N, 1, 16, 16] (or colour, [N, 3, 16, 16]) -> logits of 3 classes (an image-family import)."""

    def __init__(self, channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(8, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).flatten(1))


def grey_cnn() -> nn.Module:
    return GreyCNN()


def colour_cnn() -> nn.Module:
    return GreyCNN(channels=3)


class BagOfTokens(nn.Module):
    """token ids and mask [N, S] (a BERT tokenizer's) -> logits of 2 classes (a text-family import)."""

    def __init__(self, vocab: int = 30522):
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.head = nn.Linear(16, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled)
