"""Which onnxruntime versions load and answer a bundle: measured, not assumed.

Each version's x86-64 wheel is unpacked once (bundle/emulate.py, .emu/wheels/) and put first
on this Python's path; the bundle's own runner then runs its health check with it
(`python -m edge_runner --health`: load the .ort graphs, answer the golden inputs, compare with
the answers the bundle was built with). The oldest version that passes is the bundle's
`runtime.min_onnxruntime`, which the runner enforces on a device.

The versions are searched by bisection (a version that loads an ORT format can load it in
every later release: ORT keeps reading older formats), so a 17-version list costs about five
runs; every version tried, and how it went, is recorded beside the answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bundle import emulate

# Every minor release with CPython 3.11 wheels on PyPI, newest patch of each.
CANDIDATES = ("1.15.1", "1.16.3", "1.17.3", "1.18.1", "1.19.2", "1.20.1", "1.21.1", "1.22.1", "1.23.2", "1.24.4",
              "1.25.1", "1.26.0", "1.27.0", "1.28.0", "1.29.0", "1.30.0", "1.31.1")


def try_version(folder: Path, version: str) -> str:
    """'ok', or what went wrong in one line, for the bundle in `folder` under onnxruntime `version`."""
    env = {**emulate.x86_runtime_env(version), "EDGE_RUNNER_ANY_RUNTIME": "1"}
    run = subprocess.run([sys.executable, "-m", "edge_runner", "--health", "--json", "--threads", "1"],
                         cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    if run.returncode == 0:
        report = json.loads(run.stdout)
        if report.get("onnxruntime") != version:
            return f"error: loaded onnxruntime {report.get('onnxruntime')}, not {version}"
        return "ok"
    lines = [line for line in (run.stdout + run.stderr).strip().splitlines() if line.strip()]
    if run.returncode == 1 and run.stdout.startswith("{"):
        return "wrong answers: " + "; ".join(json.loads(run.stdout)["problems"])[:300]
    return f"crashed (signal {-run.returncode})" if run.returncode < 0 else "error: " + (lines[-1] if lines else "?")[:300]


def measure(folder: Path | str, versions: list[str] | tuple[str, ...] = CANDIDATES) -> dict:
    """The manifest's runtime fields: min_onnxruntime (the oldest version in `versions` that passes,
    by bisection), min_onnxruntime_measured, onnxruntime_tried {version: 'ok' | what failed}."""
    folder = Path(folder)
    ordered = sorted(set(versions), key=emulate.version_tuple)
    tried: dict[str, str] = {}
    low, high = 0, len(ordered) - 1
    tried[ordered[high]] = try_version(folder, ordered[high])
    if tried[ordered[high]] != "ok":
        raise RuntimeError(f"{folder.name}: even onnxruntime {ordered[high]} cannot run it: {tried[ordered[high]]}")
    while low < high:  # invariant: ordered[high] passes; everything below `low` fails
        middle = (low + high) // 2
        tried[ordered[middle]] = try_version(folder, ordered[middle])
        if tried[ordered[middle]] == "ok":
            high = middle
        else:
            low = middle + 1
    return {"min_onnxruntime": ordered[high], "min_onnxruntime_measured": True,
            "onnxruntime_tried": dict(sorted(tried.items(), key=lambda kv: emulate.version_tuple(kv[0])))}
