"""Operating the server: token auth and CORS, load shedding and deadlines, versions with hot
reload (the v2 model repository extension), the statistics extension, and a graceful drain on
SIGTERM. Each against a real `edgestack serve` process with the small digits model, real
tritonclient calls where Triton users would make them."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tc_grpc
import tritonclient.http as tc
from tritonclient.utils import InferenceServerException

from clients import Client
from clients.client import ServerError
from cli import v2check
from edgestack.serverproc import free_port
from tests.conftest import serve

pytestmark = pytest.mark.slow

PIXELS = np.zeros((28, 28)).tolist()


def v2_inputs(batch: int = 1, module=tc) -> list:
    array = np.random.default_rng(0).random((batch, 1, 28, 28), dtype=np.float32)
    inp = module.InferInput("images", list(array.shape), "FP32")
    inp.set_data_from_numpy(array)
    return [inp]


# ------------------------------------------------------------------ auth and CORS

@pytest.fixture(scope="module")
def locked(digits_artifact, artifacts_root, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text("# operators\nfile-key-1\n\n")
    grpc_port = free_port()
    env = {"EDGESTACK_API_KEYS": "key-a,key-b", "EDGESTACK_API_KEYS_FILE": str(keys),
           "EDGESTACK_CORS_ORIGINS": "http://playground.test", "EDGESTACK_GRPC_PORT": str(grpc_port)}
    with serve(["digits-cnn"], env, root=artifacts_root) as (url, _):
        yield url, f"127.0.0.1:{grpc_port}", keys


def test_without_a_token_inference_is_refused_with_401_and_a_challenge(locked):
    locked_server, _, _ = locked
    r = httpx.post(locked_server + "/classify", json={"pixels": PIXELS})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith('Bearer realm="edgestack"')
    assert "bearer token is required" in r.json()["error"]
    wrong = httpx.post(locked_server + "/classify", json={"pixels": PIXELS}, headers={"Authorization": "Bearer key-c"})
    assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert httpx.post(locked_server + "/v2/models/digits-cnn/infer", json={}).status_code == 401
    assert httpx.post(locked_server + "/models", json={}).status_code == 401


def test_health_readiness_and_metrics_stay_open(locked):
    locked_server, _, _ = locked
    for path in ("/livez", "/readyz", "/metrics", "/v2/health/ready"):
        assert httpx.get(locked_server + path).status_code == 200, path


def test_each_configured_key_is_accepted_by_our_client_and_tritonclient(locked):
    locked_server, _, _ = locked
    for key in ("key-a", "key-b", "file-key-1"):
        with Client(locked_server, token=key) as client:
            assert client.classify(PIXELS, model="digits-cnn").predictions
    with tc.InferenceServerClient(locked_server.removeprefix("http://")) as client:
        auth = {"Authorization": "Bearer key-b"}
        assert client.infer("digits-cnn", v2_inputs(), headers=auth).as_numpy("logits").shape == (1, 10)
        with pytest.raises(InferenceServerException, match="bearer token"):
            client.infer("digits-cnn", v2_inputs())


def test_a_key_file_edited_in_place_rotates_its_key_without_a_restart_on_both_protocols(locked):
    """The operator rewrites the key file in place (same inode) with a key of the same length, so
    only its modification time tells the change: the new key works over HTTP and gRPC at once,
    the old one is refused, and the keys given in EDGESTACK_API_KEYS stay. (A file replaced in
    one step, emptied or missing: tests/integration/test_security.py.)"""
    url, grpc_url, keys = locked
    before = keys.read_text()
    inode = keys.stat().st_ino

    def accepted(key: str) -> tuple[int, bool]:
        http = httpx.post(url + "/classify", json={"pixels": PIXELS}, headers={"Authorization": f"Bearer {key}"})
        with tc_grpc.InferenceServerClient(grpc_url) as client:
            try:
                client.infer("digits-cnn", v2_inputs(module=tc_grpc), headers={"authorization": f"Bearer {key}"})
                grpc_ok = True
            except InferenceServerException:
                grpc_ok = False
        return http.status_code, grpc_ok

    assert accepted("file-key-1") == (200, True) and accepted("file-key-2") == (401, False)
    try:
        time.sleep(0.01)  # a later modification time than the file the server read
        with open(keys, "r+") as fh:  # in place: same inode, same size
            fh.write(before.replace("file-key-1", "file-key-2"))
        assert keys.stat().st_ino == inode and len(keys.read_text()) == len(before)
        assert accepted("file-key-2") == (200, True)
        assert accepted("file-key-1") == (401, False)
        assert accepted("key-a") == (200, True)  # the environment's keys are not the file's
    finally:
        keys.write_text(before)  # the other tests of this module use file-key-1
    assert accepted("file-key-1") == (200, True)


def test_cors_answers_preflights_for_configured_origins_only(locked):
    locked_server, _, _ = locked
    asked = {"Origin": "http://playground.test", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization,content-type"}
    r = httpx.options(locked_server + "/classify", headers=asked)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://playground.test"
    other = httpx.options(locked_server + "/classify", headers={**asked, "Origin": "http://elsewhere.test"})
    assert "access-control-allow-origin" not in other.headers


def test_grpc_needs_the_token_too_and_v2_check_passes_with_it(locked, capsys):
    url, grpc_url, _ = locked
    with tc_grpc.InferenceServerClient(grpc_url) as client:
        assert client.is_server_ready()  # health stays open
        with pytest.raises(InferenceServerException, match="bearer token is required"):
            client.infer("digits-cnn", v2_inputs(module=tc_grpc))
        result = client.infer("digits-cnn", v2_inputs(module=tc_grpc), headers={"authorization": "Bearer key-a"})
        assert result.as_numpy("logits").shape == (1, 10)
    for protocol, address in (("http", url), ("grpc", grpc_url)):
        matrix = v2check.check_models(address, ["digits-cnn"], protocol=protocol, token="file-key-1")
        cells = list(matrix["digits-cnn"].values())
        assert cells.count("pass") == len(v2check.CELLS) - 1 and not any(v.startswith("FAIL") for v in cells), matrix
        no_token = v2check.check_models(address, ["digits-cnn"], protocol=protocol)
        assert any(v.startswith("FAIL") for v in no_token["digits-cnn"].values())


# ------------------------------------------------------------------ shedding and deadlines

@pytest.fixture(scope="module")
def small_queue_server(digits_artifact, artifacts_root):
    with serve(["digits-cnn"], {"EDGESTACK_MAX_QUEUE_ROWS": "64", "EDGESTACK_MAX_BATCH": "64"},
               root=artifacts_root) as (url, _):
        yield url


def test_an_overloaded_model_sheds_with_503_and_retry_after_and_serves_the_rest(small_queue_server):
    body = {"pixels": np.zeros((64, 28, 28)).tolist(), "model": "digits-cnn"}

    async def burst():
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(client.post(small_queue_server + "/classify", json=body) for _ in range(48)))

    responses = asyncio.run(burst())
    statuses = sorted({r.status_code for r in responses})
    assert statuses == [200, 503], statuses  # nothing else: no 500, no timeouts
    shed = [r for r in responses if r.status_code == 503]
    assert all(r.headers["retry-after"].isdigit() and "overloaded" in r.json()["error"] for r in shed)
    assert httpx.post(small_queue_server + "/classify", json={"pixels": PIXELS}).status_code == 200


def test_a_deadline_that_cannot_be_met_gets_503_at_once(small_queue_server):
    late = httpx.post(small_queue_server + "/classify", json={"pixels": PIXELS},
                      headers={"X-Request-Timeout-Ms": "0.001"})
    assert late.status_code == 503 and late.headers["retry-after"] == "1"
    assert "deadline" in late.json()["error"]
    bad = httpx.post(small_queue_server + "/classify", json={"pixels": PIXELS}, headers={"X-Request-Timeout-Ms": "soon"})
    assert bad.status_code == 400 and "X-Request-Timeout-Ms" in bad.json()["error"]
    with tc.InferenceServerClient(small_queue_server.removeprefix("http://")) as client:
        with pytest.raises(InferenceServerException, match="deadline") as refused:
            client.infer("digits-cnn", v2_inputs(), timeout=1)  # v2 parameters.timeout: 1 microsecond
        assert refused.value.status() == "503"
        assert client.infer("digits-cnn", v2_inputs(), timeout=5_000_000).as_numpy("logits").shape == (1, 10)


def counted(client: Client) -> list[str]:
    """The requests `client` sends from now on ("METHOD path" each), counted by an httpx event hook."""
    sent = []
    client._http.event_hooks = {"request": [lambda request: sent.append(f"{request.method} {request.url.path}")]}
    return sent


def test_the_client_retries_503_after_retry_after_but_never_a_4xx(small_queue_server):
    with Client(small_queue_server, retries=1, deadline_ms=0.001) as client:
        sent = counted(client)
        started = time.monotonic()
        with pytest.raises(ServerError, match="503"):
            client.classify(PIXELS, model="digits-cnn")
        assert sent == ["POST /classify"] * 2  # one retry
        assert time.monotonic() - started >= 1.0  # after the server's Retry-After: 1 (a lower bound only)
    with Client(small_queue_server, retries=3) as client:
        sent = counted(client)
        with pytest.raises(Exception, match="400"):
            client.classify([[1, 2]], model="digits-cnn")
        assert sent == ["POST /classify"]  # answered once, not retried


# ------------------------------------------------------------------ versions, hot reload, statistics

CONTROL_KEY = "model-control-key"
CONTROL = {"Authorization": f"Bearer {CONTROL_KEY}", "Content-Type": "application/json"}  # load/unload need both


def add_version(root: Path, source: Path, version: str, *, tamper: bool = False) -> Path:
    """A copy of the artifact `source` published as `version` of the same model."""
    target = root / "digits-cnn" / version
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    (target / "manifest.json").write_text(json.dumps({**manifest, "version": version}))
    if tamper:
        data = bytearray((target / "model.int8.onnx").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (target / "model.int8.onnx").write_bytes(bytes(data))
    return target


@pytest.fixture(scope="module")
def versioned(digits_artifact, tmp_path_factory):
    """(url, root, source): a server of up to 2 versions of digits-cnn, starting with version 1.
    The tests below add versions to it: each starts from whatever versions are served then."""
    root = tmp_path_factory.mktemp("versioned")
    add_version(root, digits_artifact.path, "1")
    # model control is opt-in and needs keys (issue 20); every other route stays open here
    env = {"EDGESTACK_ARTIFACTS": str(root), "EDGESTACK_SERVE_VERSIONS": "2", "EDGESTACK_MAX_QUEUE_MS": "0",
           "EDGESTACK_MODEL_CONTROL": "1", "EDGESTACK_API_KEYS": CONTROL_KEY,
           "EDGESTACK_OPEN_PATHS": "/readyz,/livez,/metrics,/classify,/v2/models*,/v2/health/*,/v2/repository/index"}
    with serve(["digits-cnn"], env) as (url, _):
        yield url, root, digits_artifact.path


def served_versions(url: str) -> list[str]:
    with tc.InferenceServerClient(url.removeprefix("http://")) as client:
        return client.get_model_metadata("digits-cnn")["versions"]


def next_version(root: Path) -> str:
    return str(max(int(p.name) for p in (root / "digits-cnn").iterdir()) + 1)


def test_a_new_version_loads_under_load_with_no_failed_request(versioned):
    url, root, source = versioned
    host = url.removeprefix("http://")
    before = served_versions(url)
    new = next_version(root)
    add_version(root, source, new)

    async def load_while_serving():
        async with httpx.AsyncClient(timeout=30) as http:
            stop, outcomes = asyncio.Event(), []

            async def traffic():
                while not stop.is_set():
                    r = await http.post(url + "/classify", json={"pixels": PIXELS, "model": "digits-cnn"})
                    outcomes.append((r.status_code, r.json().get("version")))

            workers = [asyncio.create_task(traffic()) for _ in range(8)]
            while len(outcomes) < 8:  # traffic flowing before the load
                await asyncio.sleep(0.05)
            loaded = await http.post(url + "/v2/repository/models/digits-cnn/load", headers=CONTROL)
            swapped = len(outcomes)
            while len(outcomes) < swapped + 8:  # and after it
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.gather(*workers)
            return loaded, outcomes

    loaded, outcomes = asyncio.run(load_while_serving())
    served = [*before, new][-2:]  # EDGESTACK_SERVE_VERSIONS=2: the two latest
    assert loaded.status_code == 200 and loaded.json()["versions"] == served, loaded.text
    assert {status for status, _ in outcomes} == {200}, f"{len(outcomes)} requests"
    assert {before[-1], new} <= {version for _, version in outcomes}  # served before and after the swap
    with tc.InferenceServerClient(host) as client:
        assert client.get_model_metadata("digits-cnn")["versions"] == served
        for version in served:
            result = client.infer("digits-cnn", v2_inputs(), model_version=version)
            assert result.get_response()["model_version"] == version
        assert client.infer("digits-cnn", v2_inputs()).get_response()["model_version"] == new  # unversioned = latest


def test_a_version_that_fails_to_load_leaves_the_served_ones(versioned):
    url, root, source = versioned
    before = served_versions(url)
    bad = next_version(root)
    add_version(root, source, bad, tamper=True)
    try:
        with tc.InferenceServerClient(url.removeprefix("http://")) as client:
            with pytest.raises(InferenceServerException, match=f"v{bad} failed to load.*sha256 mismatch"):
                client.load_model("digits-cnn", headers=CONTROL)
            assert client.get_model_metadata("digits-cnn")["versions"] == before
            assert client.infer("digits-cnn", v2_inputs()).as_numpy("logits").shape == (1, 10)
    finally:
        shutil.rmtree(root / "digits-cnn" / bad)


def test_tritonclient_model_control_unload_index_and_load(versioned):
    url, _, _ = versioned
    served = served_versions(url)
    with tc.InferenceServerClient(url.removeprefix("http://")) as client:
        client.unload_model("digits-cnn", headers=CONTROL)
        assert not client.is_model_ready("digits-cnn")
        index = client.get_model_repository_index()
        assert {"name": "digits-cnn", "version": "", "state": "UNAVAILABLE", "reason": "unloaded"} in index
        client.load_model("digits-cnn", headers=CONTROL)
        assert client.is_model_ready("digits-cnn")
        entries = [e for e in client.get_model_repository_index() if e["name"] == "digits-cnn"]
        assert sorted(e["version"] for e in entries) == sorted(served) and {e["state"] for e in entries} == {"READY"}
        with pytest.raises(InferenceServerException, match="not supported"):
            client.load_model("digits-cnn", config="{}", headers=CONTROL)


def test_statistics_count_requests_in_tritons_shape_and_on_metrics(versioned):
    url, _, _ = versioned
    served = served_versions(url)
    latest = served[-1]
    with tc.InferenceServerClient(url.removeprefix("http://")) as client:
        before = client.get_inference_statistics("digits-cnn", latest)["model_stats"][0]
        client.infer("digits-cnn", v2_inputs(3), model_version=latest)
        after = client.get_inference_statistics("digits-cnn", latest)["model_stats"][0]
        assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 1
        assert after["inference_count"] == before["inference_count"] + 3
        assert after["inference_stats"]["compute_infer"]["ns"] > before["inference_stats"]["compute_infer"]["ns"]
        # one request of 3 rows, alone on the server: one more ORT execution, and one more batch of 3
        assert after["execution_count"] == before["execution_count"] + 1

        def batches_of_3(stats) -> int:
            return sum(b["compute_infer"]["count"] for b in stats["batch_stats"] if b["batch_size"] == 3)

        assert batches_of_3(after) == batches_of_3(before) + 1, after["batch_stats"]
        every = client.get_inference_statistics()["model_stats"]
        assert {(s["name"], s["version"]) for s in every} == {("digits-cnn", v) for v in served}
    metrics = httpx.get(url + "/metrics").text
    assert re.search(r'edgestack_requests_total\{[^}]*model="digits-cnn"[^}]*outcome="success"', metrics)


# ------------------------------------------------------------------ graceful drain

def test_sigterm_under_load_finishes_every_accepted_request_then_exits(digits_artifact, artifacts_root):
    """Concurrency 32 on /classify (8 images each); SIGTERM once 32 answers came. Every request the
    server let in completes (its own count: accepted == completed, none running); the rest are
    refused with 503, or find the server gone; readiness turns 503."""
    # shedding off: this test is about the drain, and a slow shared CI box must not shed
    with serve(["digits-cnn"], {"EDGESTACK_DRAIN_SECONDS": "20", "EDGESTACK_MAX_QUEUE_MS": "0"},
               root=artifacts_root) as (url, proc):
        body = {"pixels": np.zeros((8, 28, 28)).tolist(), "model": "digits-cnn"}

        async def load():
            outcomes = []
            async with httpx.AsyncClient(timeout=30) as http:
                async def worker():
                    while True:
                        try:
                            r = await http.post(url + "/classify", json=body)
                        except httpx.TransportError as exc:  # the server must not cut an accepted request
                            outcomes.append(type(exc).__name__)
                            return
                        outcomes.append(r.status_code)
                        if r.status_code == 503:
                            return  # draining: this instance takes nothing new

                async def readiness_after_sigterm():
                    # the probe turns 503 while the workers' requests finish (no timing assumed:
                    # polled until it changes, or 15 s)
                    async with httpx.AsyncClient(timeout=5) as probe:
                        for _ in range(300):
                            try:
                                status = (await probe.get(url + "/readyz")).status_code
                            except httpx.TransportError as exc:
                                return type(exc).__name__
                            if status != 200:
                                return status
                            await asyncio.sleep(0.05)
                    return 200

                workers = [asyncio.create_task(worker()) for _ in range(32)]
                for _ in range(600):  # SIGTERM once 32 answers came back (a slow box takes longer), at most 60 s
                    if len(outcomes) >= 32:
                        break
                    await asyncio.sleep(0.1)
                proc.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                readiness = await readiness_after_sigterm()
                await asyncio.gather(*workers)
            return outcomes, readiness, signalled

        outcomes, readiness, signalled = asyncio.run(load())
        proc.wait(30)
        exit_seconds = time.monotonic() - signalled
        log = proc.log_path.read_text()  # this server's own log
    ok, refused = outcomes.count(200), outcomes.count(503)
    # every worker ends on a 503 (refused while draining) or, when its next request comes after the
    # drain's linger (a loaded box), on a connection the exited server no longer takes; never on
    # another status. That no *accepted* request was cut is the server's count below.
    unreached = [o for o in outcomes if isinstance(o, str)]
    assert ok >= 32 and refused + len(unreached) == 32 and ok + refused + len(unreached) == len(outcomes), outcomes[-40:]
    assert set(unreached) <= {"ConnectError", "RemoteProtocolError", "ReadError"}, unreached
    assert readiness == 503
    assert exit_seconds < 20
    drained = re.search(r"drained in [\d.]+ s: (\d+) accepted, (\d+) completed, (\d+) still running", log)
    assert drained, log[-2000:]
    accepted, completed, running = map(int, drained.groups())
    assert accepted == completed and running == 0
    print(f"drain: server accepted {accepted}, completed {completed}; client saw {ok} answers, {refused} refused "
          f"while draining; exit {exit_seconds:.2f} s after SIGTERM")


def test_sigterm_with_open_event_streams_lets_every_tune_finish(artifacts_root):
    """Four /generate_stream tunes open (each has sent its first event) when SIGTERM comes: the
    server refuses new work with 503 but every open stream runs to its `end` event with the whole
    tune, the same the model writes in this process, and the drain waited for all of them."""
    from export.build import build
    from serving.runner import RunnerOptions
    from serving.tune import MusicGenerator
    from tests.integration.test_folk_lstm import TINY

    art = build("folk-lstm", TINY, root=artifacts_root, progress=False)
    limits = {"EDGESTACK_MAX_NEW_CHARS": "20000", "EDGESTACK_DRAIN_SECONDS": "60"}
    with pytest.MonkeyPatch.context() as mp:  # the server's limits for the runner here (read when made)
        for key, value in limits.items():
            mp.setenv(key, value)
        runner = MusicGenerator(art, RunnerOptions(device="cpu", threads=1))
    # long tunes (thousands of characters), so the streams are still running when SIGTERM comes
    params = [p for p in (runner.check("X:1\nT:", 20000, 0.5, 0, 1.0, seed) for seed in range(60))
              if runner.complete(p)["generated_chars"] >= 2000][:4]
    assert len(params) == 4
    expected = [runner.complete(p)["tune"] for p in params]

    with serve(["folk-lstm"], limits, root=artifacts_root) as (url, proc):
        async def scenario():
            async with httpx.AsyncClient(timeout=60) as http:
                async def stream(p):
                    body = {"prompt": p.prompt, "seed": p.seed, "max_length": p.max_length,
                            "temperature": p.temperature}
                    async with http.stream("POST", url + "/generate_stream", json=body) as response:
                        lines = response.aiter_lines()
                        first = await anext(lines)
                        started.append(first)
                        if len(started) == len(params):
                            opened.set_result(None)
                        rest = [line async for line in lines]
                    return response.status_code, [first, *rest]

                started, opened = [], asyncio.get_running_loop().create_future()
                streams = [asyncio.create_task(stream(p)) for p in params]
                await asyncio.wait_for(opened, 60)  # every stream has its first event
                proc.send_signal(signal.SIGTERM)
                refused = None
                for _ in range(100):  # the drain begins: new work is refused (polled, no timing assumed)
                    refused = await http.post(url + "/generate", json={"max_length": 5})
                    if refused.status_code != 200:
                        break
                    await asyncio.sleep(0.05)
                return await asyncio.gather(*streams), refused

        answers, refused = asyncio.run(scenario())
        proc.wait(60)
        log = proc.log_path.read_text()
    assert refused.status_code == 503 and "shutting down" in refused.json()["error"]
    for (status, lines), tune in zip(answers, expected):
        assert status == 200 and lines[0] == "event: start"
        events = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
        assert "event: end" in lines and events[-1]["tune"] == tune  # the whole tune, not cut off
    waited = re.search(r"SIGTERM: draining; (\d+) request\(s\) in flight", log)
    assert waited and int(waited.group(1)) >= 4, log[-2000:]
    drained = re.search(r"drained in [\d.]+ s: (\d+) accepted, (\d+) completed, (\d+) still running", log)
    assert drained and drained.group(1) == drained.group(2) and drained.group(3) == "0", log[-2000:]
