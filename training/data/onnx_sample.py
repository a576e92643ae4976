"""An ONNX file made by another tool, for `edgestack import` (docs/your-own-model.md, "From an ONNX file").

    python -m training.data.onnx_sample cancer      # cancer.onnx, cancer-calibration.npy, cancer-eval.npz, cancer-rows.npy

A scikit-learn pipeline (StandardScaler + a 32-unit MLPClassifier, seeded) fitted on 400 cases
of the Wisconsin diagnostic breast-cancer set that scikit-learn ships (569 real cases, 30
measurements each, benign or malignant), converted by skl2onnx (`pip install skl2onnx`, the
`dev` extra) with `zipmap=False`, so its outputs are tensors: `label` [N] and `probabilities`
[N, 2]. Beside it: 200 training rows for static int8 calibration, the 169 held-out cases with
their labels for the int8 gate (`X`, `labels`), and those rows alone for a batch job.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

TRAIN = 400


def write_sample(stem: str | Path) -> dict[str, Path]:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_breast_cancer
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    stem = Path(stem)
    x, y = load_breast_cancer(return_X_y=True)
    x = x.astype(np.float32)
    order = np.random.default_rng(0).permutation(len(y))
    train, held = order[:TRAIN], order[TRAIN:]
    pipeline = make_pipeline(StandardScaler(), MLPClassifier((32,), max_iter=400, random_state=0))
    pipeline.fit(x[train], y[train])
    paths = {"onnx": stem.with_name(stem.name + ".onnx"), "calibration": stem.with_name(stem.name + "-calibration.npy"),
             "eval": stem.with_name(stem.name + "-eval.npz"), "rows": stem.with_name(stem.name + "-rows.npy")}
    graph = to_onnx(pipeline, x[:1], options={"zipmap": False}, target_opset=17)
    paths["onnx"].write_bytes(graph.SerializeToString())
    np.save(paths["calibration"], x[train][:200])
    np.savez(paths["eval"], X=x[held], labels=y[held])
    np.save(paths["rows"], x[held])
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data.onnx_sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stem", help="file name stem: STEM.onnx, STEM-calibration.npy, STEM-eval.npz, STEM-rows.npy")
    args = parser.parse_args(argv)
    for kind, path in write_sample(args.stem).items():
        print(f"{kind:12s} {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
