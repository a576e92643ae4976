"""edgestack/v2protocol.py, the tensor codec the server, the client and the Triton export share:
every datatype both ways, JSON and binary, bodies, and every refusal with the words that say what
was wrong. No server: the integration tests send the same through tritonclient."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from edgestack import v2protocol as v2
from edgestack.v2protocol import ProtocolError, TooLarge

NUMERIC = [d for d in v2.DATATYPES if d.v2 != "BYTES"]


# ------------------------------------------------------------------ the datatype table

def test_the_table_names_each_type_in_every_vocabulary():
    fp32 = v2.datatype("FP32")
    assert (fp32.numpy, fp32.onnx, fp32.ort, fp32.triton, fp32.itemsize) == \
        (np.dtype(np.float32), 1, "tensor(float)", "TYPE_FP32", 4)
    assert v2.datatype("float32") is fp32 and v2.datatype("FLOAT") is fp32 and v2.datatype("Float") is fp32
    assert v2.datatype("half") is v2.BY_V2["FP16"] and v2.datatype("double").v2 == "FP64"
    text = v2.datatype("bytes")
    assert text.v2 == "BYTES" and text.triton == "TYPE_STRING" and text.itemsize is None
    assert v2.datatype("string") is text and v2.datatype("str") is text
    assert v2.BY_ONNX[7].v2 == "INT64" and v2.BY_ORT["tensor(bool)"].v2 == "BOOL"
    assert len(v2.BY_V2) == len(v2.BY_ONNX) == len(v2.BY_ORT) == 13
    for d in NUMERIC:
        assert d.itemsize == d.numpy.itemsize and d.triton == f"TYPE_{d.v2}" and v2.datatype(d.aliases[0]) is d


def test_unknown_datatypes_are_named_in_the_refusal():
    with pytest.raises(ProtocolError, match=r"unknown datatype 'FP99'; v2 datatypes are BOOL, UINT8, .*BYTES"):
        v2.datatype("FP99")
    with pytest.raises(ProtocolError, match="numpy dtype complex64 has no v2 datatype"):
        v2.of_numpy(np.complex64)


@pytest.mark.parametrize("dtype, name", [(np.float32, "FP32"), (np.int64, "INT64"), (np.bool_, "BOOL"),
                                         (np.uint16, "UINT16"), (object, "BYTES"), ("S3", "BYTES"), ("U2", "BYTES")])
def test_numpy_types_map_to_their_datatype(dtype, name):
    assert v2.of_numpy(np.dtype(dtype)).v2 == name


@pytest.mark.parametrize("shape, words", [
    ("3", "`shape` must be a list of non-negative integers, got '3'"),
    ([1, -1], "non-negative integers, got [1, -1]"),
    ([1, 2.0], "non-negative integers"),
    ([True, 2], "non-negative integers"),
    ([1] * 33, "`shape` has 33 dimensions; at most 32"),
    ([2**28, 2**28], "is larger than any tensor can be"),
    ([0, 2**56], "is larger than any tensor can be"),
])
def test_impossible_shapes_are_refused_before_anything_is_allocated(shape, words):
    with pytest.raises(ProtocolError) as caught:
        v2.check_shape(shape, "input 'x'")
    assert str(caught.value).startswith("input 'x': ") and words in str(caught.value)


def test_possible_shapes_pass_even_empty_and_at_the_limits():
    for shape in ([], [0], [1] * 32, [2**27, 2**28], [0, 3, 28, 28]):
        assert v2.check_shape(shape, "x") == shape
    assert v2.element_count([2, 3, 4]) == 24 and v2.element_count([]) == 1 and v2.element_count([5, 0]) == 0


def test_client_hints_keep_what_a_client_needs_and_nothing_else():
    manifest = {"task": "image-classification", "preprocessing": {"scale": 1}, "labels": ["a"], "files": {},
                "version": "3", "parity": {}}
    assert v2.client_hints(manifest) == {"task": "image-classification", "preprocessing": {"scale": 1}, "labels": ["a"]}
    assert v2.client_hints({"task": "text-generation", "labels": None}) == {"task": "text-generation"}


# ------------------------------------------------------------------ BYTES elements

def test_bytes_elements_are_length_prefixed_little_endian():
    raw = v2.serialize_bytes(np.array([["ab", b"\x00\xff"], ["", "h\u00e9"]], dtype=object))
    assert raw == (struct.pack("<I", 2) + b"ab" + struct.pack("<I", 2) + b"\x00\xff" + struct.pack("<I", 0)
                   + struct.pack("<I", 3) + "h\u00e9".encode())
    assert v2.deserialize_bytes(raw) == [b"ab", b"\x00\xff", b"", "h\u00e9".encode()]
    assert v2.deserialize_bytes(memoryview(raw)) == v2.deserialize_bytes(raw) and v2.deserialize_bytes(b"") == []
    assert v2.serialize_bytes(np.array([7], dtype=object)) == struct.pack("<I", 1) + b"7"


def test_broken_bytes_sections_say_where():
    with pytest.raises(ProtocolError, match=r"^t: an element claims 9 bytes but only 3 remain$"):
        v2.deserialize_bytes(struct.pack("<I", 9) + b"abc", "t")
    with pytest.raises(ProtocolError, match=r"^BYTES tensor: 2 stray byte\(s\) where a 4-byte length prefix should be$"):
        v2.deserialize_bytes(struct.pack("<I", 1) + b"a" + b"\x01\x02")
    two = struct.pack("<I", 1) + b"a" + struct.pack("<I", 1) + b"b"
    assert v2.deserialize_bytes(two, "t", limit=2) == [b"a", b"b"]
    with pytest.raises(ProtocolError, match=r"^t: its shape needs 1 BYTES element\(s\), the data holds more$"):
        v2.deserialize_bytes(two, "t", limit=1)


# ------------------------------------------------------------------ tensors, binary

@pytest.mark.parametrize("dt", NUMERIC, ids=[d.v2 for d in NUMERIC])
def test_every_numeric_type_round_trips_through_raw_little_endian_bytes(dt):
    array = (np.arange(6) % 2 == 1) if dt.v2 == "BOOL" else np.arange(6).astype(dt.numpy)
    array = array.reshape(2, 3)
    raw = v2.to_raw(array, dt)
    assert raw == array.astype(dt.numpy.newbyteorder("<")).tobytes() and len(raw) == 6 * dt.itemsize
    back = v2.from_raw(raw, dt, [2, 3], "x")
    assert back.dtype == dt.numpy and back.shape == (2, 3) and np.array_equal(back, array)
    assert v2.from_raw(memoryview(raw), dt, [3, 2], "x").shape == (3, 2)


def test_raw_sizes_must_match_the_shape():
    fp32 = v2.BY_V2["FP32"]
    with pytest.raises(ProtocolError, match=r"^input 'x': shape \[2, 2\] of FP32 needs 16 bytes, got 12$"):
        v2.from_raw(b"\0" * 12, fp32, [2, 2], "input 'x'")
    text = v2.BY_V2["BYTES"]
    raw = v2.serialize_bytes(np.array([b"a", b"b"], dtype=object))
    assert v2.from_raw(raw, text, [2, 1], "t").tolist() == [[b"a"], [b"b"]]
    with pytest.raises(ProtocolError, match=r"^t: shape \[3\] needs 3 BYTES element\(s\), the data holds 2$"):
        v2.from_raw(raw, text, [3], "t")
    with pytest.raises(ProtocolError, match=r"^t: its shape needs 1 BYTES element\(s\), the data holds more$"):
        v2.from_raw(raw, text, [1], "t")
    assert v2.from_raw(b"", text, [0], "t").shape == (0,)


def test_big_endian_arrays_are_sent_little_endian():
    array = np.array([1.5, -2.0], dtype=">f4")
    assert v2.to_raw(array, v2.BY_V2["FP32"]) == np.array([1.5, -2.0], dtype="<f4").tobytes()


# ------------------------------------------------------------------ tensors, JSON

def test_json_data_flat_or_nested_becomes_the_shape():
    fp32 = v2.BY_V2["FP32"]
    flat = v2.from_json([1, 2, 3, 4, 5, 6], fp32, [2, 3], "x")
    nested = v2.from_json([[1, 2, 3], [4, 5, 6]], fp32, [2, 3], "x")
    assert flat.dtype == np.float32 and np.array_equal(flat, nested) and flat.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert v2.from_json([True, False], v2.BY_V2["BOOL"], [2], "x").tolist() == [True, False]
    assert v2.from_json([3, 250], v2.BY_V2["UINT8"], [2], "x").dtype == np.uint8
    assert v2.from_json([1.5], v2.BY_V2["FP64"], [1], "x").tolist() == [1.5]
    assert v2.from_json([7, 8], v2.BY_V2["FP16"], [1, 2], "x").dtype == np.float16  # integers are numbers
    empty = v2.from_json([], v2.BY_V2["INT64"], [0, 3], "x")
    assert empty.shape == (0, 3) and empty.dtype == np.int64
    text = v2.from_json([["a", "b"], ["c", "\u00e9"]], v2.BY_V2["BYTES"], [2, 2], "x")
    assert text.dtype == object and text.tolist() == [[b"a", b"b"], [b"c", "\u00e9".encode()]]


@pytest.mark.parametrize("data, dt, shape, words", [
    ([1, 2], "FP32", [3], "x: shape [3] needs 3 element(s), `data` holds 2"),
    ([[1, 2], [3]], "FP32", [3], "x: `data` must be a (nested) list of numbers; ragged lists found"),
    (["a", "b"], "FP32", [2], "x: FP32 `data` must be numbers, got"),
    ([1.5, 2], "INT64", [2], "x: INT64 `data` must be integers, got float64 values"),
    ([1, 0], "BOOL", [2], "x: BOOL `data` must be true/false, got int64 values"),
    ([True, 1.0], "UINT8", [2], "x: UINT8 `data` must be non-negative integers"),
    ([300], "UINT8", [1], "x: a value does not fit in UINT8"),
    ([-1], "UINT32", [1], "x: a value does not fit in UINT32"),
    ([2**40], "INT32", [1], "x: a value does not fit in INT32"),
    ("abc", "BYTES", [3], "x: `data` must be a list"),
    ([1, 2], "BYTES", [2], "x: BYTES `data` must be strings"),
    (["a"], "BYTES", [2], "x: shape [2] needs 2 element(s), `data` holds 1"),
    (["fine", "\ud800"], "BYTES", [2], "x: BYTES `data` holds a lone surrogate"),
])
def test_json_data_a_type_cannot_hold_is_refused(data, dt, shape, words):
    with pytest.raises(ProtocolError) as caught:
        v2.from_json(data, v2.BY_V2[dt], shape, "x")
    assert words in str(caught.value)


def test_bytes_json_data_nested_any_depth_is_read_in_order_without_recursion():
    deep: list = ["last"]
    for _ in range(5000):
        deep = [deep]
    data = [["a", ["b", "c"]], "d", deep]
    assert v2.from_json(data, v2.BY_V2["BYTES"], [5], "x").tolist() == [b"a", b"b", b"c", b"d", b"last"]


def test_arrays_back_to_json():
    assert v2.to_json(np.array([[1, 2], [3, 4]], np.int32), v2.BY_V2["INT32"]) == [1, 2, 3, 4]
    assert v2.to_json(np.array([b"h\xc3\xa9", b"\xff", "s"], dtype=object), v2.BY_V2["BYTES"]) == ["h\u00e9", "\ufffd", "s"]


# ------------------------------------------------------------------ bodies

def test_a_body_splits_into_its_json_header_and_binary_section():
    header, raw = v2.split_body(b'{"a": 1}XYZ', "8")
    assert header == {"a": 1} and bytes(raw) == b"XYZ" and isinstance(raw, memoryview)
    header, raw = v2.split_body(b'{"a": 1}', None)  # no header length: all of it is the header
    assert header == {"a": 1} and bytes(raw) == b""
    assert v2.split_body(b'{"a": 2}', "")[0] == {"a": 2} and v2.split_body(b'{"a": 3}', 8)[0] == {"a": 3}


@pytest.mark.parametrize("body, length, words", [
    (b'{"a": 1}', "ten", f"{v2.HEADER_LENGTH} must be an integer, got 'ten'"),
    (b'{"a": 1}', "99", f"{v2.HEADER_LENGTH} is 99 but the body has 8 bytes"),
    (b'{"a": 1}', "0", f"{v2.HEADER_LENGTH} is 0 but the body has 8 bytes"),
    (b'{"a": 1}', "-3", f"{v2.HEADER_LENGTH} is -3 but the body has 8 bytes"),
    (b"", None, "empty body: send a JSON inference request"),
    (b'{"a": ', None, "malformed JSON in the inference header"),
    (b"\xff\xfe", None, "malformed JSON in the inference header"),
    (b"[1, 2]", None, "the inference header must be a JSON object, got list"),
    (b"[" * 5000 + b"]" * 5000, None, "nests too deeply to parse"),
])
def test_broken_bodies_are_protocol_errors(body, length, words):
    with pytest.raises(ProtocolError) as caught:
        v2.split_body(body, length)
    assert words in str(caught.value)


def test_bodies_join_back():
    body, length = v2.join_body({"id": "r", "outputs": []}, [b"\x01\x02", b"\x03"])
    assert length == len(b'{"id":"r","outputs":[]}') and body == b'{"id":"r","outputs":[]}\x01\x02\x03'
    assert v2.join_body({"a": 1}, []) == (b'{"a":1}', None)


def test_bytes_counts_are_checked_from_the_shape():
    v2.check_bytes_count([4, 4], 16, "t")
    v2.check_bytes_count([10**9], None, "t")
    with pytest.raises(TooLarge, match=r"t: shape \[4, 5\] is 20 BYTES elements; the limit is 16") as caught:
        v2.check_bytes_count([4, 5], 16, "t")
    assert caught.value.status == 413 and isinstance(caught.value, ProtocolError)


# ------------------------------------------------------------------ a request's tensors

def request(tensors: list, raws: list[bytes]) -> tuple[list, memoryview]:
    return tensors, memoryview(b"".join(raws))


def test_tensors_are_read_from_json_and_from_the_binary_section_in_order():
    a = np.arange(4, dtype=np.float32).reshape(2, 2)
    b = np.array([7, 8, 9], dtype=np.int64)
    tensors = [{"name": "a", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": 16}},
               {"name": "j", "datatype": "INT32", "shape": [2], "data": [1, 2]},
               {"name": "b", "datatype": "INT64", "shape": [3], "parameters": {"binary_data_size": 24}},
               {"name": "t", "datatype": "BYTES", "shape": [1], "data": ["x"], "parameters": {}}]
    got = v2.read_tensors(*request(tensors, [a.tobytes(), b.tobytes()]))
    assert list(got) == ["a", "j", "b", "t"]
    assert np.array_equal(got["a"], a) and np.array_equal(got["b"], b) and got["j"].tolist() == [1, 2]
    assert got["t"].tolist() == [b"x"]
    assert v2.read_tensors([], memoryview(b"")) == {}


@pytest.mark.parametrize("tensor, raw, words", [
    ("not an object", b"", "input #0 must be a JSON object"),
    ({"datatype": "FP32", "shape": [1], "data": [1]}, b"", "input #0: `name` must be a non-empty string"),
    ({"name": "", "datatype": "FP32", "shape": [1], "data": [1]}, b"", "input '': `name` must be a non-empty string"),
    ({"name": "x", "shape": [1], "data": [1]}, b"", "input 'x': `datatype` must be a string such as \"FP32\""),
    ({"name": "x", "datatype": "FLOAT", "shape": [1], "data": [1]}, b"", "input 'x': unknown datatype 'FLOAT'"),
    ({"name": "x", "datatype": "FP32", "shape": "1", "data": [1]}, b"", "input 'x': `shape` must be a list"),
    ({"name": "x", "datatype": "FP32", "shape": [1], "data": [1], "parameters": [1]}, b"",
     "input 'x': `parameters` must be an object"),
    ({"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"shared_memory_region": "r"}}, b"",
     "input 'x': shared-memory tensors are not supported"),
    ({"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": -4}}, b"",
     "input 'x': `binary_data_size` must be a non-negative integer, got -4"),
    ({"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": True}}, b"",
     "`binary_data_size` must be a non-negative integer, got True"),
    ({"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4.0}}, b"\0" * 4,
     "`binary_data_size` must be a non-negative integer, got 4.0"),
    ({"name": "x", "datatype": "FP32", "shape": [1], "data": [1], "parameters": {"binary_data_size": 4}}, b"\0" * 4,
     "input 'x': give either `data` or `binary_data_size`, not both"),
    ({"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}, b"\0" * 4,
     "input 'x': `binary_data_size` 8 runs past the end of the body (4 binary byte(s) left)"),
    ({"name": "x", "datatype": "FP32", "shape": [1]}, b"", "input 'x': no `data` and no `binary_data_size`"),
    ({"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}, b"\0" * 6,
     "the binary section holds 6 bytes but the tensors' `binary_data_size` add up to 4"),
])
def test_each_broken_tensor_is_refused_with_where_and_what(tensor, raw, words):
    with pytest.raises(ProtocolError) as caught:
        v2.read_tensors([tensor], memoryview(raw))
    assert words in str(caught.value)


def test_a_name_given_twice_and_a_bytes_shape_over_the_limit_are_refused():
    twice = [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}] * 2
    with pytest.raises(ProtocolError, match="input 'x' is given twice"):
        v2.read_tensors(twice, memoryview(b""))
    big = [{"name": "t", "datatype": "BYTES", "shape": [1000], "data": ["a"]}]
    with pytest.raises(TooLarge, match="input 't': shape \\[1000\\] is 1,000 BYTES elements; the limit is 10"):
        v2.read_tensors(big, memoryview(b""), max_bytes_elements=10)
    with pytest.raises(ProtocolError, match="output 'y': no `data`"):
        v2.read_tensors([{"name": "y", "datatype": "FP32", "shape": [1]}], memoryview(b""), what="output")
    numeric = [{"name": "n", "datatype": "FP32", "shape": [1000], "data": [0.0] * 1000}]
    assert v2.read_tensors(numeric, memoryview(b""), max_bytes_elements=10)["n"].shape == (1000,)  # BYTES only


def test_tensor_entries_for_requests_and_responses():
    array = np.arange(6, dtype=np.int64).reshape(2, 3)
    entry, raw = v2.tensor_entry("out", array, binary=False)
    assert entry == {"name": "out", "datatype": "INT64", "shape": [2, 3], "data": [0, 1, 2, 3, 4, 5]} and raw is None
    entry, raw = v2.tensor_entry("out", array, binary=True, parameters={"classification": 2})
    assert entry == {"name": "out", "datatype": "INT64", "shape": [2, 3],
                     "parameters": {"classification": 2, "binary_data_size": 48}} and raw == array.tobytes()
    assert all(type(d) is int for d in entry["shape"])
    entry, _ = v2.tensor_entry("h", np.zeros(2, np.float64), binary=False, dt=v2.BY_V2["FP32"])
    assert entry["datatype"] == "FP32"
    params = {"p": 1}
    v2.tensor_entry("x", array, binary=True, parameters=params)
    assert params == {"p": 1}  # the caller's dict is not changed
    text, raw = v2.tensor_entry("t", np.array([b"ab"], dtype=object), binary=True)
    assert text["datatype"] == "BYTES" and raw == struct.pack("<I", 2) + b"ab"
    # a response built here reads back as it was sent
    body, length = v2.join_body({"outputs": [v2.tensor_entry("out", array, binary=True)[0]]}, [array.tobytes()])
    header, section = v2.split_body(body, str(length))
    assert np.array_equal(v2.read_tensors(header["outputs"], section, "output")["out"], array)
    assert json.loads(body[:length])["outputs"][0]["parameters"]["binary_data_size"] == 48


def test_bytes_elements_become_text_or_a_refusal_naming_the_element():
    out = v2.as_text(np.array([[b"caf\xc3\xa9", "x"]], dtype=object), "text")
    assert out.dtype == object and out.tolist() == [["caf\u00e9", "x"]]
    with pytest.raises(ProtocolError, match=r"input 'text': element \(0, 1\) is not valid UTF-8 text"):
        v2.as_text(np.array([[b"a", b"\xff\xfe"]], dtype=object), "text")
