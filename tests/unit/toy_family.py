"""A fourth model family in one file, as docs/adding-a-family.md describes it: `vector`, a
linear classifier of 4 numbers into 3 classes. Each stage a real module would have is a
section here: processing (numpy), training (least squares on a seeded synthetic set),
export (an ONNX graph written with onnx.helper, checked against numpy), and the runner."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABELS = ["low", "middle", "high"]


# -- processing (edgestack/families/<name>.py in a real family) ------------------------------
def check_vectors(values) -> np.ndarray:
    from edgestack.errors import InputError

    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != 4:
        raise InputError(f"vectors must have shape [N, 4], got {list(array.shape)}")
    return array


# -- training (training/<name>.py) ------------------------------------------------------------
@dataclass
class Config:
    seed: int = 0
    samples: int = 300
    threads: int | None = None


def dataset(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = np.digitize(x @ np.array([1.0, 0.5, -0.5, 0.25]), [-0.6, 0.6])
    return x, y


def train(cfg: Config, out_dir: Path, *, progress: bool = True) -> dict:
    from safetensors.numpy import save_file

    x, y = dataset(cfg.seed, cfg.samples)
    targets = np.eye(len(LABELS), dtype=np.float32)[y]
    design = np.hstack([x, np.ones((len(x), 1), np.float32)])
    solution = np.linalg.lstsq(design, targets, rcond=None)[0].astype(np.float32)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({"weight": solution[:4].copy(), "bias": solution[4].copy()}, str(out_dir / "model.safetensors"))
    accuracy = float(((design @ solution).argmax(1) == y).mean())
    metrics = {"best_epoch": 1, "val_acc": accuracy, "test_acc": accuracy, "train_seconds": 0.0}
    (out_dir / "metrics.json").write_text(json.dumps(metrics))
    return metrics


# -- export (export/<name>.py) ----------------------------------------------------------------
def export(run_dir: Path, staging: Path, *, name: str, progress: bool = True) -> dict:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import load_file

    from edgestack import artifact
    from edgestack.runtime import open_session
    from export.onnx_utils import MAX_IR_VERSION, check_parity, manifest_head

    weights = load_file(str(Path(run_dir) / "model.safetensors"))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["vectors", "weight"], ["scores"]),
         helper.make_node("Add", ["scores", "bias"], ["logits"])], "vector",
        [helper.make_tensor_value_info("vectors", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(LABELS)])],
        [numpy_helper.from_array(weights["weight"], "weight"), numpy_helper.from_array(weights["bias"], "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = MAX_IR_VERSION
    onnx.save_model(model, str(staging / "model.fp32.onnx"))
    x, y = dataset(seed=1, n=200)  # held out: another seed
    expected = x @ weights["weight"] + weights["bias"]
    actual = open_session(staging / "model.fp32.onnx", device="cpu").run({"vectors": x})[0]
    parity = check_parity(expected, actual, atol=1e-5, rtol=1e-5, what=f"{name} fp32")
    manifest = {**manifest_head(name, staging, "vector", "vector-classification"),
                "inputs": [{"name": "vectors", "dtype": "float32", "shape": [-1, 4]}],
                "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, len(LABELS)]}],
                "labels": LABELS, "parity": parity,
                "variants": {"fp32": {"file": "model.fp32.onnx", "test_accuracy": float((actual.argmax(1) == y).mean()),
                                      "test_size": len(y), "target": "cpu"}}}
    artifact.write_manifest(staging, manifest)
    return manifest


# -- serving (serving/<name>.py) --------------------------------------------------------------
def make_runner_class():
    from serving.runner import ModelRunner

    class VectorClassifier(ModelRunner):
        async def classify(self, values) -> list[str]:
            (logits,) = await self.batcher.submit(check_vectors(values))
            return [LABELS[i] for i in logits.argmax(1)]

        def warm_up(self) -> None:
            self._run_rows(np.zeros((1, 4), np.float32))

    return VectorClassifier


VectorClassifier = None  # built on first use by the test (keeps this module importable without serving)

