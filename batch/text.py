"""Batch adapter of the text classifiers (sentiment, topic): CSV, JSONL or Parquet rows.

The text is the `text` column (--text-column), the key another column (--key-column) or
the row number. Tokenization and inference are the text family's processing (edgestack/families/text.py),
which follow the server: truncation to the model's max length (reported per row), padding to
the longest text of each ORT call of --batch-size rows. A value that is missing, not a string
or empty is an error row.

Rows: key, index, label, label_index, probability, probabilities (label order), tokens, truncated.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from batch.adapter import BatchAdapter, Item, Source, error_row
from batch.tables import TableSource
from edgestack.families import text as text_processing
from edgestack.manifest import Manifest


class TextBatch(BatchAdapter):
    def __init__(self, manifest: Manifest, model, **kwargs):
        super().__init__(manifest, model, **kwargs)
        # the tokenizer travels inside the adapter (to worker processes and Ray actors)
        self.tokenizer_json = (Path(model).parent / manifest.preprocessing.tokenizer).read_text(encoding="utf-8")
        self._classifier = None

    def __getstate__(self):
        return {**super().__getstate__(), "_classifier": None}

    @classmethod
    def open_source(cls, path: str, manifest: Manifest, options: dict) -> Source:
        return TableSource(Path(path), options.get("text_column") or "text", options.get("key_column"))

    def options_fingerprint(self) -> dict:
        return {"text_column": self.options.get("text_column") or "text", "key_column": self.options.get("key_column")}

    def schema(self):
        import pyarrow as pa

        labels = self.manifest.labels
        return pa.schema([("key", pa.string()), ("index", pa.int64()), ("label", pa.string()),
                          ("label_index", pa.int32()), ("probability", pa.float32()),
                          ("probabilities", pa.list_(pa.float32(), len(labels))), ("tokens", pa.int32()),
                          ("truncated", pa.bool_())],
                         metadata={"labels": json.dumps(labels), "model": self.manifest.name,
                                   "version": self.manifest.version})

    @property
    def classifier(self) -> text_processing.Classifier:
        if self._classifier is None:
            encoder = text_processing.Encoder(self.tokenizer_json, self.manifest.preprocessing.max_length)
            self._classifier = text_processing.Classifier(self.session, encoder, self.manifest.labels)
        return self._classifier

    def process(self, items: list[Item]) -> tuple[list[dict], list[dict]]:
        good, errors = [], []
        for item in items:
            try:
                text_processing.check_texts([item.payload], what="text")
                good.append(item)
            except ValueError as exc:
                errors.append(error_row(item, str(exc)))
        labels, rows = self.manifest.labels, []
        for start in range(0, len(good), self.batch_size):
            chunk = good[start:start + self.batch_size]
            probs, lengths, truncated = self.classifier.run([item.payload for item in chunk])
            probs = probs.astype(np.float32)
            for item, row, n, cut in zip(chunk, probs, lengths, truncated):
                top = int(row.argmax())
                rows.append({"key": item.key, "index": item.index, "label": labels[top], "label_index": top,
                             "probability": float(row[top]), "probabilities": row.tolist(), "tokens": int(n),
                             "truncated": bool(cut)})
        return rows, errors
