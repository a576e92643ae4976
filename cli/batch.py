"""`edgestack batch` and `edgestack bench-batch`: their argument parsers (added by cli)."""

from __future__ import annotations

import argparse
import json
import os

from edgestack import registry

ENGINE_HELP = ("local: this process and worker processes; ray: Ray Data with an actor pool "
               "(a local Ray, or --address for a running cluster)")


def _job_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=["local", "ray"], default="local", help=ENGINE_HELP)
    g.add_argument("--workers", type=int, help="worker processes (local) or actors (ray); "
                   "default: cores // threads")
    g.add_argument("--threads", type=int, default=1,
                   help="ONNX Runtime intra-op threads per worker (default 1; keep workers x threads <= cores)")
    g.add_argument("--batch-size", type=int, default=256, help="rows per ONNX Runtime call (default 256)")
    g.add_argument("--shard-size", type=int, default=1000,
                   help="items per output shard, the unit of resume (default 1000)")
    g.add_argument("--address", help="ray: address of a running cluster (host:6379, ray://host:10001 or auto); "
                   "default: start a local Ray for this job")


def cmd_batch(args: argparse.Namespace) -> int:
    from batch.job import JobOptions, run_job

    source_options = {k: getattr(args, k) for k in ("text_column", "key_column", "seed", "max_length", "temperature",
                                                     "top_k", "top_p") if getattr(args, k) is not None}
    opts = JobOptions(engine=args.engine, workers=args.workers, threads=args.threads, batch_size=args.batch_size,
                      shard_size=args.shard_size, variant=args.variant, output_format=args.format,
                      overwrite=args.overwrite, address=args.address, source_options=source_options)
    summary = run_job(args.model, args.input, args.output, opts)
    if args.report:
        print(json.dumps(summary, indent=2))
    return 0


def cmd_bench_batch(args: argparse.Namespace) -> int:
    from benchmarks.batch import run_bench_batch

    run_bench_batch(args)
    return 0


def add_parsers(sub) -> None:
    names = ", ".join(registry.MODELS)
    b = sub.add_parser(
        "batch", help="batch inference over a folder/file of inputs, resumable",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run MODEL over every item of INPUT and write one row per item to OUTPUT.\n\n"
                    "INPUT: image models: a folder of images (PNG, JPEG, ...; recursive), an IDX file\n"
                    "(*-idx3-ubyte[.gz]) or a .npy array [N, H, W] of 0..255 intensities.\n"
                    "Generators (folk-lstm): a CSV, JSONL or Parquet table with a `prompt` column.\n"
                    "OUTPUT: *.parquet or *.jsonl with the input's key and index; classifiers: label,\n"
                    "label_index, probability, probabilities (every class, in label order);\n"
                    "generators: prompt, tune, seed, generated_chars, stop_reason. Inputs that cannot\n"
                    "be used go to OUTPUT's *.errors.jsonl with the reason; the job goes on.\n\n"
                    "Resumable: shards are written atomically under *.parts/; run the same command\n"
                    "again after a crash or kill and only the missing shards are computed, ending\n"
                    "with exactly one row (or error) per input. A finished job is not re-run\n"
                    "(--overwrite to redo it); *.job.json holds counts, timings and items/s.")
    b.add_argument("model", help=f"served name ({names})")
    b.add_argument("input", help="folder of images, IDX file or .npy (image models); CSV/JSONL/Parquet (text)")
    b.add_argument("output", help="output file: *.parquet or *.jsonl")
    _job_options(b)
    g = b.add_argument_group("job")
    g.add_argument("--variant", help="model variant (default: int8 on CPU)")
    g.add_argument("--format", choices=["parquet", "jsonl"], help="output format (default: from OUTPUT's extension)")
    g.add_argument("--overwrite", action="store_true", help="discard an existing output or unfinished job and start over")
    g.add_argument("--report", action="store_true", help="print the job summary (the *.job.json) as JSON at the end")
    g = b.add_argument_group("text and generator models (CSV, JSONL or Parquet input)")
    g.add_argument("--text-column", help="the column to read (default: text for classifiers, prompt for generators)")
    g.add_argument("--key-column", help="a column holding each row's key (default: the row number)")
    g.add_argument("--seed", type=int, help="generators: row i uses seed SEED + i (default 0): every tune can be had again")
    g.add_argument("--max-length", type=int, help="generators: most new characters per item (default 400)")
    g.add_argument("--temperature", type=float, help="generators: sampling temperature (default 1.0)")
    g.add_argument("--top-k", type=int, help="generators: sample among the k likeliest (default 0: off)")
    g.add_argument("--top-p", type=float, help="generators: nucleus mass (default 1.0: off)")
    b.set_defaults(func=cmd_batch)

    bb = sub.add_parser(
        "bench-batch", help="batch throughput per engine: table on screen, JSON on disk",
        description="Run the same batch job once per engine setting (real output to a temporary folder) and "
                    "report items/s with and without start-up. Example: edgestack bench-batch fashion-cnn "
                    "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
    bb.add_argument("model", help=f"served name ({names})")
    bb.add_argument("input", help="the input, as for `edgestack batch`")
    bb.add_argument("--settings", default=f"local:1,local:{max(2, os.cpu_count() or 1)},ray:{max(2, os.cpu_count() or 1)}",
                    help="comma-separated ENGINE:WORKERS (default: local:1,local:<cores>,ray:<cores>)")
    bb.add_argument("--threads", type=int, default=1, help="ORT threads per worker (default 1)")
    bb.add_argument("--batch-size", type=int, default=256)
    bb.add_argument("--shard-size", type=int, default=1000)
    bb.add_argument("--repeat", type=int, default=1, help="runs per setting")
    bb.add_argument("--address", help="ray settings: a running cluster instead of a local Ray")
    bb.add_argument("--out", default="bench-results", help="folder for the JSON result")
    bb.set_defaults(func=cmd_bench_batch)
