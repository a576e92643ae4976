"""Benchmarks: each prints a table and writes JSON (benchmarks/timing.py holds the shared
timing, tables and JSON). `edgestack bench MODEL` runs the model family's benchmark, named
by its `bench` stage in edgestack/registry.py."""

from __future__ import annotations

import time

from benchmarks.timing import machine, print_table, write_result
from edgestack import artifact, registry


def run_bench(args) -> dict:
    bench = registry.load_object(registry.stage(args.model, "bench"))
    art = artifact.load_latest(args.model)
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
