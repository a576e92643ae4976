"""`edgestack v2-check`: the tritonclient compatibility matrix against a running v2 server.

For each model, the real, unmodified `tritonclient.http` (sync) and `tritonclient.http.aio`
(async) clients make every call a Triton user makes, and each call is one cell of the
matrix, pass or FAIL with the reason:

    server live/ready     is_server_live, is_server_ready (sync and async)
    model ready           is_model_ready: plain, with the served version, an unknown version -> False
    metadata              get_model_metadata (sync = async = with version); v2 datatypes and shapes
    infer binary sync     infer with tritonclient's default binary tensors; outputs as declared
    infer JSON sync       binary_data=False in and out; same numbers as binary
    infer binary async    concurrent requests of batch 1..3; same numbers as sync
    infer JSON async      the same with JSON tensors
    = in-process ORT      with a local artifact of the model: the binary answer equals the same
                          variant (from the metadata's or, on Triton, the model config's
                          `variant` parameter) run in this process (images: the bare session; other families:
                          their runner, which tokenizes or checks state exactly as the server does)

With `--protocol grpc` the same matrix runs over `tritonclient.grpc` and `tritonclient.grpc.aio`
against a v2 gRPC endpoint (ours: `edgestack serve --grpc-port`; Triton's): "binary" is
tritonclient's raw_input_contents, "JSON" the typed `contents` fields of the request
(ModelInferRequest.InferInputTensor.contents), and the parameters come from ModelConfig.

Inputs come from the model metadata alone (sample sentences for BYTES, small ids for
integers, small normal values for floats), so the check works against any v2 server: ours,
Triton, KServe. The tests (tests/integration/test_v2.py) use the same input and reference helpers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as tc_grpc
import tritonclient.grpc.aio as tc_grpc_aio
import tritonclient.http as tc
import tritonclient.http.aio as tc_aio
from tritonclient.utils import InferenceServerException

from edgestack import v2protocol as v2
from edgestack.settings import get_settings

SAMPLE_TEXT = ["a gripping, beautifully acted film", "dull, predictable and far too long",
               "Shares rose after the bank reported record profits", "The striker scored twice in the final"]
CELLS = ["server live/ready", "model ready", "metadata", "infer binary sync", "infer JSON sync",
         "infer binary async", "infer JSON async", "= in-process ORT"]


def example_inputs(specs: list[dict], batch: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Values the v2 metadata `specs` admit (every -1 dimension = `batch`)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = [batch if d == -1 else d for d in spec["shape"]]
        dt = v2.datatype(spec["datatype"])
        if dt.v2 == "BYTES":
            values = [SAMPLE_TEXT[i % len(SAMPLE_TEXT)].encode() for i in range(int(np.prod(shape)))]
            feeds[spec["name"]] = np.array(values, dtype=object).reshape(shape)
        elif dt.numpy.kind in "iu":
            feeds[spec["name"]] = rng.integers(0, 10, shape).astype(dt.numpy)
        else:
            feeds[spec["name"]] = (rng.standard_normal(shape) * 0.1).astype(dt.numpy)
    return feeds


def triton_grpc_inputs(module, feeds: dict[str, np.ndarray]) -> list:
    """feeds -> tritonclient.grpc InferInputs (raw_input_contents, tritonclient's only encoding)."""
    inputs = []
    for name, array in feeds.items():
        item = module.InferInput(name, list(array.shape), v2.of_numpy(array.dtype).v2)
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def triton_inputs(module, feeds: dict[str, np.ndarray], binary: bool) -> list:
    """feeds -> tritonclient InferInputs (module: tritonclient.http or tritonclient.http.aio)."""
    inputs = []
    for name, array in feeds.items():
        item = module.InferInput(name, list(array.shape), v2.of_numpy(array.dtype).v2)
        item.set_data_from_numpy(array, binary_data=binary)
        inputs.append(item)
    return inputs


def typed_inputs(module, feeds: dict[str, np.ndarray]) -> list:
    """feeds -> tritonclient.grpc InferInputs whose data travel in the typed `contents` fields
    (tritonclient itself always sends raw_input_contents)."""
    from serving.grpc_v2 import CONTENTS

    inputs = []
    for name, array in feeds.items():
        dt = v2.of_numpy(array.dtype)
        item = module.InferInput(name, list(array.shape), dt.v2)
        getattr(item._get_tensor().contents, CONTENTS[dt.v2]).extend(array.reshape(-1).tolist())
        inputs.append(item)
    return inputs


def grpc_metadata(meta) -> dict:
    """tritonclient.grpc's ModelMetadataResponse as the REST metadata's dict (shapes as ints)."""
    from google.protobuf.json_format import MessageToDict

    out = MessageToDict(meta, preserving_proto_field_name=True)
    for kind in ("inputs", "outputs"):
        for tensor in out.get(kind, []):
            tensor["shape"] = [int(d) for d in tensor.get("shape", [])]
    return out


def reference(art, variant: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same variant in process: the bare ORT session for image classifiers, else the
    family's own runner (tokenization, state checks, ...) without HTTP."""
    from edgestack import registry
    from edgestack.runtime import open_session
    from serving.runner import RunnerOptions

    if art.task == "image-classification":
        session = open_session(art.variant_path(variant), device="cpu", threads=1)
        names = [o.name for o in art.meta.outputs]
        return dict(zip(names, session.run(feeds, names)))
    runner = registry.load_object(registry.get(art.name).stages.runner)(
        art, RunnerOptions(device="cpu", variant=variant, threads=1))
    text = {k: np.vectorize(lambda b: b.decode(), otypes=[object])(a) if a.dtype == object else a
            for k, a in feeds.items()}
    return asyncio.run(runner.infer(text))


def tolerance(task: str | None) -> float:
    """Static int8 (CNN) and fp32 graphs give the same rows whatever else shares the batch.
    Dynamic int8 (text) quantizes activations with one scale over the whole padded batch, so
    a text's probabilities move when the server batches it with others: by up to 8.7e-3 on
    the full MiniLM topic-transformer (v2-check on the default build), ~1e-3 on the tiny
    models. A wrong graph, variant or tokenization moves them by far more."""
    return 2e-2 if task == "text-classification" else 1e-4


def same_outputs(got: dict[str, np.ndarray], want: dict[str, np.ndarray], atol: float) -> None:
    """AssertionError naming the output that differs."""
    for name, expected in want.items():
        actual = got.get(name)
        if actual is None:
            raise AssertionError(f"output {name!r} missing")
        if expected.dtype == object:
            decode = [x.decode() if isinstance(x, bytes) else x for x in actual.reshape(-1)]
            if decode != [x.decode() if isinstance(x, bytes) else x for x in expected.reshape(-1)]:
                raise AssertionError(f"output {name!r}: different strings")
        elif actual.shape != expected.shape:
            raise AssertionError(f"output {name!r}: shape {list(actual.shape)}, expected {list(expected.shape)}")
        elif not np.allclose(actual, expected, rtol=atol, atol=atol):
            worst = float(np.max(np.abs(actual.astype(np.float64) - expected)))
            raise AssertionError(f"output {name!r}: differs by up to {worst:.2e} (tolerance {atol:g})")


class ModelCheck:
    """One model's row of the matrix: each cell runs once, recording pass or the failure."""

    def __init__(self, url: str, model: str, artifacts_root: Path | None, protocol: str = "http",
                 token: str | None = None):
        self.host, self.model, self.root = url.split("://")[-1].rstrip("/"), model, artifacts_root
        self.token = token
        self.grpc = protocol == "grpc"
        self.tc, self.tc_aio = (tc_grpc, tc_grpc_aio) if self.grpc else (tc, tc_aio)
        self.cells: dict[str, str] = {}
        self.meta: dict | None = None
        self.params: dict[str, str] = {}  # variant, edgestack hints: from metadata, else the model config
        self.feeds: dict[str, np.ndarray] = {}
        self.answers: dict[str, dict[str, np.ndarray]] = {}

    def cell(self, name: str, check) -> None:
        try:
            outcome = check()
            self.cells[name] = outcome or "pass"
        except Exception as exc:  # noqa: BLE001 - every failure becomes the cell's reason
            self.cells[name] = f"FAIL: {type(exc).__name__}: {str(exc)[:200]}"

    # ---------------------------------------------------------------- cells
    def health(self) -> None:
        with connect(self.tc, self.host, self.token) as client:
            assert client.is_server_live() and client.is_server_ready(), "sync: not live or not ready"

        async def go():
            async with connect(self.tc_aio, self.host, self.token) as client:
                return await client.is_server_live() and await client.is_server_ready()

        assert asyncio.run(go()), "async: not live or not ready"

    def metadata(self) -> None:
        with connect(self.tc, self.host, self.token) as client:
            meta = self.as_dict(client.get_model_metadata(self.model))
            version = (meta.get("versions") or [None])[0]
            if version is not None:
                assert self.as_dict(client.get_model_metadata(self.model, version)) == meta, \
                    "metadata differs with the version"

        async def go():
            async with connect(self.tc_aio, self.host, self.token) as client:
                return self.as_dict(await client.get_model_metadata(self.model))

        assert asyncio.run(go()) == meta, "async metadata differs from sync"
        for kind in ("inputs", "outputs"):
            assert meta.get(kind), f"no {kind}"
            for tensor in meta[kind]:
                v2.datatype(tensor["datatype"])  # a v2 datatype we know
                assert all(isinstance(d, int) and d >= -1 for d in tensor["shape"]), f"bad shape {tensor['shape']}"
        self.meta = meta
        self.params = meta.get("parameters") or config_parameters(client_config(self.host, self.model, self.tc, self.token))
        self.feeds = example_inputs(meta["inputs"])

    def ready(self) -> None:
        with connect(self.tc, self.host, self.token) as client:
            assert client.is_model_ready(self.model), "not ready"
            versions = (self.meta or {}).get("versions") or []
            if versions:
                assert client.is_model_ready(self.model, versions[0]), f"version {versions[0]} not ready"
                unknown = str(int(versions[0]) + 100) if str(versions[0]).isdigit() else "no-such-version"
                assert not client.is_model_ready(self.model, unknown), f"unknown version {unknown} said ready"

    def outputs_of(self, result) -> dict[str, np.ndarray]:
        return {o["name"]: result.as_numpy(o["name"]) for o in self.meta["outputs"]}

    def check_declared(self, outputs: dict[str, np.ndarray], batch: int) -> None:
        for spec in self.meta["outputs"]:
            array = outputs[spec["name"]]
            assert array is not None, f"output {spec['name']} missing"
            want = [batch if d == -1 and i == 0 else d for i, d in enumerate(spec["shape"])]
            assert len(array.shape) == len(want) and all(d in (-1, a) for d, a in zip(want, array.shape)), \
                f"output {spec['name']}: shape {list(array.shape)} vs declared {spec['shape']}"

    def as_dict(self, meta) -> dict:
        return grpc_metadata(meta) if self.grpc else meta

    def inputs(self, module, feeds: dict[str, np.ndarray], binary: bool) -> list:
        """binary: tritonclient's default encoding; else JSON `data` (HTTP) or typed `contents` (gRPC)."""
        if self.grpc and not binary:
            return typed_inputs(module, feeds)
        return triton_inputs(module, feeds, binary) if not self.grpc else triton_grpc_inputs(module, feeds)

    def requested(self, module, binary: bool) -> list | None:
        if binary or self.grpc:  # gRPC answers raw_output_contents either way, as Triton does
            return None
        return [module.InferRequestedOutput(o["name"], binary_data=False) for o in self.meta["outputs"]]

    def infer_sync(self, binary: bool) -> None:
        with connect(self.tc, self.host, self.token) as client:
            result = client.infer(self.model, self.inputs(self.tc, self.feeds, binary),
                                  outputs=self.requested(self.tc, binary), request_id="v2-check")
        response = result.get_response()
        if self.grpc:
            assert response.id == "v2-check", "request id not echoed"
            assert len(response.raw_output_contents) == len(response.outputs), "outputs not all raw"
        else:
            assert response.get("id") == "v2-check", "request id not echoed"
            assert all(("data" in o) != binary for o in response["outputs"]), "binary_data not honoured"
        answer = self.outputs_of(result)
        self.check_declared(answer, len(next(iter(self.feeds.values()))))
        if not binary:
            same_outputs(answer, self.answers["binary"], self.atol)
        self.answers["binary" if binary else "json"] = answer

    def infer_async(self, binary: bool) -> None:
        feeds = [example_inputs(self.meta["inputs"], batch=1 + i % 3, seed=i) for i in range(4)]
        outputs = self.requested(self.tc_aio, binary)

        async def go():
            async with connect(self.tc_aio, self.host, self.token) as client:
                return await asyncio.gather(*(client.infer(self.model, self.inputs(self.tc_aio, f, binary),
                                                           outputs=outputs) for f in feeds))

        results = asyncio.run(go())

        with connect(self.tc, self.host, self.token) as client:  # each one alone, for comparison
            for f, result in zip(feeds, results):
                alone = client.infer(self.model, self.inputs(self.tc, f, True))
                self.check_declared(self.outputs_of(result), len(next(iter(f.values()))))
                same_outputs(self.outputs_of(result), self.outputs_of(alone), self.atol)

    def in_process(self) -> str | None:
        from edgestack import artifact

        if self.root is None:
            return "skipped: no local artifacts (--artifacts)"
        try:
            art = artifact.load_latest(self.model, self.root)
        except artifact.ArtifactError as exc:
            return f"skipped: {exc}"
        variant = self.params.get("variant")
        if variant is None:
            return "skipped: the server does not say which variant it runs"
        same_outputs(self.answers["binary"], reference(art, variant, self.feeds), tolerance(art.task))
        return None

    @property
    def atol(self) -> float:
        hints = json.loads(self.params.get("edgestack", "{}"))
        return tolerance(hints.get("task"))

    def run(self) -> dict[str, str]:
        self.cell("server live/ready", self.health)
        self.cell("metadata", self.metadata)
        self.cell("model ready", self.ready)
        if self.meta is None:
            for name in CELLS[3:]:
                self.cells[name] = "FAIL: no metadata, nothing to send"
        else:
            self.cell("infer binary sync", lambda: self.infer_sync(True))
            if "binary" in self.answers:
                self.cell("infer JSON sync", lambda: self.infer_sync(False))
                self.cell("= in-process ORT", self.in_process)
            self.cell("infer binary async", lambda: self.infer_async(True))
            self.cell("infer JSON async", lambda: self.infer_async(False))
        return {name: self.cells.get(name, "FAIL: not reached (binary infer failed)") for name in CELLS}


class BearerToken:
    """A tritonclient plugin (http, grpc, sync and aio) that sends `Authorization: Bearer <token>`."""

    def __init__(self, token: str):
        self.value = f"Bearer {token}"

    def __call__(self, request) -> None:
        request.headers["authorization"] = self.value


def connect(module, host: str, token: str | None = None):
    """A tritonclient InferenceServerClient of `module` for `host`, sending `token` when given."""
    client = module.InferenceServerClient(host)
    if token:
        client.register_plugin(BearerToken(token))
    return client


def client_config(host: str, model: str, module=tc, token: str | None = None) -> dict:
    """Triton's model configuration (its metadata has no `parameters`); {} where there is none."""
    with connect(module, host, token) as client:
        try:
            if module is tc_grpc:
                return client.get_model_config(model, as_json=True).get("config", {})
            return client.get_model_config(model)
        except InferenceServerException:
            return {}


def config_parameters(config: dict) -> dict[str, str]:
    """A model config's parameters ({"key": {"string_value": "..."}}) as plain strings."""
    return {k: v.get("string_value", "") if isinstance(v, dict) else str(v)
            for k, v in (config.get("parameters") or {}).items()}


def check_models(url: str, models: list[str], artifacts_root: Path | None = None,
                 protocol: str = "http", token: str | None = None) -> dict[str, dict[str, str]]:
    return {model: ModelCheck(url, model, artifacts_root, protocol, token).run() for model in models}


def served_models(url: str, protocol: str = "http", token: str | None = None) -> list[str]:
    """Our server lists its models (POST /models; over gRPC, the repository index, as on Triton);
    the v2 core protocol has no such call."""
    import httpx

    if protocol == "grpc":
        with connect(tc_grpc, url.split("://")[-1], token) as client:
            index = client.get_model_repository_index(as_json=True)
        return [m["name"] for m in index.get("models", []) if m.get("state", "READY") == "READY"]

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(url.rstrip("/") + "/models", json={}, timeout=30, headers=headers)
    response.raise_for_status()
    return [m["name"] for m in response.json()["models"]]


def print_matrix(matrix: dict[str, dict[str, str]]) -> None:
    models = list(matrix)
    width = max(len(c) for c in CELLS) + 2
    print(f"{'tritonclient call':{width}s}" + "".join(f"{m:>24s}" for m in models))
    for name in CELLS:
        row = [matrix[m][name] for m in models]
        print(f"{name:{width}s}" + "".join(f"{('pass' if v == 'pass' else v.split(':')[0]):>24s}" for v in row))
    for model, cells in matrix.items():
        for name, value in cells.items():
            if value != "pass":
                print(f"  {model} / {name}: {value}")


def run(args) -> int:
    url = args.url if "://" in args.url or args.protocol == "grpc" else f"http://{args.url}"
    models = args.models or served_models(url, args.protocol, args.token)
    root = Path(args.artifacts) if args.artifacts else None
    started = time.perf_counter()
    matrix = check_models(url, models, root, args.protocol, args.token)
    print_matrix(matrix)
    failed = sum(v.startswith("FAIL") for cells in matrix.values() for v in cells.values())
    print(f"\n{len(models)} model(s), {failed} failed cell(s), {time.perf_counter() - started:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"url": url, "matrix": matrix}, indent=2))
        print(f"JSON: {args.json}")
    return 1 if failed else 0


def cmd_v2_check(args: argparse.Namespace) -> int:
    from cli.v2check import run

    return run(args)


def add_parsers(sub) -> None:
    vc = sub.add_parser("v2-check", help="tritonclient compatibility matrix against a running v2 server",
                        description="Every tritonclient.http (or, --protocol grpc, tritonclient.grpc) call (sync and async, binary and JSON tensors) "
                                    "against each model of a running Open Inference Protocol (v2) server: ours, "
                                    "Triton or KServe. Prints one pass/FAIL cell per call and model; exit 1 if "
                                    "any cell failed. See cli/v2check.py.")
    vc.add_argument("models", nargs="*", help="model names (default: what our server lists at POST /models)")
    vc.add_argument("--url", default=get_settings().url,
                    help="the server: http://host:port, or host:port of its gRPC endpoint with --protocol grpc")
    vc.add_argument("--token", default=get_settings().token,
                    help="bearer token when the server requires one (default: EDGESTACK_TOKEN)")
    vc.add_argument("--protocol", choices=["http", "grpc"], default="http",
                    help="grpc: the same matrix over tritonclient.grpc (sync and aio) against a v2 gRPC endpoint "
                         "(`edgestack serve --grpc-port`)")
    vc.add_argument("--artifacts", help="also compare each answer with the same variant run in process, "
                                        "from this artifacts folder (e.g. artifacts)")
    vc.add_argument("--json", metavar="FILE", help="write the matrix as JSON to FILE")
    vc.set_defaults(func=cmd_v2_check)
