"""The quality report of a classifier variant: per-class precision, recall and F1, macro-F1 and
the confusion matrix, from its predictions on the whole test split (ONNX Runtime).

Every classifier export puts one report per variant into the manifest (`quality_report`), so
`edgestack models`, the build's summary and a reviewer read the same numbers; the training
run's confusion.png (training/plots.py) draws PyTorch's matrix beside them.
"""

from __future__ import annotations

import numpy as np


def report(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """{accuracy, macro_f1, per_class: {label: {precision, recall, f1, support}}, confusion:
    rows = true class, columns = predicted, in `labels` order}. A class never predicted has
    precision 0 (and so F1 0), as scikit-learn's zero_division=0."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    k = len(labels)
    confusion = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    hits = np.diag(confusion).astype(np.float64)
    predicted, actual = confusion.sum(0).astype(np.float64), confusion.sum(1).astype(np.float64)
    precision = np.divide(hits, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros(k), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    present = actual > 0  # macro over the classes the test split holds
    return {
        "accuracy": float(hits.sum() / max(len(y_true), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {label: {"precision": round(float(p), 6), "recall": round(float(r), 6), "f1": round(float(f), 6),
                              "support": int(n)}
                      for label, p, r, f, n in zip(labels, precision, recall, f1, actual)},
        "confusion": confusion.tolist(),
        "test_size": int(len(y_true)),
    }


def table(rep: dict, labels: list[str]) -> str:
    """The report as a few lines for the build's output."""
    width = max(12, *(len(label) for label in labels))
    lines = [f"{'class':<{width}}  precision  recall     F1  support"]
    for label in labels:
        c = rep["per_class"][label]
        lines.append(f"{label:<{width}}  {c['precision']:9.4f}  {c['recall']:6.4f} {c['f1']:6.4f}  {c['support']:7d}")
    lines.append(f"{'macro-F1':<{width}}  {rep['macro_f1']:.4f}   accuracy {rep['accuracy']:.4f} on {rep['test_size']}")
    return "\n".join(lines)
