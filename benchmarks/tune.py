"""`edgestack bench folk-lstm`: tokens per second of the tune generator, and time to first token.

In process, interleaved after warm-up (A B C A B C ...): PyTorch eager (its default oneDNN
LSTM, and its native kernel), ORT fp32 and ORT int8, each writing 100 characters greedily one step at a time at batch 1 with the state fed
back (what generation does). Then reading a 256-character prompt: the prompt graph in one
call vs the step graph 256 times. Over HTTP: a real server streaming /generate_stream
(Server-Sent Events); time to the first generated character and the whole stream.
"""

from __future__ import annotations

import json
import time

import numpy as np

from edgestack import artifact
from edgestack.settings import env_name, get_settings

TOKENS_PER_CALL = 100
PROMPT_CHARS = 256


def bench_tune(art: artifact.Artifact, args) -> dict:
    import torch

    from benchmarks.timing import interleaved, percentiles
    from edgestack.runtime import open_session
    from training import tune as tune_training

    # Batch-1 stepping: one thread, as the server runs it (EDGESTACK_LSTM_THREADS); --threads to change.
    threads = args.threads or get_settings().lstm_threads
    torch.set_num_threads(threads)
    model, config, vocab = tune_training.load_checkpoint(art.file("checkpoint"))
    hidden = config["hidden_size"]
    steps = {v: open_session(art.variant_path(v), device="cpu", threads=threads) for v in ("fp32", "int8")}
    prompts = {v: open_session(art.file(art.meta.variants[v].prompt_file), device="cpu", threads=threads)
               for v in ("fp32", "int8")}
    start_token = vocab.index["X"]

    def torch_eager(onednn: bool):
        @torch.inference_mode()
        def run():
            # PyTorch's default CPU LSTM path goes through oneDNN, which is slow for one step at a
            # time; the native kernel (mkldnn off) is timed too so the comparison is not flattering.
            torch.backends.mkldnn.enabled = onednn
            try:
                state = model.zero_state(1)
                token = torch.tensor([[start_token]])
                for _ in range(TOKENS_PER_CALL):
                    logits, state = model(token, state)
                    token = logits[:, -1].argmax(-1, keepdim=True)
            finally:
                torch.backends.mkldnn.enabled = True
        return run

    def ort_stepping(session):
        def run():
            h = c = np.zeros((1, 1, hidden), np.float32)
            token = np.asarray([start_token], np.int64)
            for _ in range(TOKENS_PER_CALL):
                logits, h, c = session.run({"token": token, "h": h, "c": c})
                token = logits.argmax(-1)
        return run

    rounds = max(10, args.iterations // 4)
    results = {"in_process": [], "http": []}
    candidates = {"pytorch-eager": torch_eager(True), "pytorch-eager-native": torch_eager(False),
                  **{f"ort-{v}": ort_stepping(s) for v, s in steps.items()}}
    print(f"stepping: {rounds} rounds x {TOKENS_PER_CALL} tokens per variant", flush=True)
    for name, samples in interleaved(candidates, rounds, warmup=3).items():
        results["in_process"].append({"case": f"{name} {TOKENS_PER_CALL} steps", "engine": name,
                                      "tokens_per_call": TOKENS_PER_CALL, **percentiles(samples, TOKENS_PER_CALL)})

    text = "".join(ch for ch in (vocab.chars * 4) if ch in vocab.index)[:PROMPT_CHARS]
    ids = np.asarray([vocab.encode(text)], np.int64)
    zeros = np.zeros((1, 1, hidden), np.float32)

    def prompt_graph(session):
        return lambda: session.run({"tokens": ids, "h": zeros, "c": zeros})

    def prompt_by_steps(session):
        def run():
            h = c = zeros
            for token in ids[0]:
                _, h, c = session.run({"token": np.asarray([token]), "h": h, "c": c})
        return run

    prompt_candidates = {"ort-int8 prompt graph": prompt_graph(prompts["int8"]),
                         "ort-int8 step by step": prompt_by_steps(steps["int8"])}
    for name, samples in interleaved(prompt_candidates, rounds, warmup=3).items():
        results["in_process"].append({"case": f"{name} ({PROMPT_CHARS} chars)", "engine": name,
                                      "tokens_per_call": PROMPT_CHARS, **percentiles(samples, PROMPT_CHARS)})

    if not args.no_http:
        results["http"] = http_streaming(art, args, threads)

    by_engine = {r["engine"]: r for r in results["in_process"]}
    tps = {k: by_engine[k]["items_per_s"] for k in ("pytorch-eager", "pytorch-eager-native", "ort-fp32", "ort-int8")}
    ratios = {"ort_int8_over_pytorch_tokens_per_s": tps["ort-int8"] / tps["pytorch-eager"],
              "ort_int8_over_pytorch_native_tokens_per_s": tps["ort-int8"] / tps["pytorch-eager-native"],
              "ort_fp32_over_pytorch_tokens_per_s": tps["ort-fp32"] / tps["pytorch-eager"],
              "int8_over_fp32_tokens_per_s": tps["ort-int8"] / tps["ort-fp32"],
              "prompt_graph_over_stepping_speed": (by_engine["ort-int8 prompt graph"]["items_per_s"]
                                                   / by_engine["ort-int8 step by step"]["items_per_s"])}
    if results["http"]:
        ratios["http_ttft_p50_ms"] = results["http"][0]["p50_ms"]
    return {**results, "ratios": ratios, "tokens_per_s": tps, "hidden_size": hidden, "threads": threads}


def http_streaming(art: artifact.Artifact, args, threads: int) -> list[dict]:
    """Time to first generated character and whole-stream time over /generate_stream (SSE)."""
    import httpx

    from benchmarks.timing import percentiles
    from edgestack.serverproc import running_server

    requests = max(5, min(args.http_requests, 60))
    ttft, totals, chars = [], [], 0
    with running_server([art.name], port=args.port or None, env={env_name("threads"): str(threads)}) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            for i in range(requests + 3):  # 3 warm-up streams
                body = {"model": art.name, "seed": i, "max_length": 200, "temperature": 1.0}
                started = time.perf_counter()
                first, n = None, 0
                with client.stream("POST", "/generate_stream", json=body) as response:
                    response.raise_for_status()
                    event = None
                    for line in response.iter_lines():
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("data: ") and event == "piece":
                            first = first or time.perf_counter()
                            n += len(json.loads(line[6:])["text"])
                end = time.perf_counter()
                if i >= 3 and first is not None:
                    ttft.append(first - started)
                    totals.append(end - started)
                    chars += n
    row_first = {"case": "http SSE first character", "engine": "http", **percentiles(ttft, 1)}
    row_first["items_per_s"] = chars / sum(totals)
    row_total = {"case": "http SSE whole stream (<=200 chars)", "engine": "http", **percentiles(totals, 1)}
    row_total["items_per_s"] = chars / sum(totals)
    return [row_first, row_total]
