"""The Open Inference Protocol over gRPC: Triton's `inference.GRPCInferenceService`.

tritonclient's own generated protos (`tritonclient.grpc.service_pb2`), served with grpc.aio
on a second port (setting `grpc_port`, `edgestack serve --grpc-port`; 0 = off) by the same
process, on the same event loop and the same runners as the HTTP server: a gRPC request
and a REST request to one model share its session and its adaptive batcher
(serving/batching.py, whose queue belongs to that loop; serving/service.py starts this
server from a BentoML startup hook, which runs on it).

Calls: ServerLive, ServerReady, ServerMetadata, RepositoryIndex, ModelReady, ModelMetadata, ModelConfig
(the REST route's config: edgestack/model_config.py, with the `variant` / `edgestack` parameters
the REST metadata carries) and ModelInfer. ModelInfer takes typed `contents` or `raw_input_contents` (what
tritonclient.grpc sends), BYTES included, and answers in `raw_output_contents`, as
Triton does. A request becomes the REST header + binary section (the same decoding and
checks as serving/v2.py: edgestack/v2protocol.py, then runner.infer's check_tensor), and
errors keep their messages: a caller's mistake is INVALID_ARGUMENT (NOT_FOUND for an
unknown model or version), a server that is not ready is UNAVAILABLE, anything else INTERNAL.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import grpc
import numpy as np
from tritonclient.grpc import model_config_pb2 as config_pb
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

import edgestack
from edgestack import v2protocol as v2
from edgestack.errors import InputError
from edgestack.settings import get_settings
from serving import auth
from serving import v2 as rest
from serving.batching import deadline

log = logging.getLogger("edgestack.grpc")

# Typed contents field of each v2 datatype (FP16 has none: raw only, as in Triton).
CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
            "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
            "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
            "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def parameter_value(param: pb.InferParameter):
    kind = param.WhichOneof("parameter_choice")
    return None if kind is None else getattr(param, kind)


def as_rest(request: pb.ModelInferRequest) -> tuple[dict, memoryview]:
    """A ModelInferRequest as the REST protocol's JSON header + binary section, so that one
    decoder (v2protocol.read_tensors via serving/v2.py) checks both. Raw contents and typed
    BYTES contents become binary slices; other typed contents become JSON `data` (checked
    there for values that do not fit the datatype)."""
    raws = list(request.raw_input_contents)
    if raws and len(raws) != len(request.inputs):
        raise v2.ProtocolError(f"{len(request.inputs)} input(s) but {len(raws)} raw_input_contents: "
                               "give every input's data raw, or none")
    inputs, binary = [], []
    for index, tensor in enumerate(request.inputs):
        entry = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if raws:
            if tensor.HasField("contents"):
                raise v2.ProtocolError(f"input {tensor.name!r}: give either `contents` or raw_input_contents")
            binary.append(raws[index])
            entry["parameters"] = {"binary_data_size": len(raws[index])}
        else:
            field = CONTENTS.get(tensor.datatype)
            if field is None:
                raise v2.ProtocolError(f"input {tensor.name!r}: {tensor.datatype} has no typed contents; "
                                       "send it in raw_input_contents")
            values = getattr(tensor.contents, field)
            if tensor.datatype == "BYTES":
                v2.check_bytes_count([len(values)], get_settings().max_items, f"input {tensor.name!r}")
                raw = v2.serialize_bytes(np.array(list(values), dtype=object))
                binary.append(raw)
                entry["parameters"] = {"binary_data_size": len(raw)}
            else:
                entry["data"] = list(values)
        inputs.append(entry)
    header: dict = {"inputs": inputs}
    if request.id:
        header["id"] = request.id
    outputs = []
    for wanted in request.outputs:
        params = {k: parameter_value(p) for k, p in wanted.parameters.items()}
        outputs.append({"name": wanted.name, "parameters": {k: v for k, v in params.items()
                                                            if k == "classification"}})
    if outputs:
        header["outputs"] = outputs
    return header, memoryview(b"".join(binary))


def tensor_metadata(specs: list[dict]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [pb.ModelMetadataResponse.TensorMetadata(name=s["name"], datatype=s["datatype"], shape=s["shape"])
            for s in specs]


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """Triton's GRPCInferenceService on our runners (a Mapping name -> ModelRunner)."""

    def __init__(self, runners: Mapping):
        self.runners = runners
        self.rest = rest.V2App(runners)  # its request -> feeds step, shared with the REST route

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        from serving.admission import DRAIN

        return pb.ServerReadyResponse(ready=bool(self.runners) and not DRAIN.draining)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="edgestack", version=edgestack.__version__,
                                         extensions=rest.EXTENSIONS)

    async def _runner(self, context, name: str, version: str):
        """The runner of `name` (and `version`, "" = any); aborts the call otherwise."""
        if not self.runners:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is not ready: no model loaded yet")
        try:
            return rest.find_runner(self.runners, name, version or None)
        except InputError as exc:
            await context.abort(status_of(exc), str(exc))

    async def RepositoryIndex(self, request, context):
        """Every served model, READY (what `edgestack v2-check --protocol grpc` lists)."""
        return pb.RepositoryIndexResponse(models=[
            pb.RepositoryIndexResponse.ModelIndex(name=name, version=runner.artifact.version, state="READY")
            for name, runner in self.runners.items()])

    async def ModelReady(self, request, context):
        try:
            rest.find_runner(self.runners, request.name, request.version or None)
        except InputError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request, context):
        meta = rest.model_metadata(self.runners, await self._runner(context, request.name, request.version))
        return pb.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                                        inputs=tensor_metadata(meta["inputs"]),
                                        outputs=tensor_metadata(meta["outputs"]))

    async def ModelConfig(self, request, context):
        """Triton's model configuration, completed from the model's tensors as on REST (serving/v2.py
        model_config); its parameters hold `variant` and `edgestack`, which gRPC's ModelMetadataResponse lacks."""
        from google.protobuf import json_format

        config = rest.model_config(self.runners, await self._runner(context, request.name, request.version))
        return pb.ModelConfigResponse(config=json_format.ParseDict(config, config_pb.ModelConfig()))

    async def ModelInfer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        runner = await self._runner(context, request.model_name, request.model_version)
        try:
            header, binary = as_rest(request)
            feeds = self.rest.feeds(runner, header, binary)
            wanted = rest.requested_outputs(runner, header)
            # v2 `parameters.timeout` (microseconds), else the gRPC call's own deadline
            with deadline(rest.timeout_seconds(header) or context.time_remaining()):
                outputs = await runner.infer(feeds)
            response = pb.ModelInferResponse(model_name=runner.name, model_version=runner.artifact.version,
                                             id=request.id)
            for item in wanted or [{"name": name} for name in outputs]:
                array = outputs[item["name"]]
                k = (item.get("parameters") or {}).get("classification")
                if k:
                    array = rest.classify(array, int(k), runner.meta.labels)
                dt = v2.of_numpy(array.dtype)
                response.outputs.add(name=item["name"], datatype=dt.v2, shape=array.shape)
                response.raw_output_contents.append(v2.to_raw(array, dt))
            return response
        except (InputError, v2.ProtocolError) as exc:
            await context.abort(status_of(exc), str(exc))
        except Exception as exc:  # a bug or a runtime failure: INTERNAL with a message, keep serving
            log.exception("gRPC inference failed")
            await context.abort(grpc.StatusCode.INTERNAL, f"inference failed: {type(exc).__name__}: {exc}")


def status_of(exc: Exception) -> grpc.StatusCode:
    """Our HTTP statuses as gRPC codes: 404 NOT_FOUND, 503 UNAVAILABLE, 413 RESOURCE_EXHAUSTED,
    every other caller mistake INVALID_ARGUMENT."""
    status = getattr(exc, "status", 400)
    return {404: grpc.StatusCode.NOT_FOUND, 503: grpc.StatusCode.UNAVAILABLE,
            413: grpc.StatusCode.RESOURCE_EXHAUSTED}.get(status, grpc.StatusCode.INVALID_ARGUMENT)


def admission_interceptor(state=None, max_in_flight: int | None = None):
    """The HTTP server's front door for gRPC calls (serving/admission.py): while the server drains,
    calls get UNAVAILABLE; beyond EDGESTACK_MAX_IN_FLIGHT requests in flight (HTTP and gRPC
    together), UNAVAILABLE too; each admitted call counts in flight, so a drain waits for it."""
    from serving.admission import DRAIN

    state = state or DRAIN
    limit = max_in_flight or get_settings().max_in_flight

    class Admission(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation, details):
            handler = await continuation(details)
            method = details.method.rsplit("/", 1)[-1]
            if handler is None or handler.unary_unary is None or method in auth.GRPC_OPEN_METHODS:
                return handler
            inner = handler.unary_unary

            async def admitted(request, context):
                if state.draining:
                    state.refused += 1
                    await context.abort(grpc.StatusCode.UNAVAILABLE,
                                        "the server is shutting down; send the request to another instance")
                # several workers: the whole server's count (serving/workers.py), else this process's
                inside = (state.shared.enter(limit) if state.shared is not None
                          else state.in_flight if state.in_flight >= limit else None)
                if inside is not None:
                    state.shed += 1
                    await context.abort(grpc.StatusCode.UNAVAILABLE, f"the server is overloaded: {inside} "
                                        "requests in flight, its limit (EDGESTACK_MAX_IN_FLIGHT)")
                state.in_flight += 1
                state.accepted += 1
                try:
                    answer = await inner(request, context)
                    state.completed += 1
                    return answer
                finally:
                    state.in_flight -= 1
                    if state.shared is not None:
                        state.shared.leave()

            return grpc.unary_unary_rpc_method_handler(admitted, request_deserializer=handler.request_deserializer,
                                                       response_serializer=handler.response_serializer)

    return Admission()


async def start(runners: Mapping, port: int, host: str | None = None, max_message_bytes: int | None = None,
                reuse_port: bool = False):
    """Start the gRPC server on the running event loop, where HTTP listens (EDGESTACK_HOST), behind
    the same auth and admission; returns it (await server.stop(grace) to end). reuse_port: every
    worker process of the server binds the same port (SO_REUSEPORT) and the kernel spreads the
    connections over them (serving/workers.py)."""
    settings = get_settings()
    host = host or settings.host
    limit = max_message_bytes or -1
    server = grpc.aio.server(interceptors=[auth.grpc_interceptor(), admission_interceptor()],
                             maximum_concurrent_rpcs=settings.max_in_flight,
                             options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", -1),
                                      ("grpc.so_reuseport", 1 if reuse_port else 0)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(runners), server)
    if server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}") == 0:
        raise OSError(f"gRPC: cannot listen on {host}:{port}")
    await server.start()
    log.info("v2 gRPC (GRPCInferenceService) on %s:%d", host, port)
    return server
