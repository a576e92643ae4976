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


@pytest.fixture(autouse=True, scope="module")
def _triton_installed():
    prerequisite(serverproc.triton_missing())


@pytest.fixture(scope="module")
def triton_url(v2_artifacts, tmp_path_factory):
    root, _ = v2_artifacts
    repo = tmp_path_factory.mktemp("triton-python-repo")
    triton.export_repository(repo, MODELS, root=root, backend="python", target="cpu", threads=1)
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
