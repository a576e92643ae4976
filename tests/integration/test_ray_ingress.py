"""`edgestack serve --engine ray` the lean way (issue 22 item 3) and locked down (issue 20 hole 10).

One model, default settings: one deployment holds the model and is the ingress, reached through
Ray's HAProxy ingress (no Python proxy, no router hop). A real local Ray, with inline API keys:
they must reach no Ray process's environment (a 0600 key file instead), everything Ray and
HAProxy listen on is 127.0.0.1 but for the one port Ray 2.60 hard-codes to every interface
(each replica's inter-deployment gRPC server, "[::]:0"), Serve's /-/routes is closed, and the
endpoints, auth and errors are the BentoML server's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

pytest.importorskip("ray.serve")

from edgestack.serverproc import free_port, running_process

KEY = "ray-ingress-test-key"


@pytest.fixture(scope="module")
def lean_ray(digits_artifact, artifacts_root, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("ray-ingress") / "serve.log"
    command = [sys.executable, "-m", "cli", "serve", "digits-cnn", "--engine", "ray", "--host", "127.0.0.1",
               "--port", str(port), "--num-cpus", "1"]
    env = {"EDGESTACK_ARTIFACTS": str(artifacts_root), "EDGESTACK_THREADS": "1", "EDGESTACK_API_KEYS": KEY,
           "EDGESTACK_TOKEN": KEY, "EDGESTACK_RAY_INGRESS": "haproxy"}
    with running_process(command, f"http://127.0.0.1:{port}/readyz", env=env, timeout=180, log_path=log,
                         what="edgestack serve --engine ray") as proc:
        yield f"http://127.0.0.1:{port}", proc


def tree(proc) -> list[psutil.Process]:
    root = psutil.Process(proc.pid)
    return [root, *root.children(recursive=True)]


def command(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # ended meanwhile
        return ""


def listening(process: psutil.Process) -> list:
    try:
        return [c for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    except psutil.Error:
        return []


def test_one_hop_same_endpoints_auth_and_errors(lean_ray):
    url, proc = lean_ray
    names = [command(p) for p in tree(proc)]
    assert any(n.startswith("ray::ServeReplica:edgestack:models") for n in names), names  # models = ingress
    assert not any(n.startswith("ray::ServeReplica:edgestack:router") for n in names), names  # no router hop
    port = int(url.rsplit(":", 1)[1])
    deadline, owners = time.monotonic() + 30, []
    while not owners and time.monotonic() < deadline:  # Ray restarts HAProxy when its config changes
        owners = {Path(command(p).split(" ", 1)[0]).name for p in tree(proc) for c in listening(p)
                  if c.laddr.port == port}
        time.sleep(0.2)
    assert owners == {"haproxy"}, owners  # HTTP reaches HAProxy, not Ray's Python proxy
    body = {"model": "digits-cnn", "pixels": [[0] * 28] * 28}
    assert httpx.post(url + "/classify", json=body).status_code == 401
    auth = {"authorization": f"Bearer {KEY}"}
    answer = httpx.post(url + "/classify", json=body, headers=auth)
    assert answer.status_code == 200 and answer.json()["model"] == "digits-cnn"
    wrong = httpx.post(url + "/classify", json={**body, "pixels": [[0] * 27] * 28}, headers=auth)
    assert wrong.status_code == 400 and "error" in wrong.json()
    import tritonclient.http as tc

    with tc.InferenceServerClient(url.removeprefix("http://")) as client:
        tensor = tc.InferInput("images", [1, 1, 28, 28], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
        assert client.infer("digits-cnn", [tensor], headers=auth).as_numpy("logits").shape == (1, 10)
    assert httpx.get(url + "/-/routes").status_code == 404  # Serve's list of applications: closed


def test_keys_reach_no_ray_process_and_ray_listens_on_loopback(lean_ray):
    _, proc = lean_ray
    key_files = set()
    for process in tree(proc)[1:]:  # the driver itself read them before Ray started
        try:
            environ = process.environ()
        except psutil.Error:  # a short-lived helper that has ended
            continue
        assert "EDGESTACK_API_KEYS" not in environ and "EDGESTACK_TOKEN" not in environ, process.cmdline()
        key_files.add(environ.get("EDGESTACK_API_KEYS_FILE"))
    key_files -= {None}
    assert len(key_files) == 1 and oct(Path(key_files.pop()).stat().st_mode & 0o777) == "0o600"
    open_to_all = []
    for process in tree(proc):
        for conn in listening(process):
            if conn.laddr.ip not in ("127.0.0.1", "::ffff:127.0.0.1"):
                open_to_all.append((command(process)[:40], conn.laddr.ip, conn.laddr.port))
    # Only Ray's own inter-deployment gRPC server of each replica ("[::]:0" in Ray 2.60's replica.py)
    assert all(name.startswith("ray::ServeReplica") for name, _, _ in open_to_all), open_to_all
    assert len(open_to_all) <= 1, open_to_all


def test_replicas_listen_in_the_port_block_this_server_holds(lean_ray):
    """serve_forever claims a block of direct-ingress ports (serving/ray_engine.py claim_port_block)
    and hands it to Serve: the replica's own HTTP port lies in one block, whose lock this server
    holds (another local Ray cannot take it) for as long as it runs."""
    import fcntl
    import os
    import tempfile

    from serving.ray_engine import HTTP_PORTS, PORT_BLOCK, PORT_BLOCKS

    _, proc = lean_ray
    ports = {c.laddr.port for p in tree(proc) if command(p).startswith("ray::ServeReplica") for c in listening(p)}
    blocks = {(port - HTTP_PORTS) // PORT_BLOCK for port in ports if 0 <= port - HTTP_PORTS < PORT_BLOCKS * PORT_BLOCK}
    assert len(blocks) == 1, sorted(ports)
    lock = Path(tempfile.gettempdir()) / f"edgestack-ray-ports-{os.getuid()}" / f"{blocks.pop()}.lock"
    with open(lock, "a+") as other, pytest.raises(BlockingIOError):
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # (were it free, closing the file frees it again)
