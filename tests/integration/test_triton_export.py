"""`edgestack export triton`: every config.pbtxt parsed with Triton's own ModelConfig
protobuf (tritonclient's grpc package) and compared with the ONNX graph it ships."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from edgestack import artifact
from edgestack import v2protocol as v2
from cli import main
from export import triton
from tests.integration.test_v2 import MODELS, v2_artifacts  # noqa: F401  (a session fixture)
from tests.unit.test_triton_config import assert_config_matches_graph, config_dtype


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.mark.parametrize("model", MODELS)
def test_exported_repository_parses_as_triton_model_config(v2_artifacts, model, tmp_path, monkeypatch):
    root, built = v2_artifacts
    art = built[model]
    monkeypatch.setenv("EDGESTACK_ARTIFACTS", str(root))
    repo = tmp_path / "repo"
    assert main(["export", "triton", model, "--repo", str(repo), "--max-batch", "32",
                 "--queue-delay-us", "1500", "--cpu-instances", "2", "--threads", "1"]) == 0
    model_dir = repo / model
    onnx_path = model_dir / art.version / "model.onnx"
    assert artifact.sha256_file(onnx_path) == artifact.sha256_file(art.variant_path("fp32"))
    config = parse(model_dir / "config.pbtxt")
    assert config.name == model and config.platform == "onnxruntime_onnx"
    assert_config_matches_graph(config, onnx_path)
    if config.max_batch_size:
        assert config.max_batch_size == 32
        assert config.dynamic_batching.max_queue_delay_microseconds == 1500
    kinds = {model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind): g.count for g in config.instance_group}
    assert kinds == {"KIND_GPU": 1, "KIND_CPU": 2}
    (trt,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
    assert config.version_policy.latest.num_versions == 1
    assert config.parameters["intra_op_thread_count"].string_value == "1"
    hints = json.loads(config.parameters["edgestack"].string_value)
    assert hints["task"] == art.task
    labels = art.manifest.get("labels")
    if labels:
        assert (model_dir / "labels.txt").read_text().splitlines() == labels
        assert [o.label_filename for o in config.output if list(o.dims) == [len(labels)]] == ["labels.txt"]


def test_cpu_only_repository_and_every_version(digits_artifact, artifacts_env, tmp_path):
    repo = tmp_path / "repo"
    written = triton.export_repository(repo, ["digits-cnn"], target="cpu", variant="int8", all_versions=True,
                                       keep_versions=2)
    config = parse(written[0] / "config.pbtxt")
    assert [model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group] == ["KIND_CPU"]
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator
    assert config.version_policy.latest.num_versions == 2
    onnx_path = written[0] / digits_artifact.version / "model.onnx"
    assert artifact.sha256_file(onnx_path) == artifact.sha256_file(digits_artifact.variant_path("int8"))
    assert_config_matches_graph(config, onnx_path)






@pytest.mark.parametrize("model", MODELS)
def test_python_backend_repository(v2_artifacts, model, tmp_path, monkeypatch):
    """--backend python: the artifact's own tensors (text models: BYTES), max_batch_size 0, one CPU
    instance; model.py is serving/triton_model.py and the artifact folder loads, checksums intact."""
    root, built = v2_artifacts
    art = built[model]
    monkeypatch.setenv("EDGESTACK_ARTIFACTS", str(root))
    repo = tmp_path / "repo"
    assert main(["export", "triton", model, "--backend", "python", "--repo", str(repo), "--variant", "int8",
                 "--threads", "1", "--cpu-instances", "2"]) == 0
    model_dir = repo / model
    config = parse(model_dir / "config.pbtxt")
    assert config.name == model and config.backend == "python" and not config.platform
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    for entries, declared in ((config.input, art.manifest["inputs"]), (config.output, art.manifest["outputs"])):
        assert [(e.name, list(e.dims)) for e in entries] == [(d["name"], d["shape"]) for d in declared]
        assert [config_dtype(e.data_type) for e in entries] == [v2.datatype(d["dtype"]).numpy for d in declared]
    (group,) = config.instance_group
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind) == "KIND_CPU" and group.count == 2
    assert config.parameters["variant"].string_value == "int8" and config.parameters["threads"].string_value == "1"
    assert json.loads(config.parameters["edgestack"].string_value) == v2.client_hints(art.manifest)
    version_dir = model_dir / art.version
    assert (version_dir / "model.py").read_bytes() == triton.PYTHON_MODEL.read_bytes()
    assert artifact.load(version_dir / "artifact", folder_is_version=False).manifest == art.manifest
    assert not (version_dir / "model.onnx").exists()


def test_python_backend_refuses_gpu_targets_and_unknown_variants(digits_artifact, artifacts_env, tmp_path):
    with pytest.raises(ValueError, match="--target cpu"):
        triton.export_repository(tmp_path, ["digits-cnn"], backend="python", target="both")
    with pytest.raises(artifact.ArtifactError, match="no variant 'fp64'"):
        triton.export_repository(tmp_path, ["digits-cnn"], backend="python", target="cpu", variant="fp64")
    with pytest.raises(ValueError, match="backend"):
        triton.export_repository(tmp_path, ["digits-cnn"], backend="tensorflow")
