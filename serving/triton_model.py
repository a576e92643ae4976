"""Triton Python-backend model: one edgestack artifact, served by edgestack's own runner.

`edgestack export triton --backend python` copies this file to <repo>/<model>/<version>/model.py
and the artifact folder beside it (<version>/artifact/). Triton's Python backend runs it in a
stub process whose interpreter is the first `python3` on PATH: running_triton puts the
stub environment of `make triton` there (numpy<2, then this project's venv: edgestack,
serving, onnxruntime, tokenizers). numpy<2 matters: the wheel's stub is built with pybind11
< 2.12, which reads numpy 1's dtype layout; under numpy 2 it takes a wrong item size, and
multi-element inputs silently arrive as copies of their first element, BYTES inputs crash
the stub, outputs fail ("output tensor shape does not match size"). A Triton whose stub
supports numpy 2 needs no such environment.

Each request goes through `runner.infer(feeds)`, the method our server's v2 route calls: the
same checks (input names, shapes, folk-lstm's state and token range), the same tokenization
for text models, the same ONNX Runtime session. BYTES inputs arrive as numpy object arrays
of bytes and are decoded to str exactly as our v2 route does (edgestack.v2protocol.as_text). A caller
mistake (serving.errors.InputError) becomes an error response with Triton's INVALID_ARG code
(HTTP 400 with the runner's message); anything else an INTERNAL one (500).

Dynamic batching (config `max_batch_size` > 0 with `dynamic_batching`; export/triton.py
python_model_config): Triton's batcher hands `execute` every request it merged, up to
max_batch_size rows together. They go to the runner all at once, and its adaptive batcher
(serving/batching.py, the same code as in our server) checks each request, runs them as one ORT
call and splits the answers; a request that fails its checks gets its own error, the others
their answers. The runner's batch bound is Triton's max_batch_size, its queue unbounded (Triton
queues), and every batch runs on the stub's own thread (no hop to a worker thread: the stub's
event loop has nothing else to do meanwhile). Without batching (max_batch_size 0) each request
runs alone, as it came.

Config parameters (export/triton.py python_model_config): `variant` (which ONNX variant the
runner opens) and `threads` (ONNX Runtime intra-op threads; all cores if absent).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from edgestack import artifact, registry
from edgestack import v2protocol as v2
from edgestack.errors import InputError
from serving.runner import RunnerOptions


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value") for k, v in (config.get("parameters") or {}).items()}
        # verifies every checksum: a half-copied or edited artifact is refused, the model fails to load
        art = artifact.load(Path(args["model_repository"]) / args["model_version"] / "artifact", folder_is_version=False)
        batch = int(config.get("max_batch_size") or 0)
        options = RunnerOptions(device="cpu", variant=params.get("variant") or None,
                                threads=int(params.get("threads") or 0) or None,
                                # dynamic batching: one ORT call for all Triton hands over (see above)
                                max_batch=batch or RunnerOptions.max_batch, max_queue_ms=0.0, inline_ms=float("inf"))
        # the artifact's own family: an imported model has no spec in the repository Triton runs from
        self.runner = registry.load_object(registry.family(art.meta.family).runner)(art, options)
        self.runner.warm_up()  # as our server does before it says ready
        self.text_inputs = {i.name for i in art.meta.inputs if v2.datatype(i.dtype).v2 == "BYTES"}
        self.output_types = {o.name: v2.datatype(o.dtype).numpy for o in art.meta.outputs}
        self.loop = asyncio.new_event_loop()  # runner.infer is async; its batcher lives on this loop

    def execute(self, requests: list) -> list:
        # Every request Triton hands over at once (dynamic batching: several; otherwise one) goes to
        # the runner together; its batcher merges them into one ORT call and splits the answers.
        return self.loop.run_until_complete(self.answer_all(requests))

    async def answer_all(self, requests: list) -> list:
        return await asyncio.gather(*(self.answer(request) for request in requests))

    async def answer(self, request):
        try:
            feeds = {}
            for tensor in request.inputs():
                name = tensor.name()
                array = tensor.as_numpy()
                feeds[name] = v2.as_text(array, name) if name in self.text_inputs else array
            outputs = await self.runner.infer(feeds)
            return pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(name, np.ascontiguousarray(outputs[name], dtype=dtype))
                for name, dtype in self.output_types.items()])
        except (InputError, v2.ProtocolError) as exc:
            return pb_utils.InferenceResponse(
                output_tensors=[], error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
        except Exception as exc:  # noqa: BLE001 - a bug or a runtime failure: this request fails, the model serves on
            return pb_utils.InferenceResponse(
                output_tensors=[], error=pb_utils.TritonError(f"inference failed: {type(exc).__name__}: {exc}"))

    def finalize(self) -> None:
        tasks = asyncio.all_tasks(self.loop)  # the batcher's worker, if the runner has one
        for task in tasks:
            task.cancel()
        if tasks:
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()

