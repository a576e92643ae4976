"""ONNX Runtime sessions: provider choice, thread settings, variant choice, warm-up.

The one place that decides how a model runs. Provider order is TensorRT -> CUDA -> CPU
among those this onnxruntime build offers, and every session logs what it actually got,
because a silent fall-back to CPU is the most common surprise for ORT users.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgestack.errors import UsageError
from edgestack.settings import get_settings

log = logging.getLogger("edgestack.runtime")

PREFERRED_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
GPU_PROVIDERS = {"TensorrtExecutionProvider", "CUDAExecutionProvider"}
ORT_TO_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8,
                "tensor(int8)": np.int8, "tensor(bool)": np.bool_}


def choose_providers(available: list[str] | None = None, device: str = "auto") -> list[str]:
    """Providers in preference order. device: auto | cpu | cuda | tensorrt."""
    available = list(ort.get_available_providers() if available is None else available)
    if device == "cpu":
        return ["CPUExecutionProvider"]
    wanted = {"auto": PREFERRED_PROVIDERS,
              "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
              "tensorrt": PREFERRED_PROVIDERS}.get(device)
    if wanted is None:
        raise UsageError(f"unknown device {device!r}; use auto, cpu, cuda or tensorrt")
    chosen = [p for p in wanted if p in available]
    if device in ("cuda", "tensorrt") and not GPU_PROVIDERS & set(chosen):
        raise RuntimeError(f"device={device} asked for, but this onnxruntime offers only {available} "
                           "(install the `gpu` extra: onnxruntime-gpu, and check the CUDA driver)")
    return chosen or ["CPUExecutionProvider"]


def choose_variant(variants: list[str], providers: list[str], requested: str | None = None) -> str:
    """int8 on CPU, fp16 on GPU, fp32 when the preferred one was not exported."""
    if requested:
        if requested not in variants:
            raise UsageError(f"variant {requested!r} not in the artifact (has {sorted(variants)})")
        return requested
    on_gpu = bool(GPU_PROVIDERS & set(providers))
    for candidate in (["fp16", "fp32"] if on_gpu else ["int8", "fp32"]):
        if candidate in variants:
            return candidate
    return variants[0]


def default_threads() -> int:
    """Threads per session: EDGESTACK_THREADS, else all cores (set it when sessions share a box)."""
    return get_settings().threads or (os.cpu_count() or 1)


@dataclass
class Session:
    """An ORT session with its I/O names and the provider it really runs on."""
    session: ort.InferenceSession
    path: Path
    providers: list[str]

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def input_dtype(self, index: int = 0) -> np.dtype:
        return np.dtype(ORT_TO_NUMPY[self.session.get_inputs()[index].type])

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        return self.session.run(outputs, feeds)


def open_session(path: Path, *, device: str = "auto", threads: int | None = None,
                 providers: list[str] | None = None, spinning: bool = True,
                 model_bytes: bytes | None = None) -> Session:
    """spinning: ORT's intra-op threads spin-wait for work between parallel sections (ORT's
    default). The server turns it off (RunnerOptions.spinning, see there); benchmarks and
    batch jobs keep it, because a session alone on its cores runs faster with it.
    model_bytes: the graph itself (Artifact.read_verified: the bytes whose checksum was
    checked), `path` then only names it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    wanted = providers or choose_providers(device=device)
    session = ort.InferenceSession(str(path) if model_bytes is None else model_bytes, sess_options=options,
                                   providers=wanted)
    got = session.get_providers()
    log.info("session %s: providers %s (asked %s), %d intra-op threads, spinning %s",
             Path(path).name, got, wanted, options.intra_op_num_threads, "on" if spinning else "off")
    if wanted[0] != got[0]:
        log.warning("session %s fell back from %s to %s", Path(path).name, wanted[0], got[0])
    return Session(session, Path(path), got)


def warm_up(session: Session, feeds: dict[str, np.ndarray], runs: int = 3) -> None:
    """Run a few inferences so the first real request does not pay for allocation and tuning."""
    for _ in range(runs):
        session.run(feeds)
