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

import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.loadgen import ProcessTreeCPU, Target, run_block, summary
from benchmarks.protocols import print_load_table, test_pixels
from benchmarks.timing import machine, write_result
from edgestack import artifact
from edgestack.serverproc import free_port, running_process, running_server
from edgestack.settings import env_name

CONCURRENCY = (1, 16, 64)
# Load shedding off on both engines: this measures throughput and latency under a queue, not
# how early a server refuses (at concurrency 64 on 2 shared cores both would shed).
UNSHED = {env_name("max_queue_ms"): "0"}
ENGINE_BENCH_TIMEOUT = 240.0


def request_for(art: artifact.Artifact) -> tuple[str, bytes]:
    """The model's REST request, one item: (path, JSON body)."""
    if art.task == "image-classification":
        pixels = test_pixels(art, 1)
        return "/classify", json.dumps({"model": art.name, "pixels": pixels.tolist(), "top_k": 1}).encode()
    if art.task == "text-classification":
        text = "A warm, funny and moving film with a script that never sags."
        return "/classify_text", json.dumps({"model": art.name, "text": text}).encode()
    return "/generate", json.dumps({"model": art.name, "max_length": 40, "seed": 7}).encode()


@contextlib.contextmanager
def running_ray(model: str, replicas: int, threads: int, log_path: Path):
    """`edgestack serve MODEL --engine ray --replicas N` (a local Ray); yields (URL, process). Stopped by pid."""
    port = free_port()
    cpus = max(threads / replicas, 0.25)
    command = [sys.executable, "-m", "cli", "serve", model, "--engine", "ray", "--host", "127.0.0.1",
               "--port", str(port), "--replicas", str(replicas), "--num-cpus", f"{cpus:g}"]
    started = time.perf_counter()
    with running_process(command, f"http://127.0.0.1:{port}/readyz", env=UNSHED, timeout=ENGINE_BENCH_TIMEOUT,
                         log_path=log_path, what="Ray Serve") as proc:
        print(f"  Ray Serve, {replicas} replica(s) x {cpus:g} CPU: ready in {time.perf_counter() - started:.1f} s",
              flush=True)
        yield f"http://127.0.0.1:{port}", proc


def pair(servers: dict[str, tuple[str, int]], path: str, body: bytes, requests: int, workdir: Path,
         rounds: int = 4) -> list[dict]:
    """Each engine's rows at every concurrency, the engines interleaved in blocks (h2load); the
    server's CPU per request from its whole process tree (Ray's raylet, GCS, proxy, replicas)."""
    rows = []
    targets = {engine: Target(url + path, body, {"content-type": "application/json"}, server=engine)
               for engine, (url, _) in servers.items()}
    cpu = {engine: ProcessTreeCPU(pid) for engine, (_, pid) in servers.items()}
    for concurrency in CONCURRENCY:
        for target in targets.values():  # warm-up: every connection, the replicas' batchers
            run_block(target, concurrency, 2 * concurrency, workdir)
        blocks = {engine: [] for engine in servers}
        per_block = max(concurrency, -(-requests // rounds))
        for _ in range(rounds):
            for engine, target in targets.items():
                before = cpu[engine].seconds()
                block = run_block(target, concurrency, per_block, workdir)
                block.server_cpu_s = cpu[engine].seconds() - before
                blocks[engine].append(block)
        for engine in servers:
            rows.append({"case": f"{engine} conc={concurrency}", "engine": engine, "concurrency": concurrency,
                         **summary(blocks[engine], 1)})
    return rows


def run_engine_bench(args) -> dict:
    art = artifact.load_latest(args.model)
    replica_counts = [int(n) for n in str(args.replicas or "1,2").split(",") if n.strip()]
    threads = args.threads or os.cpu_count() or 1
    path, body = request_for(art)
    print(f"engine benchmark: {args.model} v{art.version} ({path}), BentoML vs Ray Serve with "
          f"{replica_counts} replica(s), {threads} ORT threads per configuration, {args.http_requests} requests per "
          f"engine and concurrency {CONCURRENCY}", flush=True)
    rows, pairings = [], []
    with tempfile.TemporaryDirectory() as tmp, running_server(
            [args.model], env={env_name("threads"): str(threads), **UNSHED},
            log_path=Path(tmp) / "bentoml.log") as (bento, bento_proc):
        for replicas in replica_counts:
            label = f"ray-{replicas}r"
            with running_ray(args.model, replicas, threads, Path(tmp) / f"{label}.log") as (ray_url, ray_proc):
                paired = pair({"bentoml": (bento, bento_proc.pid), label: (ray_url, ray_proc.pid)}, path, body,
                              args.http_requests, Path(tmp))
            for row in paired:
                row["pairing"] = label
            rows += paired
            by = {(r["engine"], r["concurrency"]): r for r in paired}
            pairings.append({"ray": label, "replicas": replicas, "ratios": {
                f"conc{c}": {"items_per_s": by[(label, c)]["items_per_s"] / by[("bentoml", c)]["items_per_s"],
                             "p50": by[(label, c)]["p50_ms"] / by[("bentoml", c)]["p50_ms"],
                             "p99": by[(label, c)]["p99_ms"] / by[("bentoml", c)]["p99_ms"]}
                for c in CONCURRENCY}})
    result = {"model": args.model, "version": art.version, "endpoint": path,
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(threads),
              "concurrency": list(CONCURRENCY), "rows": rows, "pairings": pairings,
              "note": "one box: Ray's replicas share its cores; every pairing interleaved with the same BentoML server"}
    m = result["machine"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores; every configuration {threads} ORT threads in all")
    for p in pairings:
        print_load_table([r for r in rows if r["pairing"] == p["ray"]], f"BentoML vs {p['ray']} (interleaved blocks, h2load)")
        print("  ray / bentoml: " + ", ".join(
            f"c{c[4:]} throughput {v['items_per_s']:.2f}x p50 {v['p50']:.2f}x p99 {v['p99']:.2f}x"
            for c, v in p["ratios"].items()))
    write_result(result, args.out, f"{args.model}-engines")
    return result

