"""The admission middleware on a real ASGI app (one that serves one request at a time, so a
burst queues in front of it): shedding by standing queueing delay, deadlines, the drain."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest

from serving.admission import Admission, DrainState
from serving.batching import request_deadline


PROBES = ("/readyz", "/livez", "/metrics", "/v2/health/ready", "/v2/health/live")


def single_worker_app(seconds: float):
    """A model route that serves one request at a time (`seconds` each); probes answer at once,
    as the server's do (they never wait for a model). Answers 200 with the request's deadline
    (serving.batching.request_deadline, as the route sees it) as the body."""
    lock = asyncio.Lock()

    async def app(scope, receive, send):
        if scope["path"] not in PROBES:
            async with lock:  # one at a time: concurrent requests wait here, as behind a busy model or loop
                await asyncio.sleep(seconds)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": repr(request_deadline.get()).encode()})
    return app


async def call(app, path="/classify", headers=()):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app({"type": "http", "method": "POST", "path": path, "headers": list(headers)}, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start.get("headers") or []), body


async def until(condition, seconds: float = 30.0) -> None:
    """Wait (polling) until condition() holds; AssertionError after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.fixture
def budget_100ms(monkeypatch):
    monkeypatch.setenv("EDGESTACK_MAX_QUEUE_MS", "100")


def test_a_standing_queue_over_the_budget_sheds_new_requests_with_503(budget_100ms):
    async def run():
        admission = Admission(single_worker_app(0.02), DrainState())
        assert (await call(admission))[0] == 200  # alone: 20 ms, the route's floor
        burst = [asyncio.create_task(call(admission)) for _ in range(30)]  # the last waits 600 ms or more
        route = admission.state.routes["/classify"]
        # answers come back after queueing: the standing delay it measures passes the 100 ms budget
        # (however slow this machine is: every wait grows with it)
        await until(lambda: route.queueing() > 0.1)
        assert not any(task.done() and task.result()[0] != 200 for task in burst)
        late = await call(admission)
        probes = [await call(admission, path) for path in PROBES]  # health and metrics: never shed
        results = await asyncio.gather(*burst)
        return late, probes, results, admission.state

    late, probes, results, state = asyncio.run(run())
    assert all(status == 200 for status, _, _ in results)  # admitted before the queue stood: all served
    status, headers, body = late
    assert status == 503 and headers[b"retry-after"] == b"1"
    assert "overloaded" in json.loads(body)["error"] and state.shed == 1
    assert [status for status, _, _ in probes] == [200] * len(PROBES)


def test_a_lone_request_is_never_shed_however_slow():
    async def run():
        admission = Admission(single_worker_app(0.3), DrainState())  # 3 times the budget, alone
        return [await call(admission) for _ in range(3)], admission.state

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESTACK_MAX_QUEUE_MS", "100")
        answers, state = asyncio.run(run())
    assert [status for status, _, _ in answers] == [200] * 3 and state.shed == 0


def test_the_deadline_header_is_checked_and_set(budget_100ms):
    async def run():
        admission = Admission(single_worker_app(0.0), DrainState())
        bad = await call(admission, headers=[(b"x-request-timeout-ms", b"-5")])
        sent = time.monotonic()
        good = await call(admission, headers=[(b"x-request-timeout-ms", b"250")])
        answered = time.monotonic()
        none = await call(admission)
        return bad, good, none, sent, answered

    bad, good, none, sent, answered = asyncio.run(run())
    assert bad[0] == 400 and b"X-Request-Timeout-Ms" in bad[2]
    # the route saw a deadline 250 ms after the request arrived; without the header, none
    assert good[0] == 200 and sent + 0.25 <= float(good[2]) <= answered + 0.25
    assert none == (200, {}, b"None")


def test_while_draining_new_work_and_readiness_get_503_and_liveness_stays():
    async def run():
        state = DrainState()
        admission = Admission(single_worker_app(0.0), state)
        state.draining = True
        return [await call(admission, path) for path in ("/classify", "/readyz", "/v2/health/ready", "/livez")], state

    (work, ready, v2_ready, live), state = asyncio.run(run())
    assert work[0] == ready[0] == v2_ready[0] == 503 and work[1][b"connection"] == b"close"
    assert live[0] == 200 and state.refused == 1


def test_more_requests_in_flight_than_the_limit_get_503_but_probes_are_answered(monkeypatch):
    monkeypatch.setenv("EDGESTACK_MAX_IN_FLIGHT", "4")

    async def run():
        admission = Admission(single_worker_app(0.05), DrainState())
        work = [asyncio.create_task(call(admission, f"/route-{i}")) for i in range(6)]
        await until(lambda: admission.state.in_flight == 4)  # the limit reached
        probes = [await call(admission, path) for path in PROBES]
        return await asyncio.gather(*work), probes

    work, probes = asyncio.run(run())
    assert sorted(status for status, _, _ in work) == [200] * 4 + [503] * 2
    assert [status for status, _, _ in probes] == [200] * len(PROBES)  # a load balancer still sees the truth


def test_sigterm_drains_the_requests_in_flight_then_hands_the_signal_on(monkeypatch, caplog):
    """DrainState.install: SIGTERM starts the drain (new work 503, probes 503), the previous SIGTERM
    handler (uvicorn's, in the server) runs only once the request in flight has finished (it takes
    longer than the drain's short linger); a second SIGTERM while draining goes to it at once."""
    monkeypatch.setenv("EDGESTACK_DRAIN_SECONDS", "30")
    state = DrainState()
    handed = []  # (signal, requests still in flight when the previous handler ran)
    frames = []
    previous = signal.signal(signal.SIGTERM, lambda sig, frame: (handed.append((sig, state.in_flight)),
                                                                  frames.append(frame)))

    async def run():
        admission = Admission(single_worker_app(1.5), state)
        state.install()
        work = asyncio.create_task(call(admission))
        await until(lambda: state.in_flight == 1)
        os.kill(os.getpid(), signal.SIGTERM)
        await until(lambda: state.draining)
        refused, probe = await call(admission), await call(admission, "/readyz")
        answered = await work
        await until(lambda: handed)
        return answered, refused, probe

    try:
        with caplog.at_level("WARNING", logger="edgestack.serving"):
            answered, refused, probe = asyncio.run(run())
        assert handed == [(signal.SIGTERM, 0)]  # handed on after the request, not during it
        assert answered[0] == 200 and refused[0] == 503 and probe[0] == 503
        assert (state.accepted, state.completed, state.refused) == (1, 1, 1)
        assert "draining; 1 request(s) in flight" in caplog.text
        assert "1 accepted, 1 completed, 0 still running, 1 refused while draining" in caplog.text
        os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM: straight to the previous handler
        assert [sig for sig, _ in handed] == [signal.SIGTERM, signal.SIGTERM]
        assert all(frame is not None for frame in frames)  # the handler gets the signal's frame, as Python gives it
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_drain_gives_up_after_its_grace_period(monkeypatch):
    monkeypatch.setenv("EDGESTACK_DRAIN_SECONDS", "0.2")
    handed = []

    async def run():
        state = DrainState()
        state.in_flight = 1  # a request that never finishes
        started = time.monotonic()
        await state.finish(lambda: handed.append(time.monotonic() - started))
        return state

    state = asyncio.run(run())
    assert len(handed) == 1 and handed[0] >= 0.2 and state.in_flight == 1


def test_route_load_measures_standing_delay_above_the_floor():
    from serving.admission import RouteLoad

    load = RouteLoad()
    assert load.queueing() == 0.0 and load.floor is None  # nothing measured: no queue assumed
    load.done(0.1)
    assert (load.sojourn, load.floor, load.queueing()) == (0.1, 0.1, 0.0)
    load.done(0.3)  # slower: the mean moves a tenth of the way, the floor a thousandth
    assert load.sojourn == pytest.approx(0.12) and load.floor == pytest.approx(0.1002)
    assert load.queueing() == pytest.approx(0.12 - 0.1002)
    load.done(0.05)  # faster than the floor: the floor drops to it at once
    assert load.floor == 0.05 and load.sojourn == pytest.approx(0.9 * 0.12 + 0.005)
    assert load.queueing() == pytest.approx(load.sojourn - 0.05)
    quick = RouteLoad()
    quick.done(0.2)
    quick.floor = 0.5  # a mean under the floor is no queue, never a negative one
    assert quick.queueing() == 0.0


def test_a_first_burst_is_never_shed_before_anything_was_measured(budget_100ms):
    async def run():
        admission = Admission(single_worker_app(0.05), DrainState())
        return await asyncio.gather(*(call(admission) for _ in range(8))), admission.state

    answers, state = asyncio.run(run())
    assert [status for status, _, _ in answers] == [200] * 8 and state.shed == 0
