"""`edgestack bundle` and `edgestack bench-bundle`: their argument parsers (added by cli)."""

from __future__ import annotations

import argparse

from edgestack import registry


def cmd_bundle(args: argparse.Namespace) -> int:
    from bundle.make import make_bundle

    for name in args.models:
        built = make_bundle(name, args.out, variant=args.variant, target_platform=args.target_platform,
                            archive=not args.no_archive)
        print(f"  run it:  cd {built.path} && python -m edge_runner INPUT...   (needs: "
              f"{' '.join(built.manifest['runner']['requires'])})")
    return 0


def cmd_bench_bundle(args: argparse.Namespace) -> int:
    from benchmarks.bundle import run_bench_bundle

    run_bench_bundle(args)
    return 0


def add_parsers(sub) -> None:
    names = ", ".join(registry.MODELS)
    b = sub.add_parser(
        "bundle", help="a self-contained folder + .tar.gz for an edge device (onnxruntime + numpy only)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write bundles/<model>-v<version>/ and its .tar.gz: the int8 model as model.onnx and\n"
                    "model.ort (ONNX Runtime's ORT format), required_operators[_and_types].config for an ORT\n"
                    "minimal build, manifest.json (labels, preprocessing, checksums), labels.txt, the\n"
                    "vocabulary/tokenizer for text models, and edge_runner/: a runner needing only\n"
                    "onnxruntime and numpy (+ tokenizers for text), with a Python API and\n"
                    "`python -m edge_runner INPUT...`.")
    b.add_argument("models", nargs="+", help=f"served names ({names})")
    b.add_argument("--out", default="bundles", help="where bundles go (default: ./bundles)")
    b.add_argument("--variant", default="int8", help="which artifact variant to ship (default int8)")
    b.add_argument("--target-platform", choices=["arm", "amd64"],
                   help="optimize model.ort for this CPU (default: portable, runs on any CPU). 'arm' allows "
                        "int8 QDQ kernels for ARM; 'amd64' adds x86-only NCHWc layouts")
    b.add_argument("--no-archive", action="store_true", help="skip the .tar.gz")
    b.set_defaults(func=cmd_bundle)

    bb = sub.add_parser(
        "bench-bundle", help="bundle size, cold start, peak RSS, batch-1 latency: table + JSON",
        description="Build each model's bundle, then measure its size, the cold start of `python -m edge_runner` "
                    "(process spawn to first answer) and that process's peak RSS, and batch-1 latency through "
                    "the Python API (model.ort vs model.onnx, 1 thread).")
    bb.add_argument("models", nargs="+", help=f"served names ({names})")
    bb.add_argument("--bundles", default="bundles", help="where the bundles are written (default: ./bundles)")
    bb.add_argument("--python", help="interpreter for the cold-start runs, e.g. a venv with only onnxruntime + "
                                     "numpy (default: this one)")
    bb.add_argument("--runs", type=int, default=5, help="cold-start runs (median reported)")
    bb.add_argument("--iterations", type=int, default=500, help="timed batch-1 calls per model format")
    bb.add_argument("--out", default="bench-results", help="folder for the JSON result")
    bb.set_defaults(func=cmd_bench_bundle)
