"""serving/error_shape.py without a server: every kind of error body becomes `{"error": ...}`,
responses under 400 (a stream included) pass through untouched, and an exception that
escapes the app becomes a JSON 500."""

from __future__ import annotations

import asyncio
import json

import pytest

from serving.error_shape import ErrorShape, error_body

VALIDATION = {"error": "1 validation error for Input",
              "detail": [{"type": "int_parsing", "loc": ["top_k"], "msg": "Input should be a valid integer"}]}


@pytest.mark.parametrize("content_type,body,expected", [
    (b"application/json", b'{"error": "unknown model"}', {"error": "unknown model"}),
    (b"application/json", b'[{"error": "top_k must be 1 to 10"}]', {"error": "top_k must be 1 to 10"}),
    (b"application/json", json.dumps(VALIDATION).encode(),
     {**VALIDATION, "error": "1 validation error for Input: top_k: Input should be a valid integer"}),
    (b"text/plain; charset=utf-8", b"Not Found", {"error": "POST /nope: Not Found"}),
    (b"", b"", {"error": "POST /nope: Not Found"}),
    (b"application/json", b'{"detail": "Not Found"}', {"detail": "Not Found", "error": "POST /nope: Not Found"}),
    (b"application/json", b'{"error": ', {"error": 'POST /nope: {"error":'}),
    (b"application/json", b"[1, 2]", {"error": "POST /nope: [1, 2]"}),
])
def test_every_error_body_becomes_the_one_shape(content_type, body, expected):
    assert error_body(404, content_type, body, "POST", "/nope") == expected


def run(app, method="GET", path="/x") -> list[dict]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(ErrorShape(app)({"type": "http", "method": method, "path": path, "headers": []}, receive, send))
    return sent


def response(status, headers, *bodies):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for i, body in enumerate(bodies):
            await send({"type": "http.response.body", "body": body, "more_body": i < len(bodies) - 1})
    return app


def test_a_streamed_200_passes_through_message_by_message():
    pieces = [b"event: start\ndata: {}\n\n", b"event: piece\ndata: {}\n\n", b""]
    sent = run(response(200, [(b"content-type", b"text/event-stream")], *pieces))
    assert sent[0]["status"] == 200 and [m["body"] for m in sent[1:]] == pieces


def test_a_plain_text_405_becomes_json_and_keeps_its_other_headers():
    sent = run(response(405, [(b"allow", b"POST"), (b"content-type", b"text/plain"), (b"content-length", b"18")],
                        b"Method ", b"Not Allowed"), method="GET", path="/classify")
    headers = dict(sent[0]["headers"])
    body = sent[1]["body"]
    assert headers[b"allow"] == b"POST" and headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body)
    assert json.loads(body) == {"error": "GET /classify: Method Not Allowed"}


def test_an_exception_before_the_answer_is_a_json_500():
    async def broken(scope, receive, send):
        raise RuntimeError("boom")

    sent = run(broken)
    assert sent[0]["status"] == 500 and "internal server error" in json.loads(sent[1]["body"])["error"]
