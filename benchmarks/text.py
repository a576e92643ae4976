"""`edgestack bench sentiment-transformer` (any text-classification transformer).

In process, interleaved after warm-up (A B C A B C ...): PyTorch eager (the fine-tuned
checkpoint), ORT fp32 with the transformer optimizer's fused graph, and ORT dynamic int8,
at batch 1 and 16 and sequence lengths 32 and 128. The inputs are real test texts,
tokenized with the artifact's tokenizer, joined when one is shorter than the length and
cut at exactly that many tokens (no padding: every position is a real token). Over HTTP:
a real server (int8 on CPU), POST /classify_text with one real test text, at concurrency
1 and 16. Table on screen, JSON under bench-results/.
"""

from __future__ import annotations

import os

import numpy as np

from edgestack import artifact

BATCHES = (1, 16)
LENGTHS = (32, 128)
ENGINES = ("pytorch-eager", "ort-fp32-opt", "ort-int8")


def fixed_length_batch(tokenizer, texts: list[str], batch: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """`batch` rows of exactly `length` real tokens ([CLS] ... [SEP]) made of consecutive test texts."""
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.no_truncation()
    tokenizer.no_padding()
    pieces = [e.ids[1:-1] for e in tokenizer.encode_batch(texts)]  # without [CLS]/[SEP]
    stream = [token for piece in pieces for token in piece]
    need = length - 2
    if len(stream) < batch * need:
        stream = stream * (batch * need // max(1, len(stream)) + 1)
    rows = [[cls, *stream[i * need:(i + 1) * need], sep] for i in range(batch)]
    ids = np.asarray(rows, dtype=np.int64)
    return ids, np.ones_like(ids)


def bench_text(art: artifact.Artifact, args) -> dict:
    import torch

    from benchmarks.timing import http_rows, interleaved, percentiles
    from edgestack.runtime import open_session
    from training import text as tt
    from training.data import text as text_data

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    model, tokenizer, config = tt.load_checkpoint(art.file("checkpoint"))
    data = text_data.load(config["dataset"], config["data_dir"], config["seed"])
    sessions = {"ort-fp32-opt": open_session(art.variant_path("fp32-opt"), device="cpu", threads=threads),
                "ort-int8": open_session(art.variant_path("int8"), device="cpu", threads=threads)}
    results = {"in_process": [], "http": []}
    for length in LENGTHS:
        for batch in BATCHES:
            ids, mask = fixed_length_batch(tokenizer, data.test.texts[:400], batch, length)
            feeds = {"input_ids": ids, "attention_mask": mask}
            x_ids, x_mask = torch.from_numpy(ids), torch.from_numpy(mask)

            def torch_eager(x_ids=x_ids, x_mask=x_mask):
                with torch.inference_mode():
                    model(x_ids, x_mask)

            candidates = {"pytorch-eager": torch_eager,
                          **{name: (lambda s=s, f=feeds: s.run(f)) for name, s in sessions.items()}}
            warmup = min(20, max(2, args.iterations // 5))
            for name, samples in interleaved(candidates, args.iterations, warmup=warmup).items():
                results["in_process"].append({"case": f"{name} batch={batch} len={length}", "engine": name,
                                              "batch": batch, "length": length, **percentiles(samples, batch)})
            print(f"  timed batch={batch} len={length}", flush=True)
    if not args.no_http:
        text = max(data.test.texts[:200], key=len)
        results["http"] = http_rows(art.name, "/classify_text", {"model": art.name, "text": text}, args, threads,
                                    "http /classify_text", chars=len(text))
    p50 = {r["case"]: r["p50_ms"] for r in results["in_process"] + results["http"]}
    ratios = {}
    for length in LENGTHS:
        for batch in BATCHES:
            key = f"batch={batch} len={length}"
            ratios[f"ort_int8_over_pytorch_p50_b{batch}_len{length}"] = p50[f"ort-int8 {key}"] / p50[f"pytorch-eager {key}"]
            ratios[f"ort_fp32opt_over_pytorch_p50_b{batch}_len{length}"] = (p50[f"ort-fp32-opt {key}"]
                                                                            / p50[f"pytorch-eager {key}"])
            ratios[f"int8_over_fp32opt_p50_b{batch}_len{length}"] = p50[f"ort-int8 {key}"] / p50[f"ort-fp32-opt {key}"]
    if results["http"]:
        ratios["http_conc1_over_inprocess_int8_b1_len32_p50"] = (p50["http /classify_text conc=1"]
                                                                 / p50["ort-int8 batch=1 len=32"])
    expected = ratios["ort_int8_over_pytorch_p50_b1_len128"]
    print(f"ORT int8 / PyTorch eager p50 at batch 1, length 128: {expected:.3f} "
          f"({'meets' if expected <= 0.4 else 'misses'} the <= 0.4 target)", flush=True)
    return {**results, "ratios": ratios, "threads": threads}
