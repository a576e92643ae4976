"""The Open Inference Protocol (KServe / Triton "v2"): datatypes and the tensor codec.

One place for everything the server (serving/v2.py), the client (clients/v2.py: its
datatype table and checks; the request and response bodies themselves are tritonclient's)
and the Triton model-repository export (export/triton.py) must agree on:

- the datatype table: manifest dtype names ("float32", "int64", "bytes", ...) <-> v2
  datatypes ("FP32", "INT64", "BYTES", ...) <-> numpy <-> ONNX element types <-> Triton
  config types ("TYPE_FP32", ...) <-> ONNX Runtime type strings ("tensor(float)");
- tensors as JSON `data` (flattened, row-major) and as raw bytes (the binary tensor data
  extension: little-endian, row-major; a BYTES element is a 4-byte little-endian length
  followed by that many bytes);
- splitting a body into its JSON header and the binary section after it
  (`Inference-Header-Content-Length`), and building such a body.

Only numpy here: no web framework, no onnxruntime, no torch.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"


class ProtocolError(ValueError):
    """A request or response that breaks the protocol; the message says where."""


class TooLarge(ProtocolError):
    """A request over a limit (HTTP 413, gRPC RESOURCE_EXHAUSTED)."""

    status = 413


@dataclass(frozen=True)
class Datatype:
    v2: str                   # "FP32": what the protocol and tritonclient say
    numpy: np.dtype           # np.float32 (object for BYTES)
    onnx: int                 # onnx.TensorProto element type (FLOAT = 1)
    ort: str                  # onnxruntime's type string, "tensor(float)"
    aliases: tuple[str, ...]  # manifest dtype names: the numpy name first

    @property
    def triton(self) -> str:
        """The Triton model-config type: TYPE_FP32, ..., TYPE_STRING for BYTES."""
        return "TYPE_STRING" if self.v2 == "BYTES" else f"TYPE_{self.v2}"

    @property
    def itemsize(self) -> int | None:
        return None if self.v2 == "BYTES" else self.numpy.itemsize


DATATYPES: tuple[Datatype, ...] = (
    Datatype("BOOL", np.dtype(np.bool_), 9, "tensor(bool)", ("bool",)),
    Datatype("UINT8", np.dtype(np.uint8), 2, "tensor(uint8)", ("uint8",)),
    Datatype("UINT16", np.dtype(np.uint16), 4, "tensor(uint16)", ("uint16",)),
    Datatype("UINT32", np.dtype(np.uint32), 12, "tensor(uint32)", ("uint32",)),
    Datatype("UINT64", np.dtype(np.uint64), 13, "tensor(uint64)", ("uint64",)),
    Datatype("INT8", np.dtype(np.int8), 3, "tensor(int8)", ("int8",)),
    Datatype("INT16", np.dtype(np.int16), 5, "tensor(int16)", ("int16",)),
    Datatype("INT32", np.dtype(np.int32), 6, "tensor(int32)", ("int32",)),
    Datatype("INT64", np.dtype(np.int64), 7, "tensor(int64)", ("int64",)),
    Datatype("FP16", np.dtype(np.float16), 10, "tensor(float16)", ("float16", "half")),
    Datatype("FP32", np.dtype(np.float32), 1, "tensor(float)", ("float32", "float")),
    Datatype("FP64", np.dtype(np.float64), 11, "tensor(double)", ("float64", "double")),
    Datatype("BYTES", np.dtype(object), 8, "tensor(string)", ("bytes", "string", "str", "object")),
)
BY_V2 = {d.v2: d for d in DATATYPES}
BY_ALIAS = {alias: d for d in DATATYPES for alias in d.aliases}
BY_ONNX = {d.onnx: d for d in DATATYPES}
BY_ORT = {d.ort: d for d in DATATYPES}


def datatype(name: str) -> Datatype:
    """A v2 datatype ("FP32") or a manifest dtype ("float32") -> its table row."""
    found = BY_V2.get(name) or BY_ALIAS.get(str(name).lower())
    if found is None:
        raise ProtocolError(f"unknown datatype {name!r}; v2 datatypes are {', '.join(BY_V2)}")
    return found


def of_numpy(dtype: np.dtype) -> Datatype:
    """numpy dtype -> row (object and bytes_/str_ arrays are BYTES)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return BY_V2["BYTES"]
    for row in DATATYPES:
        if row.numpy == dtype:
            return row
    raise ProtocolError(f"numpy dtype {dtype} has no v2 datatype")


def element_count(shape: list[int]) -> int:
    return math.prod(shape)


MAX_DIMS = 32  # numpy 1.x's limit (numpy 2 takes 64); the served models take 4 at most


def check_shape(shape: Any, what: str) -> list[int]:
    """A shape numpy can make an array of (even an empty one: np.zeros((0, 10**30)) fails too)."""
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                for d in shape):
        raise ProtocolError(f"{what}: `shape` must be a list of non-negative integers, got {shape!r}")
    if len(shape) > MAX_DIMS:
        raise ProtocolError(f"{what}: `shape` has {len(shape)} dimensions; at most {MAX_DIMS}")
    if math.prod(max(d, 1) for d in shape) >= 2**56:
        raise ProtocolError(f"{what}: `shape` {shape} is larger than any tensor can be")
    return shape


def client_hints(manifest: dict) -> dict:
    """What a client needs beyond the tensors (task, preprocessing, labels): our server's
    model metadata and exported Triton configs carry it as the parameter `edgestack`."""
    return {k: manifest[k] for k in ("task", "preprocessing", "labels") if manifest.get(k) is not None}


# ---------------------------------------------------------------------------- BYTES elements

def serialize_bytes(array: np.ndarray) -> bytes:
    """BYTES tensor -> raw: per element (row-major) a 4-byte LE length, then the bytes (str as UTF-8)."""
    parts = []
    for item in np.asarray(array, dtype=object).reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes(raw: bytes | memoryview, what: str = "BYTES tensor", limit: int | None = None) -> list[bytes]:
    """Raw BYTES section -> its elements; refuses truncated or over-long length prefixes, and
    stops as soon as there are more than `limit` elements."""
    raw = memoryview(raw)
    items, offset = [], 0
    while offset < len(raw):
        if limit is not None and len(items) >= limit:
            raise ProtocolError(f"{what}: its shape needs {limit} BYTES element(s), the data holds more")
        if offset + 4 > len(raw):
            raise ProtocolError(f"{what}: {len(raw) - offset} stray byte(s) where a 4-byte length prefix should be")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise ProtocolError(f"{what}: an element claims {length} bytes but only {len(raw) - offset} remain")
        items.append(bytes(raw[offset:offset + length]))
        offset += length
    return items


# ---------------------------------------------------------------------------- tensors <-> wire

def from_raw(raw: bytes | memoryview, dt: Datatype, shape: list[int], what: str) -> np.ndarray:
    """Binary tensor data -> array of `shape` (BYTES: object array of bytes)."""
    count = element_count(shape)
    if dt.v2 == "BYTES":
        items = deserialize_bytes(raw, what, limit=count)
        if len(items) != count:
            raise ProtocolError(f"{what}: shape {shape} needs {count} BYTES element(s), the data holds {len(items)}")
        array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(shape)
    if len(raw) != count * dt.itemsize:
        raise ProtocolError(f"{what}: shape {shape} of {dt.v2} needs {count * dt.itemsize} bytes, "
                            f"got {len(raw)}")
    return np.frombuffer(raw, dtype=dt.numpy.newbyteorder("<")).astype(dt.numpy, copy=False).reshape(shape)


def to_raw(array: np.ndarray, dt: Datatype) -> bytes:
    if dt.v2 == "BYTES":
        return serialize_bytes(array)
    return np.ascontiguousarray(array, dtype=dt.numpy.newbyteorder("<")).tobytes()


def from_json(data: Any, dt: Datatype, shape: list[int], what: str) -> np.ndarray:
    """JSON `data` (flat or nested, row-major) -> array of `shape`, refusing values the type cannot hold."""
    count = element_count(shape)
    if dt.v2 == "BYTES":
        flat = _flatten(data, what)
        if not all(isinstance(x, str) for x in flat):
            raise ProtocolError(f"{what}: BYTES `data` must be strings")
        if len(flat) != count:
            raise ProtocolError(f"{what}: shape {shape} needs {count} element(s), `data` holds {len(flat)}")
        array = np.empty(count, dtype=object)
        try:
            array[:] = [s.encode("utf-8") for s in flat]
        except UnicodeEncodeError:  # a lone surrogate ("\\ud800"): Python's JSON parser lets it through
            raise ProtocolError(f"{what}: BYTES `data` holds a lone surrogate (\\ud800-\\udfff), "
                                "which is not text") from None
        return array.reshape(shape)
    try:
        values = np.asarray(data)
    except ValueError:
        raise ProtocolError(f"{what}: `data` must be a (nested) list of numbers; ragged lists found") from None
    if values.size != count:
        raise ProtocolError(f"{what}: shape {shape} needs {count} element(s), `data` holds {values.size}")
    kind = values.dtype.kind
    wanted = dt.numpy.kind
    ok = {"b": kind == "b", "i": kind in "iu", "u": kind in "iu", "f": kind in "iuf"}[wanted]
    if count and not ok:
        kinds = {"b": "true/false", "i": "integers", "u": "non-negative integers", "f": "numbers"}
        raise ProtocolError(f"{what}: {dt.v2} `data` must be {kinds[wanted]}, got {values.dtype.name} values")
    if count == 0:
        return np.zeros(shape, dtype=dt.numpy)
    array = values.astype(dt.numpy)
    if wanted in "iu" and not np.array_equal(array.astype(values.dtype), values):
        raise ProtocolError(f"{what}: a value does not fit in {dt.v2}")
    return array.reshape(shape)


def to_json(array: np.ndarray, dt: Datatype) -> list:
    flat = np.asarray(array).reshape(-1)
    if dt.v2 == "BYTES":
        return [x.decode("utf-8", errors="replace") if isinstance(x, bytes) else str(x) for x in flat]
    return flat.tolist()


def _flatten(data: Any, what: str) -> list:
    if not isinstance(data, list):
        raise ProtocolError(f"{what}: `data` must be a list")
    flat: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


# ---------------------------------------------------------------------------- bodies

def split_body(body: bytes, header_length: str | int | None) -> tuple[dict, memoryview]:
    """Body -> (JSON header, binary section after it); `header_length` from Inference-Header-Content-Length."""
    if header_length is None or header_length == "":
        size = len(body)
    else:
        try:
            size = int(header_length)
        except (TypeError, ValueError):
            raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 < size <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} is {size} but the body has {len(body)} bytes")
    if size == 0:
        raise ProtocolError("empty body: send a JSON inference request")
    try:
        header = json.loads(bytes(body[:size]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"malformed JSON in the inference header: {exc}") from None
    except RecursionError:  # Python's JSON parser recurses once per level
        raise ProtocolError("the inference header nests too deeply to parse (JSON nested about 1,000 levels "
                            "or more)") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"the inference header must be a JSON object, got {type(header).__name__}")
    return header, memoryview(body)[size:]


def check_bytes_count(shape: list[int], limit: int | None, what: str) -> None:
    """A BYTES tensor holds at most `limit` elements (each becomes a Python object): checked from
    its `shape`, before a byte of its data is decoded."""
    if limit is not None and element_count(shape) > limit:
        raise TooLarge(f"{what}: shape {shape} is {element_count(shape):,} BYTES elements; the limit is {limit} "
                       "(EDGESTACK_MAX_ITEMS)")


def read_tensors(tensors: list[dict], binary: memoryview, what: str = "input",
                 max_bytes_elements: int | None = None) -> dict[str, np.ndarray]:
    """Decode a request's `inputs` (or a response's `outputs`): JSON `data` or `binary_data_size` slices.

    Binary tensors are taken from `binary` in the order the tensors are listed; their sizes
    must add up to exactly the binary section's length. `max_bytes_elements`: the most
    elements a BYTES tensor may declare (413 before decoding).
    """
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for index, tensor in enumerate(tensors):
        if not isinstance(tensor, dict):
            raise ProtocolError(f"{what} #{index} must be a JSON object")
        name = tensor.get("name")
        label = f"{what} {name!r}" if isinstance(name, str) else f"{what} #{index}"
        if not isinstance(name, str) or not name:
            raise ProtocolError(f"{label}: `name` must be a non-empty string")
        if name in arrays:
            raise ProtocolError(f"{label} is given twice")
        if not isinstance(tensor.get("datatype"), str):
            raise ProtocolError(f"{label}: `datatype` must be a string such as \"FP32\"")
        dt = BY_V2.get(tensor["datatype"])
        if dt is None:
            raise ProtocolError(f"{label}: unknown datatype {tensor['datatype']!r}; v2 datatypes are {', '.join(BY_V2)}")
        shape = check_shape(tensor.get("shape"), label)
        if dt.v2 == "BYTES":
            check_bytes_count(shape, max_bytes_elements, label)
        parameters = tensor.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ProtocolError(f"{label}: `parameters` must be an object")
        if "shared_memory_region" in parameters:
            raise ProtocolError(f"{label}: shared-memory tensors are not supported by this server; send the data")
        size = parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ProtocolError(f"{label}: `binary_data_size` must be a non-negative integer, got {size!r}")
            if "data" in tensor:
                raise ProtocolError(f"{label}: give either `data` or `binary_data_size`, not both")
            if offset + size > len(binary):
                raise ProtocolError(f"{label}: `binary_data_size` {size} runs past the end of the body "
                                    f"({len(binary) - offset} binary byte(s) left)")
            arrays[name] = from_raw(binary[offset:offset + size], dt, shape, label)
            offset += size
        elif "data" in tensor:
            arrays[name] = from_json(tensor["data"], dt, shape, label)
        else:
            raise ProtocolError(f"{label}: no `data` and no `binary_data_size`")
    if offset != len(binary):
        raise ProtocolError(f"the binary section holds {len(binary)} bytes but the tensors' `binary_data_size` "
                            f"add up to {offset}")
    return arrays


def tensor_entry(name: str, array: np.ndarray, *, binary: bool, dt: Datatype | None = None,
                 parameters: dict | None = None) -> tuple[dict, bytes | None]:
    """One tensor for a request's `inputs` or a response's `outputs`, plus its raw bytes when binary."""
    dt = dt or of_numpy(array.dtype)
    entry: dict[str, Any] = {"name": name, "datatype": dt.v2, "shape": [int(d) for d in np.shape(array)]}
    params = dict(parameters or {})
    raw = None
    if binary:
        raw = to_raw(array, dt)
        params["binary_data_size"] = len(raw)
    else:
        entry["data"] = to_json(array, dt)
    if params:
        entry["parameters"] = params
    return entry, raw


def join_body(header: dict, raws: list[bytes]) -> tuple[bytes, int | None]:
    """JSON header + binary sections -> (body, header length or None when all JSON)."""
    encoded = json.dumps(header, separators=(",", ":")).encode()
    if not raws:
        return encoded, None
    return b"".join([encoded, *raws]), len(encoded)


def as_text(array: np.ndarray, name: str) -> np.ndarray:
    """BYTES elements -> str (UTF-8), as the text runners take them."""
    out = np.empty(array.shape, dtype=object)
    for position, item in np.ndenumerate(array):
        try:
            out[position] = item.decode("utf-8") if isinstance(item, bytes) else str(item)
        except UnicodeDecodeError:
            raise ProtocolError(f"input {name!r}: element {position} is not valid UTF-8 text") from None
    return out
