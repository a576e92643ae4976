import json

import numpy as np
import onnx
import pytest

from edgestack import artifact
from edgestack.runtime import open_session
from export.onnx_utils import MAX_IR_VERSION
from tests.reference import graph_ops
from training.data import images


def test_manifest_describes_every_variant_with_accuracy_and_checksums(digits_artifact):
    m = digits_artifact.manifest
    assert m["name"] == "digits-cnn" and m["task"] == "image-classification"
    assert m["inputs"] == [{"name": "images", "dtype": "float32", "shape": [-1, 1, 28, 28]}]
    assert set(m["variants"]) == {"fp32", "int8", "fp16"}
    for variant in m["variants"].values():
        assert variant["test_size"] == 500 and 0.8 < variant["test_accuracy"] <= 1.0
        assert variant["file"] in m["files"]
    assert m["parity"]["passed"] and m["parity"]["max_abs_diff"] <= m["parity"]["atol"] + 1e-3
    assert {"torch", "onnx", "onnxruntime"} <= set(m["versions"])
    assert m["training"]["config"]["dataset"] == "digits"
    assert all(len(f["sha256"]) == 64 for f in m["files"].values())
    assert "checkpoint/model.safetensors" in m["files"]


def test_int8_is_really_quantized_and_within_budget(digits_artifact):
    """Read from the graph files and measured here, not taken from the exporter's manifest."""
    path = digits_artifact.variant_path("int8")
    model = onnx.load(str(path))
    produced_by = {out: node for node in model.graph.node for out in node.output}
    weights = {t.name: t for t in model.graph.initializer}
    compute = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    fp32_ops = graph_ops(digits_artifact.variant_path("fp32"))
    assert len(compute) == sum(fp32_ops[op] for op in ("Conv", "Gemm", "MatMul")) == 4  # conv1, conv2, fc1, fc2
    for node in compute:  # static QDQ: int8 weights and quantized activations into every layer
        activation, weight = (produced_by.get(name) for name in node.input[:2])
        assert weight is not None and weight.op_type == "DequantizeLinear", node.name
        assert weights[weight.input[0]].data_type == onnx.TensorProto.INT8, node.name
        assert activation is not None and activation.op_type == "DequantizeLinear", node.name
        assert produced_by[activation.input[0]].op_type == "QuantizeLinear", node.name
    assert not {"ConvInteger", "MatMulInteger"} & set(graph_ops(path))  # dynamic int8 convs are slow: never
    # accuracy on the 500 test digits, measured here: what the manifest says, within the budget
    data = images.digits()
    x = (data.test.images.astype(np.float32) / 255.0)[:, None]
    accuracy = {v: float((open_session(digits_artifact.variant_path(v), device="cpu", threads=1)
                          .run({"images": x})[0].argmax(1) == data.test.labels).mean()) for v in ("fp32", "int8")}
    for variant, measured in accuracy.items():
        assert measured == pytest.approx(digits_artifact.variants[variant]["test_accuracy"], abs=1e-9)
    assert accuracy["fp32"] - accuracy["int8"] <= digits_artifact.manifest["quantization"]["budget"] + 1e-9


def test_every_variant_loads_in_onnxruntime_with_dynamic_batch(digits_artifact):
    data = images.digits()
    x = data.test.images[:7].astype(np.float32)[:, None] / 255.0
    outputs = {}
    for variant in digits_artifact.variants:
        path = digits_artifact.variant_path(variant)
        assert onnx.load(str(path)).ir_version <= MAX_IR_VERSION
        outputs[variant] = open_session(path, device="cpu").run({"images": x})[0]
        assert outputs[variant].shape == (7, 10)
    # fp16 runs on CPU too and agrees with fp32 on the predicted classes
    assert np.array_equal(outputs["fp16"].argmax(1), outputs["fp32"].argmax(1))
    assert np.abs(outputs["fp16"] - outputs["fp32"]).max() < 0.05




def test_loading_refuses_an_artifact_whose_checksum_does_not_match(tampered_root):
    with pytest.raises(artifact.ArtifactError, match=r"model\.int8\.onnx: sha256 mismatch"):
        artifact.load_latest("digits-cnn", tampered_root)


def test_loading_refuses_an_artifact_with_a_missing_file(digits_artifact, tmp_path):
    import shutil

    copy = tmp_path / "digits-cnn" / "1"
    shutil.copytree(digits_artifact.path, copy)
    (copy / "model.fp16.onnx").unlink()
    with pytest.raises(artifact.ArtifactError, match="model.fp16.onnx: missing"):
        artifact.load(copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["schema_version"] == artifact.SCHEMA_VERSION
