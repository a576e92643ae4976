"""Overload: what load shedding buys at several times the sustainable rate, and a soak.

    python -m benchmarks.overload fashion-cnn              # table on screen, JSON under bench-results/
    python -m benchmarks.overload fashion-cnn --soak       # 10,000 mixed requests at concurrency 64

Overload (issue 12): one v2 binary batch-1 request body, driven by h2load (Debian's
nghttp2-client, a C program, so the client is not the bottleneck; its own CPU is reported).

1. the sustainable rate R: closed loop at concurrency 16 for a few seconds (req/s);
2. an open-loop rate of `--factor` x R (h2load `--rps` per connection)
   for `--seconds` over 256 connections, against the server as configured (shedding on: EDGESTACK_MAX_QUEUE_MS
   500) and against the same server with shedding off (EDGESTACK_MAX_QUEUE_MS=0), and a third
   time with shedding on and a 100 ms deadline header (X-Request-Timeout-Ms);
3. per run: requests sent, answered 200 (accepted), 503 (shed), anything else (must be 0),
   p50/p99/max of the accepted ones and p99 of the shed ones (they are refused at once).

Soak: 10,000 requests at concurrency 64 in all, as three concurrent h2load streams: PNG
uploads to /classify_image, v2 binary tensors, and texts to /classify_text when a text model
is served. Reports errors (any non-200) and the RSS of the server's whole process tree after
warm-up and at the end (growth must stay under 5%).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.loadgen import ProcessTreeCPU, Stream, Target, run_stream
from benchmarks.timing import machine, write_result
from edgestack import artifact
from edgestack.serverproc import running_server


def ms(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 2) if len(values) else None


def summary(run: dict, label: str, offered_rps: float | None) -> dict:
    status, latency = run["status"], run["latency_s"]
    ok, shed = latency[status == 200], latency[status == 503]
    return {"run": label, "offered_rps": round(offered_rps, 1) if offered_rps else None,
            "sent": len(status), "accepted_200": int((status == 200).sum()), "shed_503": int((status == 503).sum()),
            "other": int(((status != 200) & (status != 503)).sum()),
            "accepted_rps": round(float((status == 200).sum() / run["wall_s"]), 1),
            "accepted_p50_ms": ms(ok, 50), "accepted_p99_ms": ms(ok, 99), "accepted_max_ms": ms(ok, 100),
            "shed_p99_ms": ms(shed, 99), "loadgen_cpu_s": round(run["loadgen_cpu_s"], 2), "wall_s": round(run["wall_s"], 2)}


def v2_request(art: artifact.Artifact, url: str) -> Target:
    """A v2 binary batch-1 request with one real held-out image."""
    from benchmarks.protocols import test_pixels
    from clients.v2 import infer_request, model_path
    from edgestack.families.image import to_model_input

    x = to_model_input(test_pixels(art, 1), art.meta.preprocessing.to_dict())
    body, headers = infer_request({art.meta.inputs[0].name: x}, binary=True)
    return Target(url + model_path(art.name, suffix="/infer"), body, headers)


def print_rows(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    keys = list(rows[0])
    print("  ".join(f"{k:>15s}" for k in keys))
    for row in rows:
        print("  ".join(f"{str(row[k]):>15s}" for k in keys))


def overload(args, workdir: Path) -> dict:
    art = artifact.load_latest(args.model)
    env = {"EDGESTACK_THREADS": str(args.threads)}
    rows, sustainable = [], None
    configs = [("shedding on (500 ms queue)", {}, {}),
               ("shedding on + 100 ms deadline", {}, {"X-Request-Timeout-Ms": "100"}),
               ("shedding off (unbounded)", {"EDGESTACK_MAX_QUEUE_MS": "0"}, {})]
    for label, extra_env, extra_headers in configs:
        with running_server([args.model], env={**env, **extra_env}) as (url, proc):
            target, server = v2_request(art, url), ProcessTreeCPU(proc.pid)
            run_stream(target, 16, workdir, count=400)  # warm-up
            if sustainable is None:
                closed = run_stream(target, 16, workdir, seconds=5)
                sustainable = float((closed["status"] == 200).sum() / closed["wall_s"])
                rows.append(summary(closed, "closed loop c16 (sustainable)", None))
            offered = args.factor * sustainable
            cpu = server.seconds()
            target.headers = {**target.headers, **extra_headers}
            run = run_stream(target, args.connections, workdir, seconds=args.seconds, rps=offered / args.connections)
            row = summary(run, f"{args.factor:g}x: {label}", offered)
            row["server_cpu_s"] = round(server.seconds() - cpu, 2)
            rows.append(row)
            print(f"  {row['run']}: {row['accepted_200']} accepted, {row['shed_503']} shed, {row['other']} other; "
                  f"accepted p99 {row['accepted_p99_ms']} ms", flush=True)
    print_rows(rows, f"{args.model} v{art.version}: v2 binary batch 1, sustainable {sustainable:.0f} req/s, "
                     f"offered {args.factor:g}x for {args.seconds:g} s over {args.connections} connections")
    return {"sustainable_rps": round(sustainable, 1), "factor": args.factor, "rows": rows}


def split(total: int, parts: int) -> list[int]:
    """`total` in `parts` whole shares that add up to it: split(64, 3) == [22, 21, 21]."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def png_upload(pixels: np.ndarray) -> tuple[bytes, dict]:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    boundary = "edgestackboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"x.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + buffer.getvalue() + f"\r\n--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


def soak(args, workdir: Path) -> dict:
    from benchmarks.protocols import test_pixels

    art = artifact.load_latest(args.model)
    upload, upload_headers = png_upload(test_pixels(art, 1)[0])
    models = [args.model]
    text = next((m for m in ("sentiment-transformer", "topic-transformer")
                 if artifact.latest_version_dir(m) is not None), None)
    if text:
        models.append(text)
    with running_server(models, env={"EDGESTACK_THREADS": str(args.threads)}) as (url, proc):
        streams = [("images (PNG upload)", Target(url + "/classify_image", upload, upload_headers)),
                   ("v2 binary", v2_request(art, url))]
        if text:
            body = {"model": text, "texts": ["a gripping, beautifully acted film", "dull, predictable and far too long"]}
            streams.append(("texts", Target(url + "/classify_text", json.dumps(body).encode(),
                                            {"content-type": "application/json"})))
        counts, connections = split(args.requests, len(streams)), split(64, len(streams))
        for (_, target), concurrency in zip(streams, connections):  # warm-up: pools and caches fill
            run_stream(target, concurrency, workdir, count=300)
        server = ProcessTreeCPU(proc.pid)
        rss_start, cpu_start, started = server.rss_bytes(), server.seconds(), time.perf_counter()
        running = [Stream(target, concurrency, workdir, count=count)  # all at once: a mixed load
                   for (_, target), concurrency, count in zip(streams, connections, counts)]
        results = [stream.finish() for stream in running]
        wall = time.perf_counter() - started
        rss_end, cpu = server.rss_bytes(), server.seconds() - cpu_start
    rows = []
    for (label, target), result in zip(streams, results):
        status, latency = result["status"], result["latency_s"]
        ok = latency[status == 200]
        rows.append({"stream": label, "route": target.url.removeprefix(url), "requests": len(status), "errors": int((status != 200).sum()),
                     "p50_ms": ms(ok, 50), "p99_ms": ms(ok, 99)})
    total = sum(r["requests"] for r in rows)
    errors = sum(r["errors"] for r in rows)
    growth = (rss_end - rss_start) / rss_start * 100
    print_rows(rows, f"soak: {total} mixed requests at concurrency {sum(connections)} in {wall:.1f} s")
    print(f"errors: {errors}; server RSS (process tree) after warm-up {rss_start / 2**20:.1f} MiB, at the end "
          f"{rss_end / 2**20:.1f} MiB ({growth:+.2f}%); server CPU {cpu:.1f} s")
    return {"rows": rows, "requests": total, "errors": errors, "wall_s": round(wall, 2),
            "rss_after_warmup_mib": round(rss_start / 2**20, 1), "rss_end_mib": round(rss_end / 2**20, 1),
            "rss_growth_percent": round(growth, 2), "server_cpu_s": round(cpu, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overload", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="fashion-cnn", help="an image classifier (default fashion-cnn)")
    parser.add_argument("--factor", type=float, default=4.0, help="offered load as a multiple of the sustainable rate")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each overload run")
    parser.add_argument("--connections", type=int, default=256,
                        help="overload: h2load connections (each has one request in flight; enough for the rate)")
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (EDGESTACK_THREADS)")
    parser.add_argument("--soak", action="store_true", help="run the soak instead: mixed requests, errors and RSS")
    parser.add_argument("--requests", type=int, default=10_000, help="soak: requests in all")
    parser.add_argument("--out", default="bench-results", help="folder for the JSON")
    args = parser.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgestack-overload-") as tmp:
        result = soak(args, Path(tmp)) if args.soak else overload(args, Path(tmp))
    result = {"model": args.model, "kind": "soak" if args.soak else "overload",
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(args.threads), **result}
    write_result(result, args.out, f"{args.model}-{result['kind']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
