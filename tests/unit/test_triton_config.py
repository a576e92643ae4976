"""Triton model configs written from ONNX graphs: dims, batch axes, and configs Triton would refuse."""

from __future__ import annotations

from pathlib import Path
import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import triton_to_np_dtype
from export import triton


def config_dtype(data_type: int) -> np.dtype:
    name = model_config_pb2.DataType.Name(data_type).removeprefix("TYPE_")
    return np.dtype(object) if name == "STRING" else np.dtype(triton_to_np_dtype(name))


def graph_tensors(path: Path, kind: str) -> list[tuple[str, np.dtype, list[int]]]:
    """(name, numpy dtype, dims with -1 for symbolic) straight from the ONNX file."""
    graph = onnx.load(str(path)).graph
    out = []
    for value in getattr(graph, kind):
        t = value.type.tensor_type
        dtype = np.dtype(object) if t.elem_type == TensorProto.STRING else helper.tensor_dtype_to_np_dtype(t.elem_type)
        out.append((value.name, dtype, [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]))
    return out


def assert_config_matches_graph(config: model_config_pb2.ModelConfig, onnx_path: Path) -> None:
    batched = config.max_batch_size > 0
    for kind, entries in (("input", config.input), ("output", config.output)):
        graph = graph_tensors(onnx_path, kind)
        assert [e.name for e in entries] == [g[0] for g in graph]
        for entry, (_, dtype, dims) in zip(entries, graph):
            assert config_dtype(entry.data_type) == dtype
            if batched:
                assert dims[0] == -1
                assert list(entry.dims) == (dims[1:] or [1])
            else:
                assert list(entry.dims) == dims


def test_multi_input_graph_without_a_batch_dimension(tmp_path):
    """An LSTM-step-like graph: token ids (INT64), a state whose batch axis is not first,
    a string input; no shared leading dynamic axis, so max_batch_size 0 and full dims."""
    tokens = helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", 1])
    state = helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 16])
    text = helper.make_tensor_value_info("text", TensorProto.STRING, [3])
    outs = [helper.make_tensor_value_info(n, t, s) for n, t, s in (("tokens_out", TensorProto.INT64, ["batch", 1]),
                                                                   ("state_out", TensorProto.FLOAT, [2, "batch", 16]),
                                                                   ("text_out", TensorProto.STRING, [3]))]
    nodes = [helper.make_node("Identity", [i], [o]) for i, o in (("tokens", "tokens_out"), ("state", "state_out"),
                                                                 ("text", "text_out"))]
    model = helper.make_model(helper.make_graph(nodes, "step", [tokens, state, text], outs),
                              opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    config_json = triton.model_config("step", path, {"task": "text-generation"}, target="gpu")
    config = text_format.Parse(triton.to_pbtxt(config_json), model_config_pb2.ModelConfig())
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert_config_matches_graph(config, path)
    assert list(config.input[1].dims) == [2, -1, 16]
    assert model_config_pb2.DataType.Name(config.input[2].data_type) == "TYPE_STRING"


def test_a_config_triton_would_refuse_is_never_written():
    with pytest.raises(Exception, match="no_such_field"):
        triton.to_pbtxt({"name": "x", "platform": "onnxruntime_onnx", "no_such_field": 1})
    with pytest.raises(ValueError, match="target"):
        triton.model_config("x", Path("unused.onnx"), {}, target="tpu")
