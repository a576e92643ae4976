"""Batch adapter of the generic family (imported graphs): tensors in, every output out.

Inputs, one item per entry along the first axis:
- a .npy array (a one-input model) or a .npz archive (one array per input, named as the inputs);
- a Parquet file with one column per input: each cell is one item's row (a number, or a nested
  list of the row's shape).
For a model that batches (edgestack/families/generic.py) an item is one row of every input; for
a graph with a fixed first dimension an item is one whole request (the array holds requests
stacked on a new first axis: [items, *the input's shape]).

Rows: key ("file[i]", or the --key-column value), index, then one column per output holding the
item's row (a number, or nested lists; text decoded). A Parquet cell that is not of the input's
shape or type is an error row with the reason; the job goes on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from batch.adapter import BatchAdapter, Item, Source, error_row, file_fingerprint
from edgestack.errors import UsageError
from edgestack.families import generic as processing
from edgestack.manifest import Manifest


def specs_of(manifest: Manifest) -> tuple[list[dict], list[dict], bool]:
    inputs, outputs = [t.to_dict() for t in manifest.inputs], [t.to_dict() for t in manifest.outputs]
    batching = (manifest.to_dict().get("batching") or {})
    batched = bool(batching.get("dynamic", processing.supports_batching(inputs, outputs)))
    return inputs, outputs, batched


def item_shape(spec: dict, batched: bool) -> list[int]:
    """The declared shape of one item of input `spec` (-1: any)."""
    return list(spec["shape"][1:] if batched else spec["shape"])


class ArraysSource(Source):
    """.npy / .npz: every input's array, items along the first axis (loaded lazily in each worker)."""

    def __init__(self, path: Path, inputs: list[dict], batched: bool):
        self.path, self.inputs, self.batched = Path(path).resolve(), inputs, batched
        try:
            arrays = processing.read_tensor_file(self.path, inputs)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        names = [spec["name"] for spec in inputs]
        if sorted(arrays) != sorted(names):
            raise UsageError(f"{self.path.name} holds arrays {sorted(arrays)}; the model takes {names}")
        counts = {len(a) if a.ndim else 0 for a in arrays.values()}
        if len(counts) != 1:
            raise UsageError(f"{self.path.name}: the arrays hold different numbers of items ({sorted(counts)})")
        for spec in inputs:
            shape = item_shape(spec, batched)
            array = arrays[spec["name"]]
            if array.ndim != len(shape) + 1 or any(d not in (-1, a) for d, a in zip(shape, array.shape[1:])):
                raise UsageError(f"{self.path.name}: {spec['name']!r} has shape {list(array.shape)}; items of this "
                                 f"model are {shape} (-1 = any), stacked on a first axis")
        self.count = counts.pop()
        self._arrays = None

    def __getstate__(self):
        return {**self.__dict__, "_arrays": None}

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = processing.read_tensor_file(self.path, self.inputs)
        return self._arrays

    def __len__(self) -> int:
        return self.count

    def fingerprint(self) -> dict:
        return {**file_fingerprint(self.path), "items": self.count}

    def read(self, start: int, stop: int) -> list[Item]:
        blocks = {name: np.asarray(array[start:stop]) for name, array in self.arrays.items()}
        return [Item(start + i, f"{self.path.name}[{start + i}]", {n: b[i] for n, b in blocks.items()})
                for i in range(stop - start)]

    def describe(self) -> str:
        return f"{self.count} items in {self.path}"


class ParquetSource(Source):
    """A Parquet table with one column per input; a cell is one item's row."""

    def __init__(self, path: Path, inputs: list[dict], key_column: str | None = None):
        import pyarrow.parquet as pq

        self.path, self.key_column = Path(path).resolve(), key_column
        table = pq.read_table(self.path)
        names = [spec["name"] for spec in inputs]
        missing = [n for n in names + ([key_column] if key_column else []) if n not in table.column_names]
        if missing:
            raise UsageError(f"{self.path.name} has no column {missing[0]!r} (columns: {', '.join(table.column_names)}); "
                             f"the model takes {names}")
        self.columns = {n: table.column(n).to_pylist() for n in names}
        self.keys = table.column(key_column).to_pylist() if key_column else None
        self.count = table.num_rows

    def __len__(self) -> int:
        return self.count

    def fingerprint(self) -> dict:
        return {**file_fingerprint(self.path), "items": self.count, "key_column": self.key_column}

    def read(self, start: int, stop: int) -> list[Item]:
        items = []
        for i in range(start, stop):
            key = str(self.keys[i]) if self.keys is not None else f"{self.path.name}[{i}]"
            payload = {n: column[i] for n, column in self.columns.items()}
            missing = [n for n, v in payload.items() if v is None]
            items.append(Item(i, key, payload, f"no value for {missing[0]!r}" if missing else None))
        return items

    def describe(self) -> str:
        return f"{self.count} rows of {self.path.name}"


def arrow_type(spec: dict, batched: bool):
    import pyarrow as pa

    dtype = processing.dtype_of(spec["dtype"])
    kind = pa.string() if dtype == object else pa.from_numpy_dtype(dtype)
    for _ in item_shape(spec, batched):
        kind = pa.list_(kind)
    return kind


class GenericBatch(BatchAdapter):
    def __init__(self, manifest: Manifest, model, **kwargs):
        super().__init__(manifest, model, **kwargs)
        self.inputs, self.outputs, self.batched = specs_of(manifest)

    @classmethod
    def open_source(cls, path: str, manifest: Manifest, options: dict) -> Source:
        inputs, _, batched = specs_of(manifest)
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"input {path} does not exist")
        if p.suffix in (".npy", ".npz"):
            return ArraysSource(p, inputs, batched)
        if p.suffix in (".parquet", ".pq"):
            return ParquetSource(p, inputs, options.get("key_column"))
        raise UsageError(f"input {path}: give a .npy file (a one-input model), a .npz file (one array per input) "
                         "or a .parquet file (one column per input)")

    def options_fingerprint(self) -> dict:
        return {"key_column": self.options.get("key_column")}

    def schema(self):
        import pyarrow as pa

        fields = [("key", pa.string()), ("index", pa.int64())]
        fields += [(spec["name"], arrow_type(spec, self.batched)) for spec in self.outputs]
        return pa.schema(fields, metadata={"model": self.manifest.name, "version": self.manifest.version,
                                           "outputs": json.dumps(self.outputs)})

    def _row_of(self, item: Item) -> dict[str, np.ndarray]:
        """An item's payload as arrays of its inputs' item shapes; ValueError saying what is wrong."""
        row = {}
        for spec in self.inputs:
            shape, dtype = item_shape(spec, self.batched), processing.dtype_of(spec["dtype"])
            try:
                value = np.asarray(item.payload[spec["name"]], dtype=dtype)
            except (TypeError, ValueError):
                raise ValueError(f"{spec['name']!r} is not a {'list' if shape else 'value'} of {dtype}") from None
            if value.ndim != len(shape) or any(d not in (-1, a) for d, a in zip(shape, value.shape)):
                raise ValueError(f"{spec['name']!r} has shape {list(value.shape)}; an item is {shape} (-1 = any)")
            row[spec["name"]] = value
        return row

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [spec["name"] for spec in self.outputs]
        return dict(zip(names, self.session.run(names, feeds)))

    def process(self, items: list[Item]) -> tuple[list[dict], list[dict]]:
        good, rows_in, errors = [], [], []
        for item in items:
            try:
                rows_in.append(self._row_of(item))
                good.append(item)
            except ValueError as exc:
                errors.append(error_row(item, str(exc)))
        rows = []
        merged = self.batched and processing.packable(self.inputs)  # rows of equal shapes: one ORT call per batch
        step = self.batch_size if merged else 1
        for begin in range(0, len(good), step):
            chunk, block = good[begin:begin + step], rows_in[begin:begin + step]
            try:
                if self.batched:
                    outputs = self._run({n: np.stack([r[n] for r in block]) for n in block[0]})
                    answers = [processing.as_lists(outputs, i) for i in range(len(chunk))]
                else:  # one whole request: its outputs, whole
                    outputs = self._run(block[0])
                    answers = [processing.as_lists({n: a[None] for n, a in outputs.items()}, 0)]
            except Exception as exc:  # noqa: BLE001 - ORT refuses values (an index out of range, ...): error rows
                errors += [error_row(item, f"the model failed on this item: {str(exc).splitlines()[0][:200]}")
                           for item in chunk]
                continue
            rows += [{"key": item.key, "index": item.index, **answer} for item, answer in zip(chunk, answers)]
        return rows, errors
