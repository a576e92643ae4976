"""The v2 protocol over gRPC (serving/grpc_v2.py) on a real server: `edgestack serve` with a
gRPC port beside HTTP, the real tritonclient.grpc (sync and aio) for every model of the v2
tests' artifacts, answers equal to the REST route's and to in-process ORT, our error
messages under INVALID_ARGUMENT / NOT_FOUND, and one batcher shared by both protocols.
"""

from __future__ import annotations

import asyncio
import json

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.grpc.aio as tg_aio
import tritonclient.http as tc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from cli.v2check import triton_grpc_inputs, triton_inputs
from tests.conftest import batches
from tests.integration.test_v2 import (  # noqa: F401 (v2_artifacts: the same session fixture)
    MAX_ITEMS,
    MODELS,
    digit_pixels,
    image_tensor,
    v2_artifacts,
    v2_server,
)


@pytest.fixture(scope="module")
def urls(v2_server):  # noqa: F811
    """(HTTP url, gRPC host:port) of the v2 tests' server (test_v2.py)."""
    return v2_server


@pytest.fixture(scope="module")
def stub(urls):
    with grpc.insecure_channel(urls[1]) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def test_v2_check_matrix_over_grpc_passes_for_every_model(urls, v2_artifacts, independent_v2_check, tmp_path,  # noqa: F811
                                                       capsys):
    from cli import main

    path = tmp_path / "matrix.json"
    assert main(["v2-check", "--protocol", "grpc", "--url", urls[1], "--artifacts", str(v2_artifacts[0]),
                 "--json", str(path)]) == 0
    matrix = json.loads(path.read_text())["matrix"]
    assert set(matrix) == set(MODELS)  # listed by the repository index
    assert {value for cells in matrix.values() for value in cells.values()} == {"pass"}
    capsys.readouterr()
    assert main(["v2-check", "no-such-model", "--protocol", "grpc", "--url", urls[1]]) == 1
    assert "unknown model 'no-such-model'" in capsys.readouterr().out


def test_grpc_and_rest_give_the_same_answers(urls, v2_artifacts, digit_pixels):  # noqa: F811
    art = v2_artifacts[1]["digits-cnn"]
    x = image_tensor(art, digit_pixels[:3])
    with tg.InferenceServerClient(urls[1]) as client:
        meta = client.get_model_metadata("digits-cnn", as_json=True)
        raw = client.infer("digits-cnn", triton_grpc_inputs(tg, {"images": x})).as_numpy("logits")
        top = client.infer("digits-cnn", triton_grpc_inputs(tg, {"images": x}),
                           outputs=[tg.InferRequestedOutput("logits", class_count=2)]).as_numpy("logits")
        config = client.get_model_config("digits-cnn", as_json=True)["config"]
    with tc.InferenceServerClient(urls[0].removeprefix("http://")) as client:
        rest = client.infer("digits-cnn", triton_inputs(tc, {"images": x}, True)).as_numpy("logits")
    np.testing.assert_array_equal(raw, rest)
    assert meta["versions"] == [art.version] and meta["inputs"][0]["datatype"] == "FP32"
    assert config["parameters"]["variant"]["string_value"] in art.manifest["variants"]
    assert top.shape == (3, 2)  # the classification extension: "score:index:label", best first
    assert [int(row[0].decode().split(":")[1]) for row in top] == list(raw.argmax(axis=1))


def abort_of(call, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args)
    return caught.value


def infer_request(model="digits-cnn", shape=(1, 1, 28, 28), datatype="FP32", raw: bytes | None = None, **kw):
    tensor = pb.ModelInferRequest.InferInputTensor(name=kw.pop("name", "images"), datatype=datatype, shape=shape)
    request = pb.ModelInferRequest(model_name=model, inputs=[tensor], **kw)
    if raw is None:
        raw = np.zeros(shape, np.float32).tobytes()
    request.raw_input_contents.append(raw)
    return request


@pytest.mark.parametrize("request_, code, message", [
    (infer_request("no-such-model"), grpc.StatusCode.NOT_FOUND, "unknown model 'no-such-model'"),
    (infer_request(model_version="99"), grpc.StatusCode.NOT_FOUND, "has no version '99'"),
    (infer_request(shape=(1, 28, 28)), grpc.StatusCode.INVALID_ARGUMENT, "must have shape"),
    (infer_request(raw=b"\0" * 10), grpc.StatusCode.INVALID_ARGUMENT, "needs 3136 bytes, got 10"),
    (infer_request(datatype="INT64", raw=np.zeros(784, np.int64).tobytes()), grpc.StatusCode.INVALID_ARGUMENT,
     "is FP32, got INT64"),
    (infer_request(name="pixels"), grpc.StatusCode.INVALID_ARGUMENT, "unexpected ['pixels']"),
    (infer_request(datatype="FP99"), grpc.StatusCode.INVALID_ARGUMENT, "unknown datatype 'FP99'"),
    (infer_request(raw=np.full(784, np.nan, np.float32).tobytes()), grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
    (infer_request(shape=(MAX_ITEMS + 1, 1, 28, 28)), grpc.StatusCode.RESOURCE_EXHAUSTED, "the limit is"),
], ids=["unknown-model", "unknown-version", "shape", "raw-size", "dtype", "input-name", "datatype", "nan",
        "too-many"])
def test_grpc_errors_carry_our_messages(stub, request_, code, message):
    error = abort_of(stub.ModelInfer, request_)
    assert error.code() == code and message in error.details(), (error.code(), error.details())


def test_typed_contents_and_bytes(stub, urls):
    # typed contents are checked like JSON `data`: a count that does not match the shape is refused
    tensor = pb.ModelInferRequest.InferInputTensor(name="images", datatype="FP32", shape=[1, 1, 28, 28])
    tensor.contents.fp32_contents.extend([0.0] * 783)
    error = abort_of(stub.ModelInfer, pb.ModelInferRequest(model_name="digits-cnn", inputs=[tensor]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "needs 784 element(s)" in error.details()
    text_models = [m for m in MODELS if m.startswith("sentiment")]
    assert text_models, "no text model among the v2 test artifacts"
    for model in text_models:  # BYTES, typed and raw: the same probabilities; invalid UTF-8 refused
        texts = np.array([b"a warm, funny film", b"dull and far too long"], dtype=object)
        with tg.InferenceServerClient(urls[1]) as client:
            raw = client.infer(model, triton_grpc_inputs(tg, {"text": texts})).as_numpy("probabilities")
        tensor = pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[2])
        tensor.contents.bytes_contents.extend(list(texts))
        typed = stub.ModelInfer(pb.ModelInferRequest(model_name=model, inputs=[tensor]))
        got = np.frombuffer(typed.raw_output_contents[0], np.float32).reshape(raw.shape)
        np.testing.assert_allclose(got, raw, atol=2e-2)
        bad = pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[1])
        bad.contents.bytes_contents.append(b"\xff\xfe")
        error = abort_of(stub.ModelInfer, pb.ModelInferRequest(model_name=model, inputs=[bad]))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "not valid UTF-8" in error.details()


def test_grpc_shares_the_batcher_and_keeps_serving(urls, v2_artifacts, digit_pixels):  # noqa: F811
    """Concurrent aio gRPC requests go through the same batcher the HTTP route feeds (its histogram
    on /metrics counts every one of their rows), and a refused call leaves the server serving.
    Whether they share ORT calls depends on how they arrive (test_server.py shows batching)."""
    art = v2_artifacts[1]["digits-cnn"]
    x = image_tensor(art, digit_pixels[:1])
    before = batches(urls[0], "digits-cnn")

    async def go():
        async with tg_aio.InferenceServerClient(urls[1]) as client:
            with pytest.raises(InferenceServerException, match="unknown model"):
                await client.infer("nope", triton_grpc_inputs(tg_aio, {"images": x}))
            return await asyncio.gather(*(client.infer("digits-cnn", triton_grpc_inputs(tg_aio, {"images": x}))
                                          for _ in range(24)))

    results = asyncio.run(go())
    first = results[0].as_numpy("logits")
    assert all(np.array_equal(r.as_numpy("logits"), first) for r in results)
    calls, rows = (a - b for a, b in zip(batches(urls[0], "digits-cnn"), before))
    # every one of the 24 rows went through the HTTP server's batcher
    assert rows == 24 and 1 <= calls <= 24, (calls, rows)
