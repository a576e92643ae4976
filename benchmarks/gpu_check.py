"""The GPU check (scripts/gpu-check.sh): every built model on ONNX Runtime's CUDA and TensorRT
providers, once, on a machine with an NVIDIA GPU and onnxruntime-gpu.

Per model and provider:
- fp16 against fp32 on the same provider: image classifiers on real held-out test images
  (accuracy of each, and fp16's drop, which must stay within the int8 gate the build applies:
  GATE_DROP); the other families on batch-64 inputs built from the graph's metadata (agreement
  of the arg-max and the largest difference of the outputs);
- batch-1 and batch-64 latency (p50, p95) of the variant the server would run there (fp16;
  fp32 for folk-lstm, which has no fp16 variant);
- TensorRT only: the engine cache: a first session start builds the engines into a cache
  folder, a second start must find them there (files present, start faster).

`--dry-run` runs the same code with CPUExecutionProvider standing in for both GPU providers
(no GPU, no onnxruntime-gpu needed): what the test suite runs (tests/integration/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgestack import artifact, registry
from export.threads import example_feeds

GATE_DROP = 0.01          # fp16 may lose at most 1 point of test accuracy against fp32 (the int8 gate)
PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
BATCHES = (1, 64)


def provider_options(provider: str, cache: Path) -> list:
    if provider == "TensorrtExecutionProvider":
        return [(provider, {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                            "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True,
                            "trt_timing_cache_path": str(cache)}),
                "CUDAExecutionProvider", "CPUExecutionProvider"]
    if provider == "CUDAExecutionProvider":
        return [provider, "CPUExecutionProvider"]
    return [provider]


def open_on(path: Path, provider: str, cache: Path):
    import onnxruntime as ort

    started = time.perf_counter()
    session = ort.InferenceSession(str(path), providers=provider_options(provider, cache))
    return session, time.perf_counter() - started


def latency(session, feeds: dict, runs: int) -> dict:
    for _ in range(3):
        session.run(None, feeds)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feeds)
        samples.append(time.perf_counter() - started)
    ms = np.asarray(samples) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "runs": runs}


def image_accuracy(art, session, limit: int) -> float:
    from benchmarks.protocols import test_pixels
    from edgestack.families.image import to_model_input
    from training.data import images

    config = art.meta.training.config if art.meta.training else {}
    loader = images.fashion_mnist if config.get("dataset") == "fashion" else images.digits
    labels = loader().test.labels[:limit]
    x = to_model_input(test_pixels(art, limit), art.meta.preprocessing.to_dict())
    name = session.get_inputs()[0].name
    predicted = np.concatenate([session.run(None, {name: x[i:i + 256]})[0].argmax(1) for i in range(0, len(x), 256)])
    return float((predicted == labels).mean())


def check_model(art, provider: str, role: str, work: Path, runs: int, limit: int) -> dict:
    """`provider` runs the sessions; `role` is the GPU provider it is (or, in a dry run, stands in for)."""
    served = "fp16" if "fp16" in art.meta.variants else "fp32"  # folk-lstm has no fp16: fp32 on GPU
    row: dict = {"model": art.name, "provider": provider, "variant": served}
    cache = work / f"trt-cache-{art.name}"
    cache.mkdir(parents=True, exist_ok=True)
    session, first_start = open_on(art.variant_path(served), provider, cache)
    row["got_provider"] = session.get_providers()[0]
    if served == "fp16":
        fp32, _ = open_on(art.variant_path("fp32"), provider, cache)
        if art.task == "image-classification":
            acc16, acc32 = image_accuracy(art, session, limit), image_accuracy(art, fp32, limit)
            row.update(fp16_accuracy=acc16, fp32_accuracy=acc32, fp16_drop=acc32 - acc16, images=limit,
                       fp16_within_gate=acc32 - acc16 <= GATE_DROP)
        else:
            feeds = example_feeds(session, 64)
            a16, a32 = session.run(None, feeds)[0], fp32.run(None, feeds)[0]
            row.update(fp16_max_abs_diff=float(np.max(np.abs(a16.astype(np.float64) - a32))),
                       fp16_argmax_agreement=float((a16.reshape(len(a16), -1).argmax(1)
                                                    == a32.reshape(len(a32), -1).argmax(1)).mean()))
            row["fp16_within_gate"] = row["fp16_argmax_agreement"] >= 1 - GATE_DROP
    for batch in BATCHES:
        row[f"batch{batch}"] = latency(session, example_feeds(session, batch), runs)
    if role == "TensorrtExecutionProvider":  # the engines built on the first start are found on the second
        files_after_first = sorted(p.name for p in cache.iterdir())
        del session
        _, second_start = open_on(art.variant_path(served), provider, cache)
        row["trt_cache"] = {"files": files_after_first, "first_start_s": first_start, "second_start_s": second_start,
                            "reused": bool(files_after_first) and second_start < first_start}
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="default: every default model with an artifact")
    parser.add_argument("--artifacts", help="artifacts folder (default: EDGESTACK_ARTIFACTS, else artifacts)")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPUExecutionProvider stands in for TensorRT and CUDA: checks the script, not a GPU")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per batch size")
    parser.add_argument("--images", type=int, default=10000, help="test images for the image classifiers' accuracy")
    parser.add_argument("--json", default="bench-results/gpu-check.json")
    args = parser.parse_args(argv)
    import onnxruntime as ort

    root = Path(args.artifacts) if args.artifacts else None
    names = args.models or [n for n in registry.DEFAULT_MODELS if artifact.latest_version_dir(n, root) is not None]
    available = ort.get_available_providers()
    providers = {p: ("CPUExecutionProvider" if args.dry_run else p) for p in PROVIDERS}
    missing = [p for p in PROVIDERS if not args.dry_run and p not in available]
    if missing:
        print(f"onnxruntime {ort.__version__} offers {available}; missing {missing}: install onnxruntime-gpu "
              "(and TensorRT) on a GPU machine, or use --dry-run", file=sys.stderr)
        return 2
    rows = []
    work = Path(tempfile.mkdtemp(prefix="edgestack-gpu-check-"))
    try:
        for name in names:
            art = artifact.load_latest(name, root)
            for wanted, used in providers.items():
                row = check_model(art, used, wanted, work, args.runs, args.images)
                row["stands_in_for"] = wanted if args.dry_run else None
                rows.append(row)
                shown = {k: v for k, v in row.items() if k not in ("model", "provider")}
                print(f"[{name}] {wanted}{' (dry run: CPU)' if args.dry_run else ''}: {json.dumps(shown)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = [r for r in rows if r.get("fp16_within_gate") is False
              or (not args.dry_run and r.get("trt_cache", {}).get("reused") is False)]
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"dry_run": args.dry_run, "onnxruntime": ort.__version__, "available": available,
                               "rows": rows}, indent=2))
    print(f"{len(rows)} check(s), {len(failed)} failed; JSON: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
