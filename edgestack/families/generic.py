"""The generic family's processing: models edgestack did not train, served as their graph's tensors.

An imported ONNX graph (`edgestack import model.onnx --name NAME`) has no pre- or
post-processing edgestack knows of: a request's tensors go to the graph as they are, after
the checks below, and every output comes back. The manifest's `inputs` / `outputs` are the
graph's own (names, element types, shapes with -1 for every dimension the graph leaves open).

What is shared here, by the server (serving/generic.py), batch jobs (batch/generic.py), the
import's test run (export/onnx_import.py) and the edge runner:

- the batch rule: a model batches when every input and output has a first dimension the
  graph leaves open (-1), Triton's rule for auto-completing an ONNX model's config
  (onnxruntime_backend, AutoCompleteMaxBatch). A graph that fixes its first dimension is
  served as it is, its shape required exactly; nothing is guessed;
- `check_feeds`: names, element types (same-kind casts only, e.g. float64 -> float32), shapes,
  one batch size across the inputs, and the per-request item limit. NaN is not refused:
  what a value means is the model's business (scikit-learn imputers take NaN as missing);
- example inputs of the declared types (test run, warm-up), and packing several inputs into
  one row array so the adaptive batcher can merge requests;
- reading tensors from files: .npy (a one-input model) and .npz (arrays named as the inputs).

numpy only, relative imports only: copied into edge bundles beside the edge runner.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import InputError

TEXT_DTYPES = {"bytes", "string", "str", "object"}
SAMPLE_TEXT = "edgestack"


def dtype_of(name: str) -> np.dtype:
    """A manifest dtype ("float32", "int64", "bytes", ...) -> numpy dtype (object for text)."""
    return np.dtype(object) if name in TEXT_DTYPES else np.dtype(name)


def supports_batching(inputs: list[dict], outputs: list[dict]) -> bool:
    """Triton's rule: every input and output has rank >= 1 and an open (-1) first dimension."""
    return all(len(t["shape"]) >= 1 and t["shape"][0] == -1 for t in [*inputs, *outputs])


def packable(inputs: list[dict]) -> bool:
    """Rows of several requests can be stacked: numeric inputs whose dimensions after the first
    are all fixed (an open inner dimension, e.g. a sequence, may differ from request to request)."""
    return all(dtype_of(t["dtype"]) != object and all(d >= 0 for d in t["shape"][1:]) for t in inputs)


def example_feeds(inputs: list[dict], batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of the declared types and shapes, every open dimension `batch`: small normal values
    for floats, 0..9 for integers, alternating booleans, a short word for text."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in inputs:
        shape = [batch if d == -1 else d for d in spec["shape"]]
        dtype = dtype_of(spec["dtype"])
        if dtype == object:
            array = np.full(shape, SAMPLE_TEXT, dtype=object)
        elif dtype.kind == "b":
            array = (np.arange(int(np.prod(shape))) % 2 == 0).reshape(shape)
        elif dtype.kind in "iu":
            array = rng.integers(0, 10, shape).astype(dtype)
        else:
            array = (rng.standard_normal(shape) * 0.1).astype(dtype)
        feeds[spec["name"]] = array
    return feeds


def check_feeds(inputs: list[dict], feeds: dict, *, batched: bool, max_items: int | None = None,
                model: str = "the model") -> dict[str, np.ndarray]:
    """Feeds -> the same arrays as the graph takes them, in the declared order; InputError naming
    the input otherwise (413 beyond `max_items` rows)."""
    expected = [spec["name"] for spec in inputs]
    if sorted(feeds) != sorted(expected):
        missing, extra = set(expected) - set(feeds), set(feeds) - set(expected)
        raise InputError(f"{model} takes inputs {expected}" + (f"; missing {sorted(missing)}" if missing else "")
                         + (f"; unexpected {sorted(extra)}" if extra else ""))
    checked, rows = {}, None
    for spec in inputs:
        name, shape, want = spec["name"], spec["shape"], dtype_of(spec["dtype"])
        array = np.asarray(feeds[name])
        if want == object:
            if array.dtype.kind not in "OSU":
                raise InputError(f"input {name!r} of {model} is text (BYTES), got {array.dtype}")
            array = array.astype(object)
        elif array.dtype != want:
            if array.dtype.kind in "OSU" or not np.can_cast(array.dtype, want, "same_kind"):
                raise InputError(f"input {name!r} of {model} is {want}, got {array.dtype}")
            array = array.astype(want)
        if array.ndim != len(shape) or any(d not in (-1, a) for d, a in zip(shape, array.shape)):
            raise InputError(f"input {name!r} of {model} must have shape {shape} (-1 = any), "
                             f"got {list(array.shape)}")
        if batched:
            if rows is None:
                rows = len(array)
            elif len(array) != rows:
                raise InputError(f"every input of {model} needs the same batch size (first dimension): "
                                 f"{expected[0]!r} has {rows}, {name!r} has {len(array)}")
        checked[name] = array
    if batched and rows == 0:
        raise InputError(f"the inputs of {model} are empty (batch of 0)")
    if batched and max_items is not None and rows > max_items:
        raise InputError(f"{rows} rows in one request to {model}; the limit is {max_items}", 413)
    return checked


def row_dtype(inputs: list[dict]) -> np.dtype:
    """One structured row holding a row of every input (for `packable` inputs)."""
    return np.dtype([(spec["name"], dtype_of(spec["dtype"]), tuple(spec["shape"][1:])) for spec in inputs])


def pack_rows(inputs: list[dict], feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Checked feeds of several inputs -> one array of rows (the batcher stacks and slices rows)."""
    rows = np.empty(len(feeds[inputs[0]["name"]]), dtype=row_dtype(inputs))
    for spec in inputs:
        rows[spec["name"]] = feeds[spec["name"]]
    return rows


def unpack_rows(rows: np.ndarray) -> dict[str, np.ndarray]:
    return {name: np.ascontiguousarray(rows[name]) for name in rows.dtype.names}


def read_tensor_file(path: str | Path, inputs: list[dict]) -> dict[str, np.ndarray]:
    """A .npy file (a one-input model) or a .npz file (one array per input, named as the inputs)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    names = [spec["name"] for spec in inputs]
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        elif path.suffix == ".npy":
            if len(names) != 1:
                raise InputError(f"{path.name}: a .npy file holds one array, but the model takes {len(names)} "
                                 f"inputs {names}: give a .npz file with one array per input")
            arrays = {names[0]: np.load(path, allow_pickle=False)}
        else:
            raise InputError(f"{path.name}: give a .npy file (one input) or a .npz file (one array per input)")
    except (ValueError, OSError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path.name} is not a readable numpy file: {exc}") from None
    return arrays


def as_lists(outputs: dict[str, np.ndarray], index: int) -> dict:
    """Row `index` of every output as plain JSON values (text decoded as UTF-8)."""
    row = {}
    for name, array in outputs.items():
        value = np.asarray(array[index])
        if value.dtype.kind in "OS":
            value = np.vectorize(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b),
                                 otypes=[object])(value)
        row[name] = value.tolist()
    return row
