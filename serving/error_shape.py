"""One error shape on every route: each 4xx and 5xx is `{"error": "...", ...}` as application/json.

A pure ASGI middleware around the whole server: BentoML's endpoints and system routes, the
v2 app (serving/v2.py), the body-size limit (serving/limits.py) and paths that match
nothing. What it finds and what it answers:

- `{"error": "..."}` (v2, the body-size limit, BentoML's 5xx): as it is;
- `[{"error": "..."}]`, BentoML's answer to an endpoint's BentoMLException: the object;
- BentoML's validation errors, `{"error": "1 validation error for Input", "detail": [...]}`:
  `error` also names each field and what was wrong with it (`detail` kept);
- Starlette's plain text (`Not Found`, `Method Not Allowed`), an empty body, JSON without a
  string `error`: `{"error": "<METHOD> <path>: <what it said>"}` (other JSON keys kept);
- an exception that escapes the app before it answered: a 500 in the same shape (logged),
  instead of Starlette's plain-text `Internal Server Error`.

Responses under 400 pass through untouched and unbuffered (streams, Server-Sent Events,
MIDI); only an error's body is held until it is complete. Errors uvicorn writes itself
(an unparseable HTTP request) never reach the app and keep uvicorn's plain text.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from starlette.responses import JSONResponse

from edgestack.errors import InputError, Overloaded

log = logging.getLogger("edgestack.serving")

JSON = b"application/json"


def refusal(exc: InputError) -> JSONResponse:
    """A refused request (a caller's mistake, or 503 when overloaded or draining) as its response:
    the one shape, and a 503 says when to retry."""
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Overloaded) else None
    return JSONResponse({"error": str(exc)}, status_code=getattr(exc, "status", 400), headers=headers)


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def validation_summary(detail) -> str:
    """pydantic's error list (BentoML's `detail`) -> "field: what was wrong; ..." ("" if not one)."""
    if not isinstance(detail, list) or not all(isinstance(e, dict) and "msg" in e for e in detail):
        return ""
    parts = []
    for e in detail[:5]:
        where = ".".join(str(part) for part in e.get("loc") or ())
        parts.append(f"{where}: {e['msg']}" if where else str(e["msg"]))
    return "; ".join(parts) + (f"; and {len(detail) - 5} more" if len(detail) > 5 else "")


def error_body(status: int, content_type: bytes, body: bytes, method: str, path: str) -> dict:
    """Any error response's body -> the one shape, `{"error": "...", ...}`."""
    payload = None
    if content_type.split(b";")[0].strip().endswith(b"json"):
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
    if isinstance(payload, list) and len(payload) == 1 and isinstance(payload[0], dict):
        payload = payload[0]
    if isinstance(payload, dict) and isinstance(payload.get("error"), str) and payload["error"]:
        summary = validation_summary(payload.get("detail"))
        return {**payload, "error": f"{payload['error']}: {summary}"} if summary else payload
    if isinstance(payload, dict):
        said = payload.get("detail") or payload.get("message") or payload.get("error")
        return {**payload, "error": f"{method} {path}: {said if isinstance(said, str) and said else phrase(status)}"}
    text = body.decode("utf-8", "replace").strip() if payload is None else json.dumps(payload)
    return {"error": f"{method} {path}: {text[:500] or phrase(status)}"}


def start_message(status: int, headers: list, body: bytes) -> dict:
    """`headers` less any content type and length, plus the JSON ones for `body`; a 503 (overload,
    drain) always says when to retry, whichever layer refused the request."""
    kept = [(k, v) for k, v in headers if k.lower() not in (b"content-type", b"content-length")]
    if status == 503 and not any(k.lower() == b"retry-after" for k, _ in kept):
        kept.append((b"retry-after", b"1"))
    return {"type": "http.response.start", "status": status,
            "headers": [*kept, (b"content-type", JSON), (b"content-length", str(len(body)).encode())]}


async def send_error(send, status: int, message: str, headers: list | None = None) -> None:
    """Answer `{"error": message}` straight from a middleware (raw ASGI), before any app runs."""
    body = json.dumps({"error": message}).encode()
    await send(start_message(status, headers or [], body))
    await send({"type": "http.response.body", "body": body})


class ErrorShape:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held: dict | None = None  # an error's http.response.start, held until its body is complete
        chunks: list[bytes] = []
        answered = False          # something went to the client

        async def shape(message):
            nonlocal held, answered
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held = message
                return
            if held is None or message["type"] != "http.response.body":
                answered = True
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            headers = list(held.get("headers") or [])
            content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
            body = json.dumps(error_body(held["status"], content_type, b"".join(chunks),
                                         scope.get("method", ""), scope.get("path", ""))).encode()
            answered = True
            await send(start_message(held["status"], headers, body))
            await send({"type": "http.response.body", "body": body})

        try:
            await self.app(scope, receive, shape)
        except Exception:
            if answered:
                raise
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            await send_error(send, 500, "internal server error; the server log has the details")
        else:
            if not answered and held is None:
                # The app ended without an answer: the client went away first (e.g. mid-body). Nobody
                # reads this one, but without it BentoML's timeout middleware, which waits for a
                # first message, keeps the request for its 60 s, and a SIGTERM drain with it.
                await send_error(send, 400, "the client closed its connection before the answer")
