"""The Open Inference Protocol (KServe / Triton v2) in the edgestack client.

`Client` and `AsyncClient` (clients/client.py) get these calls from `V2Calls`, written once
for both, so they share the connection pool, timeouts, retries on connection errors and
typed errors of the convenience calls. They work against any v2 server (ours, Triton, KServe):

    with Client("http://localhost:3000") as c:
        c.v2_model_metadata("fashion-cnn")["inputs"]
        result = c.v2_infer("fashion-cnn", {"images": x})          # binary tensors by default
        result.outputs["logits"]

Infer bodies (tensors as JSON or binary, BYTES) are encoded and decoded by tritonclient
(`InferenceServerClient.generate_request_body` / `parse_response_body`); the requests go
over our httpx client. Health, metadata and the model config are plain JSON GETs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
import numpy as np
import tritonclient.http as tc
from tritonclient.utils import InferenceServerException

from clients._core import call
from edgestack import v2protocol as v2

# request parameters tritonclient takes as arguments of their own (it refuses them in `parameters`)
_TRITON_ARGUMENTS = ("sequence_id", "sequence_start", "sequence_end", "priority", "timeout")


@dataclass(frozen=True)
class V2Result:
    model_name: str
    model_version: str | None
    outputs: dict[str, np.ndarray]
    id: str | None = None
    parameters: dict = field(default_factory=dict)


def model_path(model: str, version: str | None = None, suffix: str = "") -> str:
    base = f"/v2/models/{quote(model, safe='')}"
    if version:
        base += f"/versions/{quote(str(version), safe='')}"
    return base + suffix


def _infer_input(name: str, array: np.ndarray, binary: bool) -> tc.InferInput:
    array = np.asarray(array)
    if array.dtype.kind == "U":  # tritonclient takes str elements in object arrays, not numpy str arrays
        array = array.astype(object)
    return tc.InferInput(name, list(array.shape), v2.of_numpy(array.dtype).v2).set_data_from_numpy(array, binary)


def infer_request(inputs: dict[str, np.ndarray], *, outputs: list[str] | None = None, binary: bool = True,
                  request_id: str | None = None, parameters: dict | None = None) -> tuple[bytes, dict]:
    """inputs (name -> array; object/str arrays are BYTES) -> (body, headers) of an infer request."""
    if not inputs:
        raise ValueError("v2_infer needs at least one input tensor")
    params = dict(parameters or {})
    arguments = {k: params.pop(k) for k in _TRITON_ARGUMENTS if k in params}
    try:
        body, header_length = tc.InferenceServerClient.generate_request_body(
            [_infer_input(name, array, binary) for name, array in inputs.items()],
            [tc.InferRequestedOutput(name, binary_data=binary) for name in outputs or []],
            request_id="" if request_id is None else request_id, parameters=params, **arguments)
    except InferenceServerException as exc:
        raise ValueError(f"v2 infer request: {exc.message()}") from None
    if not binary and not outputs:  # tritonclient asks for binary outputs when none are named: JSON in, JSON out
        header = json.loads(body)
        del header["parameters"]["binary_data_output"]
        if not header["parameters"]:
            del header["parameters"]
        body = json.dumps(header).encode()
    headers = {"content-type": "application/octet-stream" if header_length else "application/json"}
    if header_length is not None:
        headers[v2.HEADER_LENGTH] = str(header_length)
    return body, headers


def _as_bytes(array: np.ndarray) -> np.ndarray:
    """BYTES outputs as bytes elements (tritonclient gives JSON ones as str)."""
    if array.dtype != object:
        return array
    return np.array([x.encode() if isinstance(x, str) else x for x in array.reshape(-1)],
                    dtype=object).reshape(array.shape)


def infer_result(response: httpx.Response) -> V2Result:
    """An infer response (binary or JSON tensors) -> V2Result; BYTES outputs hold bytes."""
    try:
        result = tc.InferenceServerClient.parse_response_body(response.content,
                                                              header_length=response.headers.get(v2.HEADER_LENGTH))
        header = result.get_response()
        outputs = {o["name"]: _as_bytes(result.as_numpy(o["name"])) for o in header.get("outputs") or []}
    except (InferenceServerException, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise v2.ProtocolError(f"malformed infer response: {exc}") from exc
    return V2Result(header.get("model_name", ""), header.get("model_version"), outputs, header.get("id"),
                    header.get("parameters") or {})


def hints_from(metadata: dict | None, config: dict | None) -> dict | None:
    """The model's task, preprocessing and labels, as our server's metadata or an exported
    Triton config (export/triton.py) carries them under the parameter `edgestack`."""
    for source in (metadata, config):
        value = ((source or {}).get("parameters") or {}).get("edgestack")
        if isinstance(value, dict):  # Triton config JSON: {"string_value": "..."}
            value = value.get("string_value")
        if isinstance(value, str) and value:
            return json.loads(value)
    return None


class V2Calls:
    """The v2 calls of `Client` and `AsyncClient` (uses the steps of clients/client.py `_Calls`)."""

    @call
    def v2_live(self) -> bool:
        return (yield from self._ok("/v2/health/live"))

    @call
    def v2_ready(self) -> bool:
        return (yield from self._ok("/v2/health/ready"))

    @call
    def v2_model_ready(self, model: str, version: str | None = None) -> bool:
        return (yield from self._ok(model_path(model, version, "/ready")))

    @call
    def v2_server_metadata(self) -> dict:
        return (yield from self._json("GET", "/v2"))

    @call
    def v2_model_metadata(self, model: str, version: str | None = None) -> dict:
        return (yield from self._json("GET", model_path(model, version)))

    @call
    def v2_model_hints(self, model: str, version: str | None = None) -> dict | None:
        """task / preprocessing / labels from the server (ours, or Triton with an exported config)."""
        hints = hints_from((yield from self._json("GET", model_path(model, version))), None)
        if hints is None:
            response = yield from self._get(model_path(model, version, "/config"))
            hints = hints_from(None, response.json() if response.status_code == 200 else None)
        return hints

    @call
    def v2_infer(self, model: str, inputs: dict[str, np.ndarray], *, outputs: list[str] | None = None,
                 binary: bool = True, version: str | None = None, request_id: str | None = None,
                 parameters: dict | None = None) -> V2Result:
        body, headers = infer_request(inputs, outputs=outputs, binary=binary, request_id=request_id,
                                      parameters=parameters)
        path = model_path(model, version, "/infer")
        return infer_result((yield from self._send("POST", path, content=body, headers=headers)))


@dataclass(frozen=True)
class _IO:
    name: str
    type: str
    shape: list


class RemoteSession:
    """An onnxruntime.InferenceSession look-alike whose `run` is a v2 infer call, so code
    written for a local session runs against any v2 server."""

    def __init__(self, client, model: str, version: str | None = None, binary: bool = True):
        self.client, self.model, self.version, self.binary = client, model, version, binary
        meta = client.v2_model_metadata(model, version)
        self._inputs = [_IO(t["name"], v2.datatype(t["datatype"]).ort, t["shape"]) for t in meta["inputs"]]
        self._outputs = [_IO(t["name"], v2.datatype(t["datatype"]).ort, t["shape"]) for t in meta["outputs"]]

    def get_inputs(self) -> list[_IO]:
        return self._inputs

    def get_outputs(self) -> list[_IO]:
        return self._outputs

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray], run_options=None) -> list[np.ndarray]:
        names = list(output_names or [o.name for o in self._outputs])
        result = self.client.v2_infer(self.model, feeds, outputs=names, binary=self.binary, version=self.version)
        return [result.outputs[n] for n in names]


def predict_files_v2(client, model: str, paths: list[str], *, top_k: int = 3, hints: dict | None = None,
                     binary: bool = True, limit: int | None = None) -> list[dict]:
    """Image files / IDX / .npy -> top-k labels through any v2 server, decoded and preprocessed
    on this side by the image family's processing (edgestack/families/image.py), as on the
    server and on devices. `hints` (preprocessing, labels) come from the server unless given
    (e.g. from a local artifact).
    `limit`: at most this many images in all (an IDX file may hold thousands)."""
    hints = hints or client.v2_model_hints(model)
    if not hints or hints.get("task") != "image-classification":
        raise ValueError(f"{model}: the v2 path of `edgestack predict` classifies images and needs the model's "
                         "preprocessing and labels; the server did not give them (pass --artifacts with a local "
                         "copy of the artifact), or this model is not an image classifier (use Client.v2_infer)")
    from edgestack.families import image as processing

    pre, labels = hints["preprocessing"], hints["labels"]
    session = RemoteSession(client, model, binary=binary)
    input_name = session.get_inputs()[0].name
    names, images, errors = processing.read_inputs(paths, pre["height"], pre["width"], pre.get("dark_background", False),
                                                   pre.get("drawn_layout"), pre.get("channels") or 1)
    names, images = names[:limit], images[:limit]
    good = [image for image in images if image is not None]
    rows = [processing.probabilities(session.run(None, {input_name: processing.to_model_input(np.stack(good[i:i + 256]),
                                                                                             pre)})[0])
            for i in range(0, len(good), 256)]  # 256 images per request at most
    answers = iter(processing.classify(np.concatenate(rows), labels, top_k) if rows else [])
    return [{"input": name, **(next(answers) if image is not None else {"error": errors[name]})}
            for name, image in zip(names, images)]
