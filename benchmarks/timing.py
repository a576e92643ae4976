"""What every benchmark shares: one run, interleaved, after warm-up; a table on screen, JSON on disk.

Variants are timed A B C A B C ... so that drift (turbo, other load) hits every one alike;
over HTTP a real server on a free port. Reported: p50/p95/p99 latency, throughput, the
ratios, and the machine (CPU, flags, cores, threads, versions) the numbers came from.
"""

from __future__ import annotations

import asyncio
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgestack.serverproc import free_port, running_server
from edgestack.settings import env_name


def machine(threads: int) -> dict:
    from edgestack.cpu import cpu_info, package_versions

    cpu = cpu_info()
    return {"cpu": cpu["model"], "flags": cpu["flags"], "int8_dot_product": cpu["int8_dot_product"],
            "cores": cpu["cores"], "threads": threads, "python": platform.python_version(),
            "versions": package_versions()}


def percentiles(samples_s: list[float], items_per_call: int) -> dict:
    ms = np.asarray(samples_s) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "n": len(ms),
            "items_per_s": float(items_per_call / (ms.mean() / 1000))}


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either was not measured (None) or b is not positive: the one place a
    benchmark divides one measurement by another."""
    if a is None or b is None or b <= 0:
        return None
    return a / b


def shown(value: float | None, width: int, digits: int = 3) -> str:
    """A figure for a table: `below res.` for a measurement that fell under its clock's resolution."""
    return f"{'below res.' if value is None else f'{value:.{digits}f}':>{width}s}"


def interleaved(candidates: dict[str, Callable[[], object]], iterations: int, warmup: int = 20) -> dict[str, list[float]]:
    """Time each candidate once per round, rounds in sequence: A B C A B C ..."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(iterations):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return samples


async def http_load(url: str, path: str, body: dict, concurrency: int, requests: int) -> tuple[list[float], float]:
    """`requests` POSTs spread over `concurrency` workers; per-request latencies and wall time."""
    import httpx

    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        for _ in range(min(20, requests)):  # warm-up
            (await client.post(path, json=body)).raise_for_status()
        counter = iter(range(requests))

        async def worker():
            for _ in counter:
                start = time.perf_counter()
                response = await client.post(path, json=body)
                latencies.append(time.perf_counter() - start)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return latencies, wall


def http_rows(model: str, path: str, body: dict, args, threads: int, case: str, **extra) -> list[dict]:
    """One real server for `model`; `args.http_requests` POSTs of `body` at concurrency 1 and 16."""
    rows = []
    with running_server([model], port=args.port or free_port(), env={env_name("threads"): str(threads)}) as (url, _):
        for concurrency in (1, 16):
            latencies, wall = asyncio.run(http_load(url, path, body, concurrency, args.http_requests))
            row = {**percentiles(latencies, 1), "items_per_s": len(latencies) / wall}
            rows.append({"case": f"{case} conc={concurrency}", "engine": "http", "batch": 1,
                         "concurrency": concurrency, **extra, **row})
    return rows


def print_table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    header = f"{'case':34s} {'p50 ms':>9s} {'p95 ms':>9s} {'p99 ms':>9s} {'items/s':>10s}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['case']:34s} {row['p50_ms']:9.3f} {row['p95_ms']:9.3f} {row['p99_ms']:9.3f} {row['items_per_s']:10.1f}")


def write_result(result: dict, out: str | Path, stem: str) -> Path:
    """The benchmark's JSON, timestamped, under `out`; says where."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"\nJSON: {path}")
    return path

