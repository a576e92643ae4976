"""Runner of the generic family: an imported graph served as its own tensors over v2 REST and gRPC.

No pre- or post-processing: `infer` checks the request's tensors against the manifest
(edgestack.families.generic.py: names, element types, shapes, one batch size) and returns every
output. How requests share ORT calls depends on the graph (the manifest's `batching`, measured
at import):

- it batches and every input has fixed inner dimensions: concurrent requests are merged by the
  adaptive batcher like any model's rows (several inputs travel as one structured row array);
- otherwise (a fixed first dimension, an open inner dimension such as a sequence, text inputs,
  or a dynamic int8 variant, whose activation scales are taken over the whole ORT call, so that
  merged requests would change each other's answers): each request runs alone, still through
  the batcher's queue, so load shedding, deadlines and statistics work as for every model.
"""

from __future__ import annotations

import numpy as np

from edgestack.families import generic as processing
from serving.runner import ModelRunner


class GenericModel(ModelRunner):
    def __init__(self, art, options=None, on_batch=None):
        super().__init__(art, options, on_batch=on_batch)
        batching = art.manifest.get("batching") or {}
        self.batched = bool(batching.get("dynamic", processing.supports_batching(self.inputs, self.outputs)))
        # Dynamic int8 quantizes activations with one scale per ORT call: merged requests would change
        # each other's answers, so such a graph runs each request alone (its answers are its own).
        dynamic = "DynamicQuantizeLinear" in art.meta.variants[self.variant].op_types
        self.merged = self.batched and processing.packable(self.inputs) and not dynamic
        if not self.merged:
            self.batcher.max_batch = 1  # one request per ORT call (a "row" is a whole request here)

    def describe(self) -> dict:
        return {**super().describe(), "batching": "merged" if self.merged else "one request per run",
                "accuracy": {v: m.test_accuracy for v, m in self.meta.variants.items()}}

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(feeds, self.output_names)

    def _run_rows(self, rows: np.ndarray) -> list[np.ndarray]:
        if not self.merged:  # rows = [the request's feeds]: the outputs go back as one object row
            box = np.empty(1, dtype=object)
            box[0] = self._run(rows[0])
            return [box]
        if rows.dtype.names:
            return self._run(processing.unpack_rows(rows))
        return self._run({self.inputs[0]["name"]: rows})

    async def infer(self, feeds: dict) -> dict[str, np.ndarray]:
        checked = processing.check_feeds(self.inputs, feeds, batched=self.batched, max_items=self.options.max_items,
                                         model=self.name)
        if self.merged:
            rows = checked[self.inputs[0]["name"]] if len(checked) == 1 else processing.pack_rows(self.inputs, checked)
            outputs = await self.batcher.submit(rows)
        else:
            box = np.empty(1, dtype=object)
            box[0] = checked
            (answer,) = await self.batcher.submit(box)
            outputs = answer[0]
        return dict(zip(self.output_names, outputs))

    def warm_up(self) -> None:
        for batch in (1, min(8, self.options.max_batch)) if self.batched else (1,):
            self._run(processing.example_feeds(self.inputs, batch=batch))
