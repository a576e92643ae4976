"""Pieces every training loop shares."""

from __future__ import annotations

import math


class KeepBest:
    """Early stopping that keeps the best epoch's weights.

    `update(epoch, score, model)` returns True when training should stop: `patience`
    epochs in a row without a better validation score. `higher_is_better=False` for
    losses and bits per character.
    """

    def __init__(self, patience: int, higher_is_better: bool = True):
        self.patience, self.sign = patience, 1 if higher_is_better else -1
        self.score = -math.inf if higher_is_better else math.inf
        self.epoch, self.state, self.stale = 0, None, 0

    def update(self, epoch: int, score: float, model) -> bool:
        if self.sign * score > self.sign * self.score:
            self.score, self.epoch, self.stale = score, epoch, 0
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.stale += 1
        return self.stale >= self.patience
