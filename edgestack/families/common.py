"""What every family's processing shares: the caller-error type, softmax, top-k labels, and
the file checksum that artifacts and bundles are verified with.

Standalone (numpy only): copied into edge bundles beside the family modules.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


class InputError(ValueError):
    """Bad request data, the caller's fault; `status` is the HTTP status a server answers with
    (400 unless said: 413 for too much, 404 for an unknown model)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of [N, C] logits, computed stably."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def check_top_k(top_k, labels: list[str]) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= len(labels):
        raise InputError(f"top_k must be between 1 and {len(labels)}, got {top_k!r}")
    return int(top_k)


def top_k(row: np.ndarray, labels: list[str], k: int, *, with_index: bool = True) -> list[dict]:
    """The k likeliest labels of one probability row, likeliest first (ties keep label order)."""
    best = np.argsort(-row, kind="stable")[:k]
    return [{"label": labels[i], **({"index": int(i)} if with_index else {}), "probability": float(row[i])}
            for i in best]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (artifacts and bundles list one per file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
