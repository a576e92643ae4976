"""ASGI middleware: refuse request bodies over a configurable size with 413, before parsing."""

from __future__ import annotations

from edgestack.settings import get_settings
from serving.error_shape import send_error


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
