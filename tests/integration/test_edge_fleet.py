"""The update agent against a real server (issue 21 items 5 and 6): a simulated device (a venv
with only the runner's dependencies, from local wheels) on loopback follows its channel,
refuses what does not verify or pass its health check, survives SIGKILL at every step of an
update, and the server's fleet view shows what each device reported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.edge_fleet import reversion
from bundle.edge_runner.agent import KILL_AT, KILL_POINTS
from bundle.make import make_bundle, sha256, write_archive
from serving import fleet
from tests.clean_venv import clean_env
from tests.conftest import serve

TOKEN = "device-fleet-token"


@pytest.fixture(scope="module")
def published(digits_artifact, artifacts_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("fleet-bundles")
    v1 = make_bundle("digits-cnn", out / "built", root=artifacts_root, progress=False)
    return {"folder": v1.path, "1": reversion(v1.path, "1", out), "2": reversion(v1.path, "2", out),
            "3-bad": reversion(v1.path, "3", out, break_health=True)}


@pytest.fixture(scope="module")
def fleet_server(digits_artifact, artifacts_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    with serve(["digits-cnn"], {"EDGESTACK_FLEET_DIR": str(root), "EDGESTACK_API_KEYS": TOKEN},
               root=artifacts_root) as (url, _):
        yield url, root


@pytest.fixture(scope="module")
def device_python(clean_venv):
    """The device: only what the runner needs, and the signature verifier's one dependency."""
    return clean_venv("onnxruntime", "numpy", "cryptography")


def agent(device_python, published, url, home, device, channel, *, kill_at=None, server=None, trusted=()):
    env = {**clean_env(), "EDGE_AGENT_TOKEN": TOKEN, **({KILL_AT: kill_at} if kill_at else {})}
    return subprocess.run([str(device_python), str(published["folder"] / "edge_runner"), "agent", "--once",
                           "--server", server or url, "--device-id", device, "--channel", channel,
                           "--home", str(home), "--model", "digits-cnn",
                           *[arg for key in trusted for arg in ("--trusted-key", str(key))]],
                          env=env, capture_output=True, text=True, timeout=300)


def current(home: Path) -> str | None:
    link = home / "current"
    return Path(os.readlink(link)).name if link.is_symlink() else None


def healthy(device_python, home: Path) -> bool:
    """What the device serves: `current` resolves to a complete bundle that passes its health check."""
    run = subprocess.run([str(device_python), "-m", "edge_runner", "--health", "--check"], cwd=home / "current",
                         env=clean_env(), capture_output=True, text=True, timeout=120)
    return run.returncode == 0


def fleet_view(url: str) -> dict:
    return {d["device_id"]: d for d in httpx.get(url + "/devices", headers={"Authorization": f"Bearer {TOKEN}"},
                                                   timeout=30).json()["devices"]}


def test_devices_follow_their_channel_canary_first_and_the_fleet_view_shows_them(
        device_python, published, fleet_server, tmp_path):
    url, root = fleet_server
    fleet.publish(published["1"], "stable", root)
    fleet.publish(published["2"], "canary", root)
    assert httpx.get(url + "/devices", timeout=30).status_code == 401  # same token auth as every route
    assert httpx.get(url + "/bundles/digits-cnn/latest?channel=stable", timeout=30).status_code == 401
    stable, canary = tmp_path / "stable-1", tmp_path / "canary-1"
    run = agent(device_python, published, url, stable, "stable-1", "stable")
    assert run.returncode == 0 and current(stable) == "1", run.stderr
    with pytest.raises(Exception, match="no device on 'canary' reports"):
        fleet.promote("digits-cnn", "stable", root=root)   # canary first: nobody has run v2 yet
    started = time.monotonic()
    run = agent(device_python, published, url, canary, "canary-1", "canary")
    assert run.returncode == 0 and current(canary) == "2", run.stderr
    fleet.promote("digits-cnn", "stable", root=root)       # the canary reported v2 healthy
    run = agent(device_python, published, url, stable, "stable-1", "stable")
    update_seconds = time.monotonic() - started
    assert current(stable) == "2" and sorted(os.listdir(stable / "versions")) == ["1", "2"], run.stderr
    assert "updated to v2 (from v1)" in run.stderr and healthy(device_python, stable)
    view = fleet_view(url)
    for device in ("stable-1", "canary-1"):
        assert view[device]["version"] == "2" and view[device]["health"] == "ok"
        assert view[device]["arch"] and view[device]["onnxruntime"] and view[device]["p50_ms"] > 0
    assert update_seconds < 120  # generous: the figure itself is measured by the fleet benchmark


def test_a_version_failing_its_health_check_is_refused_and_a_broken_current_rolled_back(
        device_python, published, fleet_server, tmp_path):
    url, root = fleet_server
    home = tmp_path / "device"
    fleet.publish(published["1"], "health", root)
    assert agent(device_python, published, url, home, "health-1", "health").returncode == 0
    fleet.publish(published["3-bad"], "health", root)
    run = agent(device_python, published, url, home, "health-1", "health")
    assert current(home) == "1" and not (home / "versions" / "3").exists(), run.stderr
    assert "update to v3 refused, staying on v1: v3 failed its health check: probabilities:" in run.stderr
    report = fleet_view(url)["health-1"]
    assert report["version"] == "1" and "v3 failed its health check" in report["last_error"]
    again = agent(device_python, published, url, home, "health-1", "health")  # not retried: same bytes
    assert "offered" not in again.stderr and current(home) == "1"
    # v2 installs; then a file of the installed v2 changes under it: the device goes back to v1
    fleet.publish(published["2"], "health", root)
    assert agent(device_python, published, url, home, "health-1", "health").returncode == 0 and current(home) == "2"
    model = home / "versions" / "2" / "model.ort"
    model.write_bytes(model.read_bytes()[:-10] + b"0123456789")
    run = agent(device_python, published, url, home, "health-1", "health")
    assert current(home) == "1" and "rolled back to v1: v2 no longer verifies" in run.stderr
    assert healthy(device_python, home)


def test_tampered_truncated_and_unreachable(device_python, published, fleet_server, tmp_path):
    url, root = fleet_server
    home = tmp_path / "device"
    fleet.publish(published["1"], "faults", root)
    assert agent(device_python, published, url, home, "faults-1", "faults").returncode == 0
    # the archive on the server no longer matches what was published: refused, the device stays on v1
    fleet.publish(published["2"], "faults", root)
    served = root / "bundles" / "digits-cnn" / "2" / "digits-cnn-v2.tar.gz"
    original = served.read_bytes()
    try:
        served.write_bytes(original[:100] + bytes([original[100] ^ 0xFF]) + original[101:])
        run = agent(device_python, published, url, home, "faults-1", "faults")
        assert current(home) == "1" and "does not match the sha256 the server announced" in run.stderr, run.stderr
        assert "does not match the sha256" in fleet_view(url)["faults-1"]["last_error"]
    finally:
        served.write_bytes(original)
    # a partial download left by a cut connection resumes where it stopped (HTTP Range)
    (home / "downloads" / "digits-cnn-v2.tar.gz.part").write_bytes(original[:len(original) // 2])
    run = agent(device_python, published, url, home, "faults-1", "faults")
    assert f"resuming the download of v2 at byte {len(original) // 2}" in run.stderr and current(home) == "2"
    # the server unreachable: the device keeps running what it has and says why
    run = agent(device_python, published, url, home, "faults-1", "faults", server="http://127.0.0.1:9")
    assert run.returncode == 0 and current(home) == "2" and "server unreachable" in run.stderr
    assert healthy(device_python, home)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_at_every_step_leaves_a_good_version(device_python, published, fleet_server, tmp_path, point):
    url, root = fleet_server
    home, channel = tmp_path / "device", f"kill-{point}"
    fleet.publish(published["1"], channel, root)
    assert agent(device_python, published, url, home, point, channel).returncode == 0
    fleet.publish(published["2"], channel, root)
    killed = agent(device_python, published, url, home, point, channel, kill_at=point)
    assert killed.returncode == -9, killed.stderr
    assert current(home) in ("1", "2") and healthy(device_python, home)  # killed: still a good version
    run = agent(device_python, published, url, home, point, channel)      # restarted: finishes the update
    assert run.returncode == 0 and current(home) == "2", run.stderr
    assert not list((home / "versions").glob(".tmp-*")) and healthy(device_python, home)


def test_signed_bundles_are_checked_on_the_device(device_python, published, fleet_server, digits_artifact,
                                                  tmp_path):
    from edgestack import signing

    url, root = fleet_server
    ours_key, ours = signing.new_key_pair(tmp_path / "ours")
    theirs_key, _ = signing.new_key_pair(tmp_path / "theirs")
    artifacts = tmp_path / "artifacts"
    shutil.copytree(digits_artifact.path, artifacts / "digits-cnn" / digits_artifact.version)
    signing.sign_artifact(artifacts / "digits-cnn" / digits_artifact.version, ours_key)  # a signed build

    def signed_as(version: str, key: Path) -> Path:
        archive = reversion(built.path, version, tmp_path)
        signing.sign_directory(tmp_path / f"digits-cnn-v{version}", key)
        return write_archive(tmp_path / f"digits-cnn-v{version}", archive)

    built = make_bundle("digits-cnn", tmp_path / "built", root=artifacts, progress=False, signing_key=ours_key)
    assert (built.path / "model.sig").is_file() and (built.path / "source" / "model.sig").is_file()
    home, channel = tmp_path / "device", "signed"
    fleet.publish(published["1"], channel, root)  # unsigned: refused by a device that trusts a key
    run = agent(device_python, published, url, home, "signed-1", channel, trusted=[ours])
    assert current(home) is None and "signature check failed" in run.stderr, run.stderr
    fleet.publish(signed_as("5", theirs_key), channel, root)  # signed by a key the device does not trust
    run = agent(device_python, published, url, home, "signed-1", channel, trusted=[ours])
    assert current(home) is None and "signature check failed" in run.stderr, run.stderr
    fleet.publish(signed_as("4", ours_key), channel, root)  # ours: bundle and artifact signatures verify
    run = agent(device_python, published, url, home, "signed-1", channel, trusted=[ours])
    assert current(home) == "4", run.stderr
    assert fleet_view(url)["signed-1"]["signature"].startswith("checked (key ")
    # a file changed after signing, the manifest's checksums rewritten to match (what a forger can do)
    forged = signed_as("6", ours_key)
    folder = tmp_path / "digits-cnn-v6"
    labels = folder / "labels.txt"
    labels.write_text(labels.read_text().replace("7", "1"))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["labels.txt"] = {"sha256": sha256(labels), "bytes": labels.stat().st_size}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    fleet.publish(write_archive(folder, forged), channel, root)
    run = agent(device_python, published, url, home, "signed-1", channel, trusted=[ours])
    assert current(home) == "4" and "signature check failed" in run.stderr, run.stderr
    # the runner alone still checks checksums (no cryptography needed for --check)
    check = subprocess.run([str(device_python), "-m", "edge_runner", "--health", "--check"], cwd=home / "current",
                           env=clean_env(), capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr


def test_bad_fleet_requests_get_a_4xx_that_says_what_was_wrong(fleet_server):
    url, _ = fleet_server
    auth = {"Authorization": f"Bearer {TOKEN}"}
    cases = [
        ("POST", "/devices/bad%20id/status", {"model": "digits-cnn"}, 400, "device ids are"),
        ("POST", "/devices/pi-9/status", {"model": "digits-cnn", "colour": "red"}, 400, "unknown status field 'colour'"),
        ("POST", "/devices/pi-9/status", {"model": "digits-cnn", "p50_ms": "fast"}, 400, "'p50_ms' has the wrong type"),
        ("POST", "/devices/pi-9/status", [1, 2], 400, "must be a JSON object"),
        ("POST", "/devices/pi-9/status", {"version": "1"}, 400, "must name its model"),
        ("GET", "/bundles/no-such-model/latest?channel=stable", None, 404, "not published on channel 'stable'"),
        ("GET", "/bundles/digits-cnn/latest?channel=Bad!", None, 400, "plain names"),
        ("GET", "/bundles/digits-cnn/99/archive", None, 404, "digits-cnn v99 is not published"),
        ("GET", "/bundles/digits-cnn/x1/archive", None, 400, "version a number"),
    ]
    for method, path, body, status, words in cases:
        answer = httpx.request(method, url + path, json=body, headers=auth, timeout=30)
        assert answer.status_code == status and words in answer.json()["error"], (path, answer.text)
    broken = httpx.post(url + "/devices/pi-9/status", content=b"{not json", headers=auth, timeout=30)
    assert broken.status_code == 400 and "JSON object" in broken.json()["error"]
    assert "pi-9" not in fleet_view(url)
