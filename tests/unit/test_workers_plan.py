"""Worker processes and threads (serving/workers.py), the in-flight bound they share, statistics
merged across them, and the Ray engine's local-only plumbing (serving/ray_engine.py)."""

import os
import subprocess
from pathlib import Path

import pytest

from edgestack.errors import UsageError
from edgestack.settings import Settings
from serving.ray_engine import HAPROXY_WRAPPER, SECRETS, edgestack_env, keys_as_file
from serving.stats import ModelStats, merged
from serving.workers import InFlight, plan


def settings(**values) -> Settings:
    return Settings(**values)


def fake_threads(monkeypatch, table: dict[str, tuple[int, str]]):
    from serving import workers

    monkeypatch.setattr(workers, "model_threads", lambda name, s, cores: table[name])


def test_workers_fill_the_cores_with_the_threads_the_models_need(monkeypatch):
    fake_threads(monkeypatch, {"cnn": (1, "cnn: 1"), "bert": (4, "bert: 4")})
    assert (plan(["cnn"], settings(), cores=8).workers, plan(["cnn"], settings(), cores=8).threads) == (8, 1)
    both = plan(["cnn", "bert"], settings(), cores=8)
    assert (both.workers, both.threads) == (2, 4) and "bert: 4" in both.describe()
    assert plan(["bert"], settings(), cores=2).workers == 1  # never 0


def test_settings_win_and_workers_times_threads_fits(monkeypatch):
    fake_threads(monkeypatch, {"cnn": (1, "cnn: 1")})
    chosen = plan(["cnn"], settings(workers=3), cores=8)
    assert (chosen.workers, chosen.threads) == (3, 2) and "EDGESTACK_WORKERS=3" in chosen.reason
    chosen = plan(["cnn"], settings(threads=4), cores=8)
    assert (chosen.workers, chosen.threads) == (2, 4)
    assert plan(["cnn"], settings(device="cuda"), cores=8).workers == 1  # one process holds the GPU


def test_a_model_that_cannot_be_read_needs_every_core(monkeypatch):
    from serving import workers

    def broken(name, s, cores):
        raise FileNotFoundError(name)

    monkeypatch.setattr(workers, "model_threads", broken)
    chosen = plan(["gone"], settings(), cores=4)
    assert (chosen.workers, chosen.threads) == (1, 4) and "FileNotFoundError" in chosen.reason


def test_the_in_flight_bound_is_one_count_for_every_worker(tmp_path):
    one, two = InFlight(tmp_path, 1), InFlight(tmp_path, 2)
    assert one.enter(3) is None and two.enter(3) is None and two.enter(3) is None
    assert one.enter(3) == 3 and two.enter(3) == 3  # full, whichever worker asks
    one.leave()
    assert two.enter(3) is None
    # worker 2 dies holding 3 and starts again under the same id: its requests are gone
    assert InFlight(tmp_path, 2).total == 0


def test_statistics_of_several_workers_add_up():
    a, b = ModelStats("m", "1"), ModelStats("m", "1")
    a.request_done(0.010, 2, ok=True)
    a.batch_ran(2, 0.004)
    b.request_done(0.020, 1, ok=True)
    b.batch_ran(1, 0.001)
    b.batch_ran(2, 0.002)
    b.request_shed()
    total = merged([a.triton(), b.triton()])
    stats = total["inference_stats"]
    assert stats["success"] == {"count": 2, "ns": 30_000_000} and stats["shed"]["count"] == 1
    assert total["inference_count"] == 3 and total["execution_count"] == 3
    assert {s["batch_size"]: s["compute_infer"]["count"] for s in total["batch_stats"]} == {1: 1, 2: 2}
    assert total["last_inference"] == max(a.last_inference_ms, b.last_inference_ms)


def test_keys_never_travel_in_rays_runtime_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGESTACK_API_KEYS", "k1,k2")
    monkeypatch.setenv("EDGESTACK_TOKEN", "k1")
    monkeypatch.setenv("EDGESTACK_API_KEYS_FILE", "")  # empty = unset; restored after the test
    assert not set(SECRETS) & set(edgestack_env())  # never copied, even while set here
    keys_as_file(settings(), None, str(tmp_path))
    assert not {"EDGESTACK_API_KEYS", "EDGESTACK_TOKEN"} & set(os.environ)  # gone before Ray starts
    path = Path(os.environ["EDGESTACK_API_KEYS_FILE"])
    assert path.read_text().split() == ["k1", "k2"] and path.stat().st_mode & 0o077 == 0
    assert edgestack_env()["EDGESTACK_API_KEYS_FILE"] == str(path)  # the path travels, not the keys
    monkeypatch.setenv("EDGESTACK_API_KEYS", "k1")
    monkeypatch.setenv("EDGESTACK_API_KEYS_FILE", "")
    with pytest.raises(UsageError, match="same path on every node"):
        keys_as_file(settings(), "10.0.0.5:6379", None)


def test_haproxy_listens_for_clients_only_where_asked(tmp_path):
    config = tmp_path / "haproxy.cfg"
    config.write_text('    stats socket /x/admin.sock mode 666 level admin expose-fd listeners\n'
                      '    bind :9101\n    bind *:3000\n'
                      '    http-request return status 200 content-type application/json string "{\\"/\\":\\"app\\"}" if routes\n'
                      '  bind *:8404\n')
    fake = tmp_path / "haproxy"
    fake.write_text('#!/bin/sh\necho "ran $*"\n')
    fake.chmod(0o755)
    done = subprocess.run([str(HAPROXY_WRAPPER), "-db", "-f", str(config)], capture_output=True, text=True, check=True,
                          env={**os.environ, "REAL_HAPROXY": str(fake),
                               "RAY_SERVE_HAPROXY_STATS_PORT": "8404", "RAY_SERVE_HAPROXY_METRICS_PORT": "9101"})
    assert done.stdout.strip() == f"ran -db -f {config}"
    lines = config.read_text().splitlines()
    assert "    bind 127.0.0.1:9101" in lines and "  bind 127.0.0.1:8404" in lines
    assert "    bind *:3000" in lines  # the client-facing port binds where --host says
    assert "mode 600 level admin" in lines[0]
    assert "return status 404" in lines[3] and "\\\"app\\\"" not in lines[3]
