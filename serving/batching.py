"""Adaptive (micro-)batching: concurrent requests to one model share one ORT call.

A request waits at most `max_wait_ms` for company; a batch closes early when it reaches
`max_batch` rows. Under light load a request runs almost alone, under heavy load batches
fill up: throughput grows without a fixed latency tax. One worker per model runs the
batches one after another, so a session keeps all its intra-op threads to itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class MicroBatcher:
    def __init__(self, run: Callable[[np.ndarray], list[np.ndarray]], *, max_batch: int = 64,
                 max_wait_ms: float = 2.0, name: str = "model",
                 on_batch: Callable[[int], None] | None = None):
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000
        self.name, self.on_batch = name, on_batch
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{name}")

    async def submit(self, rows: np.ndarray) -> list[np.ndarray]:
        """Run `rows` (first axis = items) through the model; returns each output's rows."""
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._loop())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((rows, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pending = [await self._queue.get()]
            size = len(pending[0][0])
            deadline = time.monotonic() + self.max_wait
            while size < self.max_batch:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                pending.append(item)
                size += len(item[0])
            batch = np.concatenate([rows for rows, _ in pending]) if len(pending) > 1 else pending[0][0]
            try:
                outputs = await loop.run_in_executor(self._executor, self.run, batch)
            except Exception as exc:  # hand the failure to every waiting request, keep serving
                for _, future in pending:
                    if not future.done():
                        future.set_exception(exc)
                continue
            if self.on_batch:
                self.on_batch(len(batch))
            start = 0
            for rows, future in pending:
                end = start + len(rows)
                if not future.done():
                    future.set_result([out[start:end] for out in outputs])
                start = end
