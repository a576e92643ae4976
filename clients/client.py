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
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from clients.v2 import AsyncV2Mixin, V2Mixin

DEFAULT_URL = "http://localhost:3000"


class EdgestackError(Exception):
    """Base of every client error."""


class Unavailable(EdgestackError):
    """The server could not be reached (after the retries)."""


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
    def from_json(cls, body: dict) -> "ClassifyResult":
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
    def from_json(cls, body: dict) -> "TextResult":
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
    def from_json(cls, body: dict) -> "Tune":
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


class _EventReader:
    """text/event-stream lines -> TuneEvents; an in-band `error` event raises ServerError."""

    def __init__(self, path: str):
        self.path, self.kind, self.data = path, "message", []

    def feed(self, line: str) -> TuneEvent | None:
        if line.startswith("event:"):
            self.kind = line[6:].strip()
        elif line.startswith("data:"):
            self.data.append(line[5:].strip())
        elif not line and self.data:  # a blank line ends an event
            kind, data = self.kind, json.loads("\n".join(self.data))
            self.kind, self.data = "message", []
            if kind == "error":
                raise ServerError(500, data.get("error", str(data)), self.path)  # in-band: the header said 200
            return TuneEvent(kind, data)
        return None


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
        if isinstance(body, list) and body:  # BentoML wraps raised errors in a list
            body = body[0]
        message = body.get("error") or body.get("detail") or body.get("message") or str(body)
    except ValueError:
        message = response.text.strip() or response.reason_phrase
    cls = RequestError if response.status_code < 500 else ServerError
    raise cls(response.status_code, str(message), str(response.request.url.path))


def _image_files(images: list[str | Path | bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    files = []
    for i, image in enumerate(images):
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        name = f"image{i}" if isinstance(image, bytes) else Path(image).name
        files.append(("images", (name, data, "application/octet-stream")))
    return files


def _pixels(pixels: Any) -> list:
    return np.asarray(pixels).tolist() if isinstance(pixels, np.ndarray) else pixels


class _Base:
    def __init__(self, url: str = DEFAULT_URL, *, timeout: float = 30.0, retries: int = 3, backoff: float = 0.2):
        self.url, self.timeout, self.retries, self.backoff = url.rstrip("/"), timeout, retries, backoff

    def _delays(self):
        return [self.backoff * (2 ** attempt) for attempt in range(self.retries)]


class Client(V2Mixin, _Base):
    def __init__(self, url: str = DEFAULT_URL, **kwargs):
        super().__init__(url, **kwargs)
        self._http = httpx.Client(base_url=self.url, timeout=self.timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, *, stream: bool = False, **kwargs) -> httpx.Response:
        request = self._http.build_request(method, path, **kwargs)
        for delay in [*self._delays(), None]:
            try:
                response = self._http.send(request, stream=stream)
                break
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if delay is None:
                    raise Unavailable(f"cannot reach {self.url}{path}: {exc}") from exc
                time.sleep(delay)
        if stream and response.status_code >= 400:
            response.read()
            response.close()
        _raise_for_status(response)
        return response

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        return self._send(method, path, **kwargs)

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def models(self) -> list[dict]:
        return self.request("POST", "/models", json={}).json()["models"]

    def classify(self, pixels: Any, model: str = "fashion-cnn", top_k: int = 3) -> ClassifyResult:
        body = {"model": model, "pixels": _pixels(pixels), "top_k": top_k}
        return ClassifyResult.from_json(self.request("POST", "/classify", json=body).json())

    def classify_images(self, images: list[str | Path | bytes], model: str = "fashion-cnn",
                        top_k: int = 3) -> ClassifyResult:
        response = self.request("POST", "/classify_image", files=_image_files(images),
                                data={"model": model, "top_k": str(top_k)})
        return ClassifyResult.from_json(response.json())

    def classify_text(self, text: str | None = None, *, texts: list[str] | None = None,
                      model: str | None = None) -> TextResult:
        """One `text` or a list of `texts`; model may be left out when the server has one text classifier."""
        return TextResult.from_json(self.request("POST", "/classify_text", json=_text_body(text, texts, model)).json())

    def generate(self, prompt: str | None = None, *, model: str | None = None, **sampling) -> Tune:
        """A whole folk tune. sampling: max_length, temperature, top_k, top_p, seed (same seed, same tune)."""
        return Tune.from_json(self.request("POST", "/generate", json=_generation_body(model, prompt, sampling)).json())

    def generate_stream(self, prompt: str | None = None, *, model: str | None = None,
                        **sampling) -> Iterator[TuneEvent]:
        """The tune as it is written: a start event, piece events (`.text`), an end event with the tune.
        Leaving the loop early closes the connection, and the server stops generating."""
        response = self._send("POST", "/generate_stream", json=_generation_body(model, prompt, sampling), stream=True)
        reader = _EventReader("/generate_stream")
        try:
            for line in response.iter_lines():
                event = reader.feed(line)
                if event is not None:
                    yield event
        finally:
            response.close()

    def render_midi(self, abc: str) -> bytes:
        """ABC notation -> a standard MIDI file (RequestError 422 when abc2midi cannot read it)."""
        return self.request("POST", "/render_midi", json={"abc": abc}).content


class AsyncClient(AsyncV2Mixin, _Base):
    def __init__(self, url: str = DEFAULT_URL, **kwargs):
        super().__init__(url, **kwargs)
        self._http = httpx.AsyncClient(base_url=self.url, timeout=self.timeout)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, *, stream: bool = False, **kwargs) -> httpx.Response:
        request = self._http.build_request(method, path, **kwargs)
        for delay in [*self._delays(), None]:
            try:
                response = await self._http.send(request, stream=stream)
                break
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if delay is None:
                    raise Unavailable(f"cannot reach {self.url}{path}: {exc}") from exc
                await asyncio.sleep(delay)
        if stream and response.status_code >= 400:
            await response.aread()
            await response.aclose()
        _raise_for_status(response)
        return response

    async def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        return await self._send(method, path, **kwargs)

    async def ready(self) -> bool:
        try:
            return (await self._http.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    async def models(self) -> list[dict]:
        return (await self.request("POST", "/models", json={})).json()["models"]

    async def classify(self, pixels: Any, model: str = "fashion-cnn", top_k: int = 3) -> ClassifyResult:
        body = {"model": model, "pixels": _pixels(pixels), "top_k": top_k}
        return ClassifyResult.from_json((await self.request("POST", "/classify", json=body)).json())

    async def classify_images(self, images: list[str | Path | bytes], model: str = "fashion-cnn",
                              top_k: int = 3) -> ClassifyResult:
        response = await self.request("POST", "/classify_image", files=_image_files(images),
                                      data={"model": model, "top_k": str(top_k)})
        return ClassifyResult.from_json(response.json())

    async def classify_text(self, text: str | None = None, *, texts: list[str] | None = None,
                            model: str | None = None) -> TextResult:
        response = await self.request("POST", "/classify_text", json=_text_body(text, texts, model))
        return TextResult.from_json(response.json())

    async def generate(self, prompt: str | None = None, *, model: str | None = None, **sampling) -> Tune:
        response = await self.request("POST", "/generate", json=_generation_body(model, prompt, sampling))
        return Tune.from_json(response.json())

    async def generate_stream(self, prompt: str | None = None, *, model: str | None = None,
                              **sampling) -> AsyncIterator[TuneEvent]:
        response = await self._send("POST", "/generate_stream", json=_generation_body(model, prompt, sampling),
                                    stream=True)
        reader = _EventReader("/generate_stream")
        try:
            async for line in response.aiter_lines():
                event = reader.feed(line)
                if event is not None:
                    yield event
        finally:
            await response.aclose()

    async def render_midi(self, abc: str) -> bytes:
        return (await self.request("POST", "/render_midi", json={"abc": abc})).content
