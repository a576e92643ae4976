"""Golden answers: the bundle's own health check, and the comparison the device checks use.

A bundle ships `golden.npz`: a few real test inputs (`input.<name>`) and the answers the
bundle's .ort graphs gave for them on the machine that built it (`expected.<name>`). On a
device, `python -m edge_runner --health` runs the inputs again and compares:

- `probabilities` [rows, classes] (class probabilities, or the next-character distribution of
  a generator): the arg-max of every row must agree, and every probability within
  `probability_tolerance` (the manifest's `health` block; CPUs round int8 requantization and
  float reductions differently, so bit-equality is not expected);
- other float outputs (an imported graph's tensors): within the tolerance, relative to the
  value's size above 1;
- integer outputs (labels, ids): equal; string outputs (a greedy tune): equal, character for
  character.

The update agent runs it after installing a version and before switching to it; the arm64
and AVX2-only checks (scripts/) run the same comparison on larger sets of real inputs.
numpy only, like the rest of the runner.
"""

from __future__ import annotations

import numpy as np

GOLDEN = "golden.npz"
PROBABILITY_TOLERANCE = 0.02


def read_golden(path) -> tuple[dict, dict]:
    """golden.npz -> (inputs, expected outputs), each name -> array."""
    with np.load(path, allow_pickle=False) as data:
        inputs = {k.split(".", 1)[1]: data[k] for k in data.files if k.startswith("input.")}
        expected = {k.split(".", 1)[1]: data[k] for k in data.files if k.startswith("expected.")}
    if not inputs or not expected:
        raise ValueError(f"{path}: no input.* / expected.* arrays")
    return inputs, expected


def write_golden(path, inputs: dict, expected: dict) -> None:
    arrays = {f"input.{k}": np.asarray(v) for k, v in inputs.items()}
    arrays.update({f"expected.{k}": np.asarray(v) for k, v in expected.items()})
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def compare(expected: dict, got: dict, tolerance: float = PROBABILITY_TOLERANCE) -> dict:
    """Expected vs got answers -> a report: ok, rows, labels_agree, max_probability_difference,
    strings_equal, and a `problems` list in words (empty when ok)."""
    report = {"rows": 0, "labels_agree": 0, "max_probability_difference": 0.0, "strings": 0, "strings_equal": 0,
              "problems": []}
    for name, want in expected.items():
        if name not in got:
            report["problems"].append(f"{name}: no such output")
            continue
        have = np.asarray(got[name])
        if want.dtype.kind in "US":
            equal = [str(a) == str(b) for a, b in zip(want.ravel(), have.ravel())] if want.shape == have.shape else []
            report["strings"] += want.size
            report["strings_equal"] += sum(equal)
            if not equal or not all(equal):
                first = next((i for i, e in enumerate(equal) if not e), 0)
                a, b = str(want.ravel()[first]), str(have.ravel()[first]) if have.size else ""
                at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                report["problems"].append(f"{name}: differs from character {at} ({a[at:at + 12]!r} expected, "
                                          f"{b[at:at + 12]!r} got)")
            continue
        if want.shape != have.shape:
            report["problems"].append(f"{name}: shape {list(have.shape)}, expected {list(want.shape)}")
            continue
        if want.dtype.kind in "biu":  # labels, token ids, counts: exactly
            wrong = int((want != have).sum())
            if wrong:
                report["problems"].append(f"{name}: {wrong} of {want.size} values differ")
            continue
        error = np.abs(want.astype(np.float64) - have)
        if name != "probabilities":  # any other float output: relative to its size above 1
            error = error / np.maximum(1.0, np.abs(want.astype(np.float64)))
        difference = float(np.max(error)) if want.size else 0.0
        if not np.isfinite(difference):
            difference = float("inf")
        report["max_probability_difference"] = max(report["max_probability_difference"], difference)
        if name == "probabilities" and want.ndim == 2:
            agree = int((want.argmax(1) == have.argmax(1)).sum())
            report["rows"] += len(want)
            report["labels_agree"] += agree
            if agree < len(want):
                report["problems"].append(f"{name}: {len(want) - agree} of {len(want)} labels differ")
        if difference > tolerance:
            what = "a probability" if name == "probabilities" else "a value"
            report["problems"].append(f"{name}: {what} differs by {difference:.4f} (tolerance {tolerance})")
    report["ok"] = not report["problems"]
    return report


def summary(report: dict) -> str:
    """One line: what was compared and how it went."""
    parts = []
    if report["rows"]:
        parts.append(f"labels {report['labels_agree']}/{report['rows']}, "
                     f"max probability difference {report['max_probability_difference']:.2e}")
    if report["strings"]:
        parts.append(f"strings equal {report['strings_equal']}/{report['strings']}")
    head = "ok" if report["ok"] else "FAILED: " + "; ".join(report["problems"])
    return f"{head} ({', '.join(parts)})"
