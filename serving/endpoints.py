"""The REST endpoints' logic, free of any serving framework.

The BentoML service (serving/service.py) and the Ray Serve router (serving/ray_engine.py)
both answer /classify, /classify_image, /generate, /generate_stream, /render_midi,
/classify_text and /models with this class, so the two engines give the same answers and
the same caller errors (InputError, which each framework turns into its 4xx).

`runners` is a read-only mapping, model name -> runner: the only operations used are
`.get`, `.items()` and `.values()`, so a model repository or a mapping of proxies to remote
runners serves as well as a dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgestack.errors import InputError, UnknownModel


class Endpoints:
    def __init__(self, runners: Mapping, max_items: int):
        self.runners, self.max_items = runners, max_items

    def runner(self, model: str | None, task: str):
        """The runner for `model`, or the one model doing `task` when none is named; 4xx otherwise."""
        if model is None:
            candidates = [n for n, r in self.runners.items() if r.artifact.task == task]
            if len(candidates) != 1:
                raise InputError(f"say which model: `model` is one of {candidates}")
            model = candidates[0]
        runner = self.runners.get(model)
        if runner is None:
            raise UnknownModel(model, list(self.runners))
        if runner.artifact.task != task:
            raise InputError(f"model {model!r} does {runner.artifact.task}, not {task}")
        return runner

    @staticmethod
    def answer(runner, predictions: list) -> dict:
        return {"model": runner.name, "version": runner.artifact.version, "variant": runner.variant,
                "predictions": predictions}

    async def classify(self, model: str | None, pixels: Any, top_k: int, layout: str | None = None,
                       return_input: bool = False) -> dict:
        runner = self.runner(model, "image-classification")
        return self.answer(runner, await runner.classify(runner.pixels_from_array(pixels, layout), top_k, return_input))

    async def classify_image(self, images: Sequence[bytes | str | Path], model: str | None, top_k: int,
                             return_input: bool = False) -> dict:
        runner = self.runner(model, "image-classification")
        if not images:
            raise InputError("no image uploaded: send one or more files in the `images` field")
        if len(images) > self.max_items:
            raise InputError(f"{len(images)} images; the limit is {self.max_items}", 413)
        pixels = await runner.decode_images(images)  # off the event loop, bounded (serving/image.py)
        return self.answer(runner, await runner.classify(pixels, top_k, return_input))

    def sampling(self, model, prompt, max_length, temperature, top_k, top_p, seed):
        """folk-lstm: the runner and checked sampling parameters (4xx naming any bad one)."""
        runner = self.runner(model, "text-generation")
        return runner, runner.check(prompt, max_length, temperature, top_k, top_p, seed)

    async def generate(self, model, prompt, max_length, temperature, top_k, top_p, seed) -> dict:
        runner, params = self.sampling(model, prompt, max_length, temperature, top_k, top_p, seed)
        return await runner.generate(params)

    def generate_stream(self, model, prompt, max_length, temperature, top_k, top_p, seed):
        """A Server-Sent Events response (a Starlette StreamingResponse)."""
        from serving.tune_http import sse_response

        return sse_response(*self.sampling(model, prompt, max_length, temperature, top_k, top_p, seed))

    async def render_midi(self, abc, model, prompt, temperature, top_k, top_p, seed):
        """An audio/midi response (Starlette) for `abc`, or for a tune generated with the other fields."""
        from serving.tune_http import midi_response

        if abc is None:
            runner, params = self.sampling(model, prompt, None, temperature, top_k, top_p, seed)
            abc = (await runner.generate(params))["tune"]
        return await midi_response(abc)

    async def classify_text(self, text: Any, texts: Any, model: str | None) -> dict:
        runner = self.runner(model, "text-classification")
        if (text is None) == (texts is None):
            raise InputError("send either `text` (one string) or `texts` (a list of strings)")
        if text is not None and not isinstance(text, str):
            raise InputError(f"`text` must be a string, got {type(text).__name__}; use `texts` for a list")
        predictions = await (runner.classify([text], what="text") if text is not None
                             else runner.classify(texts))
        return self.answer(runner, predictions)

    def models(self) -> dict:
        return {"models": [runner.describe() for runner in self.runners.values()]}
