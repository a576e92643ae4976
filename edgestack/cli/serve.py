"""`edgestack serve`: verify the artifacts, then become the BentoML server (serving/service.py)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edgestack import artifact, registry
from edgestack.settings import env_name, help_text

# Each flag is the Settings field of the same name.
SERVE_FLAGS = tuple((flag, env_name(flag)) for flag in
                    ("device", "variant", "threads", "max_body_bytes", "max_batch", "max_wait_ms", "grpc_port"))


def server_env(args: argparse.Namespace, environ) -> dict[str, str]:
    """The server's environment: ours, with `edgestack serve`'s flags as the EDGESTACK_* settings
    the service reads (a flag wins over the variable)."""
    env = dict(environ)
    if args.models:
        env[env_name("models")] = ",".join(args.models)
    env.setdefault(env_name("artifacts"), str(artifact.default_root()))
    for flag, var in SERVE_FLAGS:
        if getattr(args, flag) is not None:
            env[var] = str(getattr(args, flag))
    return env


def cmd_serve(args: argparse.Namespace) -> int:
    # Verify every artifact before starting BentoML: a refused artifact should stop the
    # command with its reason, not leave a server that never becomes ready.
    names = args.models or [n for n in registry.MODELS if artifact.latest_version_dir(n) is not None]
    if not names:
        raise artifact.ArtifactError(f"nothing to serve under {artifact.default_root()}: run `edgestack build` first")
    for name in names:
        registry.get(name)
        art = artifact.load_latest(name)
        print(f"[{name}] v{art.version} verified ({len(art.meta.files)} files)", flush=True)
    env = server_env(args, os.environ)
    root = Path(__file__).resolve().parents[2]  # the repository: edgestack/cli/serve.py -> ../../..
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
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--port", type=int, default=3000)
    s.add_argument("--device", choices=["auto", "cpu", "cuda", "tensorrt"], help="auto: TensorRT > CUDA > CPU")
    s.add_argument("--variant", help="force a variant (fp32, int8, fp16); default int8 on CPU, fp16 on GPU")
    s.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads per model (default: all cores)")
    s.add_argument("--max-body-bytes", type=int, help="largest accepted request body (default 8 MiB)")
    s.add_argument("--max-batch", type=int, help="adaptive batching: most rows in one ORT call (default 64)")
    s.add_argument("--max-wait-ms", type=float,
                   help="adaptive batching: extra wait for company once the queue is drained, like Triton's "
                        "max_queue_delay (default 0: a lone request runs at once)")
    s.add_argument("--grpc-port", type=int,
                   help="also serve the v2 protocol over gRPC (Triton's GRPCInferenceService, tritonclient.grpc) "
                        "on this port, same models and batcher (default 0: off)")
    s.set_defaults(func=cmd_serve)
