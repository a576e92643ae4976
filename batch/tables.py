"""Table inputs for text families: CSV, JSONL or Parquet, one item per row.

The item is one column's value (`--text-column`; the family says the default: `text` for
classifiers, `prompt` for generators); the key is another column (`--key-column`) or the row
number. A row whose value is missing, not a string, or (JSONL) not valid JSON is an item
with a problem: it goes to the errors file with the reason, the job goes on.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from batch.adapter import Item, Source, file_fingerprint
from edgestack.errors import UsageError

TABLE_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
MISSING = object()


class TableSource(Source):
    def __init__(self, path: Path, column: str, key_column: str | None = None):
        self.path = Path(path).resolve()
        kind = TABLE_SUFFIXES.get(self.path.suffix.lower())
        if kind is None:
            raise UsageError(f"input {path}: give a .csv, .jsonl or .parquet file")
        if not self.path.is_file():
            raise FileNotFoundError(f"input {path} does not exist")
        self.column, self.key_column = column, key_column
        rows, broken = self._read(kind)
        columns = set().union(*(r.keys() for r in rows if isinstance(r, dict))) if rows else set()
        if rows and column not in columns:
            raise UsageError(f"{self.path.name} has no column {column!r} (columns: {', '.join(sorted(columns))}); "
                             "pick one with --text-column")
        if key_column and rows and key_column not in columns:
            raise UsageError(f"{self.path.name} has no key column {key_column!r}")
        self.values, self.keys, self.problems = [], [], {}
        for i, row in enumerate(rows):
            if i in broken:
                self.values.append(None)
                self.problems[i] = broken[i]
                self.keys.append(str(i))
                continue
            value = row.get(column, MISSING)
            key = row.get(key_column) if key_column else None
            self.keys.append(str(i) if key is None else str(key))
            if value is MISSING or value is None:
                self.problems[i] = f"no {column!r} value in this row"
                value = None
            elif not isinstance(value, str):
                self.problems[i] = f"{column!r} must be a string, got {type(value).__name__} {json.dumps(value)[:60]}"
                value = None
            self.values.append(value)

    def _read(self, kind: str) -> tuple[list, dict[int, str]]:
        broken: dict[int, str] = {}
        if kind == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(self.path).to_pylist(), broken
        if kind == "csv":
            with open(self.path, newline="", encoding="utf-8") as fh:
                return list(csv.DictReader(fh)), broken
        rows = []
        with open(self.path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ValueError("not a JSON object")
                except ValueError as exc:
                    broken[len(rows)] = f"line {number} is not a JSON object ({exc})"
                    row = {}
                rows.append(row)
        return rows, broken

    def __len__(self) -> int:
        return len(self.values)

    def fingerprint(self) -> dict:
        return {**file_fingerprint(self.path), "column": self.column, "key_column": self.key_column,
                "items": len(self.values)}

    def read(self, start: int, stop: int) -> list[Item]:
        return [Item(i, self.keys[i], self.values[i], self.problems.get(i)) for i in range(start, stop)]

    def describe(self) -> str:
        return f"{len(self.values)} rows of {self.path.name} (column {self.column!r})"
