"""Python client for an edgestack server: sync (`Client`) and async (`AsyncClient`).

    from clients import Client
    with Client("http://localhost:3000") as c:
        result = c.classify_images(["shoe.png"], model="fashion-cnn")
        print(result.predictions[0].label)
        c.classify_text("A gripping, beautifully shot film.", model="sentiment-transformer").predictions[0].label
        for event in c.generate_stream(prompt="X:1\nT:", seed=7):   # folk-lstm, as it writes
            print(event.text, end="", flush=True)

Connections are reused; every call has a timeout; connection failures (not HTTP errors)
are retried with exponential back-off; a 4xx/5xx raises `RequestError`/`ServerError`
carrying the server's own message. The v2 / Open Inference Protocol calls (`v2_infer`,
`v2_model_metadata`, ...) come from clients/v2.py and work against any v2 server.

Both clients are one implementation (`_Calls` here, `V2Calls` in clients/v2.py; how, in
clients/_core.py): each call builds its request and parses the answer once, and only the
transport, httpx.Client or httpx.AsyncClient, differs. /generate_stream is read with httpx-sse.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import numpy as np
from httpx_sse import EventSource, ServerSentEvent

from clients._core import (
    Calls,
    Run,
    Steps,
    async_method,
    awaiting,
    call,
    now,
    run_async,
    run_sync,
    sync_method,
)
from clients.v2 import V2Calls
from edgestack.settings import get_settings

DEFAULT_URL = "http://localhost:3000"


class EdgestackError(Exception):
    """Base of every client error."""


class Unavailable(EdgestackError):
    """The server could not be reached, or stayed overloaded (503), after the retries."""


class HTTPError(EdgestackError):
    def __init__(self, status: int, message: str, path: str):
        super().__init__(f"HTTP {status} from {path}: {message}")
        self.status, self.message, self.path = status, message, path


class RequestError(HTTPError):
    """4xx: the request was wrong; the message says how."""


class ServerError(HTTPError):
    """5xx: the server failed."""


@dataclass(frozen=True)
class LabelScore:
    label: str
    index: int
    probability: float


@dataclass(frozen=True)
class Prediction:
    label: str
    top_k: list[LabelScore]


@dataclass(frozen=True)
class ClassifyResult:
    model: str
    version: str
    variant: str
    predictions: list[Prediction]

    @classmethod
    def from_json(cls, body: dict) -> ClassifyResult:
        return cls(body["model"], str(body["version"]), body["variant"],
                   [Prediction(p["label"], [LabelScore(**s) for s in p["top_k"]]) for p in body["predictions"]])


@dataclass(frozen=True)
class TextPrediction:
    label: str
    score: float
    probabilities: dict[str, float]
    tokens: int          # tokens the model read
    truncated: bool      # the text was longer than the model's max length


@dataclass(frozen=True)
class TextResult:
    model: str
    version: str
    variant: str
    predictions: list[TextPrediction]

    @classmethod
    def from_json(cls, body: dict) -> TextResult:
        return cls(body["model"], str(body["version"]), body["variant"], [TextPrediction(**p) for p in body["predictions"]])


@dataclass(frozen=True)
class Tune:
    model: str
    version: str
    tune: str            # the whole tune in ABC notation, prompt included
    generated_chars: int
    stop_reason: str     # end_of_tune | max_length
    seed: int | None = None
    params: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: dict) -> Tune:
        return cls(body["model"], str(body["version"]), body["tune"], body["generated_chars"], body["stop_reason"],
                   body.get("seed"), body.get("params", {}))


@dataclass(frozen=True)
class TuneEvent:
    """One Server-Sent Event of /generate_stream: kind is start, piece or end."""
    kind: str
    data: dict

    @property
    def text(self) -> str:
        """The new characters of a piece event ("" for the others)."""
        return self.data.get("text", "") if self.kind == "piece" else ""


def _text_body(text: str | None, texts: list[str] | None, model: str | None) -> dict:
    if (text is None) == (texts is None):
        raise ValueError("pass either text (one string) or texts (a list of strings)")
    body = {"text": text} if text is not None else {"texts": list(texts)}
    return body if model is None else {**body, "model": model}


def _generation_body(model: str | None, prompt: str | None, sampling: dict) -> dict:
    """/generate fields; left-out ones take the server's defaults (prompt "X:1\n", temperature 1, ...)."""
    allowed = {"max_length", "temperature", "top_k", "top_p", "seed"}
    unknown = set(sampling) - allowed
    if unknown:
        raise TypeError(f"unknown sampling parameter(s) {sorted(unknown)}; use {sorted(allowed)}")
    body = {"model": model, "prompt": prompt, **sampling}
    return {k: v for k, v in body.items() if v is not None}


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:  # a proxy's page, or uvicorn's own plain text for an unparseable request
        message = response.text.strip() or response.reason_phrase
    else:  # edgestack answers {"error": "..."} on every route (docs/serving.md), as Triton does
        said = body if isinstance(body, dict) else {}
        message = said.get("error") or said.get("detail") or said.get("message") or str(body)
    cls = RequestError if response.status_code < 500 else ServerError
    raise cls(response.status_code, str(message), str(response.request.url.path))


def retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait before retrying a 503 (its Retry-After, 1 if absent); None for any other answer."""
    if response.status_code != 503:
        return None
    try:
        return max(0.0, float(response.headers.get("retry-after", "1")))
    except ValueError:  # an HTTP date: not sent by edgestack; wait the usual second
        return 1.0


def _image_files(images: list[str | Path | bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    files = []
    for i, image in enumerate(images):
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        name = f"image{i}" if isinstance(image, bytes) else Path(image).name
        files.append(("images", (name, data, "application/octet-stream")))
    return files


def _pixels(pixels: Any) -> list:
    return np.asarray(pixels).tolist() if isinstance(pixels, np.ndarray) else pixels


def _tune_event(sse: ServerSentEvent) -> TuneEvent:
    """One event of /generate_stream; an in-band `error` event raises ServerError (the header said 200)."""
    data = sse.json()
    if sse.event == "error":
        raise ServerError(500, data.get("error", str(data)), "/generate_stream")
    return TuneEvent(sse.event, data)


class _Transport(NamedTuple):
    """All that differs between `Client` and `AsyncClient`."""
    http: type                # httpx.Client or httpx.AsyncClient
    step: Callable            # how an I/O function runs as a step: clients._core.now or awaiting
    sleep: Callable           # seconds -> waits (time.sleep or asyncio.sleep)
    read: Callable            # streamed response -> its body read
    release: Callable         # streamed response -> closed
    close: str                # the name of the http client's method that closes it


class _Calls(Calls):
    """Every call of both clients, once (clients/_core.py): `self._http` builds the requests,
    `self._io` (the steps of the class's `_transport`) sends them, sleeps between retries, and
    reads and closes streamed responses."""

    _transport: _Transport

    # The longest Retry-After the client waits for on a 503 before it gives up (seconds).
    MAX_RETRY_AFTER = 10.0

    def __init__(self, url: str = DEFAULT_URL, *, timeout: float = 30.0, retries: int = 3, backoff: float = 0.2,
                 token: str | None = None, deadline_ms: float | None = None):
        """token: the bearer token when the server requires one (default: EDGESTACK_TOKEN).
        deadline_ms: how long a request may wait in the server's queue before the server
        refuses it with 503 (X-Request-Timeout-Ms); 503s are retried after their Retry-After."""
        self.url, self.timeout, self.retries, self.backoff = url.rstrip("/"), timeout, retries, backoff
        token = token if token is not None else get_settings().token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if deadline_ms is not None:
            headers["X-Request-Timeout-Ms"] = f"{deadline_ms:g}"
        t = self._transport
        self._http = t.http(base_url=self.url, timeout=self.timeout, headers=headers)
        self._io = Steps(t.step, send=self._http.send, close=getattr(self._http, t.close), sleep=t.sleep,
                         read=t.read, release=t.release)

    def _delays(self):
        return [self.backoff * (2 ** attempt) for attempt in range(self.retries)]

    def _send(self, method: str, path: str, *, stream: bool = False, **kwargs) -> Run:
        """The request, retried on connection errors and on 503 (after the server's Retry-After,
        at most MAX_RETRY_AFTER s); never on another 4xx/5xx, which raise RequestError/ServerError."""
        request = self._http.build_request(method, path, **kwargs)
        for delay in [*self._delays(), None]:
            try:
                response = yield from self._io.send(request, stream=stream)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if delay is None:
                    raise Unavailable(f"cannot reach {self.url}{path}: {exc}") from exc
                yield from self._io.sleep(delay)
                continue
            wait = retry_after(response)
            if wait is None or delay is None or wait > self.MAX_RETRY_AFTER:
                break
            if stream:
                yield from self._io.release(response)
            yield from self._io.sleep(max(wait, delay))
        if stream and response.status_code >= 400:
            yield from self._io.read(response)
            yield from self._io.release(response)
        _raise_for_status(response)
        return response

    def _get(self, path: str) -> Run:
        """A bare GET: no retries, the status as it is."""
        return (yield from self._io.send(self._http.build_request("GET", path)))

    def _ok(self, path: str) -> Run:
        """GET path answers 200 (False when the server cannot be reached)."""
        try:
            return (yield from self._get(path)).status_code == 200
        except httpx.TransportError:
            return False

    def _json(self, method: str, path: str, **kwargs) -> Run:
        return (yield from self._send(method, path, **kwargs)).json()

    def _event_stream(self, model: str | None, prompt: str | None, sampling: dict) -> Run:
        """/generate_stream opened: its response (streamed), to read with httpx-sse."""
        response = yield from self._send("POST", "/generate_stream", json=_generation_body(model, prompt, sampling),
                                         stream=True)
        content_type = response.headers.get("content-type", "").partition(";")[0]
        if "text/event-stream" not in content_type:  # what httpx-sse requires, as one of our errors
            yield from self._io.release(response)
            raise ServerError(response.status_code, f"expected an event stream, got {content_type!r}",
                              "/generate_stream")
        return response

    @call
    def close(self) -> None:
        yield from self._io.close()

    @call
    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        return (yield from self._send(method, path, **kwargs))

    @call
    def ready(self) -> bool:
        return (yield from self._ok("/readyz"))

    @call
    def models(self) -> list[dict]:
        return (yield from self._json("POST", "/models", json={}))["models"]

    @call
    def classify(self, pixels: Any, model: str = "fashion-cnn", top_k: int = 3) -> ClassifyResult:
        body = {"model": model, "pixels": _pixels(pixels), "top_k": top_k}
        return ClassifyResult.from_json((yield from self._json("POST", "/classify", json=body)))

    @call
    def classify_images(self, images: list[str | Path | bytes], model: str = "fashion-cnn",
                        top_k: int = 3) -> ClassifyResult:
        body = yield from self._json("POST", "/classify_image", files=_image_files(images),
                                     data={"model": model, "top_k": str(top_k)})
        return ClassifyResult.from_json(body)

    @call
    def classify_text(self, text: str | None = None, *, texts: list[str] | None = None,
                      model: str | None = None) -> TextResult:
        """One `text` or a list of `texts`; model may be left out when the server has one text classifier."""
        body = _text_body(text, texts, model)
        return TextResult.from_json((yield from self._json("POST", "/classify_text", json=body)))

    @call
    def generate(self, prompt: str | None = None, *, model: str | None = None, **sampling) -> Tune:
        """A whole folk tune. sampling: max_length, temperature, top_k, top_p, seed (same seed, same tune)."""
        body = _generation_body(model, prompt, sampling)
        return Tune.from_json((yield from self._json("POST", "/generate", json=body)))

    @call
    def render_midi(self, abc: str) -> bytes:
        """ABC notation -> a standard MIDI file (RequestError 422 when abc2midi cannot read it)."""
        return (yield from self._send("POST", "/render_midi", json={"abc": abc})).content


class Client(V2Calls, _Calls, method=sync_method):
    """The sync client: each call returns its result."""

    _transport = _Transport(httpx.Client, now, time.sleep, httpx.Response.read, httpx.Response.close, "close")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def generate_stream(self, prompt: str | None = None, *, model: str | None = None,
                        **sampling) -> Iterator[TuneEvent]:
        """The tune as it is written: a start event, piece events (`.text`), an end event with the tune.
        Leaving the loop early closes the connection, and the server stops generating."""
        with closing(run_sync(self._event_stream(model, prompt, sampling))) as response:
            for sse in EventSource(response).iter_sse():
                if sse.data:  # an event without data (a bare `retry:` or `id:`) says nothing of the tune
                    yield _tune_event(sse)


class AsyncClient(V2Calls, _Calls, method=async_method):
    """The async client: the same calls, each a coroutine to await."""

    _transport = _Transport(httpx.AsyncClient, awaiting, asyncio.sleep, httpx.Response.aread, httpx.Response.aclose,
                            "aclose")

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def generate_stream(self, prompt: str | None = None, *, model: str | None = None,
                              **sampling) -> AsyncIterator[TuneEvent]:
        """The same as `Client.generate_stream`, as an async iterator."""
        async with aclosing(await run_async(self._event_stream(model, prompt, sampling))) as response:
            async for sse in EventSource(response).aiter_sse():
                if sse.data:
                    yield _tune_event(sse)
