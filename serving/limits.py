"""Limits on what a request may cost: the body-size middleware (413 before parsing), and
bounded worker pools for blocking work that must stay off the event loop (image decoding,
MIDI rendering), each refusing with 503 + Retry-After once its queue is full."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from edgestack.errors import Overloaded
from edgestack.settings import get_settings
from serving.error_shape import send_error


class BoundedPool:
    """`threads` worker threads of its own (not asyncio's default pool, which model loads and
    other work share), at most `max_jobs` jobs running or waiting; beyond that `run` raises
    Overloaded (503 + Retry-After) at once instead of queueing without bound."""

    def __init__(self, name: str, threads: int, max_jobs: int, what: str):
        self.name, self.threads, self.max_jobs, self.what = name, threads, max_jobs, what
        self.jobs, self._pool, self._lock = 0, None, threading.Lock()

    def pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=f"edgestack-{self.name}")
            return self._pool

    async def run(self, function, *args):
        if self.jobs >= self.max_jobs:
            raise Overloaded(f"the server is busy {self.what} ({self.jobs} requests ahead, its limit); "
                             "try again shortly")
        self.jobs += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool(), function, *args)
        finally:
            self.jobs -= 1


def max_body_bytes() -> int:
    return get_settings().max_body_bytes


class BodySizeLimit:
    """Checks Content-Length up front; a chunked body of unknown length is counted as it
    arrives, so neither kind of client gets past the limit."""

    def __init__(self, app, max_bytes: int | None = None):
        self.app, self.max_bytes = app, max_bytes or max_body_bytes()

    async def _refuse(self, send, size: str) -> None:
        await send_error(send, 413, f"request body {size} exceeds the limit of {self.max_bytes} bytes "
                                    "(set EDGESTACK_MAX_BODY_BYTES to change it)")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_bytes:
                return await self._refuse(send, f"of {int(declared)} bytes")
            # the HTTP server itself stops a body at its declared length
            return await self.app(scope, receive, send)
        # Chunked upload, length unknown: read it (at most the limit) before the app sees it,
        # so the refusal is a clean 413 and not an error half-way through parsing.
        messages, received = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                return await self._refuse(send, f"of more than {self.max_bytes} bytes")
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replay_receive():
            return next(replay, None) or await receive()

        return await self.app(scope, replay_receive, send)
