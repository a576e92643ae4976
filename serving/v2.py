"""The Open Inference Protocol (KServe / Triton v2 REST) for every served model.

A Starlette app mounted beside the BentoML service (serving/service.py); it uses the same
runners (serving.service.RUNNERS), so the convenience endpoints and this protocol share
sessions and the adaptive batcher. Routes (as Triton and KServe name them):

    GET  /v2                                   server metadata (name, version, extensions)
    GET  /v2/health/live, /v2/health/ready     liveness; readiness (every model loaded)
    GET  /v2/models/{m}[/versions/{v}]         model metadata: inputs/outputs, v2 datatypes, -1 = dynamic
    GET  /v2/models/{m}[/versions/{v}]/ready
    GET  /v2/models/{m}[/versions/{v}]/config  the model configuration extension: Triton's ModelConfig as JSON,
                                               completed from the model's tensors (edgestack/model_config.py)
    POST /v2/models/{m}[/versions/{v}]/infer   JSON tensors, or the binary tensor data extension
    GET  /v2/models[/{m}[/versions/{v}]]/stats  the statistics extension (Triton's shape; serving/stats.py)
    POST /v2/repository/index                  the model repository extension: every model and its state
    POST /v2/repository/models/{m}/load        (re)load a model's newest versions (serving/repository.py)
    POST /v2/repository/models/{m}/unload      load/unload: only with EDGESTACK_MODEL_CONTROL=1 (403
                                               otherwise), API keys and Content-Type: application/json

Inputs and outputs are the manifest's (artifact.meta.inputs / outputs); a runner
declares text inputs as dtype "bytes" (v2 BYTES) and receives them as a numpy object array
of `str` (UTF-8 decoded here), and every runner gets its tensors through
`runner.infer(feeds)`, which families with several inputs or text inputs override.

Beyond the core protocol: FP16 data is accepted for an FP32 input (widened exactly; half
the upload), request bodies may be gzip/deflate compressed (tritonclient's
`request_compression_algorithm`), and the classification extension (`class_count` in
tritonclient: "score:index:label" strings) works for models whose manifest has labels.
Every caller mistake is a 4xx `{"error": "..."}`; anything else is a 500 with the same
shape, and the server keeps serving. `parameters.timeout` (microseconds, as tritonclient sends
it) is the request's deadline: a request that cannot start within it gets 503 + Retry-After.
"""

from __future__ import annotations

import json
import logging
import zlib

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import edgestack
from edgestack import v2protocol as v2
from edgestack.errors import InputError
from edgestack.settings import get_settings
from serving.batching import deadline
from serving.error_shape import refusal
from serving.limits import max_body_bytes
from serving.repository import Models, StaticModels

log = logging.getLogger("edgestack.v2")

EXTENSIONS = ["binary_tensor_data", "classification", "statistics", "model_repository", "model_configuration"]


def error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)



def tensor_specs(entries: list[dict]) -> list[dict]:
    """Manifest inputs/outputs -> v2 metadata tensors."""
    return [{"name": e["name"], "datatype": v2.datatype(e["dtype"]).v2, "shape": list(e["shape"])} for e in entries]


class V2App:
    def __init__(self, runners: Models, model_control: bool | None = None):
        self.runners = runners  # the service's models; filled when the service starts
        # load/unload: EDGESTACK_MODEL_CONTROL (off by default, as Triton's --model-control-mode=none)
        settings = get_settings()  # once: reading the environment costs ~20 us, 7% of a lone request's CPU
        self.model_control = settings.model_control if model_control is None else model_control
        self.max_items = settings.max_items

    # ------------------------------------------------------------------ lookup
    def runner(self, request: Request):
        return find_runner(self.runners, request.path_params["model"], request.path_params.get("version"))

    # ------------------------------------------------------------------ routes
    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse({"name": "edgestack", "version": edgestack.__version__, "extensions": EXTENSIONS})

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = bool(self.runners)
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def model_metadata(self, request: Request) -> Response:
        try:
            runner = self.runner(request)
        except InputError as exc:
            return refusal(exc)
        return JSONResponse(model_metadata(self.runners, runner))

    async def model_config(self, request: Request) -> Response:
        try:
            runner = self.runner(request)
        except InputError as exc:
            return refusal(exc)
        return JSONResponse(model_config(self.runners, runner))

    async def model_ready(self, request: Request) -> Response:
        try:
            runner = self.runner(request)
        except InputError as exc:
            return refusal(exc)
        return JSONResponse({"name": runner.name, "ready": True})

    async def infer(self, request: Request) -> Response:
        return await self.answer_infer(request.path_params["model"], request.path_params.get("version"),
                                       await request.body(), request.headers)

    async def answer_infer(self, model: str, version: str | None, raw: bytes, headers) -> Response:
        """POST .../infer: the request's path parameters, body and headers (a Mapping with lower-case
        keys) -> the answer; the Starlette route above and serving/fastpath.py both come here."""
        try:
            runner = find_runner(self.runners, model, version)
            body = decompress(raw, headers.get("content-encoding"))
            header, binary = v2.split_body(body, headers.get(v2.HEADER_LENGTH.lower()))
            feeds = self.feeds(runner, header, binary)
            wanted = requested_outputs(runner, header)
            with deadline(timeout_seconds(header)):
                outputs = await runner.infer(feeds)
        except (InputError, v2.ProtocolError) as exc:
            return refusal(exc)
        except Exception as exc:  # a bug or a runtime failure: 500 with a message, keep serving
            log.exception("v2 inference failed")
            return error(f"inference failed: {type(exc).__name__}: {exc}", 500)
        return self.respond(runner, header, outputs, wanted)

    # ------------------------------------------------------------------ request -> feeds
    def feeds(self, runner, header: dict, binary: memoryview) -> dict[str, np.ndarray]:
        inputs = header.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise v2.ProtocolError("the request needs `inputs`: a non-empty list of tensors")
        if not isinstance(header.get("parameters") or {}, dict):
            raise v2.ProtocolError("`parameters` must be a JSON object")
        if "id" in header and not isinstance(header["id"], str):
            raise v2.ProtocolError("`id` must be a string")
        arrays = v2.read_tensors(inputs, binary, max_bytes_elements=self.max_items)
        declared = {spec.name: v2.datatype(spec.dtype) for spec in runner.meta.inputs}
        feeds = {}
        for name, array in arrays.items():
            want, got = declared.get(name), v2.of_numpy(array.dtype)
            # names the model does not take are left to runner.infer, which lists missing and extra inputs
            if want is not None and got is not want:
                if want.v2 == "FP32" and got.v2 == "FP16":
                    array = array.astype(np.float32)  # exact: every FP16 value is an FP32 value
                else:
                    raise InputError(f"input {name!r} of {runner.name} is {want.v2}, got {got.v2}")
            if want is not None and want.v2 == "BYTES":
                array = v2.as_text(array, name)
            feeds[name] = array
        return feeds

    # ------------------------------------------------------------------ outputs -> response
    def respond(self, runner, header: dict, outputs: dict[str, np.ndarray], wanted: list[dict]) -> Response:
        default_binary = bool((header.get("parameters") or {}).get("binary_data_output", False))
        entries, raws = [], []
        for request in wanted or [{"name": name} for name in outputs]:
            params = request.get("parameters") or {}
            binary = bool(params.get("binary_data", default_binary))
            array = outputs[request["name"]]
            if params.get("classification"):
                array = classify(array, int(params["classification"]), runner.meta.labels)
            entry, raw = v2.tensor_entry(request["name"], array, binary=binary)
            entries.append(entry)
            if raw is not None:
                raws.append(raw)
        response = {"model_name": runner.name, "model_version": runner.artifact.version, "outputs": entries}
        if "id" in header:
            response = {"id": header["id"], **response}
        body, header_length = v2.join_body(response, raws)
        if header_length is None:
            return Response(body, media_type="application/json")
        return Response(body, media_type="application/octet-stream",
                        headers={v2.HEADER_LENGTH: str(header_length)})

    # ------------------------------------------------------------------ statistics extension
    async def statistics(self, request: Request) -> Response:
        name = request.path_params.get("model")
        try:
            if name is None:
                runners = [self.runners.runner(n, v) for n in self.runners for v in self.runners.versions(n)]
            elif request.path_params.get("version") is None:
                runners = [self.runners.runner(name, v) for v in self.runners.versions(name)] \
                    or [self.runners.runner(name)]
            else:
                runners = [self.runner(request)]
            stats = await self.runners.statistics(runners)
        except InputError as exc:
            return refusal(exc)
        return JSONResponse({"model_stats": stats})

    # ------------------------------------------------------------------ model repository extension
    async def repository_index(self, request: Request) -> Response:
        return JSONResponse(self.runners.index())

    def check_model_control(self, request: Request) -> None:
        """load/unload change what is served: only with model control on (EDGESTACK_MODEL_CONTROL=1,
        which needs API keys), and only with a JSON Content-Type, so that no browser page can send
        one as a "simple" cross-origin request (a form or an empty POST)."""
        if not self.model_control:
            raise InputError("model control is off on this server: load and unload are refused (start it with "
                             "EDGESTACK_MODEL_CONTROL=1 and API keys to turn them on)", 403)
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise InputError(f"{request.url.path} changes what the server serves and takes Content-Type: "
                             f"application/json (got {media or 'none'}); tritonclient: pass "
                             "headers={'Content-Type': 'application/json', 'Authorization': 'Bearer <key>'}", 415)

    async def repository_load(self, request: Request) -> Response:
        name = request.path_params["model"]
        try:
            self.check_model_control(request)
            await check_repository_body(request)
            versions = await self.runners.load(name)
        except (InputError, v2.ProtocolError) as exc:
            return refusal(exc)
        return JSONResponse({"name": name, "versions": versions})

    async def repository_unload(self, request: Request) -> Response:
        try:
            self.check_model_control(request)
            await check_repository_body(request)
            await self.runners.unload(request.path_params["model"])
        except (InputError, v2.ProtocolError) as exc:
            return refusal(exc)
        return JSONResponse({})

    def routes(self) -> list[Route]:
        get, post = ["GET"], ["POST"]
        routes = [Route("/v2", self.server_metadata, methods=get),
                  Route("/v2/health/live", self.live, methods=get),
                  Route("/v2/health/ready", self.ready, methods=get),
                  Route("/v2/models/stats", self.statistics, methods=get)]
        for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            routes += [Route(base, self.model_metadata, methods=get),
                       Route(base + "/ready", self.model_ready, methods=get),
                       Route(base + "/config", self.model_config, methods=get),
                       Route(base + "/infer", self.infer, methods=post),
                       Route(base + "/stats", self.statistics, methods=get)]
        if hasattr(self.runners, "load"):  # model control: the server's repository, not a fixed set
            routes += [Route("/v2/repository/index", self.repository_index, methods=post),
                       Route("/v2/repository/models/{model}/load", self.repository_load, methods=post),
                       Route("/v2/repository/models/{model}/unload", self.repository_unload, methods=post)]
        return routes


def find_runner(runners: Models, name: str, version: str | None):
    """The served model `name` (at `version`, when given; else the latest); 404 naming what is
    served otherwise. Shared by the REST routes here and the gRPC service (serving/grpc_v2.py)."""
    return runners.runner(name, version)


def model_metadata(runners: Models, runner) -> dict:
    """The v2 model metadata of a served model (REST and gRPC alike): every served version."""
    return {
        "name": runner.name, "versions": runners.versions(runner.name), "platform": "onnxruntime_onnx",
        "inputs": tensor_specs(runner.inputs), "outputs": tensor_specs(runner.outputs),
        "parameters": {"variant": runner.variant, "provider": runner.session.providers[0],
                       "edgestack": json.dumps(v2.client_hints(runner.artifact.manifest))},
    }


def model_config(runners: Models, runner) -> dict:
    """The model configuration extension (REST and gRPC alike): Triton's ModelConfig, completed
    from the served tensors with this server's batching settings (edgestack/model_config.py)."""
    from edgestack.model_config import autocomplete
    from edgestack.runtime import GPU_PROVIDERS
    from serving.runner import RunnerOptions

    meta = model_metadata(runners, runner)
    options = getattr(runner, "options", None) or RunnerOptions.from_env()  # Ray's router proxies have none
    return autocomplete(runner.name, runner.inputs, runner.outputs, max_batch_size=options.max_batch,
                        max_queue_delay_us=int(options.max_wait_ms * 1000),
                        instance_kind="KIND_GPU" if meta["parameters"]["provider"] in GPU_PROVIDERS else "KIND_CPU",
                        versions=len(meta["versions"]), parameters=meta["parameters"])


async def check_repository_body(request: Request) -> None:
    """load/unload take an empty body or `{"parameters": {...}}`; Triton's config and file
    overrides (a model directory sent in the request) are not supported: models come from
    the artifacts folder, verified."""
    body = await request.body()
    if not body.strip():
        return
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise v2.ProtocolError("the body must be JSON: {} or {\"parameters\": {...}}") from None
    params = payload.get("parameters") if isinstance(payload, dict) else None
    if not isinstance(payload, dict) or (params is not None and not isinstance(params, dict)):
        raise v2.ProtocolError("the body must be a JSON object: {} or {\"parameters\": {...}}")
    unsupported = sorted(k for k in (params or {}) if k == "config" or k.startswith("file:"))
    if unsupported:
        raise InputError(f"load parameters {unsupported} are not supported: edgestack loads verified "
                         "artifacts from its artifacts folder (build a new version with `edgestack build`)")


def timeout_seconds(header: dict) -> float | None:
    """v2 `parameters.timeout` (microseconds, as Triton and tritonclient use it) in seconds."""
    value = (header.get("parameters") or {}).get("timeout")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e12:
        raise v2.ProtocolError("`parameters.timeout` must be a positive number of microseconds")
    return value / 1e6


def requested_outputs(runner, header: dict) -> list[dict]:
    """The request's `outputs` (checked against the model's), [] for all of them."""
    wanted = header.get("outputs")
    if wanted is None:
        return []
    if not isinstance(wanted, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in wanted):
        raise v2.ProtocolError("`outputs` must be a list of objects with a `name`")
    names = runner.output_names
    for request in wanted:
        if request["name"] not in names:
            raise InputError(f"{runner.name} has no output {request['name']!r}; outputs: {names}")
        params = request.get("parameters") or {}
        if not isinstance(params, dict):
            raise v2.ProtocolError(f"output {request['name']!r}: `parameters` must be an object")
        k = params.get("classification")
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 0):
            raise v2.ProtocolError(f"output {request['name']!r}: `classification` must be a non-negative integer")
    return wanted


def classify(scores: np.ndarray, k: int, labels: list[str] | None) -> np.ndarray:
    """The classification extension: [batch, classes] -> [batch, k] BYTES "score:index[:label]"."""
    if scores.ndim != 2 or scores.dtype.kind != "f":
        raise InputError("classification needs an output of scores shaped [batch, classes]")
    k = min(k, scores.shape[1])
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    out = np.empty(best.shape, dtype=object)
    for (row, col), index in np.ndenumerate(best):
        label = f":{labels[index]}" if labels else ""
        out[row, col] = f"{float(scores[row, index]):f}:{index}{label}".encode()
    return out


def decompress(body: bytes, encoding: str | None) -> bytes:
    """Content-Encoding gzip/deflate (tritonclient's request compression) -> plain body."""
    if not encoding or encoding == "identity":
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding)
    if wbits is None:
        raise InputError(f"Content-Encoding {encoding!r} is not supported (gzip, deflate)", 415)
    limit = max_body_bytes()  # the same limit as for plain bodies: no decompression bombs
    try:
        inflater = zlib.decompressobj(wbits)
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise v2.ProtocolError(f"the body is not valid {encoding} data: {exc}") from None
    if len(plain) > limit:
        raise InputError(f"the decompressed body exceeds the limit of {limit} bytes", 413)
    return plain


async def http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own refusals (a GET on /infer, ...) in the protocol's error shape."""
    return error(f"{request.method} {request.url.path}: {exc.detail}", exc.status_code)


def build_app(runners: Models | dict | V2App) -> Starlette:
    if not isinstance(runners, V2App):
        runners = V2App(runners if isinstance(runners, Models) else StaticModels(runners))
    return Starlette(routes=runners.routes(), exception_handlers={HTTPException: http_error})
