"""Several worker processes behind one port (serving/workers.py): what must hold for the
server as a whole does, whichever worker a connection lands on.

A real `edgestack serve` with EDGESTACK_WORKERS=2 on the small digits model. Which worker
takes a connection is the kernel's choice (every worker listens on a socket of its own with
SO_REUSEPORT, HTTP and gRPC), so each test opens fresh connections until both workers have
taken some, and checks that they did (the shared in-flight file and the statistics say which
worker holds what) instead of assuming it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from serving.workers import SLOTS

from ..conftest import serve

WORKERS = 2
LIMIT = 4  # EDGESTACK_MAX_IN_FLIGHT of the module's server
KEY = "workers-test-key"  # model control (the load test) needs API keys: every request sends it
AUTH = {"authorization": f"Bearer {KEY}"}


def infer_body() -> tuple[bytes, int]:
    """A v2 binary request for one digits image, and where its binary part starts."""
    from clients.v2 import infer_request

    body, headers = infer_request({"images": np.zeros((1, 1, 28, 28), np.float32)}, binary=True)
    return body, int(headers["Inference-Header-Content-Length"])


def in_flight(pid: int) -> np.ndarray:
    """The server's shared in-flight counters: [0] the total, [wid] each worker's part."""
    return np.fromfile(Path(f"/tmp/edgestack-server-{pid}/in-flight"), dtype=np.int64)[:SLOTS]


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class HeldRequest:
    """A POST /v2/models/digits-cnn/infer on its own connection, its body held back half-way:
    the request is inside the server (admitted, counted in flight) until `finish`."""

    def __init__(self, url: str):
        body, _ = infer_body()
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        head = (f"POST /v2/models/digits-cnn/infer HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
                f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: "
                f"{infer_body()[1]}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        self.rest = body[len(body) // 2:]
        self.sock.sendall(head + body[:len(body) // 2])

    def finish(self) -> int:
        """Send the rest of the body; the answer's HTTP status."""
        self.sock.sendall(self.rest)
        status = int(self.sock.recv(65536).split(b" ", 2)[1])
        self.close()
        return status

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def hold_on_every_worker(url: str, pid: int, count: int) -> list[HeldRequest]:
    """`count` held requests, spread so that every worker holds at least one (connections whose
    worker already holds its share are closed and opened again)."""
    held: list[HeldRequest] = []
    for _ in range(40):
        before = in_flight(pid).copy()
        request = HeldRequest(url)
        wait_for(lambda before=before: in_flight(pid)[0] > before[0], what="the request to be admitted")
        parts = in_flight(pid)[1:WORKERS + 1]
        if len(held) + 1 < count or all(parts > 0):
            held.append(request)
        else:  # the last one must land on a worker that holds none yet
            request.close()
            wait_for(lambda before=before: in_flight(pid)[0] == before[0], what="the closed request to leave")
        if len(held) == count:
            assert all(in_flight(pid)[1:WORKERS + 1] > 0), in_flight(pid)[:WORKERS + 1]
            return held
    raise AssertionError(f"connections never reached every worker: {in_flight(pid)[:WORKERS + 1]}")


def publish(root: Path, source: Path, version: str) -> None:
    """A copy of the artifact `source` published as `version` of digits-cnn under `root`."""
    target = root / "digits-cnn" / version
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    (target / "manifest.json").write_text(json.dumps({**manifest, "version": version}))


@pytest.fixture(scope="module")
def workers_server(digits_artifact, tmp_path_factory):
    """Two workers on a private copy of the digits artifact (the load test publishes a version 2)."""
    from edgestack.serverproc import free_port

    root = tmp_path_factory.mktemp("workers")
    publish(root, digits_artifact.path, "1")
    grpc_port = free_port()
    with serve(["digits-cnn"], {"EDGESTACK_ARTIFACTS": str(root), "EDGESTACK_WORKERS": str(WORKERS),
                                "EDGESTACK_MAX_IN_FLIGHT": str(LIMIT), "EDGESTACK_GRPC_PORT": str(grpc_port),
                                "EDGESTACK_MAX_QUEUE_MS": "0", "EDGESTACK_API_KEYS": KEY,
                                "EDGESTACK_MODEL_CONTROL": "1"}) as (url, proc):
        yield url, proc, f"127.0.0.1:{grpc_port}", root, digits_artifact.path


def stats(url: str) -> dict:
    (entry,) = httpx.get(url + "/v2/models/digits-cnn/stats", headers=AUTH).json()["model_stats"]
    return entry


def success_counter(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    lines = [line for line in text.splitlines()
             if line.startswith("edgestack_requests_total{") and 'model="digits-cnn"' in line and 'outcome="success"' in line]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def by_worker(entry: dict) -> dict[str, int]:
    return {w["worker"]: w["success"] for w in entry["workers"]}


def test_the_in_flight_bound_holds_across_workers(workers_server):
    url, proc, *_ = workers_server
    body, _ = infer_body()
    headers = {**AUTH, "content-type": "application/octet-stream",
               "Inference-Header-Content-Length": str(infer_body()[1])}
    held = hold_on_every_worker(url, proc.pid, LIMIT)
    try:
        assert in_flight(proc.pid)[0] == LIMIT
        # Every further request is refused, whichever worker takes it: with a bound per process,
        # those landing on a worker holding fewer than LIMIT would get in.
        for _ in range(12):
            with httpx.Client() as fresh:  # a new connection each: any worker may take it
                answer = fresh.post(url + "/v2/models/digits-cnn/infer", content=body, headers=headers)
            assert answer.status_code == 503, answer.text
            assert f"{LIMIT} requests in flight" in answer.json()["error"]
            assert answer.headers["retry-after"] == "1"
        assert [request.finish() for request in held] == [200] * LIMIT  # admitted ones are served
    finally:
        for request in held:
            request.close()
    wait_for(lambda: in_flight(proc.pid)[0] == 0, what="the counts to go back to 0")
    assert httpx.post(url + "/v2/models/digits-cnn/infer", content=body, headers=headers).status_code == 200


def test_statistics_and_metrics_count_every_worker(workers_server):
    url, *_ = workers_server
    body, length = infer_body()
    headers = {**AUTH, "content-type": "application/octet-stream", "Inference-Header-Content-Length": str(length)}
    before, counter_before = stats(url), success_counter(url)
    sent = 0
    while sent < 200:
        for _ in range(20):
            with httpx.Client() as fresh:
                assert fresh.post(url + "/v2/models/digits-cnn/infer", content=body, headers=headers).status_code == 200
            sent += 1
        after = stats(url)
        grown = {w: n - by_worker(before).get(w, 0) for w, n in by_worker(after).items()}
        if len(grown) == WORKERS and all(n > 0 for n in grown.values()):
            break
    assert len(grown) == WORKERS and all(n > 0 for n in grown.values()), grown  # both workers answered some
    # one view of the whole server: v2 statistics and /metrics count every worker's requests
    success = after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
    assert success == sent == sum(grown.values())
    assert after["inference_count"] - before["inference_count"] == sent
    assert success_counter(url) - counter_before == sent


def listening_sockets(pid: int, port: int) -> set[int]:
    """The inodes of the sockets process `pid` listens on at `port`."""
    import psutil

    return {os.stat(f"/proc/{pid}/fd/{c.fd}").st_ino for c in psutil.Process(pid).net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_each_worker_listens_on_a_socket_of_its_own(workers_server):
    """Not BentoML's one shared socket, where the worker that wakes first takes every connection
    a client opens at once: one socket per worker (SO_REUSEPORT), and the arbiter's copy of the
    shared one listens no more, so no connection waits there for a worker that never accepts it."""
    import psutil

    url, proc, *_ = workers_server
    port = int(url.rsplit(":", 1)[1])
    # /readyz answers once one worker serves; the other may still be loading its models and bind
    # its socket a moment later (seen when this test ran first: the second worker had none yet)
    def own_sockets():
        workers = [p for p in psutil.Process(proc.pid).children()
                   if "_bentoml_impl.worker.service" in " ".join(p.cmdline())]
        sockets = [listening_sockets(p.pid, port) for p in workers]
        return sockets if len(workers) == WORKERS and all(len(s) == 1 for s in sockets) else None

    sockets = wait_for(own_sockets, 60, f"a listening socket of its own in each of {WORKERS} workers")
    assert len(set.union(*sockets)) == WORKERS, sockets  # different sockets, not one shared
    assert listening_sockets(proc.pid, port) == set()  # the arbiter's: bound, not listening


def test_connections_opened_at_once_reach_every_worker(workers_server):
    """16 connections opened at once (as h2load or a connection pool opens them), then one request
    on each: both workers answer some (with one shared socket, all 16 often went to one)."""
    url, *_ = workers_server
    host, port = url.removeprefix("http://").split(":")
    body, length = infer_body()
    head = (f"POST /v2/models/digits-cnn/infer HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {length}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    before = by_worker(stats(url))
    connections = [socket.create_connection((host, int(port)), timeout=30) for _ in range(16)]
    try:
        for sock in connections:  # one at a time: the module's server lets LIMIT requests in at once
            sock.sendall(head + body)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for sock in connections:
            sock.close()
    grown = {w: n - before.get(w, 0) for w, n in by_worker(stats(url)).items()}
    assert sum(grown.values()) == 16 and len(grown) == WORKERS and all(n > 0 for n in grown.values()), grown


def test_grpc_is_served_by_every_worker(workers_server):
    import tritonclient.grpc as grpcclient

    url, _, grpc_address, *_ = workers_server
    before = by_worker(stats(url))
    for _ in range(60):
        with grpcclient.InferenceServerClient(grpc_address) as client:  # a new channel: a new connection
            tensor = grpcclient.InferInput("images", [1, 1, 28, 28], "FP32")
            tensor.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
            assert client.infer("digits-cnn", [tensor], headers=AUTH).as_numpy("logits").shape == (1, 10)
        grown = {w: n - before.get(w, 0) for w, n in by_worker(stats(url)).items()}
        if len(grown) == WORKERS and all(n > 0 for n in grown.values()):
            return
    raise AssertionError(f"gRPC connections reached only some workers: {grown}")


def test_a_load_during_traffic_reaches_every_worker(workers_server):
    url, proc, _, root, source = workers_server
    body, length = infer_body()
    headers = {**AUTH, "content-type": "application/octet-stream", "Inference-Header-Content-Length": str(length)}
    infer = url + "/v2/models/digits-cnn/infer"

    def version_of(answer: httpx.Response) -> str:
        assert answer.status_code == 200, answer.text
        return json.loads(answer.content[:int(answer.headers["inference-header-content-length"])])["model_version"]

    statuses: list[int] = []
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            with httpx.Client() as fresh:  # fresh connections: both workers take some
                statuses.append(fresh.post(infer, content=body, headers=headers).status_code)

    publish(root, source, "2")
    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        time.sleep(0.5)
        answer = httpx.post(url + "/v2/repository/models/digits-cnn/load", json={}, headers=AUTH, timeout=120)
        assert answer.status_code == 200, answer.text
        assert answer.json()["versions"] == ["2"]
        # answered only once every worker serves it: no connection, to whichever worker, sees v1 again
        seen = set()
        for _ in range(30):
            with httpx.Client() as fresh:
                seen.add(version_of(fresh.post(infer, content=body, headers=headers)))
        assert seen == {"2"}
    finally:
        stop.set()
        thread.join(30)
    assert statuses and set(statuses) == {200}, sorted(set(statuses))  # no request failed during the switch
    by = by_worker(stats(url))
    assert len(by) == WORKERS and all(n > 0 for n in by.values()), by  # both workers served version 2
    assert json.loads(Path(f"/tmp/edgestack-server-{proc.pid}/served.json").read_text()) == {"digits-cnn": ["2"]}


def test_sigterm_drains_every_worker(digits_artifact, artifacts_root):
    with serve(["digits-cnn"], {"EDGESTACK_WORKERS": str(WORKERS), "EDGESTACK_DRAIN_SECONDS": "20"},
               root=artifacts_root) as (url, proc):
        held = hold_on_every_worker(url, proc.pid, 2 * WORKERS)
        try:
            proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)  # every worker now drains: readiness says so, new work is refused
            assert httpx.get(url + "/readyz").status_code == 503
            assert proc.poll() is None  # waiting for the accepted requests
            # ... which every worker still serves to the end
            assert [request.finish() for request in held] == [200] * len(held)
        finally:
            for request in held:
                request.close()
        assert proc.wait(30) == 0
