"""Batch adapter of the music generators (folk-lstm): one tune per prompt.

Input: a CSV, JSONL or Parquet table with a `prompt` column (--text-column to change it).
Each row gets seed = --seed (default 0) + its index, so every tune can be had again, on
the server or a device, with the same seed and parameters. Generation is the tune
family's processing (edgestack/families/tune.py), one prompt at a time like the server (int8
dynamic quantization scales per call, so batching prompts would change the numbers);
workers run prompts in parallel.

Rows: key, index, prompt, tune, seed, generated_chars, stop_reason. A prompt that is not
a string or has characters outside the vocabulary is an error row.
"""

from __future__ import annotations

import json
from pathlib import Path

from batch.adapter import BatchAdapter, Item, Source, error_row
from batch.tables import TableSource
from edgestack.families import tune as tune_processing
from edgestack.manifest import Manifest

DEFAULTS = {"seed": 0, "max_length": 400, "temperature": 1.0, "top_k": 0, "top_p": 1.0}


class MusicBatch(BatchAdapter):
    def __init__(self, manifest: Manifest, model, **kwargs):
        super().__init__(manifest, model, **kwargs)
        self.params = {k: self.options.get(k, v) for k, v in DEFAULTS.items()}
        vocab_dir = Path(model["step"]).parent
        self.chars = json.loads((vocab_dir / manifest.vocabulary.file).read_text())
        self._generator = None

    def __getstate__(self):
        return {**super().__getstate__(), "_generator": None}

    @classmethod
    def model_files(cls, art, variant: str) -> dict[str, str]:
        return {role: str(art.file(f)) for role, f in tune_processing.graph_files(art.manifest, variant).items()}

    @classmethod
    def open_source(cls, path: str, manifest: Manifest, options: dict) -> Source:
        return TableSource(Path(path), options.get("text_column") or "prompt", options.get("key_column"))

    def options_fingerprint(self) -> dict:
        return {**self.params, "text_column": self.options.get("text_column") or "prompt",
                "key_column": self.options.get("key_column")}

    def schema(self):
        import pyarrow as pa

        return pa.schema([("key", pa.string()), ("index", pa.int64()), ("prompt", pa.string()), ("tune", pa.string()),
                          ("seed", pa.int64()), ("generated_chars", pa.int32()), ("stop_reason", pa.string())],
                         metadata={"model": self.manifest.name, "version": self.manifest.version,
                                   "sampling": json.dumps(self.params)})

    @property
    def generator(self) -> tune_processing.Generator:
        if self._generator is None:
            self._generator = tune_processing.Generator(self.sessions["step"], self.sessions["prompt"], self.chars,
                                                        self.manifest.generation.to_dict())
        return self._generator

    def process(self, items: list[Item]) -> tuple[list[dict], list[dict]]:
        rows, errors = [], []
        p = self.params
        for item in items:
            seed = int(p["seed"]) + item.index
            try:
                result = self.generator.generate(item.payload, seed=seed, max_length=int(p["max_length"]),
                                                 temperature=float(p["temperature"]), top_k=int(p["top_k"]),
                                                 top_p=float(p["top_p"]))
            except ValueError as exc:
                errors.append(error_row(item, str(exc)))
                continue
            rows.append({"key": item.key, "index": item.index, "prompt": item.payload, "tune": result["tune"],
                         "seed": seed, "generated_chars": result["generated_chars"],
                         "stop_reason": result["stop_reason"]})
        return rows, errors
