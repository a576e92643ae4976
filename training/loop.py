"""Pieces every training loop shares."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from training.plots import plot_confusion, plot_curves


# Training threads are part of a run's config, not taken from the machine: oneDNN's convolution
# gradients and MKL's GEMM reduce in a thread-count dependent order (measured: the same seed on
# 1 and 2 threads gives weights that differ from the first step, ~1e-8 in the gradients). With a
# fixed count, the same seed gives the same weights on any number of cores of the same CPU kind.
TRAIN_THREADS = 2


def set_training_threads(threads: int | None) -> int:
    """Use `threads` (the config's), else TRAIN_THREADS, whatever the machine has; returns it."""
    import torch

    threads = threads or TRAIN_THREADS
    torch.set_num_threads(threads)
    return threads


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


def save_classifier_run(out_dir: Path, config: dict, labels: list[str], metrics: dict,
                        y_true: np.ndarray, y_pred: np.ndarray, title: str) -> None:
    """What a classifier's run folder holds beside its checkpoint: config, labels, metrics,
    the training curves and the test confusion matrix."""
    out_dir = Path(out_dir)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "labels.json").write_text(json.dumps(labels))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_curves(metrics["history"], out_dir / "curves.png", title=title)
    plot_confusion(y_true, y_pred, labels, out_dir / "confusion.png",
                   title=f"{title}, test accuracy {metrics['test_acc']:.2%}")
