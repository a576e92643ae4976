"""`edgestack bench MODEL --protocols`: what the wire format costs, in one run.

For an image classifier (fashion-cnn is the reference): the same real test images sent to
one real server as v2 binary tensors, v2 JSON tensors and the convenience endpoint
(/classify, pixel intensities as JSON), at batch 1 and 32 and concurrency 1 and 16. The
three protocols are interleaved in blocks (A B C A B C ...) on one connection pool so drift
hits them alike. Bodies are encoded once up front: this measures the server and the wire,
not client-side encoding.

Reference points from the same run: in-process ORT p50 of the variant the server runs, and
the server's fixed per-request cost (p50 of GET /v2/health/ready: HTTP, routing, middleware,
no model), taken inside the concurrency-1 rotation (A B C F A B C F ...) so it sees the same
drift as the requests it is compared with. The check printed at the end is the issue's: v2
binary at concurrency 1 within 1.5x of (in-process p50 + fixed cost).

With --triton, a real Triton Inference Server (`make triton`: CPU, Python backend) serving
the same artifact and variant through edgestack's runner joins the rotation as one more
contender ("triton-v2-binary", and its own fixed cost): Triton's C++ HTTP front end against
BentoML's Python one, on the same model code, in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.timing import (
    interleaved,
    machine,
    percentiles,
    print_table,
    write_result,
)
from edgestack import artifact
from edgestack.errors import UsageError
from edgestack.serverproc import free_port, running_server
from edgestack.settings import env_name, get_settings

PROTOCOLS = ("v2-binary", "v2-json", "rest-classify")
FIXED = "fixed-cost"  # GET /v2/health/ready: the server's per-request cost without a model
TRITON, TRITON_FIXED = "triton-v2-binary", "triton-fixed-cost"
BATCHES = (1, 32)
CONCURRENCY = (1, 16)


def ready_request(base: str = "") -> dict:
    return {"method": "GET", "url": base + "/v2/health/ready"}


def test_pixels(art: artifact.Artifact, count: int) -> np.ndarray:
    """Real held-out images of the model's own dataset, uint8 [count, H, W]."""
    from training.data import images

    config = art.meta.training.config if art.meta.training else {}
    loader = images.fashion_mnist if config.get("dataset") == "fashion" else images.digits
    data = loader(config.get("data_dir")) if config.get("data_dir") else loader()
    return data.test.images[:count]


def requests_for(art: artifact.Artifact, pixels: np.ndarray) -> dict[str, dict]:
    """Each protocol's request (httpx keyword arguments) for the same images, encoded once."""
    from clients.v2 import infer_request, model_path
    from edgestack.families.image import to_model_input

    x = to_model_input(pixels, art.meta.preprocessing.to_dict())
    name = art.meta.inputs[0].name
    binary, binary_headers = infer_request({name: x}, binary=True)
    plain, plain_headers = infer_request({name: x}, binary=False)
    infer = model_path(art.name, suffix="/infer")
    return {
        "v2-binary": {"method": "POST", "url": infer, "content": binary, "headers": binary_headers},
        "v2-json": {"method": "POST", "url": infer, "content": plain, "headers": plain_headers},
        "rest-classify": {"method": "POST", "url": "/classify",
                          "json": {"model": art.name, "pixels": pixels.tolist(), "top_k": 1}},
    }


async def block(client, request: dict, concurrency: int, count: int) -> tuple[list[float], float]:
    """`count` requests over `concurrency` workers; latencies and the block's wall time."""
    latencies: list[float] = []
    todo = iter(range(count))

    async def worker():
        for _ in todo:
            started = time.perf_counter()
            response = await client.request(**request)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"{request['url']}: HTTP {response.status_code}: {response.text[:300]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


async def measure(url: str, cases: dict[int, dict[str, dict]], requests: int, fixed: dict[str, dict],
                  rounds: int = 5) -> list[dict]:
    """Every case of each batch size interleaved in blocks; `fixed` (label -> request) joins the
    concurrency-1 rotation as the fixed per-request cost of its server."""
    import httpx

    rows = []
    limits = httpx.Limits(max_connections=max(CONCURRENCY), max_keepalive_connections=max(CONCURRENCY))
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        for batch, by_protocol in cases.items():
            for concurrency in CONCURRENCY:
                rotation = {**by_protocol, **(fixed if concurrency == 1 else {})}
                for request in rotation.values():  # warm-up
                    await block(client, request, concurrency, min(2 * concurrency, 32))
                samples = {p: [] for p in rotation}
                walls = {p: 0.0 for p in rotation}
                per_block = max(concurrency, -(-requests // rounds))  # at least `requests` in all
                for _ in range(rounds):
                    for protocol, request in rotation.items():
                        latencies, wall = await block(client, request, concurrency, per_block)
                        samples[protocol] += latencies
                        walls[protocol] += wall
                for protocol in rotation:
                    items = 0 if protocol in fixed else batch
                    row = percentiles(samples[protocol], items)
                    row["items_per_s"] = len(samples[protocol]) * items / walls[protocol]
                    case = (f"{protocol}: GET /v2/health/ready, batch={batch} rotation" if protocol in fixed
                            else f"{protocol} batch={batch} conc={concurrency}")
                    rows.append({"case": case, "protocol": protocol, "batch": batch, "concurrency": concurrency, **row})
    return rows


@contextlib.contextmanager
def start_triton(model: str, variant: str, threads: int, tmp: Path):
    """The real tritonserver of `make triton` on a Python-backend repository of `model` (the
    same artifact, variant and threads as our server); yields its URL."""
    from edgestack.serverproc import running_triton
    from export.triton import export_repository

    repo = tmp / "triton-repo"
    export_repository(repo, [model], backend="python", target="cpu", variant=variant, threads=threads)
    with running_triton(repo, log_path=tmp / "tritonserver.log", timeout=180) as (url, _):
        yield url


def run_protocol_bench(args) -> dict:
    from edgestack.runtime import choose_variant, open_session

    art = artifact.load_latest(args.model)
    if art.task != "image-classification":
        raise UsageError(f"--protocols compares against the /classify endpoint: needs an image classifier, "
                         f"{args.model} does {art.task}")
    threads = args.threads or os.cpu_count() or 1
    variant = choose_variant(list(art.meta.variants), ["CPUExecutionProvider"], get_settings().variant)
    pixels = test_pixels(art, max(BATCHES))
    cases = {batch: requests_for(art, pixels[:batch]) for batch in BATCHES}
    print(f"protocol benchmark: {args.model} v{art.version}, server variant {variant}, {threads} threads, "
          f"{args.http_requests} requests per protocol and case", flush=True)

    from edgestack.families.image import to_model_input

    session = open_session(art.variant_path(variant), device="cpu", threads=threads)
    name, pre = art.meta.inputs[0].name, art.meta.preprocessing.to_dict()
    in_process = []
    for batch in BATCHES:
        feeds = {name: to_model_input(pixels[:batch], pre)}
        samples = interleaved({"ort": lambda feeds=feeds: session.run(feeds)}, args.iterations)["ort"]
        in_process.append({"case": f"ort-{variant} in-process batch={batch}", "batch": batch,
                           **percentiles(samples, batch)})
    session = None  # closed: the server gets the cores

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as servers:
        env = {env_name("threads"): str(threads), env_name("variant"): variant}
        url, _ = servers.enter_context(running_server([args.model], port=args.port or free_port(), env=env,
                                                      log_path=Path(tmp) / "server.log"))
        fixed = {FIXED: ready_request()}
        if args.triton:
            triton_url = servers.enter_context(start_triton(args.model, variant, threads, Path(tmp)))
            fixed[TRITON_FIXED] = ready_request(triton_url)
            for batch, by_protocol in cases.items():
                by_protocol[TRITON] = {**by_protocol["v2-binary"], "url": triton_url + by_protocol["v2-binary"]["url"]}
        rows = asyncio.run(measure(url, cases, args.http_requests, fixed))

    by_case = {r["case"]: r for r in rows}
    fixed_p50 = {(r["protocol"], r["batch"]): r["p50_ms"] for r in rows if r["protocol"] in fixed}
    # A lone request still waits up to the adaptive batcher's window for company: part of
    # every protocol's latency at concurrency 1, reported beside the check.
    from serving.runner import RunnerOptions

    wait_ms = RunnerOptions.from_env().max_wait_ms  # the server reads the same setting
    ratios, checks = {}, {}
    for batch, ort_row in zip(BATCHES, in_process):
        binary = by_case[f"v2-binary batch={batch} conc=1"]["p50_ms"]
        for protocol in PROTOCOLS[1:] + ((TRITON,) if args.triton else ()):
            ratios[f"{protocol}_over_v2-binary_p50_batch{batch}_conc1"] = (
                by_case[f"{protocol} batch={batch} conc=1"]["p50_ms"] / binary)
        if args.triton:
            ours, theirs = (by_case[f"{p} batch={batch} conc=16"]["items_per_s"] for p in ("v2-binary", TRITON))
            ratios[f"{TRITON}_over_v2-binary_items_per_s_batch{batch}_conc16"] = theirs / ours
            ratios[f"{TRITON_FIXED}_over_{FIXED}_p50_batch{batch}"] = (
                fixed_p50[(TRITON_FIXED, batch)] / fixed_p50[(FIXED, batch)])
        budget = 1.5 * (ort_row["p50_ms"] + fixed_p50[(FIXED, batch)])
        checks[f"batch{batch}"] = {"v2_binary_p50_ms": binary, "ort_p50_ms": ort_row["p50_ms"],
                                   "fixed_p50_ms": fixed_p50[(FIXED, batch)], "budget_ms": budget,
                                   "within": binary <= budget,
                                   "batching_window_ms": wait_ms}
    result = {"model": args.model, "version": art.version, "variant": variant,
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(threads),
              "triton": bool(args.triton), "in_process": in_process,
              "fixed_cost": [r for r in rows if r["protocol"] in fixed],
              "http": rows, "ratios": ratios, "checks": checks}

    m = result["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {threads} threads, flags {' '.join(m['flags'])}; "
          f"onnxruntime {m['versions'].get('onnxruntime')}")
    print_table(in_process, "in process")
    print_table(rows, f"over HTTP, {'our server and Triton' if args.triton else 'one server'} "
                      "(items/s = images per second)")
    print("\nratios (p50 at concurrency 1; items/s at concurrency 16):")
    for key, value in ratios.items():
        print(f"  {key:58s} {value:6.3f}")
    print("\nv2 binary at concurrency 1 vs 1.5 x (in-process ORT p50 + fixed cost):")
    for key, c in checks.items():
        print(f"  {key}: {c['v2_binary_p50_ms']:.3f} ms vs budget {c['budget_ms']:.3f} ms "
              f"(ORT {c['ort_p50_ms']:.3f} + fixed {c['fixed_p50_ms']:.3f}) -> {'within' if c['within'] else 'OVER'}; "
              f"includes up to {c['batching_window_ms']:g} ms batching window (EDGESTACK_MAX_WAIT_MS)")
    write_result(result, args.out, f"{args.model}-protocols")
    return result
