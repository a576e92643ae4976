"""Per-model ONNX Runtime thread choice, measured at build time and stored in the manifest.

A tiny CNN runs batch 1 in ~0.05 ms: handing its convolutions to a second intra-op thread
costs more than it saves, while a transformer at 128 tokens gains from every core. So each
CPU variant's batch-1 latency is timed at every candidate thread count (1, 2, 4, ... up to
the cores here), interleaved, with the server's session settings (spinning off), and the
manifest records the figures (`variants[v].threads_batch1_ms`) and the choice
(`variants[v].threads`): the fewest threads within 5% of the fastest. The server uses it
when no EDGESTACK_THREADS is set (serving/runner.py); the ISA it was measured on is stored
beside it (`threads_isa`), since the answer differs between machines.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from edgestack.artifact import MANIFEST, write_manifest
from edgestack.runtime import ORT_TO_NUMPY

SEQUENCE = 128          # symbolic sequence/time dimensions: the text benchmark length
WITHIN = 1.05           # the fewest threads within 5% of the fastest
BUDGET_S = 0.5          # timing per variant and candidate (after warm-up), at most


def candidates(cores: int | None = None) -> list[int]:
    cores = cores or os.cpu_count() or 1
    found, n = [], 1
    while n < cores:
        found.append(n)
        n *= 2
    return [*found, cores]


def example_feeds(session, batch: int = 1) -> dict[str, np.ndarray]:
    """Inputs from the graph's own input metadata (an edgestack Session or a bare ORT one):
    symbolic dims are `batch` for the batch axis, SEQUENCE for a sequence or time axis; integer
    inputs are ones (a valid token id and mask), floats small normal values."""
    feeds = {}
    for spec in getattr(session, "session", session).get_inputs():
        shape = [d if isinstance(d, int) else (batch if "batch" in str(d).lower() else SEQUENCE) for d in spec.shape]
        dtype = ORT_TO_NUMPY[spec.type]
        feeds[spec.name] = (np.ones(shape, dtype) if np.issubdtype(dtype, np.integer)
                            else np.random.default_rng(0).standard_normal(shape).astype(dtype) * 0.1)
    return feeds


def time_threads(path: Path, threads_list: list[int], budget_s: float = BUDGET_S) -> dict[int, float]:
    """Batch-1 p50 in ms per thread count, sessions timed alternately (A B A B ...)."""
    from edgestack.runtime import open_session

    sessions = {t: open_session(path, device="cpu", threads=t, spinning=False) for t in threads_list}
    feeds = example_feeds(next(iter(sessions.values())))
    for session in sessions.values():  # warm-up
        for _ in range(5):
            session.run(feeds)
    samples: dict[int, list[float]] = {t: [] for t in threads_list}
    deadline = time.perf_counter() + budget_s * len(threads_list)
    while (time.perf_counter() < deadline and len(samples[threads_list[0]]) < 400) or len(samples[threads_list[0]]) < 20:
        for t, session in sessions.items():
            started = time.perf_counter()
            session.run(feeds)
            samples[t].append(time.perf_counter() - started)
    return {t: float(np.median(s) * 1000) for t, s in samples.items()}


def choose(figures: dict[int, float]) -> int:
    best = min(figures.values())
    return min(t for t, ms in figures.items() if ms <= best * WITHIN)


def record_thread_choice(staging: Path, progress: bool = True) -> dict[str, int]:
    """Time every CPU variant of the artifact in `staging` and write the choice into its manifest."""
    from edgestack.cpu import cpu_info

    manifest = json.loads((staging / MANIFEST).read_text())
    files = manifest.pop("files")  # only fields change below: the files' checksums stand
    manifest.pop("schema_version", None)
    isa = cpu_info()
    chosen = {}
    for name, variant in manifest["variants"].items():
        if variant.get("target") == "gpu" or name.startswith("fp16"):
            continue
        figures = time_threads(staging / variant["file"], candidates())
        variant["threads"] = chosen[name] = choose(figures)
        variant["threads_batch1_ms"] = {str(t): round(ms, 4) for t, ms in figures.items()}
        variant["threads_isa"] = {"cpu": isa["model"], "cores": isa["cores"],
                                  "int8_dot_product": isa["int8_dot_product"]}
        if progress:
            shown = ", ".join(f"{t}: {ms:.3f} ms" for t, ms in figures.items())
            print(f"  {name}: batch-1 p50 by ORT threads {shown} -> {chosen[name]}", flush=True)
    write_manifest(staging, manifest, files=files)
    return chosen
