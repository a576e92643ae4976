"""The Open Inference Protocol (v2) on a real server: the real, unmodified tritonclient
(sync and async, binary and JSON tensors) for every model that has an artifact fixture,
outputs compared with a plain in-process ONNX Runtime session on the artifact's files
(tests/reference.py: none of the server's code); then every kind of malformed
request over raw HTTP, each answered with a 4xx JSON error, and the server still serving.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib
import importlib.util
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as tc
import tritonclient.http.aio as tc_aio
from tritonclient.utils import InferenceServerException

from edgestack import artifact, registry
from edgestack import v2protocol as v2
from cli import v2check
from cli.v2check import triton_inputs
from serving.v2 import tensor_specs
from tests import conftest
from edgestack.serverproc import free_port
from tests.conftest import serve
from tests.reference import plain_reference
from training.data import images

# Extension point: served name -> how these tests get a small real artifact of it: a session
# fixture of tests/conftest.py ("fixture:NAME", copied), or "module:ATTR", the tiny build
# overrides a family's own tests use (built in the session's artifacts folder, as those tests
# build them, then copied). The copies live in a private artifacts folder. A model joins the
# compatibility matrix (and tests/integration/test_triton_export.py) once it is registered; a source
# that does not exist is an error, not a smaller matrix.
ARTIFACTS = {
    "digits-cnn": "fixture:digits_artifact",
    "folk-lstm": "tests.integration.test_folk_lstm:TINY",
    "sentiment-tiny": "tests.integration.test_batch_text:TINY_TEXT",
}


def _available(model: str, source: str) -> bool:
    if model not in registry.MODELS:
        return False
    kind, _, name = source.partition(":")
    found = hasattr(conftest, name) if kind == "fixture" else importlib.util.find_spec(kind) is not None
    if not found:  # a registered model whose test source moved: fail here, never shrink the matrix quietly
        raise LookupError(f"tests/integration/test_v2.py ARTIFACTS[{model!r}] = {source!r} does not exist")
    return True


MODELS = [m for m, source in ARTIFACTS.items() if _available(m, source)]
MAX_ITEMS = 16


@pytest.fixture(scope="session")
def v2_artifacts(request, artifacts_root, tmp_path_factory) -> tuple[Path, dict]:
    """(artifacts folder, {model: Artifact}) for every model in MODELS: copies of the session's
    builds (the same tiny configs the family tests build in the session's artifacts folder, so
    each is trained once per session), in a folder of their own."""
    from export.build import build

    root = tmp_path_factory.mktemp("v2-artifacts")
    built = {}
    for model in MODELS:
        kind, _, name = ARTIFACTS[model].partition(":")
        if kind == "fixture":
            source = request.getfixturevalue(name)
        else:
            source = build(model, getattr(importlib.import_module(kind), name), root=artifacts_root, progress=False)
        shutil.copytree(source.path, root / model / source.version)
        built[model] = artifact.load(root / model / source.version)
    return root, built


@pytest.fixture(scope="module")
def built(v2_artifacts) -> dict:
    return v2_artifacts[1]


@pytest.fixture(scope="session")
def v2_server(v2_artifacts):
    """(HTTP url, gRPC host:port) of one server of every model in MODELS, for the v2 tests over
    HTTP (here) and gRPC (test_grpc.py)."""
    grpc_port = free_port()
    env = {"EDGESTACK_ARTIFACTS": str(v2_artifacts[0]), "EDGESTACK_MAX_BODY_BYTES": str(1024 * 1024),
           "EDGESTACK_MAX_ITEMS": str(MAX_ITEMS), "EDGESTACK_GRPC_PORT": str(grpc_port)}
    with serve(MODELS, env) as (url, _):
        yield url, f"localhost:{grpc_port}"


@pytest.fixture(scope="module")
def v2_url(v2_server):
    return v2_server[0]


@pytest.fixture(scope="module")
def digit_pixels():
    return images.digits().test.images[:8]


def image_tensor(art, pixels: np.ndarray) -> np.ndarray:
    pre = art.manifest["preprocessing"]
    return ((pixels.astype(np.float32) * pre["scale"] - pre["mean"]) / pre["std"])[:, None].astype(np.float32)


def example_inputs(art, pixels: np.ndarray, batch: int = 4) -> dict[str, np.ndarray]:
    """Real digit images for image models; for the others, what v2-check sends: values their
    metadata admits (sample sentences for BYTES, small ids for integers)."""
    if art.task == "image-classification":
        return {art.manifest["inputs"][0]["name"]: image_tensor(art, pixels[:batch])}
    return v2check.example_inputs(tensor_specs(art.manifest["inputs"]), batch)


def tolerance(art) -> float:
    return v2check.tolerance(art.task)


def assert_outputs_match(result, expected: dict[str, np.ndarray], atol: float = 1e-4) -> None:
    v2check.same_outputs({name: result.as_numpy(name) for name in expected}, expected, atol)


def host(url: str) -> str:
    return url.removeprefix("http://")


# ------------------------------------------------------------------------ tritonclient, sync

def test_server_health_and_metadata_through_tritonclient(v2_url):
    with tc.InferenceServerClient(host(v2_url)) as client:
        assert client.is_server_live() and client.is_server_ready()
        meta = client.get_server_metadata()
        assert meta["name"] == "edgestack" and "binary_tensor_data" in meta["extensions"]
        assert not client.is_model_ready("no-such-model")
        with pytest.raises(InferenceServerException) as info:
            client.get_model_metadata("no-such-model")
        assert info.value.status() == "404" and "unknown model 'no-such-model'" in info.value.message()


@pytest.mark.parametrize("model", MODELS)
def test_model_ready_and_metadata(v2_url, built, model):
    art = built[model]
    with tc.InferenceServerClient(host(v2_url)) as client:
        assert client.is_model_ready(model) and client.is_model_ready(model, art.version)
        assert not client.is_model_ready(model, str(int(art.version) + 100))
        meta = client.get_model_metadata(model)
        assert client.get_model_metadata(model, art.version) == meta
    assert meta["name"] == model and meta["versions"] == [art.version]
    for kind in ("inputs", "outputs"):
        want = [{"name": t["name"], "datatype": v2.datatype(t["dtype"]).v2, "shape": t["shape"]}
                for t in art.manifest[kind]]
        assert meta[kind] == want
    if art.task == "image-classification":
        assert meta["inputs"][0] == {"name": "images", "datatype": "FP32", "shape": [-1, 1, 28, 28]}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", MODELS)
def test_infer_sync_matches_in_process_ort(v2_url, built, digit_pixels, model, binary):
    art = built[model]
    feeds = example_inputs(art, digit_pixels)
    with tc.InferenceServerClient(host(v2_url)) as client:
        variant = client.get_model_metadata(model)["parameters"]["variant"]
        # binary=False: JSON inputs, and JSON outputs asked for by name (tritonclient asks
        # for binary outputs whenever no output is named)
        outputs = None if binary else [tc.InferRequestedOutput(o["name"], binary_data=False)
                                       for o in art.manifest["outputs"]]
        result = client.infer(model, triton_inputs(tc, feeds, binary), outputs=outputs, request_id="req-7")
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_name"] == model
    assert all(("data" in o) != binary for o in response["outputs"])
    assert_outputs_match(result, plain_reference(art, variant, feeds), tolerance(art))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", MODELS)
def test_infer_async_matches_in_process_ort(v2_url, built, digit_pixels, model, binary):
    art = built[model]
    feeds = [example_inputs(art, digit_pixels[i:], batch=1 + i % 3) for i in range(4)]

    async def go():
        async with tc_aio.InferenceServerClient(host(v2_url)) as client:
            assert await client.is_server_live() and await client.is_server_ready()
            assert await client.is_model_ready(model)
            meta = await client.get_model_metadata(model)
            outputs = None if binary else [tc_aio.InferRequestedOutput(o["name"], binary_data=False)
                                           for o in art.manifest["outputs"]]
            results = await asyncio.gather(*(client.infer(model, triton_inputs(tc_aio, f, binary), outputs=outputs)
                                             for f in feeds))
            return meta, results

    meta, results = asyncio.run(go())
    assert [i["name"] for i in meta["inputs"]] == [i["name"] for i in art.manifest["inputs"]]
    for f, result in zip(feeds, results):
        assert_outputs_match(result, plain_reference(art, meta["parameters"]["variant"], f), tolerance(art))


# ------------------------------------------------------------------------ protocol details

def test_requested_outputs_classification_fp16_and_compression(v2_url, built, digit_pixels):
    art = built["digits-cnn"]
    x = image_tensor(art, digit_pixels[:3])
    with tc.InferenceServerClient(host(v2_url)) as client:
        plain = client.infer("digits-cnn", triton_inputs(tc, {"images": x}, True)).as_numpy("logits")
        # classification extension: "score:index:label", best first
        top = client.infer("digits-cnn", triton_inputs(tc, {"images": x}, True),
                           outputs=[tc.InferRequestedOutput("logits", class_count=2)]).as_numpy("logits")
        assert top.shape == (3, 2)
        for row, scores in zip(top, plain):
            score, index, label = row[0].decode().split(":")
            assert int(index) == scores.argmax() and label == art.manifest["labels"][int(index)]
            assert float(score) == pytest.approx(scores.max(), abs=1e-5)
        # FP16 data for the FP32 input is widened exactly: same as sending the rounded values as FP32
        half = x.astype(np.float16)
        got = client.infer("digits-cnn", triton_inputs(tc, {"images": half}, True)).as_numpy("logits")
        want = client.infer("digits-cnn", triton_inputs(tc, {"images": half.astype(np.float32)}, True)).as_numpy("logits")
        np.testing.assert_array_equal(got, want)
        # compressed request bodies
        for algorithm in ("gzip", "deflate"):
            squeezed = client.infer("digits-cnn", triton_inputs(tc, {"images": x}, True),
                                    request_compression_algorithm=algorithm).as_numpy("logits")
            np.testing.assert_allclose(squeezed, plain, rtol=1e-5, atol=1e-5)




# ------------------------------------------------------------------------ malformed requests

def digits_request(x: np.ndarray | None = None, **overrides) -> dict:
    x = np.zeros((1, 1, 28, 28), np.float32) if x is None else x
    tensor = {"name": "images", "datatype": "FP32", "shape": list(x.shape), "data": x.reshape(-1).tolist()}
    tensor.update(overrides)
    return {"inputs": [tensor]}


def binary_body(x: np.ndarray, *, declared: int | None = None, cut: int = 0, extra: bytes = b"",
                header_length: str | None = None):
    raw = x.astype(np.float32).tobytes()
    header = json.dumps({"inputs": [{"name": "images", "datatype": "FP32", "shape": list(x.shape),
                                     "parameters": {"binary_data_size": declared or len(raw)}}]}).encode()
    body = header + raw[:len(raw) - cut] + extra
    return body, {v2.HEADER_LENGTH: header_length or str(len(header))}


ZEROS = np.zeros((1, 1, 28, 28), np.float32)
INFER = "/v2/models/digits-cnn/infer"
MALFORMED = [
    # (case, path, json body | (bytes, headers), status, part of the error message)
    ("unknown model", "/v2/models/nope/infer", digits_request(), 404, "unknown model 'nope'"),
    ("unknown version", "/v2/models/digits-cnn/versions/99/infer", digits_request(), 404, "no version '99'"),
    ("no inputs", INFER, {"inputs": []}, 400, "non-empty list"),
    ("missing input", INFER, {"inputs": [{**digits_request()["inputs"][0], "name": "pixels"}]}, 400,
     "missing ['images']"),
    ("extra input", INFER, {"inputs": digits_request()["inputs"] + [
        {"name": "mask", "datatype": "FP32", "shape": [1], "data": [1.0]}]}, 400, "unexpected ['mask']"),
    ("input given twice", INFER, {"inputs": digits_request()["inputs"] * 2}, 400, "given twice"),
    ("wrong datatype", INFER, digits_request(datatype="INT64", data=[0] * 784), 400, "is FP32, got INT64"),
    ("unknown datatype", INFER, digits_request(datatype="FLOAT"), 400, "unknown datatype 'FLOAT'"),
    ("strings for FP32", INFER, digits_request(data=["a"] * 784), 400, "must be numbers"),
    ("shape vs data length", INFER, digits_request(shape=[2, 1, 28, 28]), 400, "needs 1568 element(s), `data` holds 784"),
    ("shape the model refuses", INFER, digits_request(np.zeros((1, 1, 27, 29), np.float32)), 400,
     "must have shape [-1, 1, 28, 28]"),
    ("negative dimension", INFER, digits_request(shape=[-1, 1, 28, 28]), 400, "non-negative integers"),
    ("NaN", INFER, (json.dumps(digits_request(data=[float("nan")] * 784)).encode(), {}), 400, "NaN"),
    ("too many items", INFER, digits_request(np.zeros((MAX_ITEMS + 1, 1, 28, 28), np.float32)), 413,
     f"limit is {MAX_ITEMS}"),
    ("unknown output", INFER, {**digits_request(), "outputs": [{"name": "probs"}]}, 400, "no output 'probs'"),
    ("id not a string", INFER, {**digits_request(), "id": 5}, 400, "`id` must be a string"),
    ("binary size > body", INFER, binary_body(ZEROS, cut=16), 400, "runs past the end of the body"),
    ("binary size < body", INFER, binary_body(ZEROS, extra=b"\0" * 8), 400, "holds 3144 bytes but"),
    ("binary size vs shape", INFER, binary_body(ZEROS, declared=3000, cut=136), 400, "needs 3136 bytes, got 3000"),
    ("header length > body", INFER, binary_body(ZEROS, header_length="99999"), 400, "but the body has"),
    ("header length not a number", INFER, binary_body(ZEROS, header_length="ten"), 400, "must be an integer"),
    ("malformed JSON", INFER, (b'{"inputs": [', {}), 400, "malformed JSON"),
    ("JSON not an object", INFER, (b"[1, 2]", {}), 400, "must be a JSON object"),
    ("empty body", INFER, (b"", {}), 400, "empty body"),
    ("bad gzip", INFER, (b"not gzip at all", {"content-encoding": "gzip"}), 400, "not valid gzip"),
    ("unknown encoding", INFER, (gzip.compress(b"{}"), {"content-encoding": "br"}), 415, "not supported"),
]


@pytest.mark.parametrize("case,path,body,status,message", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_request_gets_a_4xx_json_error(v2_url, case, path, body, status, message):
    if isinstance(body, dict):
        response = httpx.post(v2_url + path, json=body)
    else:
        response = httpx.post(v2_url + path, content=body[0], headers=body[1])
    assert response.status_code == status, response.text
    assert message in response.json()["error"], response.json()


def test_wrong_method_and_oversized_body_are_json_errors(v2_url):
    response = httpx.get(v2_url + INFER)
    assert response.status_code == 405 and "Method Not Allowed" in response.json()["error"]
    response = httpx.post(v2_url + INFER, content=b" " * (1024 * 1024 + 1))
    assert response.status_code == 413 and "exceeds the limit" in response.json()["error"]


def test_server_keeps_serving_after_malformed_requests(v2_url, built, digit_pixels):
    for _, path, body, _, _ in MALFORMED:
        if isinstance(body, dict):
            httpx.post(v2_url + path, json=body)
        else:
            httpx.post(v2_url + path, content=body[0], headers=body[1])
    with tc.InferenceServerClient(host(v2_url)) as client:
        assert client.is_server_ready() and client.is_model_ready("digits-cnn")
        x = image_tensor(built["digits-cnn"], digit_pixels[:2])
        assert client.infer("digits-cnn", triton_inputs(tc, {"images": x}, True)).as_numpy("logits").shape == (2, 10)


# ------------------------------------------------------------------------ our client, v2 path

def test_client_v2_calls_sync_and_async(v2_url, built, digit_pixels):
    from clients import AsyncClient, Client, RemoteSession, RequestError

    art = built["digits-cnn"]
    x = image_tensor(art, digit_pixels[:5])
    want = plain_reference(art, "int8", {"images": x})["logits"]
    with Client(v2_url) as client:
        assert client.v2_live() and client.v2_ready() and client.v2_model_ready("digits-cnn")
        assert not client.v2_model_ready("digits-cnn", "99")
        assert client.v2_server_metadata()["name"] == "edgestack"
        assert client.v2_model_hints("digits-cnn")["labels"] == art.manifest["labels"]
        for binary in (True, False):
            result = client.v2_infer("digits-cnn", {"images": x}, binary=binary, request_id="r1",
                                     outputs=None if binary else ["logits"])
            assert result.id == "r1" and result.model_version == art.version
            np.testing.assert_allclose(result.outputs["logits"], want, rtol=1e-4, atol=1e-4)
        session = RemoteSession(client, "digits-cnn")
        assert [i.name for i in session.get_inputs()] == ["images"] and session.get_inputs()[0].type == "tensor(float)"
        np.testing.assert_allclose(session.run(None, {"images": x})[0], want, rtol=1e-4, atol=1e-4)
        with pytest.raises(RequestError) as info:
            client.v2_infer("digits-cnn", {"images": x.astype(np.int64)})
        assert info.value.status == 400 and "is FP32, got INT64" in info.value.message
        with pytest.raises(RequestError) as info:
            client.v2_model_metadata("nope")
        assert info.value.status == 404 and "unknown model 'nope'" in info.value.message

    async def go():
        async with AsyncClient(v2_url) as client:
            assert await client.v2_ready() and await client.v2_model_ready("digits-cnn")
            return await asyncio.gather(*(client.v2_infer("digits-cnn", {"images": x[i:i + 1]}) for i in range(5)))

    rows = np.concatenate([r.outputs["logits"] for r in asyncio.run(go())])
    np.testing.assert_allclose(rows, want, rtol=1e-4, atol=1e-4)


def test_predict_command_v2_agrees_with_the_rest_path(v2_url, digit_pixels, tmp_path, capsys):
    from PIL import Image

    from cli import main

    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"digit{i}.png"))
        Image.fromarray(255 - digit_pixels[i] if i == 3 else digit_pixels[i]).save(paths[-1])  # one dark-on-light
    answers = {}
    for protocol in ("rest", "v2"):
        assert main(["predict", "digits-cnn", *paths, "--url", v2_url, "--json", "--protocol", protocol]) == 0
        answers[protocol] = json.loads(capsys.readouterr().out)
    assert [a["label"] for a in answers["v2"]] == [a["label"] for a in answers["rest"]]
    for v2_answer, rest_answer in zip(answers["v2"], answers["rest"]):
        assert v2_answer["input"] == rest_answer["input"]
        assert v2_answer["top_k"][0]["probability"] == pytest.approx(rest_answer["top_k"][0]["probability"], abs=1e-5)
    np.save(tmp_path / "batch.npy", digit_pixels[:6])
    assert main(["predict", "digits-cnn", str(tmp_path / "batch.npy"), "--url", v2_url, "--protocol", "v2",
                 "--limit", "5"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 5


# ------------------------------------------------------------------------ edgestack v2-check

def test_v2_check_command_passes_every_cell_and_names_failures(v2_url, v2_artifacts, tmp_path, capsys):
    from cli import main

    path = tmp_path / "matrix.json"
    assert main(["v2-check", "--url", v2_url, "--artifacts", str(v2_artifacts[0]), "--json", str(path)]) == 0
    matrix = json.loads(path.read_text())["matrix"]
    assert set(matrix) == set(MODELS)  # every served model, as POST /models lists them
    assert {value for cells in matrix.values() for value in cells.values()} == {"pass"}
    assert all(len(cells) == len(v2check.CELLS) for cells in matrix.values())
    capsys.readouterr()
    assert main(["v2-check", "no-such-model", "--url", v2_url]) == 1
    out = capsys.readouterr().out
    assert "no-such-model / metadata: FAIL" in out and "unknown model 'no-such-model'" in out
