"""Adaptive (micro-)batching: concurrent requests to one model share one ORT call.

One worker per model runs the batches one after another, so a session keeps all its
intra-op threads to itself. Each batch takes every request that queued up while the
previous batch ran (greedy batching), up to `max_batch` rows. A lone request therefore
runs at once: no latency tax at concurrency 1, and under load the batches fill by
themselves, because requests arrive while ORT is busy.

`max_wait_ms` > 0 adds Triton's `max_queue_delay`: after draining the queue, a batch that
is not full waits that long for company. It buys fuller batches on a saturated server
at the price of that wait on every request, which is why it is off by default: on the
2-core reference box a 2 ms window made a lone v2 request 2.4 ms slower at p50 (4.8 ms
instead of 2.4, two servers interleaved in one run), more than the window itself because
the wait is an event-loop timer.

A batch runs on the worker thread, so the event loop keeps accepting requests meanwhile.
The hop there and back costs a few hundred microseconds, more than a small CNN's whole
batch-1 run; so a batch expected to take at most `inline_ms` (from a running estimate of
the time per row) runs on the event loop itself.

Load shedding and deadlines (like Triton's queue policy with REJECT): a model's queue holds
at most `max_queue_ms` of work, in rows, by the running time-per-row estimate (or
`max_queue_rows` when set). A request is refused at once with `Overloaded` (HTTP 503 +
Retry-After) when the queue is full, or when it carries a deadline (`request_deadline`, set
from `X-Request-Timeout-Ms` or v2 `parameters.timeout`) that the work queued ahead of it
would already overrun; one still queued when its deadline passes is refused then. Requests
that are admitted are never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edgestack.errors import Overloaded
from serving.stats import ModelStats

# When the current request must have started running (time.monotonic()), or None: no deadline.
request_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("request_deadline", default=None)

_STOP = object()  # queued by close(): the worker ends after the batches queued before it


@contextlib.contextmanager
def deadline(seconds: float | None):
    """Within the block, the current request must start within `seconds` (None: as it was)."""
    if seconds is None or seconds <= 0:
        yield
        return
    token = request_deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        request_deadline.reset(token)


class MicroBatcher:
    def __init__(self, run: Callable[[np.ndarray], list[np.ndarray]], *, max_batch: int = 64,
                 max_wait_ms: float = 0.0, inline_ms: float = 0.25, name: str = "model",
                 on_batch: Callable[[int], None] | None = None, stats: ModelStats | None = None,
                 max_queue_ms: float = 500.0, max_queue_rows: int = 0):
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000
        self.inline_s = inline_ms / 1000
        self.row_seconds: float | None = None  # running estimate of one row's run time
        self.name, self.on_batch = name, on_batch
        self.stats = stats or ModelStats(name, "")
        self.max_queue_s, self.max_queue_rows = max_queue_ms / 1000, max_queue_rows
        self.queued_rows = 0   # rows waiting for a batch
        self.running_rows = 0  # rows of the batch running now
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{name}")

    # ------------------------------------------------------------------ admission
    def queue_limit(self) -> int:
        """Most rows that may wait: `max_queue_rows`, else `max_queue_ms` of work at the measured
        time per row (never under one full batch; unbounded until a run has been timed)."""
        if self.max_queue_rows:
            return self.max_queue_rows
        if self.row_seconds is None or self.max_queue_s <= 0:
            return 1 << 62
        return max(self.max_batch, int(self.max_queue_s / self.row_seconds))

    def expected_wait(self) -> float:
        """Seconds until a request queued now starts running, by the time-per-row estimate."""
        return (self.queued_rows + self.running_rows) * (self.row_seconds or 0.0)

    def admit(self, rows: int, now: float, deadline: float | None) -> None:
        """Refuse (Overloaded) a request that cannot start in time, before it waits at all."""
        if self._closed:
            raise Overloaded(f"{self.name} is being unloaded or replaced; retry", 1)
        wait = self.expected_wait()
        retry = math.ceil(wait) or 1
        limit = self.queue_limit()
        if self.queued_rows and self.queued_rows + rows > limit:
            self.stats.request_shed()
            raise Overloaded(f"{self.name} is overloaded: {self.queued_rows} rows are queued (limit {limit}, "
                             f"about {wait * 1000:.0f} ms of work); retry after {retry} s", retry)
        if deadline is not None and now + wait > deadline:
            self.stats.request_shed()
            raise Overloaded(f"{self.name} cannot start this request within its deadline: about "
                             f"{wait * 1000:.0f} ms of work is queued ahead of it", retry)

    # ------------------------------------------------------------------ requests
    async def submit(self, rows: np.ndarray) -> list[np.ndarray]:
        """Run `rows` (first axis = items) through the model; returns each output's rows."""
        arrived, deadline = time.monotonic(), request_deadline.get()
        self.admit(len(rows), arrived, deadline)
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._loop())
        future = asyncio.get_running_loop().create_future()
        self.queued_rows += len(rows)
        self._queue.put_nowait((rows, future, arrived, deadline))
        try:
            outputs = await future
        except Overloaded:
            raise  # counted as shed where it was refused
        except BaseException:
            self.stats.request_done(time.monotonic() - arrived, len(rows), ok=False)
            raise
        self.stats.request_done(time.monotonic() - arrived, len(rows), ok=True)
        return outputs

    def close(self) -> None:
        """Refuse new requests; the worker ends once the requests already queued are answered."""
        self._closed = True
        if self._queue is not None and self._worker is not None and not self._worker.done():
            self._queue.put_nowait(_STOP)
        else:
            self._executor.shutdown(wait=False)

    def _take(self, item, now: float) -> bool:
        """Count `item` out of the queue; False (and the request refused) if its deadline passed."""
        rows, future, arrived, deadline = item
        self.queued_rows -= len(rows)
        if deadline is not None and now > deadline:
            self.stats.request_shed()
            if not future.done():
                future.set_exception(Overloaded(
                    f"{self.name}: the request's deadline passed after {(now - arrived) * 1000:.0f} ms in the queue"))
            return False
        self.stats.queued(now - arrived)
        return True

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            if first is _STOP:
                self._executor.shutdown(wait=False)
                return
            await asyncio.sleep(0)  # let requests that arrived in the same loop turn queue up too
            now = time.monotonic()
            pending = [first] if self._take(first, now) else []
            size = sum(len(item[0]) for item in pending)
            deadline = now + self.max_wait
            stop = False
            while size < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    timeout = deadline - time.monotonic()
                    if timeout <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), timeout)
                    except TimeoutError:
                        break
                if item is _STOP:
                    stop = True
                    break
                if self._take(item, time.monotonic()):
                    pending.append(item)
                    size += len(item[0])
            if pending:
                await self._run_batch(loop, pending)
            if stop:
                self._executor.shutdown(wait=False)
                return

    async def _run_batch(self, loop, pending: list) -> None:
        batch = np.concatenate([item[0] for item in pending]) if len(pending) > 1 else pending[0][0]
        self.running_rows = len(batch)
        try:
            if self.row_seconds is not None and len(batch) * self.row_seconds <= self.inline_s:
                outputs = self._timed_run(batch)  # cheaper than the hop to the worker thread
            else:
                outputs = await loop.run_in_executor(self._executor, self._timed_run, batch)
        except Exception as exc:  # noqa: BLE001 - hand the failure to every waiting request, keep serving
            for item in pending:
                if not item[1].done():
                    item[1].set_exception(exc)
            return
        finally:
            self.running_rows = 0
        if self.on_batch:
            self.on_batch(len(batch))
        start = 0
        for rows, future, _, _ in pending:
            end = start + len(rows)
            if not future.done():
                future.set_result([out[start:end] for out in outputs])
            start = end

    def _timed_run(self, batch: np.ndarray) -> list[np.ndarray]:
        started = time.perf_counter()
        outputs = self.run(batch)
        elapsed = time.perf_counter() - started
        per_row = elapsed / max(len(batch), 1)
        self.row_seconds = per_row if self.row_seconds is None else 0.8 * self.row_seconds + 0.2 * per_row
        self.stats.batch_ran(len(batch), elapsed)
        return outputs
