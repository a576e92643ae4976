"""Early stopping (training/loop.py KeepBest) on scripted validation scores: when it stops, and
that the weights it keeps are the best epoch's, not the last."""

from __future__ import annotations

import math

import pytest
import torch

from training.loop import KeepBest


def run(scores: list[float], patience: int, higher_is_better: bool = True) -> tuple[KeepBest, int]:
    """Feed `scores` epoch by epoch to a one-weight model whose weight is the epoch number;
    returns the tracker and the epoch it stopped at (or the last)."""
    model = torch.nn.Linear(1, 1, bias=False)
    keep = KeepBest(patience, higher_is_better)
    for epoch, score in enumerate(scores, start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        if keep.update(epoch, score, model):
            return keep, epoch
    return keep, len(scores)


@pytest.mark.parametrize("scores, patience, stopped, best", [
    ([0.5, 0.6, 0.55, 0.9], 1, 3, 2),         # the first epoch without a better score stops it
    ([0.5, 0.6, 0.55, 0.58, 0.9], 2, 4, 2),   # two in a row
    ([0.5, 0.6, 0.55, 0.7, 0.65, 0.66], 2, 6, 4),  # a better epoch resets the count
    ([0.5, 0.5, 0.5], 2, 3, 1),               # a tie is not an improvement
    ([0.1, 0.2, 0.3], 1, 3, 3),               # always better: runs to the end
])
def test_stops_after_patience_epochs_without_improvement_and_keeps_the_best(scores, patience, stopped, best):
    keep, at = run(scores, patience)
    assert at == stopped and keep.epoch == best and keep.score == scores[best - 1]
    assert keep.state["weight"].item() == best  # the best epoch's weights, copied then (not the model's last)


def test_lower_is_better_for_losses():
    keep, at = run([2.0, 1.5, 1.7, 1.6], 2, higher_is_better=False)
    assert (at, keep.epoch, keep.score, keep.state["weight"].item()) == (4, 2, 1.5, 2)
    assert KeepBest(1, higher_is_better=False).score == math.inf
