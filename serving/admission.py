"""What the server lets in: request deadlines, and a graceful drain on SIGTERM.

`Admission` is an ASGI middleware around every route:

- `X-Request-Timeout-Ms: N` sets the request's deadline (serving/batching.py
  `request_deadline`): a request whose model cannot start it within N ms is refused at once
  with 503 + Retry-After instead of waiting (v2 requests may use `parameters.timeout` instead);
- load shedding at the front door: the one event loop parses, routes and answers every request,
  so under overload requests wait for it (and for the CPU) before any model sees them. Per
  route, the time requests now wait is their recent time in the server less the time one
  takes alone (`RouteLoad`, as CoDel judges a queue by its standing delay); while that is over
  EDGESTACK_MAX_QUEUE_MS (or a request's own deadline), new requests to the route get 503 +
  Retry-After at once, which costs far less than serving them. Each model's queue has its own
  bound behind this one (serving/batching.py), and the server as a whole takes at most
  EDGESTACK_MAX_IN_FLIGHT requests at once (all worker processes together: serving/workers.py);
- it counts the requests in flight, and while the server drains it refuses new ones with 503
  (Retry-After, `Connection: close`) and answers readiness probes (/readyz,
  /v2/health/ready) with 503, so a load balancer stops sending traffic at once.

`DRAIN.install()` (called by the service once it runs, in the worker process) takes SIGTERM
over from uvicorn: on SIGTERM the server drains, waits until every accepted request (open
Server-Sent-Event streams included) has finished or EDGESTACK_DRAIN_SECONDS have passed,
logs what it accepted and completed, and only then hands the signal to uvicorn, which closes
the connections and exits. `edgestack serve` execs BentoML, whose process manager passes its
SIGTERM on to this worker.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time

from edgestack.settings import get_settings
from serving.batching import request_deadline
from serving.error_shape import send_error

log = logging.getLogger("edgestack.serving")

READINESS = ("/readyz", "/v2/health/ready")
# Probes and metrics are never shed: a load balancer must see the truth while the server is busy.
UNMETERED = (*READINESS, "/livez", "/v2/health/live", "/metrics")
TIMEOUT_HEADER = b"x-request-timeout-ms"
LINGER_SECONDS = 0.5


class RouteLoad:
    """How long a route's requests stay in the server: `sojourn`, a running mean of the recent
    ones, and `floor`, the time one takes without waiting (the lowest seen, drifting slowly
    up so that a model that became slower is not counted as queueing forever). Their
    difference is the queueing now, whatever its cause: a saturated event loop, a busy model,
    other processes taking the CPU."""

    __slots__ = ("in_flight", "sojourn", "floor")

    def __init__(self) -> None:
        self.in_flight, self.sojourn, self.floor = 0, 0.0, None

    def queueing(self) -> float:
        return 0.0 if self.floor is None else max(0.0, self.sojourn - self.floor)

    def done(self, seconds: float) -> None:
        if self.floor is None:
            self.sojourn = self.floor = seconds
            return
        self.sojourn = 0.9 * self.sojourn + 0.1 * seconds
        self.floor = min(seconds, self.floor + 0.001 * (seconds - self.floor))


class DrainState:
    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self.accepted = 0    # requests let in since the start
        self.completed = 0   # of those, answered to the end
        self.refused = 0     # refused because the server was draining
        self.shed = 0        # refused because the server was overloaded
        self.routes: dict[str, RouteLoad] = {}
        # With several worker processes: the in-flight count of the whole server (serving/workers.py)
        self.shared = None

    def route(self, path: str) -> RouteLoad:
        load = self.routes.get(path)
        if load is None:
            if len(self.routes) > 1000:  # paths come from callers: keep the table bounded
                self.routes.clear()
            load = self.routes[path] = RouteLoad()
        return load

    def install(self) -> None:
        """Take SIGTERM over (main thread only; uvicorn's handler runs after the drain)."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        then = signal.getsignal(signal.SIGTERM)

        def on_sigterm(sig, frame):
            if self.draining:  # a second SIGTERM: stop waiting
                if callable(then):
                    then(sig, frame)
                return
            self.draining = True
            hand_over = (lambda: then(sig, frame)) if callable(then) else (lambda: None)
            loop.call_soon_threadsafe(lambda: loop.create_task(self.finish(hand_over)))

        signal.signal(signal.SIGTERM, on_sigterm)

    async def finish(self, exit_now) -> None:
        grace = get_settings().drain_seconds
        started, waiting = time.monotonic(), self.in_flight
        log.warning("SIGTERM: draining; %d request(s) in flight, waiting up to %.0f s", waiting, grace)
        deadline = started + grace
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # Linger a moment, still refusing with `Connection: close`: a client that just got its
        # answer sends its next request on the same connection, and should read a 503, not a
        # connection closed under it.
        await asyncio.sleep(min(LINGER_SECONDS, max(0.0, deadline - time.monotonic())))
        log.warning("drained in %.2f s: %d accepted, %d completed, %d still running, %d refused while draining",
                    time.monotonic() - started, self.accepted, self.completed, self.in_flight, self.refused)
        exit_now()


DRAIN = DrainState()


def timeout_ms(headers) -> float | None:
    """The X-Request-Timeout-Ms header, or None; ValueError with a message if it is not a number."""
    raw = dict(headers or []).get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1e9:  # NaN fails too
        raise ValueError(f"X-Request-Timeout-Ms must be a positive number of milliseconds, got {raw[:40].decode('latin-1')!r}")
    return value


class Admission:
    def __init__(self, app, state: DrainState | None = None):
        self.app, self.state = app, state or DRAIN
        settings = get_settings()  # read once, not per request
        self.budget, self.max_in_flight = settings.max_queue_ms / 1000 or float("inf"), settings.max_in_flight

    async def overloaded(self, send, inside: int) -> None:
        self.state.shed += 1
        await send_error(send, 503, f"the server is overloaded: {inside} requests in flight, its "
                                    "limit (EDGESTACK_MAX_IN_FLIGHT)", [(b"retry-after", b"1")])

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = self.state
        if state.draining:
            if scope.get("path") in READINESS:
                return await send_error(send, 503, "the server is shutting down (draining)")
            if scope.get("path") not in UNMETERED:
                state.refused += 1
                return await send_error(send, 503, "the server is shutting down; send the request to another instance",
                                     [(b"retry-after", b"1"), (b"connection", b"close")])
        try:
            ms = timeout_ms(scope.get("headers"))
        except ValueError as exc:
            return await send_error(send, 400, str(exc))
        path = scope.get("path", "")
        load = None if path in UNMETERED else state.route(path)
        shared = state.shared if load is not None else None
        if shared is None and load is not None and state.in_flight >= self.max_in_flight:
            return await self.overloaded(send, state.in_flight)
        if load is not None and load.in_flight > 1:
            budget = self.budget
            limit, waiting = min(ms / 1000 if ms else budget, budget), load.queueing()
            if waiting > limit:
                state.shed += 1
                why = "its deadline" if ms and ms / 1000 == limit else f"{budget * 1000:.0f} ms"
                return await send_error(send, 503, f"the server is overloaded: {path} requests wait about "
                                                f"{waiting * 1000:.0f} ms before they run ({load.in_flight} in flight), "
                                                f"more than {why}", [(b"retry-after", b"1")])
        if shared is not None:  # last, once nothing else refuses: counted in, it must be counted out
            inside = shared.enter(self.max_in_flight)
            if inside is not None:
                return await self.overloaded(send, inside)
        token = request_deadline.set(time.monotonic() + ms / 1000) if ms else None
        arrived = time.monotonic()
        state.in_flight += 1
        state.accepted += 1
        if load is not None:
            load.in_flight += 1
        try:
            await self.app(scope, receive, send)
            state.completed += 1
        finally:
            state.in_flight -= 1
            if shared is not None:
                shared.leave()
            if load is not None:
                load.in_flight -= 1
                load.done(time.monotonic() - arrived)
            if token is not None:
                request_deadline.reset(token)
