"""edge_runner: run an edgestack bundle with onnxruntime and numpy, nothing else.

This package is copied verbatim into every bundle (`edgestack bundle MODEL`), next to the
model files it runs. It must never import edgestack, torch, bentoml or Pillow at module
level: a device has onnxruntime and numpy (plus `tokenizers` for text models).

    python -m edge_runner INPUT...            (run from the bundle folder)
    python -m edge_runner --health            golden inputs vs the answers the bundle was built with
    python -m edge_runner agent --server URL --device-id ID [--channel stable]   the update agent
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
import platform
import re
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

from .health import GOLDEN, PROBABILITY_TOLERANCE, compare, read_golden, summary

BUNDLE_DIR = Path(__file__).resolve().parent.parent
MANIFEST = "manifest.json"
# Set to 1 to load a bundle with an older onnxruntime than its manifest asks for (what the
# bundle maker does while it measures which versions load it).
ANY_RUNTIME = "EDGE_RUNNER_ANY_RUNTIME"


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


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version.split("+")[0])[:3])


def check_runtime(manifest: dict) -> None:
    """Refuse, in one line, an onnxruntime older than the oldest one measured to load and run
    this bundle (manifest `runtime.min_onnxruntime`), instead of a crash inside onnxruntime."""
    runtime = manifest.get("runtime") or {}
    need = runtime.get("min_onnxruntime")
    if not need or os.environ.get(ANY_RUNTIME) == "1" or version_tuple(ort.__version__) >= version_tuple(need):
        return
    raise BundleError(f"this bundle needs onnxruntime >= {need} (ORT format {runtime.get('ort_format_version')}, "
                      f"opset {runtime.get('opset', {}).get('ai.onnx', '?')}); this device has {ort.__version__}: "
                      f"pip install 'onnxruntime>={need}'")


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
    check_runtime(manifest)
    sessions = {role: open_session(bundle_dir / files[model_format], threads)
                for role, files in manifest["graphs"].items()}
    return family_module(manifest).Model(bundle_dir, manifest, sessions)


def family_module(manifest: dict):
    return importlib.import_module(f"{__name__}.{manifest['runner']['module']}")


def health(bundle_dir: Path | str | None = None, *, golden: Path | str | None = None, threads: int | None = None,
           model_format: str = "ort", check: bool = False, model=None) -> dict:
    """Run the golden inputs (the bundle's golden.npz, or `golden`) and compare with the expected
    answers (edge_runner/health.py). A report dict: ok, labels_agree/rows, max_probability_difference,
    strings_equal/strings, problems, and where it ran (onnxruntime, machine, seconds).
    Raises BundleError when the bundle cannot even be loaded."""
    bundle_dir = Path(bundle_dir or BUNDLE_DIR)
    model = model or load(bundle_dir, threads=threads, model_format=model_format, check=check)
    block = model.manifest.get("health") or {}
    path = Path(golden) if golden else bundle_dir / block.get("file", GOLDEN)
    if not path.is_file():
        raise BundleError(f"no golden answers at {path}: the bundle predates health checks")
    inputs, expected = read_golden(path)
    started = time.perf_counter()
    family = family_module(model.manifest)
    got = family.answers(model, inputs)
    report = compare(expected, got, float(block.get("probability_tolerance", PROBABILITY_TOLERANCE)))
    sample = getattr(family, "latency_sample", lambda feeds: next(iter(feeds.values()))[0])(inputs)
    report.update(name=model.manifest["name"], version=model.manifest["version"], onnxruntime=ort.__version__,
                  machine=platform.machine(), seconds=round(time.perf_counter() - started, 3),
                  p50_ms=p50_ms(model, sample))
    return report


def p50_ms(model, sample, runs: int = 15) -> float:
    """Median batch-1 latency of one golden input (a generator: one character), milliseconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        model.predict_one(sample)
        times.append(time.perf_counter() - started)
    return round(1000 * sorted(times)[len(times) // 2], 3)


def run_health(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_runner --health",
                                     description="Run the bundle's golden inputs and compare with the answers it "
                                                 "was built with: exit 0 when they agree, 1 when not, 2 on errors.")
    parser.add_argument("--health", nargs="?", const="", metavar="GOLDEN",
                        help="golden file (default: the bundle's golden.npz)")
    parser.add_argument("--bundle", default=str(BUNDLE_DIR))
    parser.add_argument("--format", dest="model_format", default="ort", choices=["ort", "onnx"])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--check", action="store_true", help="verify every bundle file's sha256 first")
    parser.add_argument("--json", action="store_true", help="the whole report as one JSON object")
    args = parser.parse_args(argv)
    try:
        report = health(args.bundle, golden=args.health or None, threads=args.threads,
                        model_format=args.model_format, check=args.check)
    except (BundleError, OSError, ValueError) as exc:
        print(f"edge_runner: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else
          f"{report['name']} v{report['version']} on {report['machine']}, onnxruntime {report['onnxruntime']}: "
          f"health {summary(report)}")
    return 0 if report["ok"] else 1


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
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["agent"]:
        from .agent import main as agent_main

        return agent_main(argv[1:])
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--bundle", default=str(BUNDLE_DIR))
    pre.add_argument("--health", nargs="?", const="")
    known, _ = pre.parse_known_args(argv)
    if known.health is not None:
        return run_health(argv)
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
    parser.add_argument("--health", nargs="?", const="", metavar="GOLDEN",
                        help="instead of inputs: run the bundle's golden inputs and compare with the answers it was "
                             "built with (exit 0 when they agree, 1 when not); see --health --help")
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
