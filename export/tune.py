"""folk-lstm run folder -> artifact: step + prompt ONNX graphs with explicit state, int8, checks.

Two graphs per variant, both with the LSTM state as plain inputs and outputs, so the server
keeps the state (numpy) between calls and needs no torch:

    step    (token [B] int64, h [1,B,H], c [1,B,H])       -> (logits [B,V], h', c')
    prompt  (tokens [B,T] int64, h [1,B,H], c [1,B,H])    -> (logits [B,T,V], h', c')

The prompt graph reads a whole prompt in one call (and is what measures bits per character).
They are exported with the TorchScript exporter (dynamo=False): it writes a real ONNX `LSTM`
op, which `quantize_dynamic` turns into `DynamicQuantizeLSTM`; the dynamo exporter unrolls
the LSTM into primitive ops that stay fp32 (and got slower when "quantized").

The export fails loudly unless: a 200-step greedy rollout from ORT fp32 gives exactly
PyTorch's tokens; the int8 graphs contain DynamicQuantizeLSTM; int8 validation bits per
character are within 2% of fp32's. The int8/fp32 stepping speed is measured and recorded
(a warning if int8 is not faster; `edgestack bench folk-lstm` measures it properly).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import nn

from edgestack import artifact
from edgestack.errors import QualityGateError
from edgestack.runtime import open_session
from export import int8_search
from export.onnx_utils import (MAX_IR_VERSION, ParityError, check_parity, finalize, keep_training_run,
                                manifest_head, op_types, versions)
from training import tune as tune_training
from training.data import abc as abc_data

OPSET = 17
STEP_INPUTS, STEP_OUTPUTS = ["token", "h", "c"], ["logits", "h_out", "c_out"]
PROMPT_INPUTS = ["tokens", "h", "c"]
ROLLOUT_STEPS = 200
ROLLOUT_PROMPT = "X:1\nT:"
MAX_INT8_BPC_INCREASE = 0.02  # int8 may be at most 2% worse than fp32 in bits per character (val and test)
PARITY_ATOL, PARITY_RTOL = 1e-4, 1e-4


class StepGraph(nn.Module):
    """One character: (token [B], h, c) -> (logits [B, V], h', c')."""

    def __init__(self, model: tune_training.CharLSTM):
        super().__init__()
        self.model = model

    def forward(self, token, h, c):
        out, (h, c) = self.model.lstm(self.model.embedding(token).unsqueeze(1), (h, c))
        return self.model.head(out[:, 0]), h, c


class PromptGraph(nn.Module):
    """A whole sequence: (tokens [B, T], h, c) -> (logits [B, T, V], h', c')."""

    def __init__(self, model: tune_training.CharLSTM):
        super().__init__()
        self.model = model

    def forward(self, tokens, h, c):
        out, (h, c) = self.model.lstm(self.model.embedding(tokens), (h, c))
        return self.model.head(out), h, c


def export_graph(module: nn.Module, example: tuple, path: Path, input_names: list[str],
                 dynamic_axes: dict) -> Path:
    """TorchScript exporter (emits a real ONNX LSTM op), one self-contained file, IR version capped."""
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "LSTM with batch_first" and deprecation notes
        torch.onnx.export(module, example, str(path), dynamo=False, opset_version=OPSET,
                          input_names=input_names, output_names=STEP_OUTPUTS,
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    finalize(path)
    return path


def quantize(src: Path, dst: Path, settings: dict) -> Path:
    """Dynamic int8: LSTM -> DynamicQuantizeLSTM, MatMul -> MatMulInteger (7-bit weights with
    reduce_range, per tensor unless said). QualityGateError if the LSTM was left in fp32."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR  # "consider pre-processing": it has nothing to do here
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=settings["per_channel"],
                         reduce_range=settings["reduce_range"], nodes_to_exclude=settings.get("exclude") or [],
                         op_types_to_quantize=["LSTM", "MatMul", "Gemm"])
    finally:
        root.setLevel(level)
    model = onnx.load(str(dst))
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    onnx.save_model(model, str(dst))
    ops = op_types(dst)
    if "DynamicQuantizeLSTM" not in ops or "LSTM" in ops:
        raise QualityGateError(f"{dst.name}: the LSTM was not quantized (op types {ops})", gate="int8-ops")
    return dst


def ort_step_fn(session):
    """bits_per_char's step function on the prompt graph of an ORT session."""
    hidden = next(i.shape[2] for i in session.session.get_inputs() if i.name == "h")

    def step(tokens: np.ndarray, state):
        if state is None:
            state = (np.zeros((1, len(tokens), hidden), np.float32),) * 2
        logits, h, c = session.run({"tokens": tokens.astype(np.int64), "h": state[0], "c": state[1]})
        return logits, (h, c)
    return step


def greedy_rollout_torch(model: tune_training.CharLSTM, prompt_ids: list[int], steps: int) -> list[int]:
    with torch.no_grad():
        logits, state = model(torch.tensor([prompt_ids]))
        token, out = int(logits[0, -1].argmax()), []
        for _ in range(steps):
            out.append(token)
            logits, state = model(torch.tensor([[token]]), state)
            token = int(logits[0, -1].argmax())
    return out


def greedy_rollout_ort(prompt_session, step_session, prompt_ids: list[int], steps: int, hidden: int) -> list[int]:
    zeros = np.zeros((1, 1, hidden), np.float32)
    logits, h, c = prompt_session.run({"tokens": np.asarray([prompt_ids], np.int64), "h": zeros, "c": zeros})
    token, out = int(logits[0, -1].argmax()), []
    for _ in range(steps):
        out.append(token)
        logits, h, c = step_session.run({"token": np.asarray([token], np.int64), "h": h, "c": c})
        token = int(logits[0].argmax())
    return out


def step_tokens_per_s(session, hidden: int, steps: int = 300, rounds: int = 5) -> float:
    """Median tokens/s of batch-1 stepping (feeding back argmax), after warm-up."""
    h = c = np.zeros((1, 1, hidden), np.float32)
    token = np.zeros(1, np.int64)
    rates = []
    for r in range(rounds + 1):
        start = time.perf_counter()
        for _ in range(steps):
            logits, h, c = session.run({"token": token, "h": h, "c": c})
            token = logits.argmax(-1).astype(np.int64)
        if r:
            rates.append(steps / (time.perf_counter() - start))
    return float(np.median(rates))


def export(run_dir: Path, staging: Path, *, name: str, max_int8_bpc_increase: float = MAX_INT8_BPC_INCREASE,
           progress: bool = True) -> dict:
    """Write {step,prompt}.{fp32,int8}.onnx, vocab.json and the manifest into `staging`."""
    say = print if progress else (lambda *a, **k: None)
    run_dir = Path(run_dir)
    model, config, vocab = tune_training.load_checkpoint(run_dir)
    hidden, size = config["hidden_size"], len(vocab)
    split = json.loads((run_dir / "split.json").read_text())

    say(f"[{name}] exporting step and prompt graphs (TorchScript exporter: real ONNX LSTM op)")
    h0 = torch.zeros(1, 2, hidden)
    files = {"fp32": (staging / "step.fp32.onnx", staging / "prompt.fp32.onnx")}
    export_graph(StepGraph(model), (torch.tensor([1, 2]), h0, h0), files["fp32"][0], STEP_INPUTS,
                 {"token": {0: "batch"}, "h": {1: "batch"}, "c": {1: "batch"},
                  "logits": {0: "batch"}, "h_out": {1: "batch"}, "c_out": {1: "batch"}})
    export_graph(PromptGraph(model), (torch.tensor([[1, 2, 3], [4, 5, 6]]), h0, h0), files["fp32"][1],
                 PROMPT_INPUTS,
                 {"tokens": {0: "batch", 1: "time"}, "h": {1: "batch"}, "c": {1: "batch"},
                  "logits": {0: "batch", 1: "time"}, "h_out": {1: "batch"}, "c_out": {1: "batch"}})

    say(f"[{name}] dynamic int8 (DynamicQuantizeLSTM), checked in bits per character on validation and test")
    val_ids = np.asarray(vocab.encode(abc_data.join_tunes(split["val"]), unknown="drop"), np.int64)
    test_ids = np.asarray(vocab.encode(abc_data.join_tunes(split["test"]), unknown="drop"), np.int64)
    ids = {"val": val_ids, "test": test_ids}

    def neg_bpc(paths, part: str) -> float:  # the search wants higher-is-better scores
        return -tune_training.bits_per_char(ort_step_fn(open_session(paths[-1], device="cpu")), ids[part])

    reference = {part: neg_bpc(files["fp32"], part) for part in ids}
    try:
        result = int8_search.search(
            name=name, metric="-bits/char", budget=max_int8_bpc_increase, drop=int8_search.relative_increase,
            reference=reference, workdir=staging / "int8-search",
            base=[{"per_channel": False}], nodes=[], say=say,
            quantize=lambda settings, folder: [quantize(src, folder / src.name.replace("fp32", "int8"), settings)
                                               for src in files["fp32"]],
            score=neg_bpc)
    except QualityGateError as exc:
        result = int8_search.SearchResult(None, reason=str(exc), record={"status": "withheld", "reason": str(exc)})
    adopted = int8_search.adopt(result, staging, name=name, kept="fp32", say=say)
    if adopted:
        files["int8"] = tuple(adopted)

    sessions = {v: tuple(open_session(p, device="cpu") for p in paths) for v, paths in files.items()}

    say(f"[{name}] parity: {ROLLOUT_STEPS}-step greedy rollout, ORT vs PyTorch")
    prompt_ids = vocab.encode(ROLLOUT_PROMPT)
    expected = greedy_rollout_torch(model, prompt_ids, ROLLOUT_STEPS)
    rollouts = {v: greedy_rollout_ort(s[1], s[0], prompt_ids, ROLLOUT_STEPS, hidden) for v, s in sessions.items()}
    if rollouts["fp32"] != expected:
        first = next(i for i, (a, b) in enumerate(zip(expected, rollouts["fp32"])) if a != b)
        raise ParityError(f"{name}: ORT fp32 greedy rollout departs from PyTorch's at step {first}")
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, size, (2, 64))
    h = rng.standard_normal((1, 2, hidden)).astype(np.float32) * 0.5
    with torch.no_grad():
        t_logits, (t_h, t_c) = model(torch.from_numpy(tokens), (torch.from_numpy(h), torch.from_numpy(h)))
    o_logits, o_h, o_c = sessions["fp32"][1].run({"tokens": tokens, "h": h, "c": h})
    s_logits, s_h, _ = sessions["fp32"][0].run({"token": tokens[:, 0], "h": h, "c": h})
    with torch.no_grad():
        e_logits, (e_h, _) = model(torch.from_numpy(tokens[:, :1]), (torch.from_numpy(h), torch.from_numpy(h)))
    parity = {
        "greedy_rollout_steps": ROLLOUT_STEPS, "greedy_rollout_prompt": ROLLOUT_PROMPT,
        "greedy_rollout_identical": True,
        "int8_greedy_rollout_agreement": (float(np.mean(np.asarray(rollouts["int8"]) == np.asarray(expected)))
                                          if "int8" in rollouts else None),
        "prompt_logits": check_parity(t_logits.numpy(), o_logits, atol=PARITY_ATOL, rtol=PARITY_RTOL,
                                      what=f"{name} prompt logits"),
        "prompt_state": check_parity(np.concatenate([t_h.numpy(), t_c.numpy()]), np.concatenate([o_h, o_c]),
                                     atol=PARITY_ATOL, rtol=PARITY_RTOL, what=f"{name} prompt state"),
        "step_logits": check_parity(e_logits[:, 0].numpy(), s_logits, atol=PARITY_ATOL, rtol=PARITY_RTOL,
                                    what=f"{name} step logits"),
        "step_state": check_parity(e_h.numpy(), s_h, atol=PARITY_ATOL, rtol=PARITY_RTOL, what=f"{name} step state"),
    }

    torch_val = tune_training.bits_per_char(tune_training.torch_step_fn(model), val_ids)
    variants = {}
    # the int8 search measured both variants' bits per character already (as negated scores)
    measured = {"fp32": (-reference["val"], -reference["test"]),
                **({"int8": (-result.chosen.val, -result.chosen.test)} if result.chosen else {})}
    for variant, (step_s, prompt_s) in sessions.items():
        started = time.time()
        val_bpc, test_bpc = measured[variant]
        speed = step_tokens_per_s(step_s, hidden)
        say(f"[{name}] {variant}: validation {val_bpc:.4f} bits/char, test {test_bpc:.4f} bits/char, "
            f"{speed:,.0f} tokens/s stepping ({time.time() - started:.1f}s)")
        variants[variant] = {"file": files[variant][0].name, "prompt_file": files[variant][1].name,
                             "val_bits_per_char": val_bpc, "test_bits_per_char": test_bpc,
                             "val_chars": int(len(val_ids)), "test_chars": int(len(test_ids)),
                             "step_tokens_per_s": speed, "op_types": op_types(files[variant][0]),
                             "prompt_op_types": op_types(files[variant][1]), "target": "cpu"}
    increase = speedup = None
    if "int8" in variants:
        increase = variants["int8"]["val_bits_per_char"] / variants["fp32"]["val_bits_per_char"] - 1
        speedup = variants["int8"]["step_tokens_per_s"] / variants["fp32"]["step_tokens_per_s"]
        if speedup < 1.0:  # timing on a shared machine is noisy: say it loudly, `edgestack bench` measures properly
            say(f"[{name}] WARNING: int8 stepped slower than fp32 here ({speedup:.2f}x)")

    (staging / "vocab.json").write_text(json.dumps(vocab.chars))
    metrics = keep_training_run(run_dir, staging, ("model.safetensors", "config.json", "vocab.json",
                                                   "metrics.json", "curves.png", "samples.txt"))
    state = {"dtype": "float32", "shape": [1, -1, hidden]}
    manifest = {
        **manifest_head(name, staging, "tune", "text-generation"),
        # The served (v2 protocol) graph is the step graph: one character per call, state in and out.
        "inputs": [{"name": "token", "dtype": "int64", "shape": [-1]},
                   {"name": "h", **state}, {"name": "c", **state}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, size]},
                    {"name": "h_out", **state}, {"name": "c_out", **state}],
        "prompt_graph": {"inputs": [{"name": "tokens", "dtype": "int64", "shape": [-1, -1]},
                                    {"name": "h", **state}, {"name": "c", **state}],
                         "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, -1, size]},
                                     {"name": "h_out", **state}, {"name": "c_out", **state}]},
        "vocabulary": {"file": "vocab.json", "size": size,
                       "unknown_characters": "refused in prompts; dropped (and counted) in evaluation text"},
        "generation": {"end_of_tune": abc_data.TUNE_SEPARATOR, "default_prompt": "X:1\n",
                       "hidden_size": hidden},
        "variants": variants,
        "parity": parity,
        "pytorch_val_bits_per_char": torch_val,
        "int8_bits_per_char_increase": increase,
        "int8_step_speedup": speedup,
        "quantization": {**result.record, "format": "dynamic", "activations": "uint8 (at run time)",
                         "weights": "int8"},
        "versions": versions(),
        "training": {"config": config, "best_epoch": metrics["best_epoch"],
                     "val_bits_per_char": metrics["val_bits_per_char"],
                     "test_bits_per_char": metrics["test_bits_per_char"],
                     "train_seconds": metrics["train_seconds"], "data_source": metrics["data_source"],
                     "tunes": {k: metrics[f"{k}_tunes"] for k in ("train", "val", "test")}},
    }
    artifact.write_manifest(staging, manifest)
    return manifest
