import pytest

from edgestack.runtime import choose_providers, choose_variant, open_session

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


def test_intra_op_spinning_is_on_in_process_and_off_in_the_server(digits_artifact, monkeypatch):
    from serving.image import ImageClassifier
    from serving.runner import RunnerOptions

    def spinning(session) -> str:
        return session.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")

    path = digits_artifact.variant_path("int8")
    assert spinning(open_session(path, device="cpu", threads=2)) == "1"  # ORT's default
    assert spinning(open_session(path, device="cpu", threads=2, spinning=False)) == "0"
    monkeypatch.delenv("EDGESTACK_ORT_SPIN", raising=False)
    assert spinning(ImageClassifier(digits_artifact, RunnerOptions.from_env()).session) == "0"
    monkeypatch.setenv("EDGESTACK_ORT_SPIN", "1")
    assert spinning(ImageClassifier(digits_artifact, RunnerOptions.from_env()).session) == "1"
