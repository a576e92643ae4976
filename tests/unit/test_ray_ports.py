"""Each local Ray's block of direct-ingress ports (serving/ray_engine.py claim_port_block): Serve's
replicas bind those ports with SO_REUSEPORT, so two local Rays sharing a block would silently share
a port and one would answer the other's requests. Claims are exclusive while held, released with
the lock file, and skip a block whose ports something listens on. Also the HAProxy environment:
the block's ports and the 2 s deregistration window (Serve's 30 s made a SIGTERM take 32 s).

Hermetic: the lock files live in the test's tmp folder, and the listening ports are what the test
itself listens on (the machine may run other Rays, whose listeners must not decide these tests)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from edgestack.errors import UsageError
from edgestack.settings import Settings
from serving import ray_engine


@pytest.fixture
def listener():
    """A real listening socket on 127.0.0.1: its port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_blocks_are_exclusive_while_held_and_free_again_when_released(tmp_path, monkeypatch):
    monkeypatch.setattr(ray_engine, "listening_ports", set)  # nothing listens: only the locks decide
    held = [ray_engine.claim_port_block(tmp_path) for _ in range(3)]
    bases = {(http, grpc) for http, grpc, _ in held}
    assert len(bases) == 3  # three local Rays, three blocks
    for http, grpc, _ in held:
        assert (http - ray_engine.HTTP_PORTS) % ray_engine.PORT_BLOCK == 0
        assert grpc - ray_engine.GRPC_PORTS == http - ray_engine.HTTP_PORTS
    held[0][2].close()  # that server ended: its block can be claimed again
    again = [ray_engine.claim_port_block(tmp_path) for _ in range(ray_engine.PORT_BLOCKS - 2)]
    assert held[0][:2] in {(h, g) for h, g, _ in again}
    with pytest.raises(UsageError, match="EDGESTACK_RAY_INGRESS=proxy"):
        ray_engine.claim_port_block(tmp_path)  # every block held
    for _, _, handle in held[1:] + again:
        handle.close()


def test_a_claim_in_another_open_of_the_lock_file_is_refused(tmp_path, monkeypatch):
    """The lock is the kernel's (flock on the open file), not this process's bookkeeping: a second
    open of a held block's lock file cannot take it, and can once the holder closes it."""
    import fcntl

    monkeypatch.setattr(ray_engine, "listening_ports", set)
    http, _, handle = ray_engine.claim_port_block(tmp_path)
    block = (http - ray_engine.HTTP_PORTS) // ray_engine.PORT_BLOCK
    with open(tmp_path / f"{block}.lock", "a+") as other:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.close()
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_block_something_listens_on_is_skipped(tmp_path, monkeypatch, listener):
    real = ray_engine.listening_ports()
    assert listener in real  # the scan sees a real listener
    monkeypatch.setattr(ray_engine, "listening_ports", lambda: real & {listener})  # only ours counts
    monkeypatch.setattr(ray_engine, "PORT_BLOCKS", 2)
    monkeypatch.setattr(ray_engine, "HTTP_PORTS", listener - 5)  # block 0 holds the listener's port
    for _ in range(20):  # blocks are tried in random order: block 0 first about half the time
        http, _, handle = ray_engine.claim_port_block(tmp_path)
        handle.close()
        assert http == listener - 5 + ray_engine.PORT_BLOCK  # block 1


def test_a_listener_in_the_grpc_range_takes_no_block(tmp_path, monkeypatch):
    """40000-40999 lies in Linux's ephemeral range, where Ray's own processes listen on random ports
    (and Serve binds no direct-ingress gRPC port for edgestack): a listener there skips nothing."""
    grpc = {*range(ray_engine.GRPC_PORTS, ray_engine.GRPC_PORTS + ray_engine.PORT_BLOCKS * ray_engine.PORT_BLOCK)}
    monkeypatch.setattr(ray_engine, "listening_ports", lambda: grpc)
    ray_engine.claim_port_block(tmp_path)[2].close()


def test_every_block_listened_on_is_a_usage_error_that_names_the_way_out(tmp_path, monkeypatch):
    every = {*range(ray_engine.HTTP_PORTS, ray_engine.HTTP_PORTS + ray_engine.PORT_BLOCKS * ray_engine.PORT_BLOCK)}
    monkeypatch.setattr(ray_engine, "listening_ports", lambda: every)
    with pytest.raises(UsageError, match="EDGESTACK_RAY_INGRESS=proxy"):
        ray_engine.claim_port_block(tmp_path)
    # and nothing stays locked by the failed claim: with the ports free again, a claim succeeds
    monkeypatch.setattr(ray_engine, "listening_ports", set)
    ray_engine.claim_port_block(tmp_path)[2].close()


def test_a_connection_end_is_not_a_listener(listener):
    """A port that is only a client connection's local end takes no block (a bind probe would say it
    is taken)."""
    with socket.create_connection(("127.0.0.1", listener)) as client:
        own = client.getsockname()[1]
        ports = ray_engine.listening_ports()
        assert listener in ports and own not in ports


def test_haproxy_environment_uses_the_block_and_a_short_drain(monkeypatch):
    monkeypatch.setenv("EDGESTACK_RAY_INGRESS", "haproxy")
    env = ray_engine.ingress_environment(Settings(), Path("/h"), port_of=lambda: 1, ports=(30300, 40300))
    assert (env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"], env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"]) == \
        ("30300", "30399")
    assert (env["RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT"], env["RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT"]) == \
        ("40300", "40399")
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "2"
    monkeypatch.setenv("EDGESTACK_RAY_INGRESS", "proxy")
    assert ray_engine.ingress_environment(Settings(), Path("/h")) == {}
