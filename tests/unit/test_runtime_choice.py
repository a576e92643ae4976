"""ONNX Runtime provider and variant choice (TensorRT > CUDA > CPU; int8 on CPU, fp16 on GPU), with the
provider lists a GPU build would offer: the GPU path's logic, tested without a GPU."""

from __future__ import annotations

import pytest
from edgestack.runtime import choose_providers, choose_variant


ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_provider_order_is_tensorrt_cuda_cpu_among_available():
    assert choose_providers(ALL) == ALL
    assert choose_providers(["CPUExecutionProvider", "CUDAExecutionProvider"]) == ["CUDAExecutionProvider",
                                                                                   "CPUExecutionProvider"]
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(ALL, device="cpu") == ["CPUExecutionProvider"]
    assert choose_providers(ALL, device="cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_asking_for_a_gpu_without_one_is_a_clear_error():
    with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
        choose_providers(["CPUExecutionProvider"], device="cuda")
    with pytest.raises(ValueError, match="unknown device"):
        choose_providers(ALL, device="tpu")


def test_variant_is_int8_on_cpu_fp16_on_gpu_with_fallbacks():
    variants = ["fp32", "int8", "fp16"]
    assert choose_variant(variants, ["CPUExecutionProvider"]) == "int8"
    assert choose_variant(variants, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == "fp16"
    assert choose_variant(["fp32"], ["CUDAExecutionProvider"]) == "fp32"
    assert choose_variant(variants, ["CPUExecutionProvider"], requested="fp32") == "fp32"
    with pytest.raises(ValueError, match="not in the artifact"):
        choose_variant(["fp32"], ["CPUExecutionProvider"], requested="int4")
