"""The admission middleware on a real ASGI app (one that serves one request at a time, so a
burst queues in front of it): shedding by standing queueing delay, deadlines, the drain."""

from __future__ import annotations

import asyncio
import json
import os
import re
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
        messages = [r.getMessage() for r in caplog.records]
        assert messages[0] == "SIGTERM: draining; 1 request(s) in flight, waiting up to 30 s"
        drained = re.fullmatch(r"drained in ([\d.]+) s: 1 accepted, 1 completed, 0 still running, "
                               r"1 refused while draining", messages[-1])
        assert drained and float(drained.group(1)) < 60  # a duration, not a clock reading
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


# ------------------------------------------------------------------ each rule's exact answer and counts

def run_calls(admission, *calls):
    async def go():
        return [await call(admission, *c) for c in calls]
    return asyncio.run(go())


def error_of(answer) -> str:
    return json.loads(answer[2])["error"]


def test_counts_and_the_route_load_follow_every_request(budget_100ms):
    state = DrainState()
    admission = Admission(single_worker_app(0.0), state)
    assert state.draining is False and state.shared is None
    answers = run_calls(admission, ("/classify",), ("/classify",), ("/models",), ("/readyz",))
    assert [a[0] for a in answers] == [200] * 4
    assert (state.accepted, state.completed, state.in_flight, state.shed, state.refused) == (4, 4, 0, 0, 0)
    route = state.routes["/classify"]
    assert route.in_flight == 0 and 0 <= route.floor < 5 and 0 <= route.sojourn < 5  # durations, not timestamps
    assert "/readyz" not in state.routes and "/models" in state.routes


def test_the_route_table_stays_bounded():
    state = DrainState()
    for i in range(1001):
        state.route(f"/p{i}")
    assert len(state.routes) == 1001  # up to 1000 kept, the 1001st added
    state.route("/p0")
    assert len(state.routes) == 1001  # a known path adds nothing
    state.route("/new")
    assert list(state.routes) == ["/new"]  # past the bound: cleared, then the new one


def test_other_asgi_traffic_and_the_body_pass_through():
    seen = []

    async def app(scope, receive, send):
        seen.append((scope["type"], await receive()))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    async def go():
        admission = Admission(app, DrainState())
        body = {"type": "http.request", "body": b'{"x": 1}', "more_body": False}

        async def receive():
            return body

        sent = []

        async def send(message):
            sent.append(message)

        await admission({"type": "lifespan"}, receive, send)
        await admission({"type": "http", "method": "POST", "path": "/classify", "headers": []}, receive, send)
        return sent

    sent = asyncio.run(go())
    assert seen == [("lifespan", {"type": "http.request", "body": b'{"x": 1}', "more_body": False}),
                    ("http", {"type": "http.request", "body": b'{"x": 1}', "more_body": False})]
    assert sent[0]["status"] == 200


def test_refusals_while_draining_say_so_and_count():
    state = DrainState()
    admission = Admission(single_worker_app(0.0), state)
    state.draining = True
    work, work2, ready, v2 = run_calls(admission, ("/classify",), ("/generate",), ("/readyz",), ("/v2/health/ready",))
    assert error_of(work) == "the server is shutting down; send the request to another instance"
    assert work[1][b"retry-after"] == b"1" and work[1][b"connection"] == b"close"
    assert error_of(ready) == "the server is shutting down (draining)" and v2[0] == 503
    assert state.refused == 2 and state.accepted == 0


def test_the_in_flight_limit_answer(monkeypatch):
    monkeypatch.setenv("EDGESTACK_MAX_IN_FLIGHT", "2")

    async def go():
        admission = Admission(single_worker_app(0.2), DrainState())
        return await asyncio.gather(*(call(admission, f"/r{i}") for i in range(4))), admission.state

    answers, state = asyncio.run(go())
    refused = [a for a in answers if a[0] == 503]
    assert len(refused) == 2 and state.shed == 2
    assert error_of(refused[0]) == "the server is overloaded: 2 requests in flight, its limit (EDGESTACK_MAX_IN_FLIGHT)"
    assert refused[0][1][b"retry-after"] == b"1"


def standing(state: DrainState, path: str, *, in_flight: int, sojourn: float, floor: float):
    route = state.route(path)
    route.in_flight, route.sojourn, route.floor = in_flight, sojourn, floor
    return route


def test_a_standing_queue_is_judged_only_with_others_in_flight_and_strictly_over_the_budget(monkeypatch):
    monkeypatch.setenv("EDGESTACK_MAX_QUEUE_MS", "250")
    state = DrainState()
    admission = Admission(single_worker_app(0.0), state)
    standing(state, "/a", in_flight=1, sojourn=2.0, floor=0.25)   # one other in flight: never shed
    standing(state, "/b", in_flight=2, sojourn=0.5, floor=0.25)   # waiting 250 ms: not more than 250 ms
    standing(state, "/c", in_flight=2, sojourn=2.0, floor=0.25)   # waiting 1750 ms, two in flight: shed
    a, b, c = run_calls(admission, ("/a",), ("/b",), ("/c",))  # one request per route: each sees its own state
    assert a[0] == 200 and b[0] == 200 and c[0] == 503 and state.shed == 1
    assert error_of(c) == "the server is overloaded: /c requests wait about 1750 ms before they run (2 in flight), " \
                          "more than 250 ms"
    assert c[1][b"retry-after"] == b"1"


def test_a_deadline_tighter_than_the_budget_sheds_sooner_and_says_so(budget_100ms):
    state = DrainState()
    admission = Admission(single_worker_app(0.0), state)
    answers = []
    for headers in ([], [(b"x-request-timeout-ms", b"50")], [(b"x-request-timeout-ms", b"5000")]):
        standing(state, "/x", in_flight=2, sojourn=0.32, floor=0.25)  # waiting 70 ms (each answer moves it)
        answers += run_calls(admission, ("/x", headers))
    plain, tight, loose = answers
    assert plain[0] == 200 and loose[0] == 200  # a deadline longer than the budget changes nothing
    assert tight[0] == 503 and error_of(tight).endswith("(2 in flight), more than its deadline")
    standing(state, "/y", in_flight=2, sojourn=0.25 + 0.04997, floor=0.25)  # 49.97 ms: within a 50 ms deadline
    (inside,) = run_calls(admission, ("/y", [(b"x-request-timeout-ms", b"50")]))
    assert inside[0] == 200


@pytest.mark.parametrize("raw, ms", [(b"0.0001", 0.0001), (b"999999999", 999999999.0), (b" 25 ", 25.0)])
def test_deadline_header_values_taken(raw, ms):
    from serving.admission import timeout_ms

    assert timeout_ms([(b"x-request-timeout-ms", raw)]) == ms
    assert timeout_ms([(b"other", b"1")]) is None and timeout_ms(None) is None


@pytest.mark.parametrize("raw", [b"0", b"-1", b"1e9", b"inf", b"nan", b"soon", b"", "\u00e9t\u00e9".encode("latin-1")])
def test_deadline_header_values_refused_with_what_was_sent(raw):
    from serving.admission import timeout_ms

    with pytest.raises(ValueError) as caught:
        timeout_ms([(b"x-request-timeout-ms", raw)])
    assert str(caught.value) == f"X-Request-Timeout-Ms must be a positive number of milliseconds, got " \
                                f"{raw[:40].decode('latin-1')!r}"


def test_a_long_bad_header_is_quoted_cut_at_40_characters():
    from serving.admission import timeout_ms

    with pytest.raises(ValueError, match=r"got '" + "x" * 40 + r"'$"):
        timeout_ms([(b"x-request-timeout-ms", b"x" * 100)])


def test_a_server_wide_in_flight_count_shared_by_workers(tmp_path, monkeypatch):
    from serving.workers import InFlight

    monkeypatch.setenv("EDGESTACK_MAX_IN_FLIGHT", "2")
    state = DrainState()
    state.shared = InFlight(tmp_path, 1)
    other = InFlight(tmp_path, 2)  # another worker, already holding one request
    assert other.enter(2) is None and state.shared.total == 1

    async def go():
        admission = Admission(single_worker_app(0.2), state)
        answers = await asyncio.gather(*(call(admission, f"/r{i}") for i in range(3)), call(admission, "/livez"))
        return answers

    *work, probe = asyncio.run(go())
    assert sorted(a[0] for a in work) == [200, 503, 503] and probe[0] == 200  # one slot left; probes never count
    refused = next(a for a in work if a[0] == 503)
    assert error_of(refused) == "the server is overloaded: 2 requests in flight, its limit (EDGESTACK_MAX_IN_FLIGHT)"
    assert state.shared.total == 1 and state.shed == 2  # ours left, the other worker's still there
    other.leave()
    assert state.shared.total == 0
