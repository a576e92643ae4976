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

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.loadgen import (
    ProcessTreeCPU,
    Target,
    grpc_frame,
    h2load_path,
    run_block,
    summary,
)
from benchmarks.timing import (
    interleaved,
    machine,
    percentiles,
    print_table,
    ratio,
    shown,
    write_result,
)
from edgestack import artifact
from edgestack.errors import UsageError
from edgestack.serverproc import free_port, running_server
from edgestack.settings import env_name, get_settings

PROTOCOLS = ("v2-binary", "v2-json", "rest-classify", "v2-grpc")  # ours, on one server
FIXED = "fixed-cost"  # GET /v2/health/ready: the server's per-request cost without a model
# Each peer's contenders (v2 binary REST, v2 gRPC) and its fixed cost, in the same rotation.
PEERS = {"triton": ("triton-v2-binary", "triton-grpc"), "kserve": ("kserve-v2-binary", "kserve-grpc")}
BATCHES = (1, 32)
CONCURRENCY = {1: (1, 16, 64), 32: (1, 16)}
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


def fixed_name(peer: str | None) -> str:
    return FIXED if peer is None else f"{peer}-{FIXED}"


TRITON, TRITON_FIXED = PEERS["triton"][0], fixed_name("triton")  # what the Triton tests look up


def ready_target(base: str, server: str) -> Target:
    return Target(base + "/v2/health/ready", server=server)


def test_pixels(art: artifact.Artifact, count: int) -> np.ndarray:
    """Real held-out images of the model's own dataset, uint8 [count, H, W]."""
    from training.data import images

    config = art.meta.training.config if art.meta.training else {}
    loader = images.fashion_mnist if config.get("dataset") == "fashion" else images.digits
    data = loader(config.get("data_dir")) if config.get("data_dir") else loader()
    return data.test.images[:count]


def test_texts(art: artifact.Artifact, count: int) -> list[str]:
    """Real held-out texts of the model's own dataset (sentiment: movie-review snippets)."""
    from training.data import text

    config = art.meta.training.config if art.meta.training else {}
    data = text.load(config.get("dataset", "sentiment"), config.get("data_path"))
    return list(data.test.texts[:count])


def model_inputs(art: artifact.Artifact, batch: int) -> dict[str, np.ndarray]:
    """The model's v2 input tensor for `batch` real test items: images as the model takes them,
    or texts as a BYTES tensor [batch, 1] (what Triton takes for a batched [batch] tensor; our
    server takes it too)."""
    name = art.meta.inputs[0].name
    if art.task == "text-classification":
        return {name: np.array(test_texts(art, batch), dtype=object).reshape(-1, 1)}
    from edgestack.families.image import to_model_input

    return {name: to_model_input(test_pixels(art, batch), art.meta.preprocessing.to_dict())}


def grpc_target(art: artifact.Artifact, x: np.ndarray, host: str, server: str) -> Target:
    """A ModelInferRequest with the tensor in raw_input_contents (what tritonclient.grpc sends)."""
    from tritonclient.grpc import service_pb2 as pb

    from edgestack import v2protocol

    request = pb.ModelInferRequest(model_name=art.name)
    text = x.dtype == object
    request.inputs.add(name=art.meta.inputs[0].name, datatype="BYTES" if text else "FP32", shape=list(x.shape))
    request.raw_input_contents.append(v2protocol.serialize_bytes(x) if text
                                      else np.ascontiguousarray(x, np.float32).tobytes())
    outputs = sum(4 * len(x) * int(np.prod([d for d in o.shape if d != -1])) for o in art.meta.outputs)
    return Target(f"http://{host}{GRPC_INFER}", grpc_frame(request.SerializeToString()),
                  {"content-type": "application/grpc", "te": "trailers"}, grpc=True, server=server,
                  min_response_bytes=5 + outputs)


def rest_request(art: artifact.Artifact, batch: int) -> tuple[str, bytes]:
    """The convenience endpoint's request for the same items: /classify (pixels) or /classify_text."""
    if art.task == "text-classification":
        return "/classify_text", json.dumps({"model": art.name, "texts": test_texts(art, batch)}).encode()
    return "/classify", json.dumps({"model": art.name, "pixels": test_pixels(art, batch).tolist(), "top_k": 1}).encode()


def targets_for(art: artifact.Artifact, batch: int, servers: dict[str, dict]) -> dict[str, Target]:
    """Each contender's request for the same `batch` items, encoded once. `servers`: name -> {"url",
    "grpc"} for "ours" and each peer started."""
    from clients.v2 import infer_request, model_path

    inputs = model_inputs(art, batch)
    (x,) = inputs.values()
    binary, binary_headers = infer_request(inputs, binary=True)
    plain, plain_headers = infer_request(inputs, binary=False)
    infer = model_path(art.name, suffix="/infer")
    ours = servers["ours"]
    path, rest_body = rest_request(art, batch)
    targets = {
        "v2-binary": Target(ours["url"] + infer, binary, binary_headers),
        "v2-json": Target(ours["url"] + infer, plain, plain_headers),
        "rest-classify": Target(ours["url"] + path, rest_body, {"content-type": "application/json"}),
        "v2-grpc": grpc_target(art, x, ours["grpc"], "ours"),
    }
    if "ours-b" in servers:  # --ab: the same server with other settings, in the same rotation
        b = servers["ours-b"]
        targets["b:v2-binary"] = Target(b["url"] + infer, binary, binary_headers, server="ours-b")
        targets["b:v2-grpc"] = grpc_target(art, x, b["grpc"], "ours-b")
    for peer, (rest_name, grpc_name) in PEERS.items():
        if peer in servers:
            targets[rest_name] = Target(servers[peer]["url"] + infer, binary, binary_headers, server=peer)
            targets[grpc_name] = grpc_target(art, x, servers[peer]["grpc"], peer)
    return targets


def measure(cases: dict[int, dict[str, Target]], requests: int, fixed: dict[str, Target],
            cpu: dict[str, ProcessTreeCPU], rounds: int = 5, per_connection: int = 8) -> list[dict]:
    """Every contender of each batch size and concurrency interleaved in blocks (A B C A B C ...,
    `rounds` of them); `fixed` (label -> GET target) joins the concurrency-1 rotation as the
    fixed per-request cost of its server. Each block's server CPU goes to its contender."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgestack-bench-") as tmp:
        workdir = Path(tmp)
        for batch, by_protocol in cases.items():
            for concurrency in CONCURRENCY[batch]:
                rotation = {**by_protocol, **(fixed if concurrency == 1 else {})}
                for target in rotation.values():  # warm-up: connections, caches, the batcher's estimate
                    run_block(target, concurrency, 2 * concurrency + 8, workdir)
                # a c-connection block needs several requests per connection to mean anything
                per_block = max(-(-requests // rounds), per_connection * concurrency if concurrency > 1 else 1)
                blocks = {p: [] for p in rotation}
                for _ in range(rounds):
                    for protocol, target in rotation.items():
                        before = cpu[target.server].seconds()
                        block = run_block(target, concurrency, per_block, workdir)
                        block.server_cpu_s = cpu[target.server].seconds() - before
                        blocks[protocol].append(block)
                for protocol, target in rotation.items():
                    items = 0 if protocol in fixed else batch
                    row = summary(blocks[protocol], items)
                    case = (f"{protocol}: GET /v2/health/ready, batch={batch} rotation" if protocol in fixed
                            else f"{protocol} batch={batch} conc={concurrency}")
                    rows.append({"case": case, "protocol": protocol, "server": target.server, "batch": batch,
                                 "concurrency": concurrency, **row})
    return rows


@contextlib.contextmanager
def start_triton(model: str, variant: str, threads: int, tmp: Path, instances: int = 1):
    """The real tritonserver of `make triton` on a Python-backend repository of `model` (the
    same artifact, variant and threads as our server; `instances` model instances, each its own
    stub process, as our server has worker processes), with Triton's dynamic batcher set as our
    server's adaptive batcher is (the same most rows per ORT call, EDGESTACK_MAX_BATCH, and the
    same wait for company, EDGESTACK_MAX_WAIT_MS: 0 by default), each merged set run as one ORT
    call (serving/triton_model.py); yields (URL, gRPC host:port, process)."""
    from edgestack.serverproc import running_triton
    from export.triton import export_repository
    from serving.runner import RunnerOptions

    ours = RunnerOptions.from_env()
    repo = tmp / "triton-repo"
    export_repository(repo, [model], backend="python", target="cpu", variant=variant, threads=threads,
                      cpu_instances=instances, max_batch_size=ours.max_batch,
                      queue_delay_us=int(ours.max_wait_ms * 1000))
    grpc_port = free_port()
    with running_triton(repo, log_path=tmp / "tritonserver.log", timeout=180, grpc_port=grpc_port) as (url, proc):
        yield url, f"127.0.0.1:{grpc_port}", proc


@contextlib.contextmanager
def start_kserve(art: artifact.Artifact, variant: str, threads: int, tmp: Path, workers: int = 1):
    """KServe's ModelServer (`make kserve-venv`) on the same ONNX file and threads, `workers` processes."""
    from edgestack.serverproc import running_kserve

    grpc_port = free_port()
    with running_kserve(art.name, art.variant_path(variant), threads=threads, grpc_port=grpc_port, workers=workers,
                        log_path=tmp / "kserve.log") as (url, proc):
        yield url, f"127.0.0.1:{grpc_port}", proc


def check_answers(art: artifact.Artifact, x: np.ndarray, servers: dict[str, dict]) -> None:
    """One real tritonclient call per server and protocol before the load: every contender
    answers the same logits (h2load itself only sees statuses and sizes)."""
    import tritonclient.grpc as tg
    import tritonclient.http as tc

    name, out = art.meta.inputs[0].name, art.meta.outputs[0].name

    def inputs(module):
        item = module.InferInput(name, list(x.shape), "BYTES" if x.dtype == object else "FP32")
        item.set_data_from_numpy(x)  # binary (HTTP) / raw_input_contents (gRPC): tritonclient's default
        return [item]

    answers = {}
    for server, where in servers.items():
        with tc.InferenceServerClient(where["url"].removeprefix("http://")) as client:
            answers[f"{server} http"] = client.infer(art.name, inputs(tc)).as_numpy(out)
        with tg.InferenceServerClient(where["grpc"]) as client:
            answers[f"{server} grpc"] = client.infer(art.name, inputs(tg)).as_numpy(out)
    reference = answers["ours http"]
    for who, answer in answers.items():
        if answer is None or answer.shape != reference.shape or not np.allclose(answer, reference, atol=1e-4):
            raise RuntimeError(f"{who} answers differently from our server: the contenders do not run the same model")


def peer_comparison(rows: list[dict], peers: list[str]) -> dict:
    """Batch 1: each of ours (REST binary, gRPC) over each peer contender, and the issue's goals
    against the best peer (c1 p50 <= 0.8x, p99 <= 1.5x; c16/c64 throughput >= 1.5x with p99 <= the peer's)."""
    by = {(r["protocol"], r["concurrency"]): r for r in rows if r["batch"] == 1}
    theirs = [name for peer in peers for name in PEERS[peer]] if by else []  # --batches without 1: none
    ratios = {}
    for ours in ("v2-binary", "v2-grpc"):
        for peer in theirs:
            for c in CONCURRENCY[1]:
                a, b = by[(ours, c)], by[(peer, c)]
                if c == 1:
                    ratios[f"{ours}/{peer} c1 p50"] = a["p50_ms"] / b["p50_ms"]
                else:
                    ratios[f"{ours}/{peer} c{c} req/s"] = a["requests_per_s"] / b["requests_per_s"]
                ratios[f"{ours}/{peer} c{c} p99"] = a["p99_ms"] / b["p99_ms"]
    goals = {}
    if theirs:
        for ours in ("v2-binary", "v2-grpc"):
            best_p50 = min(by[(p, 1)]["p50_ms"] for p in theirs)
            best_p99 = min(by[(p, 1)]["p99_ms"] for p in theirs)
            goals[f"{ours} c1 p50 <= 0.8x best peer"] = by[(ours, 1)]["p50_ms"] / best_p50
            goals[f"{ours} c1 p99 <= 1.5x best peer"] = by[(ours, 1)]["p99_ms"] / best_p99
            for c in CONCURRENCY[1][1:]:
                best = max(theirs, key=lambda p, c=c: by[(p, c)]["requests_per_s"])
                goals[f"{ours} c{c} req/s >= 1.5x best peer ({best})"] = \
                    by[(ours, c)]["requests_per_s"] / by[(best, c)]["requests_per_s"]
                goals[f"{ours} c{c} p99 <= that peer's"] = by[(ours, c)]["p99_ms"] / by[(best, c)]["p99_ms"]
            goals[f"{ours} server CPU per request <= 1 ms (c16)"] = by[(ours, 16)]["server_cpu_ms_per_request"]
    return {"ratios": ratios, "goals": goals}


def against_triton(rows: list[dict], batch: int) -> dict:
    """Issue 22's goals, ours over Triton on the same protocol (REST v2 binary; gRPC beside it):
    throughput at every concurrency above 1 >= 1.3x, c1 p50 <= 1x, c1 p99 <= 1.5x."""
    by = {(r["protocol"], r["concurrency"]): r for r in rows if r["batch"] == batch}
    goals = {}
    for ours, theirs in (("v2-binary", "triton-v2-binary"), ("v2-grpc", "triton-grpc")):
        if (theirs, 1) not in by:
            continue
        goals[f"{ours} c1 p50 <= 1x {theirs}'s"] = ratio(by[(ours, 1)]["p50_ms"], by[(theirs, 1)]["p50_ms"])
        goals[f"{ours} c1 p99 <= 1.5x {theirs}'s"] = ratio(by[(ours, 1)]["p99_ms"], by[(theirs, 1)]["p99_ms"])
        for c in CONCURRENCY[batch][1:]:
            goals[f"{ours} c{c} req/s >= 1.3x {theirs}'s"] = ratio(by[(ours, c)]["requests_per_s"],
                                                                   by[(theirs, c)]["requests_per_s"])
    return goals


def print_peers_table(rows: list[dict], batch: int, title: str) -> None:
    """The docs' peers table: per contender, c1 p50/p95/p99, each higher concurrency's req/s and p99,
    and the server CPU per request at c16."""
    contenders = [r["protocol"] for r in rows if r["batch"] == batch and r["concurrency"] == 1
                  and FIXED not in r["protocol"]]
    by = {(r["protocol"], r["concurrency"]): r for r in rows if r["batch"] == batch}
    higher = CONCURRENCY[batch][1:]
    print(f"\n{title}")
    print("| contender | c1 p50 / p95 / p99 ms | " + " | ".join(f"c{c} req/s, p99 ms" for c in higher)
          + " | server CPU ms/req (c16) |")
    print("|---|---|" + "---|" * len(higher) + "---|")
    for name in contenders:
        one = by[(name, 1)]
        cells = [f"{by[(name, c)]['requests_per_s']:,.0f}, {by[(name, c)]['p99_ms']:.1f}" for c in higher]
        print(f"| {name} | {one['p50_ms']:.3f} / {one['p95_ms']:.3f} / {one['p99_ms']:.3f} | " + " | ".join(cells)
              + f" | {shown(by[(name, 16)]['server_cpu_ms_per_request'], 0, 2).strip()} |")


GOAL_LIMITS = {"<= 0.8x": (0.8, "max"), "<= 1.5x": (1.5, "max"), ">= 1.5x": (1.5, "min"), ">= 1.3x": (1.3, "min"),
               "<= 1x": (1.0, "max"), "<= that peer's": (1.0, "max"), "<= 1 ms": (1.0, "max")}


def goal_met(name: str, value: float | None) -> bool:
    if value is None:  # not measured (below resolution): not met
        return False
    for marker, (limit, kind) in GOAL_LIMITS.items():
        if marker in name:
            return value <= limit if kind == "max" else value >= limit
    return False


def print_load_table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    header = (f"{'case':40s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'req/s':>8s} "
              f"{'srv CPU ms/req':>14s} {'h2load CPU':>10s}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['case']:40s} {r['p50_ms']:8.3f} {r['p95_ms']:8.3f} {r['p99_ms']:8.3f} {r['requests_per_s']:8.1f} "
              f"{shown(r['server_cpu_ms_per_request'], 14)} {100 * r['loadgen_cpu_share']:9.1f}%")


def fair_share(args) -> tuple[int, int]:
    """(ORT threads per session, processes) for every contender: --threads / --workers, else our
    server's own plan for this model (serving/workers.py: cores / the threads the model needs).
    Our server gets that many workers, Triton that many model instances (stub processes),
    KServe that many workers, each session that many threads: the same cores for everyone."""
    from serving.workers import plan

    cores = os.cpu_count() or 1
    chosen = plan([args.model])
    threads = args.threads or chosen.threads
    workers = getattr(args, "workers", None) or (chosen.workers if not args.threads else max(1, cores // threads))
    return threads, workers


def ab_settings(text: str) -> dict[str, str]:
    """--ab "EDGESTACK_GC_FREEZE=1,EDGESTACK_TRACING=0" -> the B server's extra environment."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() for p in pairs):
        raise UsageError(f"--ab takes VAR=VALUE[,VAR=VALUE...], got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def requested_peers(args) -> list[str]:
    peers = [p.strip() for p in (getattr(args, "peers", None) or "").split(",") if p.strip()]
    if getattr(args, "triton", False) and "triton" not in peers:
        peers.append("triton")
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise UsageError(f"unknown peer(s) {unknown}; peers: {', '.join(PEERS)}")
    return peers


def run_protocol_bench(args) -> dict:
    from edgestack.runtime import choose_variant, open_session

    art = artifact.load_latest(args.model)
    if art.task not in ("image-classification", "text-classification"):
        raise UsageError(f"--protocols compares v2 against /classify or /classify_text: needs an image or text "
                         f"classifier, {args.model} does {art.task}")
    h2load_path()  # say what is missing before anything starts
    peers = requested_peers(args)
    text = art.task == "text-classification"
    if text and "kserve" in peers:  # its peer is a plain kserve.Model on the ONNX file: tensors in, no tokenizer
        print("kserve: not a contender for a text model (its plain kserve.Model on the ONNX file takes token "
              "tensors, not texts); Triton runs our runner, tokenizer included", flush=True)
        peers.remove("kserve")
    threads, workers = fair_share(args)
    variant = choose_variant(list(art.meta.variants), ["CPUExecutionProvider"], get_settings().variant)
    batches = tuple(getattr(args, "batches", None) or BATCHES)
    if any(b not in BATCHES for b in batches):
        raise UsageError(f"--batches: each of {', '.join(map(str, BATCHES))}")
    print(f"protocol benchmark: {args.model} v{art.version}, variant {variant}; every contender {workers} "
          f"process(es) (our workers, Triton's model instances, KServe's workers) x {threads} ORT thread(s), "
          f"peers: {', '.join(peers) or 'none'}; {args.http_requests} requests per contender and case "
          "(h2load)", flush=True)

    in_process = []
    if not text:  # the in-process reference: the image model's session on the same tensors
        session = open_session(art.variant_path(variant), device="cpu", threads=threads)
        for batch in batches:
            feeds = model_inputs(art, batch)
            samples = interleaved({"ort": lambda feeds=feeds: session.run(feeds)}, args.iterations)["ort"]
            in_process.append({"case": f"ort-{variant} in-process batch={batch}", "batch": batch,
                               **percentiles(samples, batch)})
        session = None  # closed: the servers get the cores

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        grpc_port = free_port()
        # Load shedding off (EDGESTACK_MAX_QUEUE_MS=0): the peers queue without bound, and a 503 would
        # end the run; the benchmark measures how fast requests are served, not how many are refused.
        env = {env_name("threads"): str(threads), env_name("workers"): str(workers), env_name("variant"): variant,
               env_name("grpc_port"): str(grpc_port),
               env_name("max_queue_ms"): "0"}
        url, proc = stack.enter_context(running_server([args.model], port=args.port or free_port(), env=env,
                                                       log_path=Path(tmp) / "server.log"))
        servers = {"ours": {"url": url, "grpc": f"127.0.0.1:{grpc_port}"}}
        cpu = {"ours": ProcessTreeCPU(proc.pid)}
        fixed = {FIXED: ready_target(url, "ours")}
        starters = {"triton": lambda: start_triton(args.model, variant, threads, Path(tmp), workers),
                    "kserve": lambda: start_kserve(art, variant, threads, Path(tmp), workers)}
        if args.ab:  # a second server of ours, other settings (A/B of a change, same run)
            b_grpc = free_port()
            b_url, b_proc = stack.enter_context(running_server(
                [args.model], env={**env, env_name("grpc_port"): str(b_grpc), **ab_settings(args.ab)},
                log_path=Path(tmp) / "server-b.log"))
            servers["ours-b"] = {"url": b_url, "grpc": f"127.0.0.1:{b_grpc}"}
            cpu["ours-b"] = ProcessTreeCPU(b_proc.pid)
            fixed["b:" + FIXED] = ready_target(b_url, "ours-b")
        for peer in peers:
            peer_url, peer_grpc, peer_proc = stack.enter_context(starters[peer]())
            servers[peer] = {"url": peer_url, "grpc": peer_grpc}
            cpu[peer] = ProcessTreeCPU(peer_proc.pid)
            fixed[fixed_name(peer)] = ready_target(peer_url, peer)
        check_answers(art, next(iter(model_inputs(art, 2).values())), servers)
        cases = {batch: targets_for(art, batch, servers) for batch in batches}
        rows = measure(cases, args.http_requests, fixed, cpu, per_connection=args.per_connection)

    by_case = {r["case"]: r for r in rows}
    fixed_p50 = {(r["protocol"], r["batch"]): r["p50_ms"] for r in rows if r["protocol"] in fixed}
    # A lone request still waits up to the adaptive batcher's window for company: part of
    # every protocol's latency at concurrency 1, reported beside the check.
    from serving.runner import RunnerOptions

    wait_ms = RunnerOptions.from_env().max_wait_ms  # the server reads the same setting
    contenders = list(cases[batches[0]])
    ratios, checks = {}, {}
    in_process_by = {r["batch"]: r for r in in_process}
    for batch in batches:
        binary = by_case[f"v2-binary batch={batch} conc=1"]["p50_ms"]
        for protocol in contenders:
            if protocol != "v2-binary":
                ratios[f"{protocol}_over_v2-binary_p50_batch{batch}_conc1"] = (
                    by_case[f"{protocol} batch={batch} conc=1"]["p50_ms"] / binary)
        for peer in peers:
            for protocol in PEERS[peer]:
                for c in CONCURRENCY[batch][1:]:
                    ours, theirs = (by_case[f"{p} batch={batch} conc={c}"]["items_per_s"] for p in ("v2-binary", protocol))
                    ratios[f"{protocol}_over_v2-binary_items_per_s_batch{batch}_conc{c}"] = theirs / ours
            ratios[f"{fixed_name(peer)}_over_{FIXED}_p50_batch{batch}"] = (
                fixed_p50[(fixed_name(peer), batch)] / fixed_p50[(FIXED, batch)])
        ort_row = in_process_by.get(batch)
        if ort_row is None:  # a text model: no in-process reference (the tokenizer is the runner's)
            continue
        budget = 1.5 * (ort_row["p50_ms"] + fixed_p50[(FIXED, batch)])
        checks[f"batch{batch}"] = {"v2_binary_p50_ms": binary, "ort_p50_ms": ort_row["p50_ms"],
                                   "fixed_p50_ms": fixed_p50[(FIXED, batch)], "budget_ms": budget,
                                   "within": binary <= budget,
                                   "batching_window_ms": wait_ms}
    comparison = peer_comparison(rows, peers)
    comparison["against_triton"] = {batch: against_triton(rows, batch) for batch in batches} if "triton" in peers else {}
    if args.ab:  # B over A, per contender and concurrency: p50, p99, req/s, server CPU per request
        by = {(r["protocol"], r["batch"], r["concurrency"]): r for r in rows}
        comparison["ab"] = {
            f"{p} batch={b} c{c} B/A {metric}": ratio(by[("b:" + p, b, c)][metric], by[(p, b, c)][metric])
            for p in ("v2-binary", "v2-grpc") for b in batches for c in CONCURRENCY[b]
            for metric in ("p50_ms", "p99_ms", "requests_per_s", "server_cpu_ms_per_request")}
    result = {"model": args.model, "version": art.version, "variant": variant,
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(threads),
              "processes": workers, "load_average": os.getloadavg(),
              "load_generator": "h2load (nghttp2-client), one thread, one request in flight per connection",
              "triton": "triton" in peers, "peers": peers, "ab": getattr(args, "ab", None), "in_process": in_process,
              "fixed_cost": [r for r in rows if r["protocol"] in fixed],
              "http": rows, "ratios": ratios, "checks": checks, "peer_comparison": comparison}

    m = result["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {threads} threads, flags {' '.join(m['flags'])}; "
          f"onnxruntime {m['versions'].get('onnxruntime')}")
    print_table(in_process, "in process")
    print_load_table(rows, "over the wire, h2load (srv CPU: the contender's server process tree; "
                           "h2load CPU: the load generator's share of one core)")
    print("\nratios (p50 at concurrency 1; items/s at concurrency 16 and 64):")
    for key, value in ratios.items():
        print(f"  {key:58s} {value:6.3f}")
    if comparison["goals"]:
        print("\nbatch 1, ours over each peer:")
        for key, value in comparison["ratios"].items():
            print(f"  {key:46s} {value:6.2f}")
        print("\nthe issue's goals against the best peer:")
        for key, value in comparison["goals"].items():
            print(f"  {key:58s} {shown(value, 10, 2)}  {'met' if goal_met(key, value) else 'NOT met'}")
    for batch in batches:
        print_peers_table(rows, batch, f"{args.model} batch {batch}: every contender, v2 binary (REST) and gRPC "
                                       f"({workers} process(es) x {threads} ORT thread(s) each)")
        goals = comparison["against_triton"].get(batch) or {}
        for key, value in goals.items():
            print(f"  {key:58s} {shown(value, 10, 2)}  {'met' if goal_met(key, value) else 'NOT met'}")
    if args.ab:
        print(f"\nA/B: B = our server with {args.ab} (ratios B/A; < 1 is better for ms, > 1 for req/s):")
        for key, value in comparison["ab"].items():
            print(f"  {key:58s} {shown(value, 6)}")
    if checks:
        print("\nv2 binary at concurrency 1 vs 1.5 x (in-process ORT p50 + fixed cost):")
    for key, c in checks.items():
        print(f"  {key}: {c['v2_binary_p50_ms']:.3f} ms vs budget {c['budget_ms']:.3f} ms "
              f"(ORT {c['ort_p50_ms']:.3f} + fixed {c['fixed_p50_ms']:.3f}) -> {'within' if c['within'] else 'OVER'}; "
              f"includes up to {c['batching_window_ms']:g} ms batching window (EDGESTACK_MAX_WAIT_MS)")
    write_result(result, args.out, f"{args.model}-protocols" + ("-peers" if peers else ""))
    return result
