"""Edges of the v2 codec that mutation testing (scripts/mutation.py) found unchecked: the exact
messages a client reads, an empty last BYTES element, a length prefix past 2**31, zero-size
binary tensors, a one-byte header and many unit dimensions."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from edgestack import v2protocol as v2
from edgestack.v2protocol import ProtocolError, TooLarge


def message(call, *args) -> str:
    with pytest.raises(ProtocolError) as caught:
        call(*args)
    return str(caught.value)


def test_split_body_messages():
    assert message(v2.split_body, b"", None) == "empty body: send a JSON inference request"
    assert message(v2.split_body, b"[" * 100_000, None) == (
        "the inference header nests too deeply to parse (JSON nested about 1,000 levels or more)")
    # a one-byte header is a valid length: it is the JSON that is wrong
    assert message(v2.split_body, b"5", "1") == "the inference header must be a JSON object, got int"


def test_the_bytes_element_limit_names_its_setting():
    with pytest.raises(TooLarge) as caught:
        v2.check_bytes_count([5], 2, "input 'x'")
    assert str(caught.value) == "input 'x': shape [5] is 5 BYTES elements; the limit is 2 (EDGESTACK_MAX_ITEMS)"


def test_an_empty_last_bytes_element_and_a_length_prefix_past_2_31():
    assert v2.deserialize_bytes(v2.serialize_bytes(np.array([b"x", b""], object))) == [b"x", b""]
    assert v2.deserialize_bytes(struct.pack("<I", 0)) == [b""]
    assert message(v2.deserialize_bytes, b"\xff\xff\xff\xffab") == (
        "BYTES tensor: an element claims 4294967295 bytes but only 2 remain")


def test_a_shape_of_many_unit_dimensions_is_not_too_large():
    shape = [2**30] + [1] * 27
    assert v2.check_shape(shape, "x") == shape


def test_read_tensors_messages_name_the_tensor():
    assert message(v2.read_tensors, [{"name": "x", "datatype": "FP16X", "shape": [1], "data": [1]}],
                   memoryview(b"")) == f"input 'x': unknown datatype 'FP16X'; v2 datatypes are {', '.join(v2.BY_V2)}"
    binary = {"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 12}}
    first = {"name": "w", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}
    assert message(v2.read_tensors, [first, binary], memoryview(bytes(12))) == (
        "input 'x': `binary_data_size` 12 runs past the end of the body (8 binary byte(s) left)")
    binary["parameters"]["binary_data_size"] = 4  # decoded by from_raw, which names the tensor too
    assert message(v2.read_tensors, [binary], memoryview(bytes(4))) == "input 'x': shape [2] of FP32 needs 8 bytes, got 4"
    as_json = {"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0]}
    assert message(v2.read_tensors, [as_json], memoryview(b"")).startswith("input 'x': ")


def test_a_zero_size_binary_tensor_is_taken():
    empty = {"name": "x", "datatype": "FP32", "shape": [0, 3], "parameters": {"binary_data_size": 0}}
    assert v2.read_tensors([empty], memoryview(b""))["x"].shape == (0, 3)


def test_a_lone_surrogate_is_refused_as_not_text():
    assert message(v2.from_json, ["\ud800"], v2.BY_V2["BYTES"], [1], "input 'x'") == (
        "input 'x': BYTES `data` holds a lone surrogate (\\ud800-\\udfff), which is not text")
