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
