"""The edgestack BentoML service: every built model, on ONNX Runtime, behind one server.

    bentoml serve serving.service:EdgeStack        (or `edgestack serve`, `make serve`)

Endpoints (POST, JSON unless said):
    /classify         {"model": "fashion-cnn" (optional when one image model is served), "pixels": [[...28x28 0..255...]] | [N,28,28], "top_k": 3}
    /classify_image   multipart: images=<PNG/JPEG file>(one or more), model, top_k
    /models           what is served: version, variant, provider, accuracy, inputs/outputs
    /generate         folk-lstm: {"prompt": "X:1\n", "temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 7, "max_length": 1000} -> a tune
    /generate_stream  the same as Server-Sent Events (text/event-stream)
    /render_midi      {"abc": "X:1\nT:...\nK:D\n..."} (or generation fields) -> audio/midi
    /classify_text    {"model": "sentiment-transformer", "text": "..."} or {"texts": ["...", ...]} -> label + probabilities
BentoML adds GET /livez, /readyz (ready once every model is loaded and warmed up) and
/metrics (Prometheus, with edgestack_batch_size for the adaptive batcher).

No torch here: the artifacts hold everything (ONNX graphs, labels, preprocessing).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
import os
import sys
from pathlib import Path
from typing import Any

import bentoml

from edgestack import artifact
from edgestack.errors import InputError
from edgestack.settings import get_settings
from serving import v2
from serving.admission import DRAIN, Admission
from serving.auth import Cors, TokenAuth
from serving.endpoints import Endpoints
from serving.error_shape import ErrorShape, refusal
from serving.fleet import Fleet
from serving.fastpath import FastInfer
from serving.inputs import api
from serving.limits import BodySizeLimit
from serving.playground import Playground
from serving.repository import ModelRepository
from serving.routes import SYSTEM_PATHS, RouteLabels, label_metrics_by_route
from serving.runner import ModelRunner, RunnerOptions, make_runner
from serving.workers import (
    Control,
    InFlight,
    SharedModels,
    listening_fd,
    own_listening_socket,
    plan,
    run_dir,
    worker_index,
)

log = logging.getLogger("edgestack.serving")

BATCH_SIZE = bentoml.metrics.Histogram(
    name="edgestack_batch_size", documentation="rows per ONNX Runtime call after adaptive batching",
    labelnames=["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))

def requested_models() -> list[str]:
    """EDGESTACK_MODELS=a,b picks models; by default every registered model that has an artifact."""
    wanted = get_settings().models
    if wanted:
        return wanted
    return artifact.built_models()


# Worker processes and ORT threads per session (serving/workers.py): decided where BentoML reads
# the service (its arbiter) and again, with the same answer, in each worker.
PLAN = plan(requested_models())
# The served models (name -> latest version's runner, and every served version), shared with
# the v2 app mounted beside the service (same process); filled when the service starts. With
# several workers, the repository answers statistics and model control for all of them.
RUNNERS = SharedModels(make_runner=None) if PLAN.workers > 1 else ModelRepository(make_runner=None)


def runner_factory(options: RunnerOptions):
    """Artifact -> its family's runner, warmed up (ModelRepository calls it for each version it loads)."""
    def make(art: artifact.Artifact) -> ModelRunner:
        return make_runner(art, options, on_batch=BATCH_SIZE.labels(model=art.name).observe)
    return make


def load_models(names: list[str], options: RunnerOptions) -> ModelRepository:
    """Fill RUNNERS with the `serve_versions` newest versions of each model (every checksum verified)."""
    RUNNERS.make_runner, RUNNERS.keep = runner_factory(options), get_settings().serve_versions
    for name in names:
        RUNNERS.load_now(name)
    if not RUNNERS:
        raise artifact.ArtifactError(
            f"no model to serve under {artifact.default_root()}: run `edgestack build` (or `make serve`)")
    return RUNNERS


def caller_errors(endpoint):
    """The one place a caller's mistake (InputError, raised anywhere below an endpoint) becomes
    its HTTP answer: the status it names (400 unless 404/413/422 ...; 503 + Retry-After when the
    model is overloaded), as `{"error": ...}`. Returned as a response rather than raised, so
    BentoML neither logs a traceback nor hides a 503's message. Mistakes that BentoML meets
    while parsing the request, before the endpoint runs: serving/inputs.py."""
    @functools.wraps(endpoint)
    async def answer(*args, **kwargs):
        try:
            return await endpoint(*args, **kwargs)
        except InputError as exc:
            return refusal(exc)
    return answer


SETTINGS = get_settings()


# Per-request work BentoML does around every route (issue 13 measures each): the access log
# line and the OpenTelemetry middleware follow EDGESTACK_ACCESS_LOG / EDGESTACK_TRACING; the
# tracing middleware is skipped by excluding every URL from it.
# No BentoML max_concurrency: its refusal is a 429 without Retry-After; serving/admission.py bounds
# the requests in flight instead (EDGESTACK_MAX_IN_FLIGHT) with our 503.
@bentoml.service(name="edgestack", workers=PLAN.workers, traffic={"timeout": 60}, http={"host": SETTINGS.host},
                 metrics={"enabled": True}, logging={"access": {"enabled": SETTINGS.access_log}},
                 **({} if SETTINGS.tracing else {"tracing": {"excluded_urls": [".*"]}}))
class EdgeStack:
    def __init__(self) -> None:
        get_settings().check_model_control()  # load/unload never without keys (serving/v2.py)
        self.options = dataclasses.replace(RunnerOptions.from_env(), max_threads=PLAN.threads)
        self.wid = worker_index() or 1
        if self.wid == 1:
            log.info("workers: %s", PLAN.describe())
        self.runners = load_models(requested_models(), self.options)
        # The endpoints' logic, shared with the Ray Serve engine (serving/endpoints.py).
        self.endpoints = Endpoints(self.runners, self.options.max_items)
        log.info("worker %d (pid %d) serving %s", self.wid, os.getpid(),
                 ", ".join(f"{n} ({r.variant}, {r.session.providers[0]})" for n, r in RUNNERS.items()))
        if isinstance(RUNNERS, SharedModels):  # what the workers of this server share (serving/workers.py)
            self.run_dir = run_dir()
            DRAIN.shared = InFlight(self.run_dir, self.wid)
            RUNNERS.converge(self.run_dir)  # the versions the other workers serve, if they started first
        DRAIN.install()  # SIGTERM: drain, then exit (serving/admission.py)

    @bentoml.on_startup
    async def started(self) -> None:
        """Runs on the event loop that serves HTTP (the loop the runners' batchers queue on), once
        the models are loaded and warmed up: starts the v2 gRPC endpoint (EDGESTACK_GRPC_PORT) on
        that loop, then freezes the heap for the garbage collector (EDGESTACK_GC_FREEZE)."""
        self.grpc_server = None
        settings = get_settings()
        if isinstance(RUNNERS, SharedModels):
            RUNNERS.control = Control(self.run_dir, self.wid, RUNNERS.handlers())
            await RUNNERS.control.start()
            RUNNERS.converge(self.run_dir)  # a load or unload between __init__ and now is not missed
        if settings.grpc_port:
            from serving import grpc_v2

            self.grpc_server = await grpc_v2.start(RUNNERS, settings.grpc_port, max_message_bytes=settings.max_body_bytes,
                                                   reuse_port=PLAN.workers > 1)
        if settings.gc_freeze:  # what is loaded now lives as long as the server: no collection walks it again
            gc.collect()
            gc.freeze()
        if isinstance(RUNNERS, SharedModels) and settings.listen_per_worker:
            # last, just before uvicorn listens: a socket of this worker's own (serving/workers.py)
            own_listening_socket(listening_fd(sys.argv))

    @bentoml.on_shutdown
    async def stop_grpc(self) -> None:
        if getattr(self, "grpc_server", None) is not None:
            await self.grpc_server.stop(grace=2)
        if getattr(RUNNERS, "control", None) is not None:
            await RUNNERS.control.stop()

    def __is_ready__(self) -> bool:
        return bool(self.runners) and not DRAIN.draining

    @api
    @caller_errors
    async def classify(self, model: str | None = None, pixels: Any = None, top_k: int = 3,
                       layout: str | None = None, return_input: bool = False) -> dict:
        """Classify one image ([28, 28]) or many ([N, 28, 28]) given as pixel intensities 0..255.
        layout "mnist": the pixels are a drawing of any size, laid out as MNIST was made first;
        return_input: each prediction also holds the image as the model saw it."""
        return await self.endpoints.classify(model, pixels, top_k, layout, return_input)

    @api
    @caller_errors
    async def classify_image(self, images: list[Path], model: str | None = None, top_k: int = 3,
                             return_input: bool = False) -> dict:
        """Classify uploaded image files (PNG, JPEG, ...); grey-scaled, then resized to 28x28, or for
        digits-cnn laid out as MNIST was made. return_input: also the image as the model saw it."""
        return await self.endpoints.classify_image(images, model, top_k, return_input)

    @api
    @caller_errors
    async def generate(self, model: str | None = None, prompt: str | None = None, max_length: int | None = None,
                       temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None) -> dict:
        """Write a folk tune in ABC notation (folk-lstm). prompt: how the tune begins (default "X:1\\n");
        stops at the end of the tune or after max_length new characters; same seed, same tune."""
        return await self.endpoints.generate(model, prompt, max_length, temperature, top_k, top_p, seed)

    @api
    @caller_errors
    async def generate_stream(self, model: str | None = None, prompt: str | None = None,
                              max_length: int | None = None, temperature: float = 1.0, top_k: int = 0,
                              top_p: float = 1.0, seed: int | None = None) -> str:
        """Like /generate, streamed as Server-Sent Events (text/event-stream): start, piece..., end."""
        return self.endpoints.generate_stream(model, prompt, max_length, temperature, top_k, top_p, seed)

    @api
    @caller_errors
    async def render_midi(self, abc: str | None = None, model: str | None = None, prompt: str | None = None,
                          temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                          seed: int | None = None) -> bytes:
        """ABC -> MIDI (audio/midi). Send `abc`, or leave it out to render a tune generated with the other fields."""
        return await self.endpoints.render_midi(abc, model, prompt, temperature, top_k, top_p, seed)

    @api
    @caller_errors
    async def classify_text(self, text: Any = None, texts: Any = None, model: str | None = None) -> dict:
        """Classify one `text` or a list of `texts` (sentiment-transformer, topic-transformer, ...):
        label, score and every label's probability. Texts over the model's max length in tokens
        are truncated (the answer says `truncated: true`); see serving/text.py."""
        return await self.endpoints.classify_text(text, texts, model)

    @api
    def models(self) -> dict:
        """What this server serves."""
        return self.endpoints.models()


# Outermost first: every error of every route in one JSON shape (serving/error_shape.py); CORS
# (answers preflights before auth); drain and deadlines (serving/admission.py); bearer tokens
# (serving/auth.py); the body-size limit; v2 inference answered there, past the routers.
EdgeStack.add_asgi_middleware(ErrorShape)
EdgeStack.add_asgi_middleware(Cors)
EdgeStack.add_asgi_middleware(Admission)
EdgeStack.add_asgi_middleware(TokenAuth)
EdgeStack.add_asgi_middleware(BodySizeLimit)
V2 = v2.V2App(RUNNERS)
EdgeStack.add_asgi_middleware(FastInfer, v2=V2)  # v2 inference past the routers (serving/fastpath.py)
EdgeStack.add_asgi_middleware(Playground)  # GET / is the playground (serving/playground.py), /docs the API docs
EdgeStack.add_asgi_middleware(Fleet)  # /bundles and /devices: edge bundles for devices, the fleet view (serving/fleet.py)
# The Open Inference Protocol (KServe/Triton v2 REST) on the same runners. Mounted at "/"
# with absolute /v2/... routes: a mount at "/v2" would not match `GET /v2` itself.
V2_APP = v2.build_app(V2)
EdgeStack.mount_asgi_app(V2_APP, path="/", name="v2")
# /metrics labels each request by its route, not by the raw path a caller chose (serving/routes.py)
label_metrics_by_route(RouteLabels([*SYSTEM_PATHS, *(api.route for api in EdgeStack.apis.values())], V2_APP.routes))
