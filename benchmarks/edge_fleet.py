"""The update agent's figures (issue 21): a simulated device (a venv with only the runner's
dependencies, built from the local wheelhouse) on loopback, against a real server.

    python -m benchmarks.edge_fleet [MODEL] [--kills 20]      (scripts/fleet-check.sh)

1. install v1 from nothing, then v1 -> v2 through the agent (the update time: one agent run,
   process start to exit, with download, checks, health check, switch and report);
2. v3, whose health check fails on the device (its golden answers no longer match what the
   model computes): refused, the device stays on v2 (the rollback time);
3. v2's installed files changed under it: the next run switches back to v1;
4. --kills random SIGKILLs: each round publishes a new version (v10, v11, ...) and kills the
   agent's run at a random moment; after each kill the device must be on the version it had
   or the new one, with `current` passing its health check; a run without kill then finishes
   the update.

v2 and v3 are the model's bundle under new version numbers (same graphs; v3 with broken golden
answers). Prints a table, writes bench-results/edge-fleet.json. Timings from a shared machine
are noisy; the pass/fail of each kill is not.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bundle.edge_runner.health import read_golden, write_golden
from bundle.make import make_bundle, sha256, write_archive
from edgestack.serverproc import running_server
from serving import fleet

TOKEN = "edge-fleet-benchmark"


def reversion(folder: Path, version: str, out: Path, *, break_health: bool = False) -> Path:
    """A copy of a bundle under another version number, as an archive; break_health: its golden
    answers no longer match what the model computes (checksums still verify)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    copy = out / f"{manifest['name']}-v{version}"
    shutil.copytree(folder, copy)
    (copy / "model.sig").unlink(missing_ok=True)  # a signature would no longer match
    if break_health:
        inputs, expected = read_golden(copy / "golden.npz")
        expected["probabilities"] = np.roll(expected["probabilities"], 1, axis=1)
        write_golden(copy / "golden.npz", inputs, expected)
        manifest["files"]["golden.npz"] = {"sha256": sha256(copy / "golden.npz"),
                                           "bytes": (copy / "golden.npz").stat().st_size}
    manifest["version"] = version
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return write_archive(copy, out / f"{copy.name}.tar.gz")


class Device:
    """A simulated device: its python (runner dependencies only), its home, one agent run at a time."""

    def __init__(self, python: Path, runner: Path, url: str, home: Path, model: str, channel: str = "stable"):
        self.python, self.runner, self.url, self.home, self.model, self.channel = python, runner, url, home, model, channel

    def command(self) -> list[str]:
        return [str(self.python), str(self.runner), "agent", "--once", "--server", self.url, "--device-id",
                self.home.name, "--channel", self.channel, "--home", str(self.home), "--model", self.model]

    def env(self) -> dict:
        from tests.clean_venv import clean_env  # what a device that never saw this repository has

        return {**clean_env(), "EDGE_AGENT_TOKEN": TOKEN}

    def run(self) -> tuple[subprocess.CompletedProcess, float]:
        started = time.monotonic()
        done = subprocess.run(self.command(), env=self.env(), capture_output=True, text=True, timeout=600)
        return done, time.monotonic() - started

    def current(self) -> str | None:
        link = self.home / "current"
        return Path(os.readlink(link)).name if link.is_symlink() else None

    def healthy(self) -> bool:
        run = subprocess.run([str(self.python), "-m", "edge_runner", "--health", "--check"], cwd=self.home / "current",
                             env={**self.env(), "PYTHONDONTWRITEBYTECODE": "1"}, capture_output=True, timeout=300)
        return run.returncode == 0


def device_python(where: Path) -> Path:
    from tests.clean_venv import (
        clean_python,  # the wheelhouse helper `make wheelhouse` fills
    )

    return clean_python(where, ["onnxruntime", "numpy", "cryptography"])


def kill_at_random(device: Device, rng: random.Random, longest: float, good: set[str]) -> dict:
    """One agent run killed at a random moment (or finished first); the device checked after."""
    process = subprocess.Popen(device.command(), env=device.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    delay = rng.uniform(0.05, longest)
    try:
        process.wait(timeout=delay)
        killed = False
    except subprocess.TimeoutExpired:
        process.kill()
        killed = True
    process.wait()
    log = process.stderr.read().strip().splitlines()
    process.stderr.close()
    version = device.current()
    return {"delay_s": round(delay, 2), "killed": killed, "last_line": log[-1] if log else "",
            "current_after_kill": version, "good_after_kill": version in good and device.healthy()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.edge_fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="fashion-cnn")
    parser.add_argument("--artifacts", type=Path, help="artifact root (default: $EDGESTACK_ARTIFACTS or ./artifacts)")
    parser.add_argument("--kills", type=int, default=20, help="random SIGKILLs (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("bench-results/edge-fleet.json"))
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    result: dict = {"model": args.model, "kills": []}
    with tempfile.TemporaryDirectory(prefix="edge-fleet-") as tmp:
        tmp = Path(tmp)
        built = make_bundle(args.model, tmp / "built", root=args.artifacts, progress=False)
        archives = {v: reversion(built.path, v, tmp) for v in ("1", "2")}
        archives["3"] = reversion(built.path, "3", tmp, break_health=True)
        result["bundle_bytes"] = sum(p.stat().st_size for p in built.path.rglob("*") if p.is_file())
        result["archive_bytes"] = archives["2"].stat().st_size
        python = device_python(tmp / "device-venv")
        root = tmp / "fleet"
        env = {"EDGESTACK_FLEET_DIR": str(root), "EDGESTACK_API_KEYS": TOKEN, "EDGESTACK_THREADS": "1",
               **({"EDGESTACK_ARTIFACTS": str(args.artifacts)} if args.artifacts else {})}
        with running_server([args.model], env=env, log_path=tmp / "server.log") as (url, _):
            device = Device(python, built.path / "edge_runner", url, tmp / "device-1", args.model)
            fleet.publish(archives["1"], "stable", root)
            run, result["install_s"] = device.run()
            assert device.current() == "1", run.stderr
            fleet.publish(archives["2"], "stable", root)
            run, result["update_s"] = device.run()
            result["update_ok"] = device.current() == "2" and device.healthy()
            fleet.publish(archives["3"], "stable", root)
            run, result["refuse_bad_health_s"] = device.run()
            result["refuse_bad_health_ok"] = device.current() == "2" and "failed its health check" in run.stderr
            model_file = next((device.home / "versions" / "2").glob("*.ort"))
            model_file.write_bytes(model_file.read_bytes()[:-4] + b"\0\0\0\0")
            run, result["rollback_s"] = device.run()
            result["rollback_ok"] = device.current() == "1" and "rolled back to v1" in run.stderr and device.healthy()
            longest = max(result["update_s"], 1.0) * 1.2
            for i in range(args.kills):  # each round offers a version the device has never seen
                before, target = device.current(), str(10 + i)
                fleet.publish(reversion(built.path, target, tmp), "stable", root)
                entry = kill_at_random(device, rng, longest, {before, target})
                run, _ = device.run()
                entry.update(target=target, current_after_restart=device.current(),
                             finished=device.current() == target and device.healthy())
                result["kills"].append(entry)
                print(f"kill {i + 1:2d}: after {entry['delay_s']:.2f}s ({'killed' if entry['killed'] else 'finished'}"
                      f" at: {entry['last_line'][-70:]!r}) -> v{entry['current_after_kill']} "
                      f"{'good' if entry['good_after_kill'] else 'BAD'}; restarted -> v{entry['current_after_restart']}",
                      flush=True)
            views = fleet.devices(root)
            result["fleet_view"] = [{k: d.get(k) for k in ("device_id", "version", "health", "arch", "onnxruntime",
                                                            "p50_ms", "last_error")} for d in views]
    kills = result["kills"]
    result["kills_good"] = sum(k["good_after_kill"] and k["finished"] for k in kills)
    ok = result["update_ok"] and result["refuse_bad_health_ok"] and result["rollback_ok"] and \
        result["kills_good"] == len(kills)
    print(f"\n| {args.model} | figure |\n|---|---|\n"
          f"| bundle folder / archive | {result['bundle_bytes'] / 1024:.0f} KiB / {result['archive_bytes'] / 1024:.0f} KiB |\n"
          f"| first install (agent run) | {result['install_s']:.2f} s |\n"
          f"| update v1 -> v2 (agent run) | {result['update_s']:.2f} s ({'ok' if result['update_ok'] else 'FAILED'}) |\n"
          f"| v3 failing its health check refused, stays v2 | {result['refuse_bad_health_s']:.2f} s "
          f"({'ok' if result['refuse_bad_health_ok'] else 'FAILED'}) |\n"
          f"| v2 broken after activation -> back to v1 | {result['rollback_s']:.2f} s "
          f"({'ok' if result['rollback_ok'] else 'FAILED'}) |\n"
          f"| random SIGKILLs leaving a good version | {result['kills_good']}/{len(kills)} "
          f"({sum(k['killed'] for k in kills)} killed mid-run) |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"JSON: {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
