"""Per-model inference statistics, in Triton's shape (the v2 statistics extension) and on /metrics.

Each runner owns one `ModelStats`; its batcher (serving/batching.py) records every request's
outcome and queue time and every batch's compute time, and runners that step a model
themselves (folk-lstm) record around their own calls. Two views of the same counts:

- `ModelStats.triton()`: one entry of `GET /v2/models/{m}[/versions/{v}]/stats` as Triton
  answers it (`inference_stats.{success,fail,queue,compute_infer}` = {count, ns},
  `batch_stats` per batch size), so tritonclient's `get_inference_statistics` reads it;
- Prometheus counters on /metrics (`edgestack_requests_total{model,version,outcome}`,
  `edgestack_queue_seconds_total`, `edgestack_compute_seconds_total`), fed from the same calls.

Counters only grow; everything runs on the event loop or, for compute, on the one worker
thread of a model (under a lock), so the figures are consistent with each other.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

_metrics = None


def prometheus():
    """The Prometheus counters, created once per process (BentoML's registry; None outside a server)."""
    global _metrics
    if _metrics is None:
        try:
            import bentoml

            _metrics = {
                "requests": bentoml.metrics.Counter(
                    name="edgestack_requests_total", documentation="inference requests by outcome "
                    "(success, fail: an error while running, shed: refused with 503 under load)",
                    labelnames=["model", "version", "outcome"]),
                "queue": bentoml.metrics.Counter(
                    name="edgestack_queue_seconds_total", documentation="time requests waited for their batch",
                    labelnames=["model", "version"]),
                "compute": bentoml.metrics.Counter(
                    name="edgestack_compute_seconds_total", documentation="time ONNX Runtime ran batches",
                    labelnames=["model", "version"]),
            }
        except Exception:  # noqa: BLE001 - metrics are an extra; the counts below still work
            _metrics = {}
    return _metrics


class Duration:
    """{count, ns} as Triton reports each statistic."""

    __slots__ = ("count", "ns")

    def __init__(self) -> None:
        self.count, self.ns = 0, 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def triton(self) -> dict:
        return {"count": self.count, "ns": self.ns}


class ModelStats:
    def __init__(self, name: str, version: str):
        self.name, self.version = name, version
        self.success, self.fail, self.shed = Duration(), Duration(), Duration()
        self.queue, self.compute = Duration(), Duration()
        self.batches: dict[int, Duration] = defaultdict(Duration)
        self.inference_count = 0      # rows (items) answered
        self.execution_count = 0      # model runs (batches)
        self.last_inference_ms = 0
        self._lock = threading.Lock()  # compute is recorded on the model's worker thread

    def _count(self, outcome: str) -> None:
        metrics = prometheus()
        if metrics:
            metrics["requests"].labels(model=self.name, version=self.version, outcome=outcome).inc()

    def request_done(self, seconds: float, rows: int, ok: bool) -> None:
        """One request finished (ok) or failed while running, `seconds` after it arrived."""
        (self.success if ok else self.fail).add(seconds)
        if ok:
            self.inference_count += rows
            self.last_inference_ms = int(time.time() * 1000)
        self._count("success" if ok else "fail")

    def request_shed(self) -> None:
        """A request refused with 503 (queue full or its deadline could not be met)."""
        self.shed.add(0.0)
        self._count("shed")

    def queued(self, seconds: float) -> None:
        self.queue.add(seconds)
        metrics = prometheus()
        if metrics:
            metrics["queue"].labels(model=self.name, version=self.version).inc(seconds)

    def batch_ran(self, rows: int, seconds: float) -> None:
        with self._lock:
            self.compute.add(seconds)
            self.batches[rows].add(seconds)
            self.execution_count += 1
        metrics = prometheus()
        if metrics:
            metrics["compute"].labels(model=self.name, version=self.version).inc(seconds)

    async def track(self, awaitable, rows: int = 1):
        """For runners without the batcher (folk-lstm's stepping): time one call as a request
        and as a model run of `rows` rows."""
        started = time.monotonic()
        try:
            result = await awaitable
        except BaseException:
            self.request_done(time.monotonic() - started, rows, ok=False)
            raise
        elapsed = time.monotonic() - started
        self.batch_ran(rows, elapsed)
        self.request_done(elapsed, rows, ok=True)
        return result

    def triton(self) -> dict:
        with self._lock:
            batch_stats = [{"batch_size": size, "compute_infer": d.triton(),
                            "compute_input": {"count": d.count, "ns": 0},
                            "compute_output": {"count": d.count, "ns": 0}}
                           for size, d in sorted(self.batches.items())]
            compute = self.compute.triton()
        zero = {"count": 0, "ns": 0}
        return {
            "name": self.name, "version": self.version, "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count, "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.triton(), "fail": self.fail.triton(), "queue": self.queue.triton(),
                "compute_input": {"count": compute["count"], "ns": 0}, "compute_infer": compute,
                "compute_output": {"count": compute["count"], "ns": 0},
                "cache_hit": zero, "cache_miss": zero,
                # not in Triton's shape: requests refused with 503 by load shedding
                "shed": self.shed.triton(),
            },
            "batch_stats": batch_stats,
        }


def merged(entries: list[dict]) -> dict:
    """Several workers' `ModelStats.triton()` of one model version as one: every {count, ns}
    and count added up, `last_inference` the latest, `batch_stats` added per batch size."""
    def add(a, b):
        if isinstance(a, dict):
            return {k: add(a[k], b[k]) if k in b else a[k] for k in a} | {k: v for k, v in b.items() if k not in a}
        return a + b if isinstance(a, int | float) and not isinstance(a, bool) else a

    first, *rest = entries
    total = {k: v for k, v in first.items() if k != "batch_stats"}
    batches = {b["batch_size"]: b for b in first["batch_stats"]}
    for entry in rest:
        total = add(total, {k: v for k, v in entry.items() if k != "batch_stats"})
        for b in entry["batch_stats"]:
            size = b["batch_size"]
            batches[size] = {**add(batches[size], b), "batch_size": size} if size in batches else b
    total["last_inference"] = max(e["last_inference"] for e in entries)
    total["batch_stats"] = [batches[size] for size in sorted(batches)]
    return total
