"""`edgestack export kserve` (also `export-kserve`): KServe InferenceService manifests (export/kserve.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgestack import artifact, registry


def cmd_export_kserve(args: argparse.Namespace) -> int:
    from export import kserve

    names = args.models or artifact.built_models()
    if not names:
        raise artifact.ArtifactError(f"no built model under {artifact.default_root()}: run `edgestack build` first")
    for name in names:
        registry.get(name)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sizing = {"cpu": args.cpu, "memory": args.memory, "min_replicas": args.min_replicas,
              "max_replicas": args.max_replicas, "concurrency": args.concurrency}
    written = [
        kserve.dump(kserve.triton_service(f"{args.name}-triton", args.storage_uri,
                                          runtime_version=args.triton_version, **sizing), out / "triton.yaml"),
        kserve.dump(kserve.edgestack_service(args.name, args.image, names, threads=args.threads, **sizing),
                    out / "edgestack.yaml"),
    ]
    for path in written:
        print(f"wrote {path}")
    if args.validate:
        print(kserve.validate(written))
    print(f"""next (needs a Kubernetes cluster with KServe; not run here):
  triton.yaml:    edgestack export triton {' '.join(names)} --backend onnxruntime --target cpu --repo triton-repo
                  upload triton-repo/ to {args.storage_uri}; kubectl apply -f {written[0]}
  edgestack.yaml: bentoml build && bentoml containerize edgestack:latest -t {args.image}
                  push the image; kubectl apply -f {written[1]}""")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "export-kserve", help="write KServe InferenceService manifests (also: `export kserve`)",
        description="Write <out>/triton.yaml (KServe's Triton runtime on the repository of `edgestack export "
                    "triton --backend onnxruntime`, v2 protocol) and <out>/edgestack.yaml (our BentoML server as "
                    "a custom predictor: the image of `bentoml containerize`, port 3000, /readyz and /livez "
                    "probes). Both are checked by building the KServe SDK's V1beta1InferenceService from them "
                    "in .venv-kserve (`make kserve-venv`).")
    p.add_argument("models", nargs="*", help="served names (default: every built model)")
    p.add_argument("--out", default="kserve", help="folder for the manifests (default ./kserve)")
    p.add_argument("--name", default="edgestack", help="InferenceService name (the Triton one gets -triton)")
    p.add_argument("--image", default="edgestack:latest", help="our server's container image (bentoml containerize)")
    p.add_argument("--storage-uri", default="pvc://edgestack/triton-repo",
                   help="where the Triton repository is uploaded (s3://, gs://, pvc://...)")
    p.add_argument("--triton-version", default="24.08-py3", help="KServe Triton runtime version (image tag)")
    p.add_argument("--cpu", default="2", help="CPU request and limit per replica")
    p.add_argument("--memory", default="2Gi", help="memory request and limit per replica")
    p.add_argument("--min-replicas", type=int, default=1)
    p.add_argument("--max-replicas", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=16, help="autoscale target: requests in flight per replica")
    p.add_argument("--threads", type=int, help="our server: ONNX Runtime threads per model (EDGESTACK_THREADS)")
    p.add_argument("--no-validate", dest="validate", action="store_false",
                   help="skip the KServe SDK check (it needs .venv-kserve: `make kserve-venv`)")
    p.set_defaults(func=cmd_export_kserve)
