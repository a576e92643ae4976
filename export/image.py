"""CNN run folder -> artifact: ONNX fp32 (dynamic batch), parity, static int8 QDQ, fp16.

Every variant's accuracy is measured with ONNX Runtime on the full test split and written
into the manifest. The export fails (ParityError) if fp32 departs from PyTorch; the int8
recipe is chosen on the validation split by export/int8_search.py, and when no candidate
holds the budget int8 is withheld (the artifact keeps fp32 and fp16, the manifest says why).
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgestack import artifact
from edgestack.runtime import open_session
from export import int8_search, quality
from export.onnx_utils import (check_parity, convert_fp16, export_module, keep_training_run, manifest_head,
                                nodes_of, op_types, versions)
from training import image as image_training

INPUT, OUTPUT = "images", "logits"
PARITY_ATOL, PARITY_RTOL = 1e-4, 1e-4
MAX_INT8_DROP = 0.005  # int8 may lose at most 0.5 points of accuracy against fp32 (validation and test)
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
CALIBRATION_SIZES = (1000, 5000)


class _Calibration(CalibrationDataReader):
    """Feeds real training images to the calibrator, a batch at a time. Whole batches only:
    ORT's histogram calibrators (Entropy, Percentile) stack the batches' outputs and fail on a
    shorter last one."""

    def __init__(self, images: np.ndarray, batch: int = 100):
        whole = max(len(images) // batch, 1) * batch
        self.batches = [image_training.to_tensor(images[i:i + batch]).numpy() for i in range(0, whole, batch)]
        self.position = 0

    def get_next(self):
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return {INPUT: self.batches[self.position - 1]}


def run_config(config: dict) -> image_training.Config:
    """The training Config a run folder's config.json was made from (its data, shape and split)."""
    fields = set(image_training.Config.__dataclass_fields__)
    return image_training.Config(**{k: v for k, v in config.items() if k in fields})


def preprocessing(config: dict) -> dict:
    """The manifest's preprocessing for a training run: the packaged sets as the seeds' (28x28
    grey, light on dark, digits laid out as MNIST was made); a folder of your own images: its
    size and channels, pixels / 255 (the graph standardises them itself, with the statistics
    recorded under `normalization`), photos as they are (no inversion), resized whole."""
    if config["dataset"] != "folder":
        return image_training.preprocess_for(config["dataset"])
    channels, height, width = config["input_shape"]
    return {"layout": "NCHW", "height": height, "width": width, "channels": channels, "scale": 1 / 255.0,
            "mean": 0.0, "std": 1.0, "dark_background": False, "drawn_layout": None,
            "resize": "whole image to height x width (LANCZOS), as in training",
            "normalization": config.get("normalization")}


def ort_predictions(path: Path, images: np.ndarray, batch: int = 500) -> np.ndarray:
    """The predicted class of every image with ONNX Runtime."""
    session = open_session(path, device="cpu")
    dtype = session.input_dtype()
    return np.concatenate([session.run({INPUT: image_training.to_tensor(images[i:i + batch]).numpy().astype(dtype)})[0]
                           .argmax(1) for i in range(0, len(images), batch)])


def ort_accuracy(path: Path, images: np.ndarray, labels: np.ndarray, batch: int = 500) -> float:
    return int((ort_predictions(path, images, batch) == labels).sum()) / len(labels)


def calibration_candidates(train_size: int) -> list[dict]:
    """MinMax, Entropy and Percentile (99.999), each on 1,000 and 5,000 training images
    (fewer when the training split is smaller), all per-channel."""
    sizes = sorted({min(n, train_size) for n in CALIBRATION_SIZES})
    return [{"method": method, "images": n, "per_channel": True} for method in CALIBRATION_METHODS for n in sizes]


def weight_nodes(path: Path) -> list[str]:
    """The nodes that carry weights (Conv, Gemm, MatMul): what the fallback may keep in fp32."""
    return nodes_of(path, ("Conv", "Gemm", "MatMul"))


def quantize(prepared: Path, out: Path, train_images: np.ndarray, settings: dict) -> Path:
    """Static QDQ int8 of `prepared` (u8 activations, s8 weights) as `settings` say."""
    out.parent.mkdir(parents=True, exist_ok=True)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings["method"]]
    with contextlib.redirect_stdout(io.StringIO()):  # ORT's calibrators print progress lines of their own
        quantize_static(str(prepared), str(out), _Calibration(train_images[:settings["images"]]),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=settings["per_channel"], reduce_range=settings["reduce_range"],
                        nodes_to_exclude=settings.get("exclude") or [], calibrate_method=method,
                        extra_options={"CalibPercentile": 99.999})
    return out


def export(run_dir: Path, staging: Path, *, name: str, max_int8_drop: float = MAX_INT8_DROP,
           progress: bool = True) -> dict:
    """Write model.{fp32,int8,fp16}.onnx and the manifest into `staging`; return the manifest."""
    say = print if progress else (lambda *a, **k: None)
    model, config = image_training.load_checkpoint(run_dir)
    data = image_training.load_dataset(run_config(config))
    labels = json.loads((Path(run_dir) / "labels.json").read_text())
    channels, height, width = config.get("input_shape") or [1, 28, 28]
    fp32 = staging / "model.fp32.onnx"

    say(f"[{name}] exporting ONNX (dynamic batch axis)")
    batch = torch.export.Dim("batch", min=1, max=4096)
    export_module(model, (image_training.to_tensor(data.test.images[:2]),), fp32, input_names=[INPUT],
                  output_names=[OUTPUT], dynamic_shapes=({0: batch},))

    say(f"[{name}] parity check against PyTorch on 256 real test images")
    sample = image_training.to_tensor(data.test.images[:256])
    with torch.no_grad():
        expected = model(sample).numpy()
    actual = open_session(fp32, device="cpu").run({INPUT: sample.numpy()})[0]
    parity = check_parity(expected, actual, atol=PARITY_ATOL, rtol=PARITY_RTOL, what=f"{name} fp32")

    say(f"[{name}] static int8 (QDQ): choosing the calibration on the validation split")
    prepared = staging / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    reference = {"val": ort_accuracy(fp32, data.val.images, data.val.labels),
                 "test": ort_accuracy(fp32, data.test.images, data.test.labels)}
    splits = {"val": data.val, "test": data.test}
    result = int8_search.search(
        name=name, metric="accuracy", reference=reference, budget=max_int8_drop, workdir=staging / "int8-search",
        quantize=lambda settings, folder: [quantize(prepared, folder / "model.int8.onnx", data.train.images, settings)],
        score=lambda files, split: ort_accuracy(files[0], splits[split].images, splits[split].labels),
        base=calibration_candidates(len(data.train)), nodes=weight_nodes(prepared), say=say)
    prepared.unlink()
    int8 = (int8_search.adopt(result, staging, name=name, kept="fp32 and fp16", say=say) or [None])[0]
    for leftover in staging.glob("*.onnx.data"):
        leftover.unlink()

    say(f"[{name}] fp16 variant (for GPU)")
    fp16 = convert_fp16(fp32, staging / "model.fp16.onnx")

    variants, reports = {}, {}
    for variant, path in (("fp32", fp32), ("int8", int8), ("fp16", fp16)):
        if path is None:
            continue
        started = time.time()
        predicted = ort_predictions(path, data.test.images)
        reports[variant] = quality.report(data.test.labels, predicted, labels)
        acc = reports[variant]["accuracy"]
        say(f"[{name}] {variant}: test accuracy {acc:.4f}, macro-F1 {reports[variant]['macro_f1']:.4f} on "
            f"{len(data.test)} images ({time.time() - started:.1f}s)")
        variants[variant] = {"file": path.name, "test_accuracy": acc, "test_size": len(data.test),
                             "op_types": op_types(path), "target": "gpu" if variant == "fp16" else "cpu"}
    served = "int8" if int8 is not None else "fp32"
    say(f"[{name}] quality report ({served}, test split):\n" + quality.table(reports[served], labels))
    if int8 is not None:
        variants["int8"]["val_accuracy"] = result.chosen.val
    drop = variants["fp32"]["test_accuracy"] - variants["int8"]["test_accuracy"] if int8 else None

    metrics = keep_training_run(run_dir, staging, ("model.safetensors", "config.json", "labels.json",
                                                   "metrics.json", "curves.png", "confusion.png"))
    manifest = {
        **manifest_head(name, staging, "image", "image-classification"),
        "inputs": [{"name": INPUT, "dtype": "float32", "shape": [-1, channels, height, width]}],
        "outputs": [{"name": OUTPUT, "dtype": "float32", "shape": [-1, len(labels)]}],
        "preprocessing": preprocessing(config),
        "labels": labels,
        "variants": variants,
        "parity": parity,
        "int8_accuracy_drop": drop,
        "quality_report": reports,
        "quantization": {**result.record, "format": "QDQ static", "activations": "uint8", "weights": "int8"},
        "versions": versions(),
        "training": {"config": config, "best_epoch": metrics["best_epoch"], "val_acc": metrics["val_acc"],
                     "train_seconds": metrics["train_seconds"], "data_source": data.source,
                     "skipped_files": metrics.get("skipped_files", 0),
                     "skipped_examples": metrics.get("skipped_examples", [])},
    }
    artifact.write_manifest(staging, manifest)
    return manifest
