"""Memory of a server with several workers: each worker process holds its own copy of every served
model's sessions, so RSS grows with the workers (serving/workers.py).

    python -m benchmarks.workers [MODEL ...] [--workers 2]   (default: every built model)

Starts a real `edgestack serve` with EDGESTACK_WORKERS, sends each model one request (so every
lazily built buffer exists), and reads every process's RSS and USS (memory it alone holds):
the arbiter, then each worker. Table on screen, JSON under bench-results/.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import httpx
import psutil

from benchmarks.timing import machine, write_result
from edgestack import artifact
from edgestack.serverproc import running_server
from edgestack.settings import env_name


def touch(url: str, name: str) -> None:
    """One request to `name` through its REST endpoint."""
    from benchmarks.engines import request_for

    path, body = request_for(artifact.load_latest(name, check=False))
    httpx.post(url + path, content=body, headers={"content-type": "application/json"}, timeout=120).raise_for_status()


def measure(models: list[str], workers: int) -> dict:
    with running_server(models, env={env_name("workers"): str(workers)}, timeout=600) as (url, proc):
        for name in models:
            for _ in range(8 * workers):  # fresh connections, spread by the kernel: every worker gets
                touch(url, name)            # some (all on one worker: 2^-15 for two workers)
        time.sleep(1.0)
        root = psutil.Process(proc.pid)
        rows = []
        for process in [root, *root.children(recursive=True)]:
            info = process.memory_full_info()
            role = "arbiter" if process.pid == proc.pid else "worker"
            rows.append({"pid": process.pid, "role": role, "rss_mib": round(info.rss / 2**20, 1),
                         "uss_mib": round(info.uss / 2**20, 1)})
    workers_rows = [r for r in rows if r["role"] == "worker"]
    return {"models": models, "workers": workers, "processes": rows,
            "rss_per_worker_mib": [r["rss_mib"] for r in workers_rows],
            "total_rss_mib": round(sum(r["rss_mib"] for r in rows), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="served names (default: every built model)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="bench-results")
    args = parser.parse_args(argv)
    models = args.models or artifact.built_models()
    result = measure(models, args.workers)
    print(f"{len(models)} model(s) ({', '.join(models)}), {args.workers} workers:")
    for row in result["processes"]:
        print(f"  {row['role']:8s} pid {row['pid']:>7d}  RSS {row['rss_mib']:8.1f} MiB  USS {row['uss_mib']:8.1f} MiB")
    print(f"  in all: RSS {result['total_rss_mib']:.1f} MiB")
    result.update(when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), machine=machine(0))
    write_result(result, Path(args.out), "workers-memory")
    print(json.dumps(result["rss_per_worker_mib"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
