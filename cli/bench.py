"""`edgestack bench`: the model family's benchmark, or the protocol benchmark (benchmarks/)."""

from __future__ import annotations

import argparse

from edgestack import registry


def cmd_bench(args: argparse.Namespace) -> int:
    if args.engine == "ray":
        from benchmarks.engines import run_engine_bench

        run_engine_bench(args)
        return 0
    if args.protocols:
        from benchmarks.protocols import run_protocol_bench

        run_protocol_bench(args)
        return 0
    from benchmarks import run_bench

    run_bench(args)
    return 0


def add_parsers(sub) -> None:
    be = sub.add_parser("bench", help="benchmark one model: table on screen, JSON on disk")
    be.add_argument("model", choices=list(registry.MODELS))
    be.add_argument("--iterations", type=int, default=200, help="timed runs per variant and batch size")
    be.add_argument("--http-requests", type=int, default=400, help="requests per HTTP concurrency level")
    be.add_argument("--no-http", action="store_true", help="skip the HTTP part (no server started)")
    be.add_argument("--port", type=int, default=0, help="port for the benchmark server (0: a free one)")
    be.add_argument("--threads", type=int, help="intra-op threads for torch and ORT (default: all cores; "
                                                "--protocols: our server's plan for the model)")
    be.add_argument("--workers", type=int,
                    help="with --protocols: processes per contender: our server's workers, Triton's model "
                         "instances, KServe's workers (default: the cores / --threads)")
    be.add_argument("--out", default="bench-results", help="folder for the JSON result")
    be.add_argument("--protocols", action="store_true",
                    help="instead: v2 binary vs v2 JSON vs the convenience endpoint over HTTP vs v2 gRPC, batch 1 "
                         "(concurrency 1, 16, 64) and 32 (1, 16), against in-process ORT; load from h2load "
                         "(`make data` installs it), --http-requests per case")
    be.add_argument("--peers", metavar="LIST",
                    help="with --protocols: other servers on the same artifact, variant and threads in the same "
                         "rotation, REST v2 binary and gRPC each: kserve (KServe's Python ModelServer, "
                         "`make kserve-venv`), triton (the real Triton, Python backend, `make triton`); "
                         "e.g. --peers kserve,triton")
    be.add_argument("--triton", action="store_true", help="with --protocols: the same as --peers triton")
    be.add_argument("--batches", type=lambda text: [int(b) for b in text.split(",")], metavar="1,32",
                    help="with --protocols: which batch sizes (default both: 1,32)")
    be.add_argument("--per-connection", type=int, default=8,
                    help="with --protocols: at concurrency C each block sends at least C x this many requests")
    be.add_argument("--ab", metavar="VAR=VALUE[,...]",
                    help="with --protocols: a second server of ours with these settings joins the rotation "
                         "(contenders b:v2-binary, b:v2-grpc): an interleaved A/B of a setting in one run")
    be.add_argument("--engine", choices=["bentoml", "ray"], default="bentoml",
                    help="ray: the BentoML server against Ray Serve on the same artifact and REST request, "
                         "interleaved, at concurrency 1/16/64 (--http-requests per engine and level)")
    be.add_argument("--replicas", default="1,2", help="with --engine ray: Ray Serve replica counts to compare")
    be.set_defaults(func=cmd_bench)
