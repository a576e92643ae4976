"""CNN run folder -> artifact: ONNX fp32 (dynamic batch), parity, static int8 QDQ, fp16.

Every variant's accuracy is measured with ONNX Runtime on the full test split and written
into the manifest; the export fails if parity or the int8 accuracy budget is not met.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgestack import artifact
from export.onnx_utils import (check_parity, convert_fp16, export_module, keep_training_run, manifest_head, op_types,
                                versions)
from serving.runtime import open_session
from training import cnn

INPUT, OUTPUT = "images", "logits"
PARITY_ATOL, PARITY_RTOL = 1e-4, 1e-4
MAX_INT8_DROP = 0.005  # int8 may lose at most 0.5 points of accuracy against fp32


class _Calibration(CalibrationDataReader):
    """Feeds real training images to the calibrator, a batch at a time."""

    def __init__(self, images: np.ndarray, batch: int = 64):
        self.batches = [cnn.to_tensor(images[i:i + batch]).numpy() for i in range(0, len(images), batch)]
        self.position = 0

    def get_next(self):
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return {INPUT: self.batches[self.position - 1]}


def ort_accuracy(path: Path, images: np.ndarray, labels: np.ndarray, batch: int = 500) -> float:
    session = open_session(path, device="cpu")
    dtype = session.input_dtype()
    correct = 0
    for i in range(0, len(images), batch):
        logits = session.run({INPUT: cnn.to_tensor(images[i:i + batch]).numpy().astype(dtype)})[0]
        correct += int((logits.argmax(1) == labels[i:i + batch]).sum())
    return correct / len(labels)


def export(run_dir: Path, staging: Path, *, name: str, calibration_images: int = 1000,
           check_int8_budget: bool = True, progress: bool = True) -> dict:
    """Write model.{fp32,int8,fp16}.onnx and the manifest into `staging`; return the manifest."""
    say = print if progress else (lambda *a, **k: None)
    model, config = cnn.load_checkpoint(run_dir)
    data = cnn.load_dataset(cnn.Config(dataset=config["dataset"], data_dir=config["data_dir"], seed=config["seed"]))
    labels = json.loads((Path(run_dir) / "labels.json").read_text())
    fp32 = staging / "model.fp32.onnx"

    say(f"[{name}] exporting ONNX (dynamic batch axis)")
    batch = torch.export.Dim("batch", min=1, max=4096)
    export_module(model, (cnn.to_tensor(data.test.images[:2]),), fp32, input_names=[INPUT],
                  output_names=[OUTPUT], dynamic_shapes=({0: batch},))

    say(f"[{name}] parity check against PyTorch on 256 real test images")
    sample = cnn.to_tensor(data.test.images[:256])
    with torch.no_grad():
        expected = model(sample).numpy()
    actual = open_session(fp32, device="cpu").run({INPUT: sample.numpy()})[0]
    parity = check_parity(expected, actual, atol=PARITY_ATOL, rtol=PARITY_RTOL, what=f"{name} fp32")

    say(f"[{name}] static int8 (QDQ) quantization, calibrated on {calibration_images} training images")
    prepared = staging / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    int8 = staging / "model.int8.onnx"
    quantize_static(str(prepared), str(int8), _Calibration(data.train.images[:calibration_images]),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax)
    prepared.unlink()
    for leftover in staging.glob("*.onnx.data"):
        leftover.unlink()

    say(f"[{name}] fp16 variant (for GPU)")
    fp16 = convert_fp16(fp32, staging / "model.fp16.onnx")

    variants = {}
    for variant, path in (("fp32", fp32), ("int8", int8), ("fp16", fp16)):
        started = time.time()
        acc = ort_accuracy(path, data.test.images, data.test.labels)
        say(f"[{name}] {variant}: test accuracy {acc:.4f} on {len(data.test)} images ({time.time() - started:.1f}s)")
        variants[variant] = {"file": path.name, "test_accuracy": acc, "test_size": len(data.test),
                             "op_types": op_types(path), "target": "gpu" if variant == "fp16" else "cpu"}
    drop = variants["fp32"]["test_accuracy"] - variants["int8"]["test_accuracy"]
    if check_int8_budget and drop > MAX_INT8_DROP:
        raise AssertionError(f"{name}: int8 loses {drop:.2%} accuracy against fp32 (budget {MAX_INT8_DROP:.1%})")

    metrics = keep_training_run(run_dir, staging, ("model.safetensors", "config.json", "labels.json",
                                                   "metrics.json", "curves.png", "confusion.png"))
    manifest = {
        **manifest_head(name, staging, "cnn", "image-classification"),
        "inputs": [{"name": INPUT, "dtype": "float32", "shape": [-1, 1, 28, 28]}],
        "outputs": [{"name": OUTPUT, "dtype": "float32", "shape": [-1, len(labels)]}],
        "preprocessing": cnn.PREPROCESS,
        "labels": labels,
        "variants": variants,
        "parity": parity,
        "int8_accuracy_drop": drop,
        "versions": versions(),
        "training": {"config": config, "best_epoch": metrics["best_epoch"], "val_acc": metrics["val_acc"],
                     "train_seconds": metrics["train_seconds"], "data_source": data.source},
    }
    artifact.write_manifest(staging, manifest)
    return manifest
