"""Image classifiers (CNN): PyTorch eager vs ORT fp32 vs ORT int8 in process, batch 1 and 32,
interleaved, then the real server over HTTP."""

from __future__ import annotations

import os

from benchmarks.timing import http_rows, interleaved, percentiles
from edgestack import artifact


def bench_image(art: artifact.Artifact, args) -> dict:
    import torch

    from edgestack.runtime import open_session
    from export.image import run_config
    from training import image as image_training

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    model, config = image_training.load_checkpoint(art.file("checkpoint"))
    data = image_training.load_dataset(run_config(config))
    sessions = {v: open_session(art.variant_path(v), device="cpu", threads=threads) for v in ("fp32", "int8")}
    results = {"in_process": [], "http": []}
    for batch in (1, 32):
        x = image_training.to_tensor(data.test.images[:batch])
        feeds = {"images": x.numpy()}

        def torch_eager(x=x):
            with torch.inference_mode():
                model(x)

        candidates = {"pytorch-eager": torch_eager,
                      **{f"ort-{v}": (lambda s=s: s.run(feeds)) for v, s in sessions.items()}}
        for name, samples in interleaved(candidates, args.iterations).items():
            results["in_process"].append({"case": f"{name} batch={batch}", "engine": name, "batch": batch,
                                          **percentiles(samples, batch)})
    if not args.no_http:
        body = {"model": art.name, "pixels": data.test.images[:1].tolist(), "top_k": 1}
        results["http"] = http_rows(art.name, "/classify", body, args, threads, "http /classify batch=1")
    by_case = {r["case"]: r for r in results["in_process"] + results["http"]}
    ratios = {
        "ort_int8_over_pytorch_p50_batch1": by_case["ort-int8 batch=1"]["p50_ms"] / by_case["pytorch-eager batch=1"]["p50_ms"],
        "ort_fp32_over_pytorch_p50_batch1": by_case["ort-fp32 batch=1"]["p50_ms"] / by_case["pytorch-eager batch=1"]["p50_ms"],
        "int8_over_fp32_p50_batch1": by_case["ort-int8 batch=1"]["p50_ms"] / by_case["ort-fp32 batch=1"]["p50_ms"],
        "int8_over_fp32_p50_batch32": by_case["ort-int8 batch=32"]["p50_ms"] / by_case["ort-fp32 batch=32"]["p50_ms"],
        "ort_int8_over_pytorch_p50_batch32": by_case["ort-int8 batch=32"]["p50_ms"] / by_case["pytorch-eager batch=32"]["p50_ms"],
    }
    if results["http"]:
        ratios["http_conc1_over_inprocess_int8_p50"] = (by_case["http /classify batch=1 conc=1"]["p50_ms"]
                                                         / by_case["ort-int8 batch=1"]["p50_ms"])
    return {**results, "ratios": ratios, "threads": threads}
