"""The Ray engine: Ray Data `map_batches` over the job's shards, with an actor pool of ORT sessions.

    edgestack batch MODEL INPUT OUTPUT --engine ray                   # a local Ray on this machine
    edgestack batch MODEL INPUT OUTPUT --engine ray --address HOST:6379   # an existing cluster

The dataset is the list of pending shards; each actor of the pool (`ActorPoolStrategy`)
opens one ONNX Runtime session with `threads` intra-op threads (and asks Ray for that many
CPUs), reads its shard's items and returns rows + errors. The model travels through Ray's
object store, so cluster nodes need no copy of the artifact; the inputs are read by the
actors, so on a multi-node cluster the input path must be visible on every node (shared
storage), and edgestack must be installed there. Only the driver writes output files, with
the same atomic shards and resume as the local engine.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from batch.adapter import BatchAdapter, Shard, ShardResult, Source, run_shard


class ShardActor:
    """One ORT session per actor; called with batches of shard descriptors."""

    def __init__(self, refs: list):
        import ray

        self.adapter, self.source = ray.get(refs[0]), ray.get(refs[1])
        self.adapter.sessions  # open now: the pool is warm before the first shard arrives
        self.name = f"ray actor pid {os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [run_shard(self.adapter, self.source, Shard(int(i), int(a), int(b)), worker=self.name)
                   for i, a, b in zip(batch["shard_id"], batch["start"], batch["stop"])]
        return {"shard_id": np.array([r.shard_id for r in results], np.int64),
                "result": np.array([pickle.dumps(r) for r in results], dtype=object)}


def connect(address: str | None, num_cpus: int | None = None) -> dict:
    """ray.init for this job: an existing cluster (address) or a local one; returns facts for the report."""
    import ray

    started = time.perf_counter()
    if not ray.is_initialized():
        kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                      configure_logging=True)
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kwargs)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the job has its own bar
    for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return {"ray_init_seconds": round(time.perf_counter() - started, 3),
            "ray_cluster_cpus": ray.cluster_resources().get("CPU"), "ray_address": address or "local"}


def run_ray(adapter: BatchAdapter, source: Source, shards: list[Shard], *, workers: int, opts,
            info: dict) -> Iterator[ShardResult]:
    import ray

    started = time.perf_counter()
    started_here = not ray.is_initialized()
    info.update(connect(opts.address))
    try:
        shipped = pickle.loads(pickle.dumps(adapter))
        # the graphs travel as bytes through the object store: nodes need no artifact folder
        if isinstance(shipped.model, dict):
            shipped.model = {role: Path(m).read_bytes() if isinstance(m, str) else m for role, m in shipped.model.items()}
        elif isinstance(shipped.model, str):
            shipped.model = Path(shipped.model).read_bytes()
        refs = [ray.put(shipped), ray.put(source)]
        items = [{"shard_id": s.shard_id, "start": s.start, "stop": s.stop} for s in shards]
        dataset = ray.data.from_items(items, override_num_blocks=len(items))
        results = dataset.map_batches(
            ShardActor, fn_constructor_args=(refs,), batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=opts.threads)
        first = True
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            for blob in batch["result"]:
                result: ShardResult = pickle.loads(blob)
                if first:
                    info["startup_seconds"] = round(time.perf_counter() - started - result.seconds, 3)
                    first = False
                yield result
    finally:
        if started_here and not opts.address:
            ray.shutdown()
