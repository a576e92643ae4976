"""The generic family's processing (edgestack/families/generic.py) and the model configuration an
imported graph gets (edgestack/model_config.py), by the rules of Triton's ONNX Runtime backend."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2

from edgestack.errors import InputError
from edgestack.families import generic
from edgestack.model_config import autocomplete

MLP_IN = [{"name": "X", "dtype": "float32", "shape": [-1, 64]}]
MLP_OUT = [{"name": "label", "dtype": "int64", "shape": [-1]},
           {"name": "probabilities", "dtype": "float32", "shape": [-1, 10]}]


def as_proto(config: dict) -> model_config_pb2.ModelConfig:
    """What Triton's own ModelConfig message makes of it (unknown fields or enum values raise)."""
    return json_format.ParseDict(config, model_config_pb2.ModelConfig())


def test_a_dynamic_batch_axis_gives_max_batch_size_dynamic_batching_and_dims_without_it():
    config = autocomplete("mlp", MLP_IN, MLP_OUT, max_batch_size=64, max_queue_delay_us=500)
    as_proto(config)
    assert config["max_batch_size"] == 64 and config["dynamic_batching"] == {"max_queue_delay_microseconds": 500}
    assert config["input"] == [{"name": "X", "data_type": "TYPE_FP32", "dims": [64]}]
    # a [batch] tensor: dims [1] and an empty reshape, as Triton's AutoCompleteIO writes it
    assert config["output"][0] == {"name": "label", "data_type": "TYPE_INT64", "dims": [1], "reshape": {"shape": []}}
    assert config["output"][1]["dims"] == [10]


def test_a_fixed_first_dimension_is_stated_not_taken_for_a_batch_axis():
    fixed_in = [{"name": "X", "dtype": "float32", "shape": [3, 2]}]
    config = autocomplete("mul", fixed_in, [{"name": "Y", "dtype": "float32", "shape": [3, 2]}], max_batch_size=64)
    as_proto(config)
    assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
    assert config["input"][0]["dims"] == [3, 2] and "reshape" not in config["input"][0]
    # one tensor without an open first dimension is enough (Triton: every input and output must batch)
    mixed = autocomplete("m", MLP_IN, [{"name": "y", "dtype": "float32", "shape": [10]}], max_batch_size=64)
    assert mixed["max_batch_size"] == 0 and mixed["input"][0]["dims"] == [-1, 64]


def test_max_batch_size_one_turns_no_dynamic_batching_on_and_text_is_type_string():
    config = autocomplete("t", [{"name": "text", "dtype": "bytes", "shape": [-1]}],
                          [{"name": "p", "dtype": "float32", "shape": [-1, 2]}], max_batch_size=1,
                          parameters={"variant": "int8"})
    as_proto(config)
    assert "dynamic_batching" not in config and config["input"][0]["data_type"] == "TYPE_STRING"
    assert config["parameters"] == {"variant": {"string_value": "int8"}}


def test_check_feeds_casts_within_a_kind_and_names_what_is_wrong():
    checked = generic.check_feeds(MLP_IN, {"X": np.zeros((2, 64))}, batched=True)  # float64 -> float32
    assert checked["X"].dtype == np.float32
    with pytest.raises(InputError, match=r"takes inputs \['X'\]; missing \['X'\]; unexpected \['Y'\]"):
        generic.check_feeds(MLP_IN, {"Y": np.zeros((2, 64))}, batched=True)
    with pytest.raises(InputError, match=r"input 'X' of m must have shape \[-1, 64\] \(-1 = any\), got \[2, 63\]"):
        generic.check_feeds(MLP_IN, {"X": np.zeros((2, 63), np.float32)}, batched=True, model="m")
    ids = [{"name": "ids", "dtype": "int64", "shape": [-1]}]
    with pytest.raises(InputError, match="is int64, got float32"):  # a float never silently becomes an integer
        generic.check_feeds(ids, {"ids": np.zeros(2, np.float32)}, batched=True)
    with pytest.raises(InputError, match="the limit is 3") as caught:
        generic.check_feeds(MLP_IN, {"X": np.zeros((4, 64), np.float32)}, batched=True, max_items=3)
    assert caught.value.status == 413
    nan = generic.check_feeds(MLP_IN, {"X": np.full((1, 64), np.nan, np.float32)}, batched=True)
    assert np.isnan(nan["X"]).all()  # what a NaN means is the model's business (imputers)


def test_inputs_of_one_request_share_a_batch_size_and_pack_into_rows():
    two = [{"name": "a", "dtype": "float32", "shape": [-1, 3]}, {"name": "b", "dtype": "int64", "shape": [-1, 2]}]
    feeds = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(4).reshape(2, 2)}
    with pytest.raises(InputError, match="same batch size"):
        generic.check_feeds(two, {"a": feeds["a"], "b": np.zeros((3, 2), np.int64)}, batched=True)
    assert generic.packable(two) and not generic.packable([{"name": "s", "dtype": "int64", "shape": [-1, -1]}])
    rows = np.concatenate([generic.pack_rows(two, feeds), generic.pack_rows(two, feeds)])  # what the batcher does
    back = generic.unpack_rows(rows[1:3])
    np.testing.assert_array_equal(back["a"], feeds["a"][[1, 0]])
    np.testing.assert_array_equal(back["b"], feeds["b"][[1, 0]])
    assert back["b"].dtype == np.int64 and back["a"].flags.c_contiguous


def test_example_feeds_follow_the_declared_types_and_tensor_files_are_checked(tmp_path):
    feeds = generic.example_feeds([*MLP_IN, {"name": "m", "dtype": "bool", "shape": [-1]},
                                   {"name": "t", "dtype": "bytes", "shape": [2]}], batch=3)
    assert feeds["X"].shape == (3, 64) and feeds["X"].dtype == np.float32
    assert feeds["m"].dtype == np.bool_ and feeds["t"].dtype == object and feeds["t"].shape == (2,)
    np.save(tmp_path / "one.npy", feeds["X"])
    assert generic.read_tensor_file(tmp_path / "one.npy", MLP_IN)["X"].shape == (3, 64)
    with pytest.raises(InputError, match="holds one array, but the model takes 2 inputs"):
        generic.read_tensor_file(tmp_path / "one.npy", [*MLP_IN, {"name": "m", "dtype": "bool", "shape": [-1]}])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.npz is not a readable numpy file"):
        generic.read_tensor_file(tmp_path / "bad.npz", MLP_IN)
