"""edge_runner: run an edgestack bundle with onnxruntime and numpy, nothing else.

This package is copied verbatim into every bundle (`edgestack bundle MODEL`), next to the
model files it runs. It must never import edgestack, torch, bentoml or Pillow at module
level: a device has onnxruntime and numpy (plus `tokenizers` for text models).

    python -m edge_runner INPUT...            (run from the bundle folder)
    python path/to/bundle/edge_runner INPUT...

    import sys; sys.path.insert(0, "path/to/bundle")
    import edge_runner
    model = edge_runner.load()                 # the bundle this package sits in
    print(model.predict_files(["shoe.png"]))

The family-specific part (input decoding, pre- and post-processing) is one module beside
this file, named by the bundle manifest's `runner.module`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

import onnxruntime as ort

try:  # inside a bundle: the family's processing (and its common module) sit in edge_runner/families/
    from .families.common import sha256_file
except ModuleNotFoundError as missing:  # in the source tree
    if missing.name != f"{__package__}.families":
        raise
    from edgestack.families.common import sha256_file

BUNDLE_DIR = Path(__file__).resolve().parent.parent
MANIFEST = "manifest.json"


class BundleError(RuntimeError):
    """The bundle is incomplete or changed, or an input cannot be used."""


def read_manifest(bundle_dir: Path | str | None = None, *, check: bool = False) -> dict:
    bundle_dir = Path(bundle_dir or BUNDLE_DIR)
    path = bundle_dir / MANIFEST
    if not path.is_file():
        raise BundleError(f"no {MANIFEST} in {bundle_dir}: not an edgestack bundle")
    manifest = json.loads(path.read_text())
    if check:
        for relative, meta in manifest.get("files", {}).items():
            file = bundle_dir / relative
            if not file.is_file():
                raise BundleError(f"bundle file {relative} is missing")
            if sha256_file(file) != meta["sha256"]:
                raise BundleError(f"bundle file {relative} does not match its sha256 (changed or partly copied)")
    return manifest


def open_session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    """One CPU session. Threads: the argument, else $EDGE_THREADS, else all cores.

    An ORT-format model is already optimized for its target when it was converted, so
    graph optimization is not repeated at load time (faster cold start)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or int(os.environ.get("EDGE_THREADS", 0)) or (os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    if str(path).endswith(".ort"):
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def load(bundle_dir: Path | str | None = None, *, threads: int | None = None, model_format: str = "ort",
         check: bool = False):
    """The bundle's model, ready to predict. model_format: 'ort' (default) or 'onnx' graphs."""
    bundle_dir = Path(bundle_dir or BUNDLE_DIR)
    manifest = read_manifest(bundle_dir, check=check)
    if model_format not in ("ort", "onnx"):
        raise BundleError(f"model_format must be 'ort' or 'onnx', got {model_format!r}")
    sessions = {role: open_session(bundle_dir / files[model_format], threads)
                for role, files in manifest["graphs"].items()}
    return family_module(manifest).Model(bundle_dir, manifest, sessions)


def family_module(manifest: dict):
    return importlib.import_module(f"{__name__}.{manifest['runner']['module']}")


def peak_rss_kib() -> int | None:
    """This process's peak resident memory (Linux VmHWM: of this program only, unlike
    getrusage's ru_maxrss, which keeps the parent's peak across fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def main(argv: list[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--bundle", default=str(BUNDLE_DIR))
    known, _ = pre.parse_known_args(argv)
    try:
        manifest = read_manifest(known.bundle)
    except (BundleError, ValueError) as exc:
        print(f"edge_runner: {exc}", file=sys.stderr)
        return 2
    module = family_module(manifest)
    parser = argparse.ArgumentParser(
        prog="python -m edge_runner",
        description=f"{manifest['name']} v{manifest['version']} ({manifest['task']}): {module.CLI_HELP}")
    parser.add_argument("--bundle", default=str(BUNDLE_DIR), help="bundle folder (default: the one this runner is in)")
    parser.add_argument("--format", dest="model_format", default="ort", choices=["ort", "onnx"],
                        help="run the .ort graphs (default) or the .onnx ones")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: all cores, or $EDGE_THREADS)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    parser.add_argument("--check", action="store_true", help="verify every bundle file's sha256 first")
    parser.add_argument("--timing", action="store_true", help="print load and run times and peak memory to stderr")
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        model = load(args.bundle, threads=args.threads, model_format=args.model_format, check=args.check)
        loaded = time.perf_counter()
        results = model.run_cli(args)
    except (BundleError, FileNotFoundError, ValueError) as exc:
        print(f"edge_runner: {exc}", file=sys.stderr)
        return 2
    done = time.perf_counter()
    try:
        for result in results:
            print(json.dumps(result) if args.json else model.format_text(result), flush=args.timing)
    except BrokenPipeError:  # `| head` closed the pipe: not an error
        sys.stderr.close()
        return 0
    if args.timing:
        print(f"load {1000 * (loaded - started):.1f} ms, run {1000 * (done - loaded):.1f} ms"
              + (f", peak RSS {peak_rss_kib() / 1024:.1f} MiB" if peak_rss_kib() else ""), file=sys.stderr)
    return 0 if all("error" not in r for r in results) else 1
