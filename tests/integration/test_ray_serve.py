"""`edgestack serve --engine ray` on a real local Ray: the same REST endpoints and v2 protocol as
the BentoML server, a replica SIGKILLed under load, and a rolling update under load.

One Ray Serve instance for the module (a real `edgestack serve --engine ray` process, stopped by
its pid with SIGTERM: it shuts Serve and its local Ray down and kills what outlives them).
Three families: digits-cnn (2 replicas, so one can be killed), a tiny folk-lstm and a tiny
sentiment classifier (1 replica each). Figures (start cost, failures) are printed (-s) and
written to ray-serve-figures.json in the module's tmp folder.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from edgestack import artifact
from edgestack.serverproc import free_port, run_processes, running_process
from export.build import build
from tests.integration.test_batch_text import TINY_TEXT
from tests.conftest import prerequisite
from tests.integration.test_folk_lstm import LIMITS, TINY

MODELS = ["digits-cnn", "folk-lstm", "sentiment-tiny"]
RAY_MISSING = None if importlib.util.find_spec("ray") and importlib.util.find_spec("ray.serve") else \
    "Ray Serve is not installed: pip install 'ray[data,serve]' (the batch extra; `make venv` installs it)"


@pytest.fixture(autouse=True, scope="module")
def _ray_installed():
    prerequisite(RAY_MISSING)
DIGIT = [[0] * 28] * 28
FIGURES: dict = {}


@pytest.fixture(scope="module")
def ray_root(digits_artifact, artifacts_root, tmp_path_factory) -> Path:
    """A private artifacts folder (the rolling update adds a version to it) with the three models."""
    sources = {"digits-cnn": digits_artifact,
               "folk-lstm": build("folk-lstm", TINY, root=artifacts_root, progress=False),
               "sentiment-tiny": build("sentiment-tiny", TINY_TEXT, root=artifacts_root, progress=False)}
    root = tmp_path_factory.mktemp("ray-artifacts")
    for name, art in sources.items():
        shutil.copytree(art.path, root / name / art.version)
    return root


@pytest.fixture(scope="module")
def ray_server(ray_root, tmp_path_factory):
    """(url, process, log path): Ray Serve on a free port, ready."""
    port = free_port()
    log = tmp_path_factory.mktemp("ray-serve") / "serve.log"
    command = [sys.executable, "-m", "cli", "serve", *MODELS, "--engine", "ray", "--host", "127.0.0.1",
               "--port", str(port), "--replicas", "1", "--replicas", "digits-cnn=2", "--autoscale", "sentiment-tiny=1:2",
               "--num-cpus", "0.5",
               "--max-ongoing", "16", "--max-queued", "64"]
    env = {"EDGESTACK_ARTIFACTS": str(ray_root), "EDGESTACK_THREADS": "1", "EDGESTACK_MAX_ITEMS": "16",
           "EDGESTACK_MAX_BODY_BYTES": str(1024 * 1024), **LIMITS}
    started = time.perf_counter()
    with running_process(command, f"http://127.0.0.1:{port}/readyz", env=env, timeout=180, log_path=log,
                         what="edgestack serve --engine ray") as proc:
        FIGURES["start_to_ready_s"] = round(time.perf_counter() - started, 1)
        yield f"http://127.0.0.1:{port}", proc, log
        stopping = time.perf_counter()
    FIGURES["sigterm_to_exit_s"] = round(time.perf_counter() - stopping, 1)
    # what outlived the server's own shutdown (running_process then killed it): processes of this
    # run only, found by its run token, never whatever else runs Ray on the machine
    FIGURES["processes_left"] = proc.leftovers
    print("\nRay Serve figures:", json.dumps(FIGURES), flush=True)
    (log.parent / "ray-serve-figures.json").write_text(json.dumps(FIGURES, indent=1))
    assert FIGURES["processes_left"] == [], "processes outlived `edgestack serve --engine ray`"


def replicas(proc, deployment: str) -> list[int]:
    """pids of this server's Ray Serve replicas of `deployment` (by the title Ray gives them:
    ray::ServeReplica:APP:NAME), among the processes carrying its run token."""
    wanted = f"ray::ServeReplica:edgestack:{deployment}"
    pids = []
    for process in run_processes(proc.run_token):
        try:
            cmdline = " ".join(process.cmdline())
        except psutil.Error:
            continue
        if cmdline.startswith(wanted) and cmdline.split()[0].split(".")[0] == wanted:
            pids.append(process.pid)
    return pids


class Load:
    """`clients` threads posting /classify to digits-cnn until stopped; every answer counted."""

    def __init__(self, url: str, clients: int = 8):
        self.url, self.stop, self.lock = url, threading.Event(), threading.Lock()
        self.ok, self.failures, self.versions = 0, [], set()
        self.threads = [threading.Thread(target=self.work, daemon=True) for _ in range(clients)]

    def work(self):
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                try:
                    r = client.post(self.url + "/classify", json={"model": "digits-cnn", "pixels": DIGIT})
                    failed = None if r.status_code == 200 else f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    failed, r = f"{type(exc).__name__}: {exc}", None
                with self.lock:
                    if failed:
                        self.failures.append(failed)
                    else:
                        self.ok += 1
                        self.versions.add(r.json()["version"])

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------- the router's own checks

class Unreachable:
    """A Ray Serve handle that fails the test if the router calls the replica at all."""

    def __getattr__(self, name):
        raise AssertionError(f"the router called the replica ({name}) for a request it should refuse itself")


def test_the_router_refuses_a_bad_request_as_the_runner_would_without_the_replica(ray_root):
    """serving/ray_engine.py RemoteRunner classes carry the family's request checks: a bad request
    is refused in the router with the runner's own message and status, never sent to a replica."""
    import asyncio

    from edgestack.errors import InputError
    from serving.image import ImageClassifier
    from serving.ray_engine import remote_runner_class
    from serving.runner import RunnerOptions
    from serving.tune import MusicGenerator

    described = {"variant": "int8", "provider": "CPUExecutionProvider"}
    for runner_cls, model, call in (
            (ImageClassifier, "digits-cnn", lambda r: r.pixels_from_array([[1, 2]])),
            (ImageClassifier, "digits-cnn", lambda r: r.decode_image(b"not an image")),
            (ImageClassifier, "digits-cnn", lambda r: r.pixels_from_array([[[[0] * 28] * 28]] * 2, "squash")),
            (MusicGenerator, "folk-lstm", lambda r: r.check(temperature=0)),
            (MusicGenerator, "folk-lstm", lambda r: r.check(prompt="X:1\nT:caf\u00e9 \u266b")),
            (MusicGenerator, "folk-lstm", lambda r: r.check(max_length=10**6))):
        art = artifact.load_latest(model, ray_root)
        with pytest.raises(InputError) as local:
            call(runner_cls(art, RunnerOptions(device="cpu", threads=1)))
        remote = remote_runner_class(runner_cls)(art, described, Unreachable())
        with pytest.raises(InputError) as routed:
            result = call(remote)
            if asyncio.iscoroutine(result):
                asyncio.run(result)
        assert (str(routed.value), routed.value.status) == (str(local.value), local.value.status)


# ---------------------------------------------------------------------------- same protocol, same answers

def test_v2_check_matrix_passes_against_ray_serve(ray_server, ray_root, independent_v2_check, tmp_path, capsys):
    from cli import main

    url, _, _ = ray_server
    path = tmp_path / "matrix.json"
    assert main(["v2-check", "--url", url, "--artifacts", str(ray_root), "--json", str(path)]) == 0
    matrix = json.loads(path.read_text())["matrix"]
    assert set(matrix) == set(MODELS)
    assert {value for cells in matrix.values() for value in cells.values()} == {"pass"}


def test_rest_endpoints_answer_as_the_runner_does(ray_server, ray_root, tmp_path, capsys):
    from cli import main
    from serving.runner import RunnerOptions
    from serving.tune import MusicGenerator

    url, _, _ = ray_server
    models = httpx.post(url + "/models").json()["models"]
    assert [m["name"] for m in models] == MODELS and all(m["provider"] == "CPUExecutionProvider" for m in models)

    # the same images as a pixel array and as uploads, answered as this process's runner answers them
    import asyncio

    from serving.image import ImageClassifier

    local = ImageClassifier(artifact.load_latest("digits-cnn", ray_root), RunnerOptions(threads=1))
    digits = np.zeros((3, 28, 28), np.uint8)  # light strokes on black
    digits[0, 4:24, 13:16] = 255
    digits[1, 5:8, 6:22] = digits[1, 5:22, 19:22] = 255
    digits[2, 6:22, 6:9] = digits[2, 6:22, 19:22] = digits[2, 6:9, 6:22] = digits[2, 19:22, 6:22] = 255
    by_json = httpx.post(url + "/classify", json={"model": "digits-cnn", "pixels": digits.tolist(), "top_k": 2}).json()
    upload = httpx.post(url + "/classify_image", data={"model": "digits-cnn", "top_k": "2"},
                        files=[("images", (f"{i}.png", png(d), "image/png")) for i, d in enumerate(digits)]).json()
    expected_json = asyncio.run(local.classify(local.pixels_from_array(digits.tolist()), 2))
    expected_upload = asyncio.run(local.classify(np.stack([local.decode_image(png(d)) for d in digits]), 2))
    for answer, expected in ((by_json, expected_json), (upload, expected_upload)):
        assert [p["label"] for p in answer["predictions"]] == [p["label"] for p in expected]
        np.testing.assert_allclose([[k["probability"] for k in p["top_k"]] for p in answer["predictions"]],
                                   [[k["probability"] for k in p["top_k"]] for p in expected], atol=1e-5)
    # the version served now (the rolling update test may have published the next one)
    assert by_json["variant"] == "int8" and by_json["version"] == artifact.load_latest("digits-cnn", ray_root).version

    text = httpx.post(url + "/classify_text", json={"model": "sentiment-tiny", "texts": ["a fine film", "dull"]}).json()
    assert [p["label"] for p in text["predictions"]] and set(text["predictions"][0]["probabilities"]) == {"rotten", "fresh"}

    # same seed, same tune as the runner in this process (the replica runs the same code)
    folk = artifact.load_latest("folk-lstm", ray_root)
    local = MusicGenerator(folk, RunnerOptions(threads=1))
    tune = httpx.post(url + "/generate", json={"seed": 7, "max_length": 60, "temperature": 0.9}, timeout=60).json()
    assert tune["tune"] == local.complete(local.check(max_length=60, temperature=0.9, seed=7))["tune"]
    with httpx.stream("POST", url + "/generate_stream", json={"seed": 7, "max_length": 60, "temperature": 0.9}) as r:
        events = r.read().decode()
    assert r.headers["content-type"].startswith("text/event-stream") and "event: end" in events
    assert json.loads(events.split("event: end\ndata: ")[1].split("\n")[0])["tune"] == tune["tune"]
    midi = httpx.post(url + "/render_midi", json={"abc": "X:1\nT:t\nM:4/4\nL:1/8\nK:D\nDEFG ABcd|\n"})
    assert midi.status_code == 200 and midi.headers["content-type"] == "audio/midi" and midi.content[:4] == b"MThd"

    # `edgestack predict` unchanged against the Ray port
    image = tmp_path / "d.png"
    image.write_bytes(png(digits[0]))
    capsys.readouterr()
    assert main(["predict", "digits-cnn", str(image), "--url", url, "--json", "--top-k", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)[0]
    assert {k: printed[k] for k in ("label", "top_k")} == upload["predictions"][0]


@pytest.mark.parametrize("path, kwargs, status, words", [
    ("/classify", {"json": {"model": "nope", "pixels": DIGIT}}, 404, "unknown model 'nope'"),
    ("/classify", {"json": {"model": "digits-cnn", "top_k": "x"}}, 400, "top_k: Input should be a valid integer"),
    ("/classify", {"json": {"model": "digits-cnn", "pixels": [[1, 2]]}}, 400, "must have shape"),
    ("/classify", {"json": {"model": "digits-cnn", "pixels": [DIGIT] * 17}}, 413, "limit is 16"),
    ("/classify", {"content": b"x" * (1024 * 1024 + 1)}, 413, "exceeds the limit"),
    ("/classify_image", {"json": {"images": ["/etc/hostname"]}}, 415, "takes multipart/form-data"),
    ("/classify_image", {"files": {"images": (None, "abc")}}, 400, "must be a file upload"),
    ("/classify_text", {"json": {"model": "sentiment-tiny"}}, 400, "send either `text`"),
    ("/generate", {"json": {"temperature": -1}}, 400, "temperature must be"),
    ("/generate", {"content": b"seed=7", "headers": {"content-type": "text/plain"}}, 400, "Invalid JSON"),
    ("/render_midi", {"json": {"abc": "not a tune"}}, 422, "invalid ABC"),
    ("/v2/models/digits-cnn/infer", {"json": {"inputs": []}}, 400, "non-empty list"),
    ("/v2/models/nope", {}, 404, "unknown model"),
    ("/nowhere", {}, 404, "Not Found"),
])
def test_bad_requests_get_the_same_error_shape(ray_server, path, kwargs, status, words):
    url, _, _ = ray_server
    method = "GET" if path.startswith("/v2/models/nope") or path == "/nowhere" else "POST"
    r = httpx.request(method, url + path, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json") and words in r.json()["error"]


def test_an_autoscaled_model_starts_at_its_minimum_and_is_served(ray_server):
    """--autoscale sentiment-tiny=1:2 (beside --replicas for the others): the plan says so, Ray
    Serve starts the deployment with its minimum (1 replica, while digits-cnn has its fixed 2),
    and it answers. (Scaling up needs Ray's upscale delay, 30 s of sustained load: not run here.)"""
    url, proc, log = ray_server
    assert re.search(r"\[sentiment-tiny\] v\d+: autoscale 1:2", log.read_text()), log.read_text()[-2000:]
    assert len(replicas(proc, "sentiment-tiny")) == 1 and len(replicas(proc, "digits-cnn")) == 2
    answer = httpx.post(url + "/classify_text", json={"model": "sentiment-tiny", "text": "a fine film"}, timeout=60)
    assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] in ("rotten", "fresh")


# ---------------------------------------------------------------------------- failures under load

def test_back_pressure_is_a_503_in_the_error_shape(ray_server):
    """folk-lstm has one replica holding 16 requests and a queue of 64 at the router: 200 long
    tunes at once overflow it, and the overflow is refused at once with 503 + Retry-After."""
    import asyncio

    url, _, _ = ray_server

    async def burst():
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            return await asyncio.gather(*(client.post(url + "/generate", json={"seed": i, "max_length": 800})
                                          for i in range(200)))

    answers = asyncio.run(burst())
    refused = [r for r in answers if r.status_code == 503]
    FIGURES.update(burst_ok=sum(r.status_code == 200 for r in answers), burst_503=len(refused))
    assert refused and all(r.status_code in (200, 503) for r in answers), {r.status_code for r in answers}
    assert "at capacity" in refused[0].json()["error"] and refused[0].headers["retry-after"]
    assert httpx.post(url + "/generate", json={"seed": 1, "max_length": 20}).status_code == 200  # still serving



def test_sigkilled_replica_is_replaced_and_only_its_requests_fail(ray_server):
    url, proc, _ = ray_server
    before_kill = replicas(proc, "digits-cnn")
    assert len(before_kill) == 2, before_kill
    with Load(url) as load:
        time.sleep(2)
        before = load.ok
        victim = before_kill[0]
        killed_at = time.perf_counter()
        psutil.Process(victim).send_signal(signal.SIGKILL)
        deadline = time.time() + 60
        while len(set(replicas(proc, "digits-cnn")) - {victim}) < 2 and time.time() < deadline:
            time.sleep(0.2)
        restarted = time.perf_counter() - killed_at
        time.sleep(2)  # traffic on the new replica too
    now = replicas(proc, "digits-cnn")
    FIGURES.update(kill_ok_before=before, kill_ok_total=load.ok, kill_failures=len(load.failures),
                   kill_failure_samples=load.failures[:3], kill_replacement_s=round(restarted, 1))
    assert len(now) == 2 and victim not in now, "Ray did not replace the killed replica"
    assert load.ok > before > 0
    # at most the requests in flight at the killed replica: 8 clients, 16 in flight per replica at most
    assert len(load.failures) <= 8, load.failures[:5]
    assert all(f.startswith("503") for f in load.failures), load.failures[:5]


def test_rolling_update_to_a_new_version_loses_no_request(ray_server, ray_root):
    url, proc, log = ray_server
    current = artifact.load_latest("digits-cnn", ray_root)
    new = ray_root / "digits-cnn" / str(int(current.version) + 1)  # what a rebuild would publish
    shutil.copytree(current.path, new)
    manifest = json.loads((new / "manifest.json").read_text())
    (new / "manifest.json").write_text(json.dumps({**manifest, "version": new.name}))
    with Load(url) as load:
        time.sleep(1)
        began = time.perf_counter()
        proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 120
        while "rolling update done" not in log.read_text() and time.time() < deadline:
            time.sleep(0.25)
        updated = time.perf_counter() - began
        time.sleep(1)
    FIGURES.update(update_ok=load.ok, update_failures=len(load.failures), update_s=round(updated, 1),
                   update_versions_seen=sorted(load.versions))
    assert "rolling update done" in log.read_text(), log.read_text()[-2000:]
    assert load.failures == [] and load.ok > 0
    assert max(load.versions) == str(int(current.version) + 1)
    models = httpx.post(url + "/models").json()["models"]
    assert next(m for m in models if m["name"] == "digits-cnn")["version"] == str(int(current.version) + 1)
