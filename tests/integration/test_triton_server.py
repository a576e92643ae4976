"""A real Triton Inference Server serving edgestack's artifacts on CPU. No mocks.

The tritonserver binary of the nvidia-pytriton wheel (`make triton`; it ships the Python
backend only) runs the repository `edgestack export triton --backend python` writes for the
test artifacts of tests/integration/test_v2.py: each model is edgestack's own runner inside Triton's
Python backend. The real, unmodified tritonclient then makes every call of the
`edgestack v2-check` matrix against it; the answers are compared with the same variant run
in this process; malformed requests get Triton's 4xx answers (its own validation, and the
runner's InputError passed through as INVALID_ARG) and Triton keeps serving.
"""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest
import tritonclient.http as tc

from edgestack import serverproc
from cli import v2check
from export import triton
from tests.conftest import prerequisite
from tests.integration.test_v2 import MODELS, v2_artifacts  # noqa: F401  (a session fixture)

pytestmark = pytest.mark.slow

BATCHED = "digits-cnn"     # exported with dynamic batching (max_batch_size 64)
QUEUE_DELAY_US = 100_000   # its batcher waits up to 0.1 s for company


@pytest.fixture(autouse=True, scope="module")
def _triton_installed():
    prerequisite(serverproc.triton_missing())


@pytest.fixture(scope="module")
def triton_url(v2_artifacts, tmp_path_factory):
    root, _ = v2_artifacts
    repo = tmp_path_factory.mktemp("triton-python-repo")
    # digits-cnn with Triton's dynamic batching (a short wait, so that concurrent requests surely merge);
    # the others as they come (a batched text model takes its texts as [n, 1], v2-check sends [n])
    others = [m for m in MODELS if m != BATCHED]
    if others:
        triton.export_repository(repo, others, root=root, backend="python", target="cpu", threads=1)
    triton.export_repository(repo, [BATCHED], root=root, backend="python", target="cpu", threads=1,
                             max_batch_size=64, queue_delay_us=QUEUE_DELAY_US)
    started = time.perf_counter()
    with serverproc.running_triton(repo, log_path=root / "tritonserver.log", timeout=180) as (url, _):
        print(f"\ntritonserver with {len(MODELS)} python-backend models ready in {time.perf_counter() - started:.1f} s")
        yield url


def host(url: str) -> str:
    return url.removeprefix("http://")


def test_v2_check_matrix_on_real_triton(triton_url, v2_artifacts, independent_v2_check):
    """Every tritonclient call of `edgestack v2-check`, sync and async, binary and JSON, per
    model, and the answer = the variant the config names, run in this process by plain ONNX
    Runtime (tests/reference.py)."""
    matrix = v2check.check_models(triton_url, MODELS, v2_artifacts[0])
    v2check.print_matrix(matrix)
    assert set(matrix) == set(MODELS)
    problems = {f"{model} / {cell}": value for model, cells in matrix.items() for cell, value in cells.items()
                if value != "pass"}
    assert not problems, problems


def test_config_names_the_variant_and_the_hints(triton_url, v2_artifacts):
    with tc.InferenceServerClient(host(triton_url)) as client:
        for model in MODELS:
            config = client.get_model_config(model)
            params = v2check.config_parameters(config)
            assert config["backend"] == "python" and params["variant"] == "fp32"
            assert json.loads(params["edgestack"])["task"] == v2_artifacts[1][model].task


def post_infer(url: str, model: str, inputs: list[dict]) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/{model}/infer", json={"inputs": inputs}, timeout=30)


def test_malformed_requests_get_a_4xx_and_triton_keeps_serving(triton_url, v2_artifacts):
    built = v2_artifacts[1]
    digits = built["digits-cnn"].manifest["inputs"][0]["name"]
    # Triton's own checks, against the config the export wrote
    wrong_shape = post_infer(triton_url, "digits-cnn", [{"name": digits, "datatype": "FP32", "shape": [1, 1, 28, 27],
                                                         "data": [0.0] * 28 * 27}])
    unknown = post_infer(triton_url, "no-such-model", [{"name": "x", "datatype": "FP32", "shape": [1], "data": [0]}])
    wrong_type = post_infer(triton_url, "digits-cnn", [{"name": digits, "datatype": "INT64", "shape": [1, 1, 28, 28],
                                                        "data": [0] * 28 * 28}])
    for response in (wrong_shape, unknown, wrong_type):
        assert 400 <= response.status_code < 500, response.text
        assert response.json()["error"], response.text
    assert "no-such-model" in unknown.json()["error"]
    if "folk-lstm" in MODELS:  # the runner's own check, passed through by model.py as INVALID_ARG
        shapes = {i["name"]: i["shape"] for i in built["folk-lstm"].manifest["inputs"]}
        hidden = shapes["h"][-1]
        state = {"datatype": "FP32", "shape": [1, 2, hidden], "data": [0.0] * 2 * hidden}
        response = post_infer(triton_url, "folk-lstm", [{"name": "token", "datatype": "INT64", "shape": [1], "data": [1]},
                                                        {"name": "h", **state}, {"name": "c", **state}])
        assert response.status_code == 400, response.text
        assert "input 'h' must have shape [1, 1," in response.json()["error"]
    with tc.InferenceServerClient(host(triton_url)) as client:
        assert client.is_server_live() and client.is_server_ready()
        for model in MODELS:
            assert client.is_model_ready(model)
        feeds = {digits: np.zeros((2, 1, 28, 28), np.float32)}
        assert client.infer("digits-cnn", v2check.triton_inputs(tc, feeds, True)).as_numpy("logits").shape == (2, 10)


def test_dynamic_batching_merges_requests_into_one_call_and_splits_the_answers(triton_url, v2_artifacts):
    """Eight concurrent requests of different images: Triton's dynamic batcher hands several to one
    execute() of serving/triton_model.py, which runs them as one ORT call (Triton's statistics
    count an execution of more rows than any request has) and gives each request its own rows."""
    import asyncio

    from tritonclient.http import aio

    from tests.reference import plain_reference

    art = v2_artifacts[1][BATCHED]
    name = art.meta.inputs[0].name
    rng = np.random.default_rng(7)
    images = [rng.random((2, 1, 28, 28), dtype=np.float32) for _ in range(8)]

    async def send_all():
        async with aio.InferenceServerClient(host(triton_url)) as client:
            async def one(x):
                item = aio.InferInput(name, list(x.shape), "FP32")
                item.set_data_from_numpy(x)
                return (await client.infer(BATCHED, [item])).as_numpy("logits")
            return await asyncio.gather(*(one(x) for x in images))

    answers = asyncio.run(send_all())
    for x, answer in zip(images, answers):
        expected = plain_reference(art, "fp32", {name: x})["logits"]
        np.testing.assert_allclose(answer, expected, rtol=1e-4, atol=1e-4)
    with tc.InferenceServerClient(host(triton_url)) as client:
        (stats,) = client.get_inference_statistics(BATCHED)["model_stats"]
    sizes = {int(b["batch_size"]) for b in stats["batch_stats"]}
    assert max(sizes) > 2, sizes  # at least two requests of 2 rows ran as one execution
