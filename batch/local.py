"""The local engine: this process, plus worker processes when more than one worker is asked.

Each worker holds one ONNX Runtime session with `threads` intra-op threads, so the
machine runs workers x threads ORT threads (keep it <= cores: sessions that each take
every core fight for them). Workers are spawned (not forked: ORT's thread pools do not
survive a fork) and get whole shards; they return rows and never write files, so killing
the job leaves no half-written output behind.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator

from batch.adapter import BatchAdapter, Shard, ShardResult, Source, run_shard

_WORKER: dict = {}


def _init_worker(adapter: BatchAdapter, source: Source) -> None:
    _WORKER["adapter"], _WORKER["source"] = adapter, source
    adapter.sessions  # open the session(s) (and its thread pool) once, before the first shard


def _work(shard: Shard) -> ShardResult:
    return run_shard(_WORKER["adapter"], _WORKER["source"], shard, worker=f"pid {os.getpid()}")


def run_local(adapter: BatchAdapter, source: Source, shards: list[Shard], *, workers: int, opts,
              info: dict) -> Iterator[ShardResult]:
    started = time.perf_counter()
    if workers <= 1:
        adapter.sessions
        info["startup_seconds"] = round(time.perf_counter() - started, 3)
        for shard in shards:
            yield run_shard(adapter, source, shard, worker="main")
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(adapter, source)) as pool:
        first = True
        for result in pool.imap_unordered(_work, shards, chunksize=1):
            if first:  # time until the first shard came back, minus its own work
                info["startup_seconds"] = round(time.perf_counter() - started - result.seconds, 3)
                first = False
            yield result
