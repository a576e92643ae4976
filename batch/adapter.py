"""What a family adapter provides to a batch job, and what every engine does with it.

An adapter (one per family, the family's `batch` stage in edgestack/registry.py) knows:
- how to open an input (`open_source`): a Source lists the items with a stable key each
  and reads any slice of them, in whatever process runs it;
- the output columns (`schema`) and how to turn a list of items into rows (`process`),
  putting an item it cannot use into the errors with the reason instead of failing.

Engines (local processes, Ray actors) only move shards around: `run_shard` is the whole
unit of work, the same in every engine. Adapters and sources are pickled to workers, so
they hold paths and small listings, never open files or sessions until first used.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgestack.manifest import Manifest


@dataclass
class Item:
    index: int          # position in the input (0-based): the job's identity of an item
    key: str            # what a person calls it: a file name, "file.idx[12]", an id column
    payload: Any        # what the adapter decodes (bytes, an array, a text) ...
    problem: str | None = None  # ... or why it could not even be read


@dataclass
class Shard:
    shard_id: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass
class ShardResult:
    shard_id: int
    rows: list[dict]
    errors: list[dict]
    seconds: float
    worker: str = ""
    extra: dict = field(default_factory=dict)


class Source:
    """An input: a fixed, ordered list of items. Subclasses implement the three methods."""

    def __len__(self) -> int:
        raise NotImplementedError

    def fingerprint(self) -> dict:
        """What identifies this input's content cheaply (paths, sizes, mtimes); used to refuse
        resuming a job on an input that changed."""
        raise NotImplementedError

    def read(self, start: int, stop: int) -> list[Item]:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{len(self)} items"


def file_fingerprint(path: Path) -> dict:
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class BatchAdapter:
    """Base of family adapters. The ORT session opens on first use, in the worker."""

    def __init__(self, manifest: Manifest, model: bytes | str | dict, *, threads: int = 1, device: str = "cpu",
                 batch_size: int = 256, options: dict | None = None):
        self.manifest, self.model, self.threads, self.device = manifest, model, threads, device
        self.batch_size, self.options = batch_size, dict(options or {})
        self._session = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_session"] = None  # sessions do not travel; each worker opens its own
        return state

    def _open(self, model):
        import onnxruntime as ort

        from edgestack.runtime import choose_providers

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(self._verified(model), sess_options=options,
                                    providers=choose_providers(device=self.device))

    def _verified(self, model):
        """A graph file's bytes, checked against the manifest's checksum as read (each worker
        loads what was hashed, not a file swapped after the job verified the artifact)."""
        if not isinstance(model, (str, Path)):
            return model
        import hashlib

        from edgestack.errors import ArtifactError

        data = Path(model).read_bytes()
        entry = self.manifest.files.get(Path(model).name)
        if entry is None or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise ArtifactError(f"refusing {model}: it is not the file the manifest of {self.manifest.name} "
                                f"v{self.manifest.version} lists (changed since the job verified it)")
        return data

    @property
    def sessions(self) -> dict:
        """role -> ORT session (one role, "model", unless the family has several graphs)."""
        if self._session is None:
            models = self.model if isinstance(self.model, dict) else {"model": self.model}
            self._session = {role: self._open(model) for role, model in models.items()}
        return self._session

    @property
    def session(self):
        return self.sessions["model"]

    def run_model(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feeds)

    # --- what a family implements -------------------------------------------------------
    @classmethod
    def model_files(cls, art, variant: str) -> str | dict[str, str]:
        """The graph file(s) of the variant: a path, or role -> path for several graphs."""
        return str(art.variant_path(variant))

    @classmethod
    def open_source(cls, path: str, manifest: Manifest, options: dict) -> Source:
        raise NotImplementedError

    def schema(self):
        """The pyarrow schema of an output row."""
        raise NotImplementedError

    def process(self, items: list[Item]) -> tuple[list[dict], list[dict]]:
        """items -> (rows, errors); every item ends in exactly one of the two."""
        raise NotImplementedError

    def options_fingerprint(self) -> dict:
        """Options that change the output (so a resumed job must have the same ones)."""
        return dict(self.options)


def error_row(item: Item, reason: str) -> dict:
    return {"index": item.index, "key": item.key, "error": reason}


def run_shard(adapter: BatchAdapter, source: Source, shard: Shard, worker: str = "") -> ShardResult:
    """The unit of work of every engine: read a shard's items, process them, return rows + errors."""
    started = time.perf_counter()
    items = source.read(shard.start, shard.stop)
    unreadable = [error_row(item, item.problem) for item in items if item.problem is not None]
    readable = [item for item in items if item.problem is None]
    rows, errors = adapter.process(readable) if readable else ([], [])
    errors = sorted(unreadable + errors, key=lambda e: e["index"])
    if len(rows) + len(errors) != len(shard):
        raise RuntimeError(f"shard {shard.shard_id}: {len(rows)} rows + {len(errors)} errors != {len(shard)} items")
    return ShardResult(shard.shard_id, rows, errors, time.perf_counter() - started, worker)
