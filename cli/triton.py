"""`edgestack export triton` (also `export-triton`): a Triton model repository from built artifacts (export/triton.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgestack import artifact
from export.triton import BACKENDS, TARGETS, export_repository, serve_repository


def cmd_export_triton(args: argparse.Namespace) -> int:
    names = args.models or artifact.built_models()
    if not names:
        raise artifact.ArtifactError(f"no built model under {artifact.default_root()}: run `edgestack build` first")
    repo = Path(args.repo)
    options = dict(target=args.target or ("cpu" if args.backend == "python" else "both"),
                   cpu_instances=args.cpu_instances, threads=args.threads, keep_versions=args.keep_versions)
    # dynamic batching: on by default for onnxruntime (64 rows, 2 ms), opt-in for python (--max-batch N)
    python = args.backend == "python"
    options.update(max_batch_size=args.max_batch if args.max_batch is not None else 0 if python else 64,
                   queue_delay_us=args.queue_delay_us if args.queue_delay_us is not None else 0 if python else 2000)
    if not python:
        options.update(gpu_instances=args.gpu_instances)
    written = export_repository(repo, names, all_versions=args.all_versions, variant=args.variant,
                                backend=args.backend, **options)
    for model_dir in written:
        versions = sorted(p.name for p in model_dir.iterdir() if p.is_dir())
        print(f"[{model_dir.name}] {model_dir}/config.pbtxt, versions {', '.join(versions)}")
    if args.serve is not None:
        return serve_repository(repo, args.serve)
    if args.backend == "python":
        print(f"serve it: edgestack export triton --backend python --repo {repo} --serve 8000 "
              "(the tritonserver `make triton` fetches)")
    else:
        gpus = "" if options["target"] == "cpu" else "--gpus all "
        print(f"serve it: docker run {gpus}-p 8000:8000 -v {repo.resolve()}:/models "
              "nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "export-triton", help="write a Triton Inference Server model repository (also: `export triton`)",
        description="Write <repo>/<model>/config.pbtxt and <repo>/<model>/<version>/model.onnx for built models "
                    "(platform onnxruntime_onnx, dims from the ONNX graph, dynamic batching, instance groups, "
                    "TensorRT FP16 on GPU); or, with --backend python, a Python-backend model per artifact that "
                    "runs edgestack's own runner (<version>/model.py + <version>/artifact/). Each config is "
                    "validated by parsing it with Triton's ModelConfig protobuf. `edgestack export triton ...` "
                    "is the same command.")
    p.add_argument("models", nargs="*", help="served names (default: every built model)")
    p.add_argument("--repo", default="triton-repo", help="repository folder (default ./triton-repo)")
    p.add_argument("--variant", default="fp32", help="which ONNX variant to ship, and for python which one the "
                   "runner runs (fp32 default: TensorRT makes its own FP16 engine on GPU; int8 for CPU-only "
                   "repositories)")
    p.add_argument("--backend", choices=BACKENDS, default="onnxruntime",
                   help="onnxruntime (default): the ONNX graph on Triton's ORT backend; python: edgestack's own "
                        "runner (tokenization, state checks) on Triton's Python backend, CPU only")
    p.add_argument("--target", choices=TARGETS,
                   help="instance groups: both (GPU + CPU; the host needs a GPU; the default for onnxruntime), "
                        "gpu, or cpu (CPU-only Triton; the only one for python)")
    p.add_argument("--max-batch", type=int,
                   help="max_batch_size for models with a batch dimension: Triton's dynamic batching merges requests "
                        "up to this many rows (default 64; python: 0 = off, each request runs as it came; with N > 0 "
                        "model.py runs each merged set as one ORT call, and a text model's texts are sent as [n, 1])")
    p.add_argument("--queue-delay-us", type=int,
                   help="dynamic batching: longest wait for a fuller batch, microseconds (default 2000 = 2 ms; "
                        "python: 0, as our server's batcher)")
    p.add_argument("--cpu-instances", type=int, default=1, help="model instances on CPU")
    p.add_argument("--gpu-instances", type=int, default=1, help="model instances per GPU")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads per instance (Triton's default if unset; "
                   "python: all cores)")
    p.add_argument("--all-versions", action="store_true", help="export every built version, not just the latest")
    p.add_argument("--keep-versions", type=int, default=1, help="version policy: serve the latest N versions")
    p.add_argument("--serve", type=int, metavar="PORT",
                   help="then run the local tritonserver (`make triton`; python backend) on the repository, "
                        "HTTP on PORT, until Ctrl-C")
    p.set_defaults(func=cmd_export_triton)
