"""Caller mistakes that were 500s, refused where they are parsed (no server): the v2 codec's
JSON header nested too deeply, BYTES data with a lone surrogate, shapes numpy cannot make;
a form field with a lone surrogate (serving/inputs.py)."""

from __future__ import annotations

import json

import pytest

from edgestack import v2protocol as v2
from serving.inputs import encodable


def test_a_header_nested_100000_deep_is_a_protocol_error():
    with pytest.raises(v2.ProtocolError, match="nests too deeply"):
        v2.split_body(b"[" * 100_000 + b"]" * 100_000, None)


def test_bytes_data_with_a_lone_surrogate_is_a_protocol_error():
    header, _ = v2.split_body(json.dumps({"data": ["fine", "\ud800"]}).encode(), None)
    with pytest.raises(v2.ProtocolError, match="lone surrogate"):
        v2.from_json(header["data"], v2.BY_V2["BYTES"], [2], "input 'text'")


@pytest.mark.parametrize("shape,words", [([0, 10**30], "larger than any tensor"), ([2**20] * 3, "larger than any"),
                                         ([1] * 33, "33 dimensions")])
def test_shapes_numpy_cannot_make_are_protocol_errors(shape, words):
    with pytest.raises(v2.ProtocolError, match=words):
        v2.check_shape(shape, "input 'x'")
    assert v2.check_shape([0, 3, 28, 28], "input 'x'") == [0, 3, 28, 28]


def test_encodable_walks_nested_values_of_any_depth():
    deep: list = ["\ud800"]
    for _ in range(5000):
        deep = [deep]
    assert not encodable(deep) and not encodable({"k": "\udfff"}) and not encodable({"\udfff": 1})
    assert encodable({"prompt": "X:1\nT:Café", "pixels": [[0.5] * 28] * 28, "path": None})
