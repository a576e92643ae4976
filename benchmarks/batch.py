"""`edgestack bench-batch MODEL INPUT`: one input through each engine setting; table + JSON.

Default settings: local with 1 worker, local with 2 workers, Ray with 2 actors, each worker
with 1 ORT thread (workers x threads <= cores). Every run writes real Parquet output to a
temporary folder (removed afterwards) and must end with one row or error per input.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from batch.job import JobOptions, run_job, summary_table
from edgestack.errors import UsageError


def parse_setting(text: str) -> tuple[str, int]:
    engine, _, workers = text.partition(":")
    if engine not in ("local", "ray") or not workers.isdigit() or int(workers) < 1:
        raise UsageError(f"engine setting {text!r}: write ENGINE:WORKERS, e.g. local:2 or ray:2")
    return engine, int(workers)


def run_bench_batch(args) -> dict:
    from benchmarks.timing import machine, write_result

    settings = [parse_setting(s) for s in args.settings.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="edgestack-bench-batch-") as tmp:
        for engine, workers in settings:
            for repeat in range(args.repeat):
                opts = JobOptions(engine=engine, workers=workers, threads=args.threads, batch_size=args.batch_size,
                                  shard_size=args.shard_size, overwrite=True, progress=False, address=args.address)
                output = Path(tmp) / f"{engine}-{workers}-{repeat}.parquet"
                summary = run_job(args.model, args.input, str(output), opts)
                if summary["rows"] + summary["errors"] != summary["items"]:
                    raise RuntimeError(f"{engine}:{workers}: {summary['rows']} rows + {summary['errors']} errors "
                                       f"!= {summary['items']} inputs")
                summary["output_bytes"] = output.stat().st_size
                print(f"  {engine} x{workers} run {repeat + 1}: {summary['items_per_s']:,.0f} items/s "
                      f"({summary['run_seconds']:.2f}s)", flush=True)
                results.append(summary)
    report = {"model": args.model, "input": str(args.input), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": machine(args.threads), "runs": results}
    m = report["machine"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores, flags {' '.join(m['flags'])}; onnxruntime "
          f"{m['versions'].get('onnxruntime')}; {args.threads} ORT thread(s) per worker; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{args.model} on {args.input}: items/s = items / (engine start to last shard written); "
          "steady = without the start-up\n")
    print(summary_table(results))
    write_result(report, args.out, f"batch-{args.model}")
    return report
