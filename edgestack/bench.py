"""`edgestack bench MODEL`: one run, interleaved, after warm-up; a table on screen, JSON on disk.

In process: PyTorch eager vs ORT fp32 vs ORT int8, at batch 1 and 32, timed A B C A B C ...
so that drift (turbo, other load) hits every variant alike. Over HTTP: a real server on a
free port, at concurrency 1 and 16. Reported: p50/p95/p99 latency, throughput, the ratios,
and the machine (CPU, flags, cores, threads, versions) the numbers came from.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgestack import artifact, registry
from edgestack.serverproc import free_port, running_server

INTERESTING_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "avx_vnni")


def machine(threads: int) -> dict:
    cpu, flags = platform.processor() or "unknown", []
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name") and cpu in ("unknown", "", platform.processor()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                flags = [f for f in INTERESTING_FLAGS if f in present]
                break
    from export.onnx_utils import versions

    return {"cpu": cpu, "flags": flags, "cores": os.cpu_count(), "threads": threads,
            "python": platform.python_version(), "versions": versions()}


def percentiles(samples_s: list[float], items_per_call: int) -> dict:
    ms = np.asarray(samples_s) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "n": len(ms),
            "items_per_s": float(items_per_call / (ms.mean() / 1000))}


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
    with running_server([model], port=args.port or free_port(), env={"EDGESTACK_THREADS": str(threads)}) as (url, _):
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


def bench_cnn(art: artifact.Artifact, args) -> dict:
    import torch

    from serving.runtime import open_session
    from training import cnn

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    model, config = cnn.load_checkpoint(art.file("checkpoint"))
    data = cnn.load_dataset(cnn.Config(dataset=config["dataset"], data_dir=config["data_dir"], seed=config["seed"]))
    sessions = {v: open_session(art.variant_path(v), device="cpu", threads=threads) for v in ("fp32", "int8")}
    results = {"in_process": [], "http": []}
    for batch in (1, 32):
        x = cnn.to_tensor(data.test.images[:batch])
        feeds = {"images": x.numpy()}

        def torch_eager(x=x):
            with torch.inference_mode():
                model(x)

        candidates = {"pytorch-eager": torch_eager,
                      **{f"ort-{v}": (lambda s=s: s.run(feeds)) for v, s in sessions.items()}}
        for name, samples in interleaved(candidates, args.iterations).items():
            results["in_process"].append({"case": f"{name} batch={batch}", "engine": name, "batch": batch,
                                          **percentiles(samples, batch)})
    if not args.no_http:
        body = {"model": art.name, "pixels": data.test.images[:1].tolist(), "top_k": 1}
        results["http"] = http_rows(art.name, "/classify", body, args, threads, "http /classify batch=1")
    by_case = {r["case"]: r for r in results["in_process"] + results["http"]}
    ratios = {
        "ort_int8_over_pytorch_p50_batch1": by_case["ort-int8 batch=1"]["p50_ms"] / by_case["pytorch-eager batch=1"]["p50_ms"],
        "ort_fp32_over_pytorch_p50_batch1": by_case["ort-fp32 batch=1"]["p50_ms"] / by_case["pytorch-eager batch=1"]["p50_ms"],
        "int8_over_fp32_p50_batch1": by_case["ort-int8 batch=1"]["p50_ms"] / by_case["ort-fp32 batch=1"]["p50_ms"],
        "int8_over_fp32_p50_batch32": by_case["ort-int8 batch=32"]["p50_ms"] / by_case["ort-fp32 batch=32"]["p50_ms"],
        "ort_int8_over_pytorch_p50_batch32": by_case["ort-int8 batch=32"]["p50_ms"] / by_case["pytorch-eager batch=32"]["p50_ms"],
    }
    if results["http"]:
        ratios["http_conc1_over_inprocess_int8_p50"] = (by_case["http /classify batch=1 conc=1"]["p50_ms"]
                                                         / by_case["ort-int8 batch=1"]["p50_ms"])
    return {**results, "ratios": ratios, "threads": threads}


def bench_lstm(art: artifact.Artifact, args) -> dict:
    from edgestack.bench_lstm import bench_lstm as run  # tokens/s and time to first token

    return run(art, args)


def bench_transformer(art: artifact.Artifact, args) -> dict:
    from edgestack.bench_text import bench_text  # batch 1/16 x length 32/128, then HTTP

    return bench_text(art, args)


BENCHES = {"cnn": bench_cnn, "lstm": bench_lstm, "transformer": bench_transformer}


def run_bench(args) -> dict:
    spec = registry.get(args.model)
    art = artifact.load_latest(args.model)
    bench = BENCHES.get(spec.family)
    if bench is None:
        raise ValueError(f"no benchmark for family {spec.family!r} yet")
    print(f"benchmarking {args.model} v{art.version}: {args.iterations} interleaved rounds after warm-up", flush=True)
    result = bench(art, args)
    result = {"model": args.model, "version": art.version, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": machine(result.pop("threads")), **result}
    m = result["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads, flags {' '.join(m['flags'])}; "
          f"torch {m['versions'].get('torch')}, onnxruntime {m['versions'].get('onnxruntime')}")
    print_table(result["in_process"], "in process")
    if result["http"]:
        print_table(result["http"], "over HTTP (real server, int8 on CPU)")
    print("\nratios (p50):")
    for key, value in result["ratios"].items():
        print(f"  {key:40s} {value:6.3f}")
    write_result(result, args.out, args.model)
    return result


def write_result(result: dict, out: str | Path, stem: str) -> Path:
    """The benchmark's JSON, timestamped, under `out`; says where."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"\nJSON: {path}")
    return path

