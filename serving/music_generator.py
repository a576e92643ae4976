"""folk-lstm runner: write ABC tunes one character at a time with numpy + ONNX Runtime.

The LSTM state lives here, between calls: the prompt graph reads the whole prompt in one
call, then the step graph runs once per new character, (token, h, c) -> (logits, h', c').
Sampling: temperature, top-k, top-p (nucleus), a seed (same seed and parameters -> same
tune, since ORT on one machine is deterministic), a maximum length, and a stop at the end
of a tune (a blank line, as between tunes in the training text).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, replace

import numpy as np

# Sampling lives in the edge runner (numpy only) so a device and the server draw the same tune.
from bundle.edge_runner.music import sample_index  # noqa: F401 (re-exported for callers)

from edgestack.artifact import Artifact
from serving.errors import InputError
from serving.runner import ModelRunner, RunnerOptions
from serving.runtime import open_session

MAX_TEMPERATURE = 5.0


def settings() -> dict[str, int]:
    env = os.environ.get
    return {"max_prompt_chars": int(env("EDGESTACK_MAX_PROMPT_CHARS", 2000)),
            "max_length": int(env("EDGESTACK_MAX_NEW_CHARS", 2000))}


@dataclass(frozen=True)
class SamplingParams:
    prompt: str = "X:1\n"
    max_length: int = 1000        # most new characters
    temperature: float = 1.0
    top_k: int = 0                # 0: off
    top_p: float = 1.0            # 1: off
    seed: int | None = None       # None: a random one, returned so the tune can be had again


class MusicGenerator(ModelRunner):
    """Serves a folk-lstm artifact: `generate` (whole tune), `stream` (pieces as they come), `infer` (raw step)."""

    def __init__(self, art: Artifact, options: RunnerOptions | None = None, on_batch=None):
        options = options or RunnerOptions()
        if options.threads is None:
            # One character at a time at batch 1: extra intra-op threads only add hand-offs
            # (measured slower on 2 cores); concurrent requests use the other cores instead.
            options = replace(options, threads=int(os.environ.get("EDGESTACK_LSTM_THREADS", 1)))
        super().__init__(art, options, on_batch)  # the step graph of the chosen variant
        meta = art.variants[self.variant]
        self.prompt_session = open_session(art.file(meta["prompt_file"]), providers=self.session.providers,
                                           threads=self.options.threads, spinning=self.options.spinning)
        self.chars: list[str] = json.loads(art.file(art.manifest["vocabulary"]["file"]).read_text())
        self.index = {ch: i for i, ch in enumerate(self.chars)}
        self.hidden = int(art.manifest["generation"]["hidden_size"])
        self.end_of_tune = art.manifest["generation"]["end_of_tune"]
        self.default_prompt = art.manifest["generation"]["default_prompt"]
        self.limits = settings()

    # -- checking requests --------------------------------------------------------------
    def check(self, prompt=None, max_length=None, temperature=1.0, top_k=0, top_p=1.0, seed=None) -> SamplingParams:
        """Every caller mistake becomes an InputError naming the parameter and the allowed range."""
        prompt = self.default_prompt if prompt is None else prompt
        if not isinstance(prompt, str):
            raise InputError(f"prompt must be text, got {type(prompt).__name__}")
        if len(prompt) > self.limits["max_prompt_chars"]:
            raise InputError(f"prompt has {len(prompt)} characters; the limit is {self.limits['max_prompt_chars']} "
                             "(EDGESTACK_MAX_PROMPT_CHARS)", 413)
        unknown = sorted({ch for ch in prompt if ch not in self.index})
        if unknown:
            shown = ", ".join(repr(ch) for ch in unknown[:10])
            raise InputError(f"prompt has characters outside the model's vocabulary: {shown} "
                             f"(it knows {len(self.chars)} characters of ABC notation)")
        max_length = min(1000, self.limits["max_length"]) if max_length is None else max_length
        if isinstance(max_length, bool) or not isinstance(max_length, int):
            raise InputError(f"max_length must be a whole number, got {max_length!r}")
        if not 1 <= max_length <= self.limits["max_length"]:
            raise InputError(f"max_length must be between 1 and {self.limits['max_length']} "
                             f"(EDGESTACK_MAX_NEW_CHARS), got {max_length}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not math.isfinite(temperature) or not 0 < temperature <= MAX_TEMPERATURE:
            raise InputError(f"temperature must be a number in (0, {MAX_TEMPERATURE:g}], got {temperature!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 0 <= top_k <= len(self.chars):
            raise InputError(f"top_k must be a whole number from 0 (off) to {len(self.chars)}, got {top_k!r}")
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) \
                or not math.isfinite(top_p) or not 0 < top_p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {top_p!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
            raise InputError(f"seed must be a whole number from 0 to 2**63-1, got {seed!r}")
        if seed is None:
            seed = secrets.randbelow(2**31)
        return SamplingParams(prompt, max_length, float(temperature), top_k, float(top_p), seed)

    # -- the model ----------------------------------------------------------------------
    def zero_state(self, batch: int = 1) -> tuple[np.ndarray, np.ndarray]:
        zeros = np.zeros((1, batch, self.hidden), np.float32)
        return zeros, zeros.copy()

    def read_prompt(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The prompt after an end of tune (as tunes follow each other in training): last logits and state."""
        ids = np.asarray([[self.index[ch] for ch in self.end_of_tune + text]], np.int64)
        h, c = self.zero_state()
        logits, h, c = self.prompt_session.run({"tokens": ids, "h": h, "c": c})
        return logits[0, -1], h, c

    def step(self, token: int, h: np.ndarray, c: np.ndarray):
        logits, h, c = self.session.run({"token": np.asarray([token], np.int64), "h": h, "c": c})
        return logits[0], h, c

    def pieces(self, params: SamplingParams, stop: threading.Event | None = None) -> Iterator[str]:
        """New characters one by one (blocking, ORT): stops at max_length or the end of the tune."""
        rng = np.random.default_rng(params.seed)
        logits, h, c = self.read_prompt(params.prompt)
        text = params.prompt
        for _ in range(params.max_length):
            if stop is not None and stop.is_set():
                return
            token = sample_index(logits, rng, params.temperature, params.top_k, params.top_p)
            char = self.chars[token]
            text += char
            if text.endswith(self.end_of_tune):
                return  # the blank line that ends a tune is not part of it
            yield char
            logits, h, c = self.step(token, h, c)

    def complete(self, params: SamplingParams) -> dict:
        """A whole tune (blocking)."""
        generated = "".join(self.pieces(params))
        return self.result(params, generated)

    def result(self, params: SamplingParams, generated: str) -> dict:
        ended = len(generated) < params.max_length
        tune = (params.prompt + generated).rstrip("\n")
        return {"model": self.name, "version": self.artifact.version, "variant": self.variant,
                "tune": tune, "generated_chars": len(generated),
                "stop_reason": "end_of_tune" if ended else "max_length", "seed": params.seed,
                "params": {k: v for k, v in asdict(params).items() if k != "prompt"}}

    async def generate(self, params: SamplingParams) -> dict:
        return await asyncio.to_thread(self.complete, params)

    async def stream(self, params: SamplingParams) -> AsyncIterator[str]:
        """Pieces of the tune as soon as ORT writes them; a worker thread generates, this side
        sends whatever has arrived (one character or many) and stops the worker if the client leaves."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        done = object()

        def work(put: Callable = lambda item: loop.call_soon_threadsafe(queue.put_nowait, item)):
            try:
                for piece in self.pieces(params, stop):
                    put(piece)
                put(done)
            except BaseException as exc:  # hand it to the request, never lose it in the thread
                put(exc)

        worker = loop.run_in_executor(None, work)
        try:
            finished = False
            while not finished:
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                text = ""
                for item in items:
                    if item is done:
                        finished = True
                    elif isinstance(item, BaseException):
                        raise item
                    else:
                        text += item
                if text:
                    yield text
        finally:
            stop.set()
            await worker

    # -- the raw tensor path (Open Inference Protocol v2): one step of the step graph -----
    async def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check_input_names(feeds)
        token = self.check_tensor("token", np.asarray(feeds["token"]))
        h = np.asarray(feeds["h"])
        c = np.asarray(feeds["c"])
        for name, state in (("h", h), ("c", c)):
            if state.shape != (1, len(token), self.hidden):
                raise InputError(f"input {name!r} must have shape [1, {len(token)}, {self.hidden}] "
                                 f"(1, batch of `token`, hidden size), got {list(state.shape)}")
            if not np.issubdtype(state.dtype, np.number) or not np.isfinite(state).all():
                raise InputError(f"input {name!r} must be finite numbers")
        if token.min() < 0 or token.max() >= len(self.chars):
            raise InputError(f"token ids must be in 0..{len(self.chars) - 1}, got range "
                             f"[{token.min()}, {token.max()}]")
        outputs = await asyncio.to_thread(self.session.run, {"token": token.astype(np.int64),
                                                              "h": h.astype(np.float32), "c": c.astype(np.float32)})
        return dict(zip([o["name"] for o in self.outputs], outputs))

    def describe(self) -> dict:
        m = self.artifact.manifest
        return {"name": self.name, "version": self.artifact.version, "task": m["task"],
                "variant": self.variant, "provider": self.session.providers[0],
                "inputs": self.inputs, "outputs": self.outputs, "vocabulary": self.chars,
                "limits": self.limits, "end_of_tune": self.end_of_tune,
                "bits_per_char": {v: meta.get("val_bits_per_char") for v, meta in m["variants"].items()},
                "warnings": self.warnings}

    def warm_up(self) -> None:
        params = SamplingParams(prompt=self.default_prompt, max_length=8, seed=0)
        for _ in range(3):
            self.complete(params)
        h, c = self.zero_state(2)
        self.session.run({"token": np.zeros(2, np.int64), "h": h, "c": c})  # the batched (v2) path too
