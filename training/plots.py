"""PNG plots a person would rather look at than read: training curves, confusion matrices."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_curves(history: list[dict], path: Path, title: str = "") -> None:
    """Loss on the left, every other per-epoch metric (accuracy, bits/char) on the right."""
    epochs = [h["epoch"] for h in history]
    losses = [k for k in history[0] if k.endswith("loss")]
    others = [k for k in history[0] if k != "epoch" and k not in losses]
    fig, axes = plt.subplots(1, 2 if others else 1, figsize=(10 if others else 5, 4), squeeze=False)
    for key in losses:
        axes[0, 0].plot(epochs, [h[key] for h in history], marker="o", label=key)
    axes[0, 0].set(xlabel="epoch", ylabel="loss", title=title)
    axes[0, 0].legend()
    if others:
        for key in others:
            axes[0, 1].plot(epochs, [h[key] for h in history], marker="o", label=key)
        axes[0, 1].set(xlabel="epoch", title="validation")
        axes[0, 1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], path: Path, title: str = "") -> None:
    n = len(labels)
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(labels, rotation=45, ha="right")
    ax.set_yticklabels(labels)
    threshold = matrix.max() / 2
    for i in range(n):
        for j in range(n):
            ax.text(j, i, matrix[i, j], ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > threshold else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
