"""Python client for an edgestack server: sync (`Client`) and async (`AsyncClient`).

    from clients import Client
    with Client("http://localhost:3000") as c:
        result = c.classify_images(["shoe.png"], model="fashion-cnn")
        print(result.predictions[0].label)

Connections are reused; every call has a timeout; connection failures (not HTTP errors)
are retried with exponential back-off; a 4xx/5xx raises `RequestError`/`ServerError`
carrying the server's own message. The v2 / Open Inference Protocol calls (`v2_infer`,
`v2_model_metadata`, ...) come from clients/v2.py and work against any v2 server.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
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

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        for delay in [*self._delays(), None]:
            try:
                response = self._http.request(method, path, **kwargs)
                break
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if delay is None:
                    raise Unavailable(f"cannot reach {self.url}{path}: {exc}") from exc
                time.sleep(delay)
        _raise_for_status(response)
        return response

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

    async def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        for delay in [*self._delays(), None]:
            try:
                response = await self._http.request(method, path, **kwargs)
                break
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if delay is None:
                    raise Unavailable(f"cannot reach {self.url}{path}: {exc}") from exc
                await asyncio.sleep(delay)
        _raise_for_status(response)
        return response

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
