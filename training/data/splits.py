"""The class balance of a labelled set: seeded stratified splits and loss weights, for every family's
own data (texts, image folders)."""

from __future__ import annotations

import numpy as np


def stratified_indices(labels: np.ndarray, fractions=(0.8, 0.1, 0.1), seed: int = 0):
    """Seeded split of the indices of `labels` into len(fractions) disjoint parts, per class.

    Every class is shuffled on its own and cut at the same fractions, so each part keeps
    the class shares of the whole (to within one item per class).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    cuts = np.cumsum(fractions)[:-1]
    parts: list[list[int]] = [[] for _ in fractions]
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        members = members[rng.permutation(len(members))]
        bounds = np.round(cuts * len(members)).astype(int)
        for part, chunk in zip(parts, np.split(members, bounds)):
            part.extend(chunk.tolist())
    return tuple(np.asarray(sorted(p), dtype=np.int64) for p in parts)


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse class frequency, mean 1 (a class with half the examples weighs twice as much):
    the loss weights of `class_weights = true`, for imbalanced data. float32 [num_classes]."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return (len(labels) / (num_classes * np.maximum(counts, 1))).astype(np.float32)
