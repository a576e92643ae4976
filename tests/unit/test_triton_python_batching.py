"""The Python-backend config with Triton's dynamic batching (export/triton.py python_model_config):
what Triton reads from it, parsed by Triton's own ModelConfig protobuf. The real Triton merging
requests into one call of serving/triton_model.py: tests/integration/test_triton_server.py."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from edgestack.errors import UsageError
from export import triton

IMAGE = {"task": "image-classification", "inputs": [{"name": "images", "dtype": "float32", "shape": [-1, 1, 28, 28]}],
         "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, 10]}]}
TEXT = {"task": "text-classification", "inputs": [{"name": "text", "dtype": "bytes", "shape": [-1]}],
        "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [-1, 2]}]}
STATEFUL = {"task": "text-generation", "inputs": [{"name": "token", "dtype": "int64", "shape": [-1]},
                                                  {"name": "h", "dtype": "float32", "shape": [2, -1, 64]}],
            "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, 96]}]}


def parsed(manifest: dict, **options) -> model_config_pb2.ModelConfig:
    config = triton.python_model_config("m", manifest, variant="int8", **options)
    return text_format.Parse(triton.to_pbtxt(config), model_config_pb2.ModelConfig())


def test_off_by_default_each_request_as_it_came():
    config = parsed(IMAGE)
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert [list(t.dims) for t in config.input] == [[-1, 1, 28, 28]]


def test_dynamic_batching_up_to_max_batch_rows_without_preferred_sizes():
    config = parsed(IMAGE, max_batch_size=64, cpu_instances=2)
    assert config.max_batch_size == 64
    assert config.dynamic_batching.max_queue_delay_microseconds == 0  # as our batcher: never waits
    assert list(config.dynamic_batching.preferred_batch_size) == []   # Triton sends the largest batch it can
    assert [list(t.dims) for t in config.input] == [[1, 28, 28]]     # the batch dimension is Triton's
    assert [list(t.dims) for t in config.output] == [[10]]
    assert config.instance_group[0].count == 2 and config.parameters["variant"].string_value == "int8"


def test_texts_are_a_batched_1_element_tensor_and_the_delay_is_kept():
    config = parsed(TEXT, max_batch_size=32, queue_delay_us=500)
    (text,) = config.input
    assert list(text.dims) == [1] and text.HasField("reshape") and list(text.reshape.shape) == []
    assert model_config_pb2.DataType.Name(text.data_type) == "TYPE_STRING"
    assert config.dynamic_batching.max_queue_delay_microseconds == 500


def test_a_model_without_a_leading_batch_dimension_is_not_batched():
    config = parsed(STATEFUL, max_batch_size=64)
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert [list(t.dims) for t in config.input] == [[-1], [2, -1, 64]]


def test_negative_settings_are_refused():
    with pytest.raises(UsageError, match="max_batch_size"):
        triton.python_model_config("m", IMAGE, max_batch_size=-1)
