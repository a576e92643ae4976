"""A real `bentoml serve` process on a free port, real HTTP: good input and every kind of bad."""

import io
import subprocess
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import batches, serve
from training.data import images


@pytest.fixture(scope="module")
def test_digits():
    data = images.digits()
    return data.test.images[:16], data.test.labels[:16]


def png(pixels: np.ndarray, invert: bool = False) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(255 - pixels if invert else pixels).save(buf, "PNG")
    return buf.getvalue()


def error_of(response: httpx.Response) -> str:
    body = response.json()
    return (body[0] if isinstance(body, list) else body)["error"]


def test_health_readiness_and_metrics(server):
    assert httpx.get(server + "/livez").status_code == 200
    assert httpx.get(server + "/readyz").status_code == 200
    metrics = httpx.get(server + "/metrics").text
    assert "edgestack_batch_size" in metrics


def test_models_endpoint_reports_variant_and_provider(server):
    models = httpx.post(server + "/models", json={}).json()["models"]
    assert [m["name"] for m in models] == ["digits-cnn"]
    assert models[0]["variant"] == "int8" and models[0]["provider"] == "CPUExecutionProvider"


def test_classify_pixel_arrays_one_and_many(server, test_digits):
    pixels, labels = test_digits
    one = httpx.post(server + "/classify", json={"model": "digits-cnn", "pixels": pixels[0].tolist()}).json()
    assert len(one["predictions"]) == 1 and len(one["predictions"][0]["top_k"]) == 3
    many = httpx.post(server + "/classify", json={"pixels": pixels.tolist(), "top_k": 1}).json()
    predicted = [int(p["label"]) for p in many["predictions"]]
    assert np.mean(np.array(predicted) == labels) >= 0.8
    probs = [s["probability"] for s in one["predictions"][0]["top_k"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_classify_uploaded_png_and_dark_on_light_images(server, test_digits):
    pixels, labels = test_digits
    files = [("images", (f"{i}.png", png(p), "image/png")) for i, p in enumerate(pixels[:4])]
    files.append(("images", ("inverted.png", png(pixels[0], invert=True), "image/png")))
    response = httpx.post(server + "/classify_image", files=files, data={"model": "digits-cnn"})
    assert response.status_code == 200, response.text
    predicted = [p["label"] for p in response.json()["predictions"]]
    # a scan of dark ink on white paper is inverted to match the training data
    assert predicted[4] == predicted[0]


def test_concurrent_requests_are_batched_and_all_answered(server, test_digits):
    import asyncio

    pixels, _ = test_digits

    async def burst():
        async with httpx.AsyncClient(base_url=server, timeout=30) as client:
            replies = await asyncio.gather(*(client.post("/classify", json={"pixels": pixels[i % 16].tolist()})
                                             for i in range(48)))
        return replies

    calls, rows = batches(server, "digits-cnn")
    replies = asyncio.run(burst())
    assert all(r.status_code == 200 for r in replies)
    calls, rows = (after - before for after, before in zip(batches(server, "digits-cnn"), (calls, rows)))
    # the burst's 48 one-row requests went through in fewer ORT calls: they shared batches
    assert rows == 48 and calls < 48, (calls, rows)


BAD_JSON = [
    ("wrong shape", {"pixels": [[0] * 27] * 28}, 400, "must have shape"),
    ("ragged rows", {"pixels": [[0] * 28, [0] * 3]}, 400, "rectangular"),
    ("not numbers", {"pixels": [["a"] * 28] * 28}, 400, "rectangular nested list of numbers"),
    ("out of range", {"pixels": [[999] * 28] * 28}, 400, "0..255"),
    ("no input", {}, 400, "no input"),
    ("unknown model", {"model": "nope", "pixels": [[0] * 28] * 28}, 404, "unknown model 'nope'"),
    ("absurd top_k", {"pixels": [[0] * 28] * 28, "top_k": 50}, 400, "top_k must be between 1 and 10"),
    ("too many images", {"pixels": [[[0] * 28] * 28] * 65}, 413, "limit is 64"),
]


@pytest.mark.parametrize("case,body,status,message", BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_bad_json_input_gets_4xx_with_a_message(server, case, body, status, message):
    response = httpx.post(server + "/classify", json=body)
    assert response.status_code == status, response.text
    assert message in error_of(response)


def test_nan_is_refused(server):
    body = '{"pixels": [' + ",".join(["[" + ",".join(["NaN"] * 28) + "]"] * 28) + "]}"
    response = httpx.post(server + "/classify", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "NaN" in error_of(response)


def test_malformed_and_empty_bodies_are_400(server):
    for content in (b"", b"{not json", b"[1, 2"):
        response = httpx.post(server + "/classify", content=content, headers={"content-type": "application/json"})
        assert response.status_code == 400, (content, response.text)


@pytest.mark.parametrize("data,message", [(b"this is text, not an image", "not an image"),
                                          (b"", "empty"),
                                          (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "damaged or truncated")])
def test_bad_uploads_are_400(server, data, message):
    response = httpx.post(server + "/classify_image", files=[("images", ("x.png", data, "image/png"))])
    assert response.status_code == 400, response.text
    assert message in error_of(response)


def test_oversized_body_is_413_by_header_and_by_stream(server):
    big = b"0" * (1024 * 1024 + 10)
    response = httpx.post(server + "/classify", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "exceeds the limit of 1048576 bytes" in response.json()["error"]

    def chunks():  # no Content-Length: the middleware counts the streamed bytes
        for _ in range(20):
            yield b"0" * 65536

    response = httpx.post(server + "/classify", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_server_keeps_serving_after_bad_input(server, test_digits):
    pixels, _ = test_digits
    for _ in range(3):
        httpx.post(server + "/classify", content=b"garbage", headers={"content-type": "application/json"})
        httpx.post(server + "/classify_image", files=[("images", ("x.png", b"nope", "image/png"))])
    response = httpx.post(server + "/classify", json={"pixels": pixels[0].tolist()})
    assert response.status_code == 200
    assert httpx.get(server + "/readyz").status_code == 200


def test_server_refuses_to_start_on_a_tampered_artifact(tampered_root):
    with pytest.raises(RuntimeError, match="sha256 mismatch"):
        with serve(["digits-cnn"], {"EDGESTACK_ARTIFACTS": str(tampered_root)}, timeout=60):
            pass


def test_serving_code_never_imports_torch():
    code = ("import sys, serving.service, serving.image, clients; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
