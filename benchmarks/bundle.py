"""`edgestack bench-bundle MODEL...`: what a device would see; table + JSON.

Per model: bundle size (folder, archive, model.ort), cold start (a fresh `python -m
edge_runner INPUT` process, from spawn to its first answer on stdout) and that process's
peak RSS, then batch-1 latency in process through the runner's Python API, model.ort and
model.onnx interleaved, 1 thread (a small device's core). Medians are reported.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bundle.make import make_bundle
from edgestack.settings import PREFIX


def clean_env() -> dict:
    """No PYTHONPATH and nothing of edgestack's: the runner finds only its bundle."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", PREFIX))}
    env["EDGE_THREADS"] = "1"
    return env


def cold_start(python: str, bundle_dir: Path, inputs: list[str], runs: int) -> dict:
    """Spawn the runner `runs` times; time to the first answer line, peak RSS of each process."""
    times, rss = [], []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.Popen([python, "-m", "edge_runner", *inputs, "--json", "--threads", "1", "--timing"],
                                cwd=bundle_dir, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = proc.stdout.readline()
        elapsed = time.perf_counter() - started
        rest, errors = proc.communicate()
        if proc.returncode != 0 or not first:
            raise RuntimeError(f"runner failed ({proc.returncode}): {(first + rest).decode()[-1000:]} "
                               f"{errors.decode()[-2000:]}")
        json.loads(first)
        times.append(elapsed)
        # the runner's own VmHWM (getrusage of a child would include this process's peak)
        match = re.search(r"peak RSS ([0-9.]+) MiB", errors.decode())
        rss.append(float(match.group(1)) * 1024 if match else float("nan"))
    return {"cold_start_ms_median": 1000 * statistics.median(times), "cold_start_ms_all": [1000 * t for t in times],
            "peak_rss_mib_median": statistics.median(rss) / 1024, "runs": runs}


def import_from_bundle(bundle_dir: Path, module: str = "edge_runner"):
    """`module` from this bundle's own edge_runner package. Every bundle ships its own copy,
    with the modules of its family only (tune.py, text.py, ...): a copy imported from another
    bundle earlier in this process is dropped from sys.modules first, or Python would hand it
    back and miss this family's modules."""
    for name in [m for m in sys.modules if m == "edge_runner" or m.startswith("edge_runner.")]:
        del sys.modules[name]
    sys.path.insert(0, str(bundle_dir))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(bundle_dir))


def latency(bundle_dir: Path, sample, iterations: int) -> dict:
    """Batch-1 latency through the Python API: ort and onnx formats interleaved, 1 thread."""
    runner = import_from_bundle(bundle_dir)
    models = {fmt: runner.load(bundle_dir, threads=1, model_format=fmt) for fmt in ("ort", "onnx")}
    for model in models.values():
        for _ in range(20):
            model.predict_one(sample)
    samples = {fmt: [] for fmt in models}
    for _ in range(iterations):
        for fmt, model in models.items():
            started = time.perf_counter()
            model.predict_one(sample)
            samples[fmt].append(time.perf_counter() - started)
    out = {}
    for fmt, values in samples.items():
        ms = np.asarray(values) * 1000
        out[fmt] = {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
                    "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}
    return out


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def run_bench_bundle(args) -> dict:
    from benchmarks.timing import machine, write_result

    python = args.python or sys.executable
    has_pillow = subprocess.run([python, "-c", "import PIL"], env=clean_env(), capture_output=True).returncode == 0
    rows = []
    for name in args.models:
        built = make_bundle(name, args.bundles, progress=True)
        edge_module = import_from_bundle(built.path, f"edge_runner.{built.manifest['runner']['module']}")
        sample_dir = (Path(args.out) / "bundle-samples" / name).resolve()
        sample_dir.mkdir(parents=True, exist_ok=True)
        inputs, sample = edge_module.example_input(built.manifest, sample_dir)
        row = {"model": name, "version": built.manifest["version"], "variant": built.manifest["variant"],
               "bundle_bytes": dir_bytes(built.path), "archive_bytes": built.archive.stat().st_size,
               "ort_bytes": sum((built.path / g["ort"]).stat().st_size for g in built.manifest["graphs"].values()),
               "onnx_bytes": sum((built.path / g["onnx"]).stat().st_size for g in built.manifest["graphs"].values()),
               "python": python, "pillow_in_runner_env": has_pillow,
               **cold_start(python, built.path, inputs, args.runs),
               "batch1": latency(built.path, sample, args.iterations),
               "batch1_unit": getattr(edge_module, "LATENCY_UNIT", "1 item")}
        rows.append(row)
    report = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(1), "bundles": rows}
    m = report["machine"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores, flags {' '.join(m['flags'])}; onnxruntime "
          f"{m['versions'].get('onnxruntime')}; runner threads 1; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; runner python {python}")
    header = (f"{'model':22s} {'bundle KiB':>10s} {'tar.gz KiB':>10s} {'.ort KiB':>8s} {'cold start ms':>13s} "
              f"{'peak RSS MiB':>12s} {'b1 p50 ms ort':>13s} {'b1 p50 ms onnx':>14s} {'b1 p99 ms ort':>13s}  batch-1 =")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:22s} {r['bundle_bytes'] / 1024:10.0f} {r['archive_bytes'] / 1024:10.0f} "
              f"{r['ort_bytes'] / 1024:8.0f} {r['cold_start_ms_median']:13.0f} {r['peak_rss_mib_median']:12.1f} "
              f"{r['batch1']['ort']['p50_ms']:13.3f} {r['batch1']['onnx']['p50_ms']:14.3f} "
              f"{r['batch1']['ort']['p99_ms']:13.3f}  {r['batch1_unit']}")
    write_result(report, args.out, "bundle")
    return report
