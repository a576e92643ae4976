"""`edgestack serve`: verify the artifacts, then become the BentoML server (serving/service.py),
or with `--engine ray` serve them on Ray Serve (serving/ray_engine.py)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edgestack import artifact, registry
from edgestack.errors import UsageError
from edgestack.settings import env_name, get_settings, help_text

# Each flag is the Settings field of the same name.
SERVE_FLAGS = tuple((flag, env_name(flag)) for flag in
                    ("device", "variant", "threads", "workers", "max_body_bytes", "max_batch", "max_wait_ms", "grpc_port"))
# --engine ray: flag -> Settings field (the repeatable ones are joined with commas)
RAY_FLAGS = {"address": "ray_address", "replicas": "ray_replicas", "autoscale": "ray_autoscale",
             "num_cpus": "ray_num_cpus", "max_ongoing": "ray_max_ongoing", "max_queued": "ray_max_queued"}


def server_env(args: argparse.Namespace, environ) -> dict[str, str]:
    """The server's environment: ours, with `edgestack serve`'s flags as the EDGESTACK_* settings
    the service reads (a flag wins over the variable)."""
    env = dict(environ)
    if getattr(args, "host", None) is None:
        args.host = get_settings().host
    env[env_name("host")] = args.host  # the gRPC port binds where HTTP does
    if args.models:
        env[env_name("models")] = ",".join(args.models)
    env.setdefault(env_name("artifacts"), str(artifact.default_root()))
    for flag, var in SERVE_FLAGS:
        if getattr(args, flag) is not None:
            env[var] = str(getattr(args, flag))
    for flag, field in RAY_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            env[env_name(field)] = ",".join(value) if isinstance(value, list) else str(value)
    return env


def cmd_serve(args: argparse.Namespace) -> int:
    get_settings().check_model_control()  # before anything slow: load/unload never without keys
    engine = getattr(args, "engine", "bentoml")
    ray_only = [f"--{flag.replace('_', '-')}" for flag in RAY_FLAGS if getattr(args, flag, None) is not None]
    if engine != "ray" and ray_only:
        raise UsageError(f"{', '.join(ray_only)}: Ray Serve settings; add --engine ray")
    if engine == "ray" and getattr(args, "grpc_port", None):
        raise UsageError("--grpc-port: the v2 gRPC endpoint is on the BentoML server only, not on --engine ray")
    if engine == "ray" and getattr(args, "workers", None):
        raise UsageError("--workers: worker processes of the BentoML server; on --engine ray use --replicas")
    # Verify every artifact before starting BentoML: a refused artifact should stop the
    # command with its reason, not leave a server that never becomes ready.
    names = args.models or artifact.built_models()
    if not names:
        raise artifact.ArtifactError(f"nothing to serve under {artifact.default_root()}: run `edgestack build` first")
    for name in names:
        registry.get(name)
        art = artifact.load_latest(name)
        print(f"[{name}] v{art.version} verified ({len(art.meta.files)} files)", flush=True)
    env = server_env(args, os.environ)
    if args.host not in ("127.0.0.1", "::1") and not get_settings().auth_on:
        print(f"warning: listening on {args.host} without API keys: anyone who reaches this machine can use the "
              "server (set EDGESTACK_API_KEYS)", file=sys.stderr, flush=True)
    if engine == "ray":
        from serving.ray_engine import serve_forever

        os.environ.update(env)
        return serve_forever(names, args.host, args.port)
    # Workers and threads decided once, here, and handed to BentoML's arbiter and every worker
    # as EDGESTACK_WORKERS, so that all of them agree (serving/workers.py).
    from serving.workers import plan

    os.environ.update(env)  # what the settings are read from; this process becomes the server
    workers = plan(names)
    env[env_name("workers")] = str(workers.workers)
    print(f"workers: {workers.describe()}", flush=True)
    root = Path(__file__).resolve().parents[1]  # the repository: cli/serve.py -> ..
    command = [sys.executable, "-m", "bentoml", "serve", "serving.service:EdgeStack",
               "--host", args.host, "--port", str(args.port), "--working-dir", str(root)]
    print("serving:", " ".join(command[2:]), flush=True)
    # Become the server (no child): a SIGTERM to `edgestack serve` (tests, systemd,
    # Kubernetes) then reaches BentoML itself instead of leaving an orphaned server behind.
    os.execve(sys.executable, command, env)


def add_parsers(sub) -> None:
    s = sub.add_parser("serve", help="serve built models over HTTP (BentoML + ONNX Runtime)",
                       epilog=help_text(), formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("models", nargs="*", help="served names (default: every built model)")
    s.add_argument("--host", default=None,
                   help="where to listen, HTTP and gRPC (default 127.0.0.1: this machine only; EDGESTACK_HOST). "
                        "To open it up, set API keys first: EDGESTACK_API_KEYS=... edgestack serve --host 0.0.0.0")
    s.add_argument("--port", type=int, default=3000)
    s.add_argument("--device", choices=["auto", "cpu", "cuda", "tensorrt"], help="auto: TensorRT > CUDA > CPU")
    s.add_argument("--variant", help="force a variant (fp32, int8, fp16); default int8 on CPU, fp16 on GPU")
    s.add_argument("--threads", type=int,
                   help="ONNX Runtime intra-op threads per model in each worker (default: the build's measured choice, "
                        "at most cores / workers)")
    s.add_argument("--workers", type=int,
                   help="server worker processes, each an event loop with its own copy of the models (default: the "
                        "cores divided by the threads the served models need; printed at start)")
    s.add_argument("--max-body-bytes", type=int, help="largest accepted request body (default 8 MiB)")
    s.add_argument("--max-batch", type=int, help="adaptive batching: most rows in one ORT call (default 64)")
    s.add_argument("--max-wait-ms", type=float,
                   help="adaptive batching: extra wait for company once the queue is drained, like Triton's "
                        "max_queue_delay (default 0: a lone request runs at once)")
    s.add_argument("--grpc-port", type=int,
                   help="also serve the v2 protocol over gRPC (Triton's GRPCInferenceService, tritonclient.grpc) "
                        "on this port, same models and batcher (default 0: off)")
    ray = s.add_argument_group(
        "Ray Serve (--engine ray)", "each model a Ray Serve deployment; MODEL=VALUE sets one model, a bare VALUE "
        "every model; repeat a flag for several")
    ray.add_argument("--engine", choices=["bentoml", "ray"], default="bentoml",
                     help="bentoml: one server process (default); ray: Ray Serve, on this box or a cluster")
    ray.add_argument("--replicas", action="append", metavar="[MODEL=]N", help="replicas per model (default 1)")
    ray.add_argument("--autoscale", action="append", metavar="[MODEL=]MIN:MAX",
                     help="autoscale between MIN and MAX replicas instead of a fixed count")
    ray.add_argument("--num-cpus", action="append", metavar="[MODEL=]X",
                     help="logical CPUs per replica, also its ONNX Runtime threads (default 1)")
    ray.add_argument("--address", help="join a running Ray cluster (its GCS host:port, or auto); "
                                       "default: start a local Ray and stop it on exit")
    ray.add_argument("--max-ongoing", type=int, help="most requests in flight at one replica (default 32)")
    ray.add_argument("--max-queued", type=int,
                     help="most requests waiting per model; beyond: 503 (default 256, -1: no limit)")
    s.set_defaults(func=cmd_serve)
