import asyncio
import functools
import json
import time

import httpx
import numpy as np
import pytest

from clients import AsyncClient, ClassifyResult, Client, RequestError, ServerError, Unavailable
from cli import main
from tests.conftest import free_port
from training.data import images


@pytest.fixture(scope="module")
def digits_test():
    data = images.digits()
    return data.test.images[:8], data.test.labels[:8]


def test_sync_client_typed_results(server, digits_test):
    pixels, labels = digits_test
    with Client(server) as client:
        assert client.ready()
        result = client.classify(pixels, model="digits-cnn", top_k=2)
        assert isinstance(result, ClassifyResult) and result.variant == "int8"
        assert len(result.predictions) == 8 and len(result.predictions[0].top_k) == 2
        assert np.mean([int(p.label) == y for p, y in zip(result.predictions, labels)]) >= 0.75
        assert [m["name"] for m in client.models()] == ["digits-cnn"]


def test_async_client_concurrent_calls(server, digits_test):
    pixels, _ = digits_test

    async def go():
        async with AsyncClient(server) as client:
            return await asyncio.gather(*(client.classify(p, model="digits-cnn") for p in pixels))

    results = asyncio.run(go())
    assert len(results) == 8 and all(len(r.predictions) == 1 for r in results)


def test_client_error_carries_the_servers_message(server):
    with Client(server) as client:
        with pytest.raises(RequestError) as info:
            client.classify([[0] * 5], model="digits-cnn")
    assert info.value.status == 400 and "must have shape" in info.value.message


def test_client_retries_connection_errors_then_gives_up():
    port = free_port()  # nothing listens there
    with Client(f"http://127.0.0.1:{port}", retries=2, backoff=0.1, timeout=2) as client:
        started = time.time()
        with pytest.raises(Unavailable, match="cannot reach"):
            client.classify([[0] * 28] * 28)
    assert time.time() - started >= 0.3  # waited 0.1 + 0.2 between the three attempts


def test_predict_command_on_image_files(server, digits_test, tmp_path, capsys):
    from PIL import Image

    pixels, labels = digits_test
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(pixels[i]).save(paths[-1])
    assert main(["predict", "digits-cnn", *map(str, paths), "--url", server, "--top-k", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 and out[0].startswith(str(paths[0]))


def test_predict_command_reports_server_errors(server, tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    assert main(["predict", "digits-cnn", str(bad), "--url", server]) == 2
    assert "not an image" in capsys.readouterr().err


# -- without a server: the transports, the event stream and the v2 bodies --------------------

def test_async_client_retries_connection_errors_then_gives_up():
    port = free_port()

    async def go():
        async with AsyncClient(f"http://127.0.0.1:{port}", retries=2, backoff=0.1, timeout=2) as client:
            assert not await client.ready()
            await client.models()

    started = time.time()
    with pytest.raises(Unavailable, match="cannot reach"):
        asyncio.run(go())
    assert time.time() - started >= 0.3


def test_sync_and_async_clients_have_the_same_calls():
    import inspect

    calls = {n for n in dir(Client) if not n.startswith("_") and callable(getattr(Client, n))}
    assert calls == {n for n in dir(AsyncClient) if not n.startswith("_") and callable(getattr(AsyncClient, n))}
    for name in calls - {"generate_stream"}:
        assert not inspect.iscoroutinefunction(getattr(Client, name)) and inspect.iscoroutinefunction(
            getattr(AsyncClient, name)), name
        assert inspect.signature(getattr(Client, name)) == inspect.signature(getattr(AsyncClient, name)), name
    assert inspect.isasyncgenfunction(AsyncClient.generate_stream)


EVENTS = ('event: start\ndata: {"prompt": "X:1\\n", "seed": 1}\n\n: a comment\n\n'
          'event: piece\ndata: {"text": "ab"}\n\nretry: 10\n\nevent: end\ndata: {"tune": "X:1\\nab"}\n\n')


def _stream_server(request: httpx.Request) -> httpx.Response:
    """/generate_stream as the server writes it; seed 13 fails in-band, temperature 0 is refused, seed 99 is not SSE."""
    body = json.loads(request.content)
    if body.get("temperature") == 0:
        return httpx.Response(400, json={"error": "temperature must be > 0"})
    if body.get("seed") == 99:
        return httpx.Response(200, json={"tune": "?"})
    text = EVENTS if body.get("seed") != 13 else (EVENTS.split("event: piece")[0]
                                                   + 'event: error\ndata: {"error": "generation failed: boom"}\n\n')
    return httpx.Response(200, text=text, headers={"content-type": "text/event-stream; charset=utf-8"})


@pytest.fixture
def mocked_stream(monkeypatch):
    transport = httpx.MockTransport(_stream_server)
    for cls, http in ((Client, httpx.Client), (AsyncClient, httpx.AsyncClient)):
        mocked = cls._transport._replace(http=functools.partial(http, transport=transport))
        monkeypatch.setattr(cls, "_transport", mocked)


def test_event_stream_through_httpx_sse_sync_and_async(mocked_stream):
    want = [("start", ""), ("piece", "ab"), ("end", "")]
    with Client("http://edgestack.test") as client:
        assert [(e.kind, e.text) for e in client.generate_stream(seed=1)] == want
        with pytest.raises(ServerError, match="generation failed: boom") as caught:
            list(client.generate_stream(seed=13))
        assert caught.value.status == 500 and caught.value.path == "/generate_stream"
        with pytest.raises(RequestError, match="temperature must be > 0"):
            next(client.generate_stream(temperature=0))
        with pytest.raises(ServerError, match="expected an event stream, got 'application/json'"):
            next(client.generate_stream(seed=99))

    async def go():
        async with AsyncClient("http://edgestack.test") as client:
            events = [(e.kind, e.text) async for e in client.generate_stream(seed=1)]
            with pytest.raises(ServerError, match="generation failed: boom"):
                [e async for e in client.generate_stream(seed=13)]
            with pytest.raises(RequestError, match="temperature must be > 0"):
                [e async for e in client.generate_stream(temperature=0)]
            return events

    assert asyncio.run(go()) == want


def test_v2_bodies_through_tritonclient_read_as_the_server_reads_them():
    from clients.v2 import infer_request, infer_result
    from edgestack import v2protocol as v2

    inputs = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "ids": np.array([[1, 2]], dtype=np.int64),
              "text": np.array([b"caf\xc3\xa9", "tea"], dtype=object), "words": np.array(["a", "bc"])}
    for binary in (True, False):
        body, headers = infer_request(inputs, binary=binary, request_id="r1", parameters={"priority": 2})
        header, raw = v2.split_body(body, headers.get(v2.HEADER_LENGTH))
        decoded = v2.read_tensors(header["inputs"], raw)
        assert header["id"] == "r1" and header["parameters"] == ({"priority": 2, "binary_data_output": True}
                                                                 if binary else {"priority": 2})
        assert headers["content-type"] == ("application/octet-stream" if binary else "application/json")
        np.testing.assert_array_equal(decoded["x"], inputs["x"])
        assert decoded["text"].tolist() == ["café".encode(), b"tea"] and decoded["words"].tolist() == [b"a", b"bc"]

        entries, raws = zip(*(v2.tensor_entry(n, a, binary=binary) for n, a in decoded.items()))
        body, length = v2.join_body({"model_name": "m", "model_version": "3", "id": "r1", "outputs": list(entries)},
                                    [r for r in raws if r is not None])
        result = infer_result(httpx.Response(200, content=body,
                                             headers={v2.HEADER_LENGTH: str(length)} if length else {}))
        assert (result.model_name, result.model_version, result.id) == ("m", "3", "r1")
        np.testing.assert_array_equal(result.outputs["ids"], inputs["ids"])
        assert result.outputs["ids"].dtype == np.int64 and result.outputs["text"].tolist() == ["café".encode(), b"tea"]
