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
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace

import numpy as np

from edgestack.artifact import Artifact
from edgestack.errors import InputError

# Sampling is the tune family's processing (numpy only), so a device and the server draw the same tune.
from edgestack.families import tune as processing
from edgestack.families.tune import SamplingParams, sample_index  # noqa: F401 (re-exported for callers)
from edgestack.runtime import open_session
from edgestack.settings import get_settings
from serving.runner import ModelRunner, ModelView, RunnerOptions


class TuneRequests(ModelView):
    """folk-lstm's request side (artifact only): checking sampling parameters, shaping the answer."""

    def init_requests(self) -> None:
        self.chars = json.loads(self.artifact.file(self.meta.vocabulary.file).read_text())
        self.index = {ch: i for i, ch in enumerate(self.chars)}
        self.default_prompt = self.meta.generation.default_prompt
        limits = get_settings()  # shown by /models as they were named before the settings moved
        self.limits = {"max_prompt_chars": limits.max_prompt_chars, "max_length": limits.max_new_chars}

    def check(self, prompt=None, max_length=None, temperature=1.0, top_k=0, top_p=1.0, seed=None) -> SamplingParams:
        """Every caller mistake becomes an InputError naming the parameter and the allowed range."""
        return processing.check_sampling(prompt, max_length, temperature, top_k, top_p, seed,
                                         vocabulary=self.index, default_prompt=self.default_prompt,
                                         max_prompt_chars=self.limits["max_prompt_chars"],
                                         max_new_chars=self.limits["max_length"])

    def result(self, params: SamplingParams, generated: str) -> dict:
        return {"model": self.name, "version": self.artifact.version, "variant": self.variant,
                **processing.result(params, generated)}


class MusicGenerator(TuneRequests, ModelRunner):
    """Serves a folk-lstm artifact: `generate` (whole tune), `stream` (pieces as they come), `infer` (raw step)."""

    def __init__(self, art: Artifact, options: RunnerOptions | None = None, on_batch=None):
        options = options or RunnerOptions()
        if options.threads is None:
            # One character at a time at batch 1: extra intra-op threads only add hand-offs
            # (measured slower on 2 cores); concurrent requests use the other cores instead.
            options = replace(options, threads=get_settings().lstm_threads)
        super().__init__(art, options, on_batch)  # the step graph of the chosen variant
        prompt_file = art.meta.variants[self.variant].prompt_file
        self.prompt_session = open_session(art.file(prompt_file), providers=self.session.providers,
                                           threads=self.options.threads, spinning=self.options.spinning,
                                           model_bytes=art.read_verified(prompt_file))
        # The sampling loop is the tune family's (shared with batch jobs and devices) on our sessions.
        self.generator = processing.Generator(self.session.session, self.prompt_session.session, self.chars,
                                              art.meta.generation.to_dict())
        self.hidden, self.end_of_tune = self.generator.hidden, self.generator.end_of_tune

    # -- the model (the family's Generator on this runner's sessions) -------------------
    def zero_state(self, batch: int = 1) -> tuple[np.ndarray, np.ndarray]:
        return self.generator.zero_state(batch)

    def pieces(self, params: SamplingParams, stop: threading.Event | None = None) -> Iterator[str]:
        """New characters one by one (blocking, ORT)."""
        return self.generator.pieces(params, stop)

    def complete(self, params: SamplingParams) -> dict:
        """A whole tune (blocking)."""
        return self.result(params, "".join(self.pieces(params)))

    async def generate(self, params: SamplingParams) -> dict:
        return await self.stats.track(asyncio.to_thread(self.complete, params))

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
        outputs = await self.stats.track(asyncio.to_thread(
            self.session.run, {"token": token.astype(np.int64), "h": h.astype(np.float32), "c": c.astype(np.float32)}),
            rows=len(token))
        return dict(zip(self.output_names, outputs))

    def describe(self) -> dict:
        return {"name": self.name, "version": self.artifact.version, "task": self.meta.task,
                "variant": self.variant, "provider": self.session.providers[0],
                "inputs": self.inputs, "outputs": self.outputs, "vocabulary": self.chars,
                "limits": self.limits, "end_of_tune": self.end_of_tune,
                "bits_per_char": {v: meta.val_bits_per_char for v, meta in self.meta.variants.items()},
                "warnings": self.warnings}

    def warm_up(self) -> None:
        params = SamplingParams(prompt=self.default_prompt, max_length=8, seed=0)
        for _ in range(3):
            self.complete(params)
        h, c = self.zero_state(2)
        self.session.run({"token": np.zeros(2, np.int64), "h": h, "c": c})  # the batched (v2) path too
