"""`edgestack bundle` and `edgestack bench-bundle`: their argument parsers (added by cli)."""

from __future__ import annotations

import argparse
import json

from edgestack import registry
from edgestack.errors import UsageError


def golden_inputs(name: str, version: str | None) -> dict | None:
    """Real test inputs for the bundle's health check, when the model's data is here."""
    from benchmarks.device_check import GOLDEN_CANDIDATES, TEST_SPLIT_TASKS, test_inputs
    from edgestack import artifact
    from edgestack.errors import DataMissing

    art = artifact.load(artifact.default_root() / name / version) if version else artifact.load_latest(name)
    if art.task not in TEST_SPLIT_TASKS:  # an imported graph: its example feeds (the family's example_golden)
        return None
    try:
        return test_inputs(art, GOLDEN_CANDIDATES)
    except (DataMissing, FileNotFoundError, UsageError) as exc:
        print(f"[{name}] no test data here ({exc}): the health check uses a synthetic example")
        return None


def cmd_bundle(args: argparse.Namespace) -> int:
    from bundle.make import make_bundle
    from bundle.runtimes import CANDIDATES

    if args.publish and args.no_archive:
        raise UsageError("--publish publishes the .tar.gz: drop --no-archive")
    runtimes = list(CANDIDATES) if args.runtimes == "all" else args.runtimes.split(",") if args.runtimes else None
    for name in args.models:
        built = make_bundle(name, args.out, variant=args.variant, target_platform=args.target_platform,
                            archive=not args.no_archive, version=args.version, runtimes=runtimes,
                            golden=golden_inputs(name, args.version))
        runtime = built.manifest["runtime"]
        print(f"  ORT format {runtime['ort_format_version']}, opset {runtime['opset'].get('ai.onnx')}, oldest onnxruntime "
              f"{runtime['min_onnxruntime']}" + ("" if runtime["min_onnxruntime_measured"] else
                                                " (not measured: --runtimes all measures it)"))
        print(f"  run it:  cd {built.path} && python -m edge_runner INPUT...   (needs: "
              f"{' '.join(built.manifest['runner']['requires'])}); health check: python -m edge_runner --health")
        if args.publish:
            from serving import fleet

            done = fleet.publish(built.archive, args.publish)
            print(f"  published {done['model']} v{done['version']} on channel {done['channel']} "
                  f"({fleet.fleet_dir()})")
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    from serving import fleet

    if args.action in ("publish", "promote") and not args.target:
        raise UsageError(f"fleet {args.action} needs {'a bundle .tar.gz' if args.action == 'publish' else 'a model name'}")
    if args.action == "publish":
        done = fleet.publish(args.target, args.channel)
        print(f"published {done['model']} v{done['version']} on channel {done['channel']} (sha256 {done['sha256'][:12]})")
    elif args.action == "promote":
        done = fleet.promote(args.target, args.to, source=getattr(args, "from"), version=args.version,
                             require_healthy=not args.force)
        print(f"channel {done['channel']} now runs {done['model']} v{done['version']}")
    else:
        rows = fleet.devices()
        print(f"channels: {json.dumps(fleet.channels(fleet.fleet_dir()))}")
        print(f"{'device':<16} {'model':<22} {'version':>7} {'channel':<10} {'health':<8} {'arch':<8} last report / error")
        for d in rows:
            print(f"{d['device_id']:<16} {d.get('model', ''):<22} {d.get('version')!s:>7} {d.get('channel', ''):<10} "
                  f"{d.get('health', ''):<8} {d.get('arch', ''):<8} {d.get('received_at', '')} "
                  f"{d.get('last_error') or d.get('event', '')}")
        if not rows:
            print("(no device has reported yet)")
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
    b.add_argument("--version", help="the artifact version to bundle (default: the latest)")
    b.add_argument("--runtimes", help="measure the oldest onnxruntime that loads and answers the bundle: 'all' "
                                      "(every minor release since 1.15, by bisection) or versions, comma-separated; "
                                      "wheels are fetched once into .emu/wheels/")
    b.add_argument("--publish", metavar="CHANNEL", help="publish the .tar.gz to devices on this channel "
                                                        "(EDGESTACK_FLEET_DIR; e.g. canary, then `edgestack fleet promote`)")
    b.set_defaults(func=cmd_bundle)

    f = sub.add_parser("fleet", help="edge devices: publish bundles to channels, promote, list what devices report",
                       description="The server publishes bundles from EDGESTACK_FLEET_DIR (GET /bundles/...) to the "
                                   "update agents on devices (python -m edge_runner agent) and keeps their reports "
                                   "(GET /devices). Publish to canary first; promote to stable when a canary "
                                   "device reports the version healthy.")
    f.add_argument("action", choices=["publish", "promote", "devices"])
    f.add_argument("target", nargs="?", help="publish: a bundle .tar.gz; promote: a model name")
    f.add_argument("--channel", default="canary", help="publish: the channel (default canary)")
    f.add_argument("--to", default="stable", help="promote: the channel to move (default stable)")
    f.add_argument("--from", default="canary", help="promote: the channel whose version moves (default canary)")
    f.add_argument("--version", help="promote: this version instead of the --from channel's")
    f.add_argument("--force", action="store_true", help="promote even if no device reported the version healthy")
    f.set_defaults(func=cmd_fleet)

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
