"""`edgestack bench MODEL --engine ray --replicas 1,2`: Ray Serve against the BentoML server.

The same artifact and the same request (the model's REST endpoint: one real test image to
/classify, one text to /classify_text, a 40-character tune from /generate) sent at
concurrency 1, 16 and 64 to the BentoML server and to Ray Serve with each replica count.
The BentoML server stays up for the whole run; each Ray Serve configuration is started in
turn and measured interleaved with it in blocks (bentoml ray bentoml ray ...), so drift and
other load on a shared machine hit both alike; ratios are taken within one pairing.

Cores: every configuration gets all of them for ONNX Runtime. BentoML runs one session with
`threads` intra-op threads; Ray Serve with R replicas gives each `threads / R` logical CPUs
(`--num-cpus`, also its ORT threads). On one box Ray's replicas share the same cores, so
more replicas can only help by overlapping Python work with ORT; the figure that carries to
a cluster is the per-replica throughput (docs/engines.md makes the estimate from it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.protocols import block, test_pixels
from benchmarks.timing import machine, percentiles, print_table, write_result
from edgestack import artifact
from edgestack.serverproc import free_port, running_process, running_server
from edgestack.settings import env_name

CONCURRENCY = (1, 16, 64)
ENGINE_BENCH_TIMEOUT = 240.0


def request_for(art: artifact.Artifact) -> dict:
    """The model's REST request (httpx keyword arguments, relative URL), one item."""
    if art.task == "image-classification":
        pixels = test_pixels(art, 1)
        return {"method": "POST", "url": "/classify", "json": {"model": art.name, "pixels": pixels.tolist(), "top_k": 1}}
    if art.task == "text-classification":
        return {"method": "POST", "url": "/classify_text",
                "json": {"model": art.name, "text": "A warm, funny and moving film with a script that never sags."}}
    return {"method": "POST", "url": "/generate", "json": {"model": art.name, "max_length": 40, "seed": 7}}


@contextlib.contextmanager
def running_ray(model: str, replicas: int, threads: int, log_path: Path):
    """`edgestack serve MODEL --engine ray --replicas N` (a local Ray), yields its URL; stopped by pid."""
    port = free_port()
    cpus = max(threads / replicas, 0.25)
    command = [sys.executable, "-m", "edgestack.cli", "serve", model, "--engine", "ray", "--host", "127.0.0.1",
               "--port", str(port), "--replicas", str(replicas), "--num-cpus", f"{cpus:g}"]
    started = time.perf_counter()
    with running_process(command, f"http://127.0.0.1:{port}/readyz", timeout=ENGINE_BENCH_TIMEOUT,
                         log_path=log_path, what="Ray Serve") as _:
        print(f"  Ray Serve, {replicas} replica(s) x {cpus:g} CPU: ready in {time.perf_counter() - started:.1f} s",
              flush=True)
        yield f"http://127.0.0.1:{port}"


async def pair(urls: dict[str, str], request: dict, requests: int, rounds: int = 4) -> list[dict]:
    """Each engine's rows at every concurrency, the engines interleaved in blocks."""
    import httpx

    rows = []
    limits = httpx.Limits(max_connections=max(CONCURRENCY) * len(urls), max_keepalive_connections=max(CONCURRENCY) * 2)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for concurrency in CONCURRENCY:
            requests_of = {engine: {**request, "url": url + request["url"]} for engine, url in urls.items()}
            for r in requests_of.values():  # warm-up: every connection once, the replicas' batchers
                await block(client, r, concurrency, 2 * concurrency)
            samples = {engine: [] for engine in urls}
            walls = {engine: 0.0 for engine in urls}
            per_block = max(concurrency, -(-requests // rounds))
            for _ in range(rounds):
                for engine, r in requests_of.items():
                    latencies, wall = await block(client, r, concurrency, per_block)
                    samples[engine] += latencies
                    walls[engine] += wall
            for engine in urls:
                row = percentiles(samples[engine], 1)
                row["items_per_s"] = len(samples[engine]) / walls[engine]
                rows.append({"case": f"{engine} conc={concurrency}", "engine": engine, "concurrency": concurrency,
                             **row})
    return rows


def run_engine_bench(args) -> dict:
    art = artifact.load_latest(args.model)
    replica_counts = [int(n) for n in str(args.replicas or "1,2").split(",") if n.strip()]
    threads = args.threads or os.cpu_count() or 1
    request = request_for(art)
    print(f"engine benchmark: {args.model} v{art.version} ({request['url']}), BentoML vs Ray Serve with "
          f"{replica_counts} replica(s), {threads} ORT threads per configuration, {args.http_requests} requests per "
          f"engine and concurrency {CONCURRENCY}", flush=True)
    rows, pairings = [], []
    with tempfile.TemporaryDirectory() as tmp, running_server(
            [args.model], env={env_name("threads"): str(threads)}, log_path=Path(tmp) / "bentoml.log") as (bento, _):
        for replicas in replica_counts:
            label = f"ray-{replicas}r"
            with running_ray(args.model, replicas, threads, Path(tmp) / f"{label}.log") as ray_url:
                paired = asyncio.run(pair({"bentoml": bento, label: ray_url}, request, args.http_requests))
            for row in paired:
                row["pairing"] = label
            rows += paired
            by = {(r["engine"], r["concurrency"]): r for r in paired}
            pairings.append({"ray": label, "replicas": replicas, "ratios": {
                f"conc{c}": {"items_per_s": by[(label, c)]["items_per_s"] / by[("bentoml", c)]["items_per_s"],
                             "p50": by[(label, c)]["p50_ms"] / by[("bentoml", c)]["p50_ms"],
                             "p99": by[(label, c)]["p99_ms"] / by[("bentoml", c)]["p99_ms"]}
                for c in CONCURRENCY}})
    result = {"model": args.model, "version": art.version, "endpoint": request["url"],
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(threads),
              "concurrency": list(CONCURRENCY), "rows": rows, "pairings": pairings,
              "note": "one box: Ray's replicas share its cores; every pairing interleaved with the same BentoML server"}
    m = result["machine"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores; every configuration {threads} ORT threads in all")
    for p in pairings:
        print_table([r for r in rows if r["pairing"] == p["ray"]], f"BentoML vs {p['ray']} (interleaved; items/s = requests/s)")
        print("  ray / bentoml: " + ", ".join(
            f"c{c[4:]} throughput {v['items_per_s']:.2f}x p50 {v['p50']:.2f}x p99 {v['p99']:.2f}x"
            for c, v in p["ratios"].items()))
    write_result(result, args.out, f"{args.model}-engines")
    return result

