"""What every served model has in common: an artifact, one ORT session, a batcher.

Family runners (image classifier, text classifier, music generator) subclass this and
add their own pre- and post-processing. `infer` is the raw tensor path the v2 protocol uses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from edgestack.artifact import Artifact
from edgestack.errors import InputError
from edgestack.manifest import Manifest
from edgestack.runtime import choose_providers, choose_variant, open_session
from edgestack.settings import get_settings
from serving.batching import MicroBatcher
from serving.stats import ModelStats

log = logging.getLogger("edgestack.serving")


@dataclass
class RunnerOptions:
    device: str = "auto"            # auto | cpu | cuda | tensorrt
    variant: str | None = None      # None: int8 on CPU, fp16 on GPU
    threads: int | None = None      # intra-op threads per session (None: the build's choice, at most max_threads)
    max_threads: int | None = None  # cores / worker processes (serving/workers.py): what one worker's session may use
    max_batch: int = 64             # adaptive batching: most rows in one ORT call
    max_wait_ms: float = 0.0        # adaptive batching: extra wait for company (0: greedy, no wait)
    inline_ms: float = 0.25         # batches expected to run this fast skip the worker thread
    # ORT intra-op threads spin-wait for work: off in the server. Spinning buys a session
    # that has its cores to itself ~25% at batch 32 in process, but a server shares them (event
    # loop, other models' sessions, on small boxes the client) and the spinning threads take
    # the CPU the response needs: on the 2-core reference box, off cut fashion-cnn's v2
    # batch-1 p50 from 4.2 to 3.0 ms and p95 from 8.0 to 5.1 ms, batch-32 p50 and
    # concurrency-16 throughput unchanged (two servers interleaved in one run).
    spinning: bool = False
    max_items: int = 256            # most items one request may carry
    max_queue_ms: float = 500.0     # load shedding: most queued work per model (serving/batching.py)
    max_queue_rows: int = 0         # ... or a fixed bound in rows

    @classmethod
    def from_env(cls) -> RunnerOptions:
        s = get_settings()
        return cls(device=s.device, variant=s.variant, threads=s.threads or None, max_batch=s.max_batch,
                   max_wait_ms=s.max_wait_ms, inline_ms=s.inline_run_ms, spinning=s.ort_spin,
                   max_items=s.max_items, max_queue_ms=s.max_queue_ms, max_queue_rows=s.max_queue_rows)


def variant_warnings(art: Artifact, chosen: str, requested: str | None) -> list[str]:
    """Say so when a CPU serves fp32 because the build withheld int8 (its gate failed)."""
    withheld = art.meta.quantization.withheld_reason if art.meta.quantization else None
    if requested or chosen != "fp32" or withheld is None:
        return []
    return [f"{art.name} v{art.version}: serving fp32 on CPU because the build withheld int8: {withheld}"]


class ModelView:
    """What a runner tells from its artifact alone, without a session: its name, manifest and
    tensors, and (in family mixins such as serving.image.ImageRequests) the request checks
    that need only the manifest. The Ray Serve router's proxies (serving/ray_engine.py) are
    views too, so they check requests exactly as the runner would."""

    artifact: Artifact

    def init_requests(self) -> None:
        """Read what the request checks need from the artifact (family mixins override)."""

    @property
    def name(self) -> str:
        return self.artifact.name

    @property
    def meta(self) -> Manifest:
        """The artifact's manifest, typed."""
        return self.artifact.meta

    @property
    def inputs(self) -> list[dict]:
        """The manifest's input tensors as dicts (name, dtype, shape), as /models and v2 show them."""
        return [spec.to_dict() for spec in self.meta.inputs]

    @property
    def outputs(self) -> list[dict]:
        return [spec.to_dict() for spec in self.meta.outputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.meta.outputs]


def make_runner(art: Artifact, options: RunnerOptions, on_batch=None) -> "ModelRunner":
    """The artifact's family runner (the registry's `runner` stage), warmed up: what the BentoML
    service's model repository and each Ray Serve replica load."""
    from edgestack import registry

    runner = registry.load_object(registry.get(art.name).stages.runner)(art, options, on_batch=on_batch)
    runner.warm_up()
    return runner


class ModelRunner(ModelView):
    def __init__(self, art: Artifact, options: RunnerOptions | None = None, on_batch=None):
        self.artifact, self.options = art, options or RunnerOptions()
        self.init_requests()
        providers = choose_providers(device=self.options.device)
        self.variant = choose_variant(list(art.meta.variants), providers, self.options.variant)
        # EDGESTACK_THREADS wins; else the thread count the build measured fastest for this variant,
        # at most this worker's share of the cores (workers x threads fits the cores: serving/workers.py)
        threads = self.options.threads or art.meta.variants[self.variant].threads or self.options.max_threads
        if not self.options.threads and self.options.max_threads and threads:
            threads = min(threads, self.options.max_threads)
        self.session = open_session(art.variant_path(self.variant), providers=providers,
                                    threads=threads, spinning=self.options.spinning,
                                    model_bytes=art.read_verified(art.meta.variants[self.variant].file))
        self.stats = ModelStats(art.name, art.version)
        self.batcher = MicroBatcher(self._run_rows, max_batch=self.options.max_batch,
                                    max_wait_ms=self.options.max_wait_ms, inline_ms=self.options.inline_ms,
                                    name=art.name, on_batch=on_batch, stats=self.stats,
                                    max_queue_ms=self.options.max_queue_ms,
                                    max_queue_rows=self.options.max_queue_rows)
        log.info("%s v%s: variant %s on %s", art.name, art.version, self.variant, self.session.providers[0])
        self.warnings = variant_warnings(art, self.variant, self.options.variant)
        for warning in self.warnings:
            log.warning("%s", warning)

    def describe(self) -> dict:
        return {"name": self.name, "version": self.artifact.version, "task": self.meta.task,
                "variant": self.variant, "provider": self.session.providers[0],
                "inputs": self.inputs, "outputs": self.outputs, "labels": self.meta.labels,
                "accuracy": {v: meta.test_accuracy for v, meta in self.meta.variants.items()},
                "warnings": self.warnings}

    def _run_rows(self, rows: np.ndarray) -> list[np.ndarray]:
        """Single-input models: one array of rows in, every output out."""
        return self.session.run({self.session.input_names[0]: rows})

    def check_tensor(self, name: str, array: np.ndarray) -> np.ndarray:
        """Validate a raw input tensor against the manifest's dtype and shape (-1 = any)."""
        spec = next((i for i in self.meta.inputs if i.name == name), None)
        if spec is None:
            raise InputError(f"{self.name} has no input {name!r}; inputs: {[i.name for i in self.meta.inputs]}")
        shape = spec.shape
        if array.ndim != len(shape) or any(d not in (-1, a) for d, a in zip(shape, array.shape)):
            raise InputError(f"input {name!r} must have shape {shape} (-1 = any), got {list(array.shape)}")
        if len(array) == 0:
            raise InputError(f"input {name!r} is empty (batch of 0)")
        if len(array) > self.options.max_items:
            raise InputError(f"input {name!r} has {len(array)} items; the limit is {self.options.max_items}", 413)
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise InputError(f"input {name!r} contains NaN or infinity")
        return array.astype(spec.dtype, copy=False)

    def check_input_names(self, feeds: dict) -> list[str]:
        """The manifest's input names, in order; InputError if `feeds` has others or lacks one."""
        expected = [i.name for i in self.meta.inputs]
        if sorted(feeds) != sorted(expected):
            missing, extra = set(expected) - set(feeds), set(feeds) - set(expected)
            raise InputError(f"{self.name} takes inputs {expected}"
                             + (f"; missing {sorted(missing)}" if missing else "")
                             + (f"; unexpected {sorted(extra)}" if extra else ""))
        return expected

    async def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw model I/O (the v2 protocol path): checked tensors in, named outputs out."""
        expected = self.check_input_names(feeds)
        checked = {k: self.check_tensor(k, v) for k, v in feeds.items()}
        outputs = await self.batcher.submit(checked[expected[0]])
        return dict(zip(self.output_names, outputs))

    def warm_up(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop taking requests (an unloaded or replaced version); queued ones are still answered."""
        self.batcher.close()
