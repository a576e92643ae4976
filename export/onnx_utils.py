"""Family-independent export steps: write an ONNX file ORT can load, check parity, fp16.

Used by every family's export module so the pitfalls are handled in one place:
- torch's dynamo exporter may write weights to `<file>.data`; we save as one file.
- onnx may stamp an IR version newer than onnxruntime reads; we cap it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import onnx

from edgestack.errors import ParityError  # noqa: F401 (raised here; importers take it from here too)

# onnxruntime 1.31 reads IR version <= 11; onnx 1.23 may write 12.
MAX_IR_VERSION = 10




def keep_training_run(run_dir: Path, staging: Path, files: tuple[str, ...]) -> dict:
    """Copy the training run's `files` that exist into <staging>/checkpoint/ (sub-folders kept)
    and return its metrics. The run travels with the artifact: plots for people, the
    safetensors checkpoint for parity checks and benchmarks against PyTorch."""
    checkpoint = Path(staging) / "checkpoint"
    checkpoint.mkdir()
    for name in files:
        source = Path(run_dir) / name
        if source.exists():
            (checkpoint / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, checkpoint / name)
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def manifest_head(name: str, staging: Path, family: str, task: str) -> dict:
    """The fields every artifact manifest starts with."""
    from edgestack.artifact import staging_version

    return {"name": name, "version": staging_version(staging), "family": family, "task": task,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def versions() -> dict[str, str]:
    from edgestack.cpu import package_versions

    return package_versions()


def finalize(path: Path) -> None:
    """Inline any external data, cap the IR version, check the graph: one loadable file."""
    path = Path(path)
    model = onnx.load(str(path), load_external_data=True)
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    onnx.checker.check_model(model)
    for leftover in path.parent.glob(path.name + ".data"):
        leftover.unlink()
    onnx.save_model(model, str(path), save_as_external_data=False)


def export_module(module, example_inputs: tuple, path: Path, *, input_names: list[str],
                  output_names: list[str], dynamic_shapes, opset: int = 18) -> Path:
    """torch.nn.Module -> one self-contained ONNX file (dynamo exporter)."""
    import torch

    module.eval()
    program = torch.onnx.export(module, example_inputs, dynamo=True, opset_version=opset,
                                input_names=input_names, output_names=output_names,
                                dynamic_shapes=dynamic_shapes, verbose=False)
    program.save(str(path), external_data=False)
    finalize(path)
    return Path(path)


def check_parity(expected: np.ndarray, actual: np.ndarray, *, atol: float, rtol: float, what: str) -> dict:
    """Fail loudly when |actual - expected| > atol + rtol * |expected| anywhere."""
    expected, actual = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    if expected.shape != actual.shape:
        raise ParityError(f"{what}: shape {actual.shape} != PyTorch's {expected.shape}")
    diff = np.abs(actual - expected)
    worst = float(diff.max()) if diff.size else 0.0
    ok = bool(np.all(diff <= atol + rtol * np.abs(expected)))
    report = {"max_abs_diff": worst, "atol": atol, "rtol": rtol, "passed": ok}
    if not ok:
        raise ParityError(f"{what}: max |ORT - PyTorch| = {worst:.3g} exceeds atol={atol} rtol={rtol}")
    return report


def convert_fp16(src: Path, dst: Path) -> Path:
    """fp16 weights and activations, fp32 inputs/outputs (keep_io_types) so clients do not change."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    model16 = convert_float_to_float16(model, keep_io_types=True)
    model16.ir_version = min(model16.ir_version, MAX_IR_VERSION)
    onnx.save_model(model16, str(dst))
    return Path(dst)


def op_types(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def nodes_of(path: Path, kinds: tuple[str, ...]) -> list[str]:
    """Names of the graph's nodes whose op type is one of `kinds` (in graph order)."""
    return [node.name for node in onnx.load(str(path)).graph.node if node.op_type in kinds]
