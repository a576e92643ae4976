"""The admission middleware on a real ASGI app (one that serves one request at a time, so a
burst queues in front of it): shedding by standing queueing delay, deadlines, the drain."""

from __future__ import annotations

import asyncio
import json

import pytest

from serving.admission import Admission, DrainState


def single_worker_app(seconds: float):
    lock = asyncio.Lock()

    async def app(scope, receive, send):
        async with lock:  # one at a time: concurrent requests wait here, as behind a busy model or loop
            await asyncio.sleep(seconds)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
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


@pytest.fixture
def budget_100ms(monkeypatch):
    monkeypatch.setenv("EDGESTACK_MAX_QUEUE_MS", "100")


def test_a_standing_queue_over_the_budget_sheds_new_requests_with_503(budget_100ms):
    async def run():
        admission = Admission(single_worker_app(0.02), DrainState())
        assert (await call(admission))[0] == 200  # alone: 20 ms, the route's floor
        burst = [asyncio.create_task(call(admission)) for _ in range(30)]  # the last waits 600 ms
        await asyncio.sleep(0.3)  # the first ones are answered after queueing: the queue is standing
        late = await call(admission)
        results = await asyncio.gather(*burst)
        return late, results, admission.state

    late, results, state = asyncio.run(run())
    assert all(status == 200 for status, _, _ in results)  # admitted before the queue stood: all served
    status, headers, body = late
    assert status == 503 and headers[b"retry-after"] == b"1"
    assert "overloaded" in json.loads(body)["error"] and state.shed == 1


def test_a_lone_request_is_never_shed_and_health_never(budget_100ms):
    async def run():
        admission = Admission(single_worker_app(0.3), DrainState())  # slower than the budget, alone
        first = await call(admission)
        second = await call(admission)
        return first, second

    first, second = asyncio.run(run())
    assert first[0] == second[0] == 200


def test_the_deadline_header_is_checked_and_set(budget_100ms):
    async def run():
        admission = Admission(single_worker_app(0.0), DrainState())
        return (await call(admission, headers=[(b"x-request-timeout-ms", b"-5")]),
                await call(admission, headers=[(b"x-request-timeout-ms", b"250")]))

    bad, good = asyncio.run(run())
    assert bad[0] == 400 and b"X-Request-Timeout-Ms" in bad[2]
    assert good[0] == 200


def test_while_draining_new_work_and_readiness_get_503_and_liveness_stays():
    async def run():
        state = DrainState()
        admission = Admission(single_worker_app(0.0), state)
        state.draining = True
        return [await call(admission, path) for path in ("/classify", "/readyz", "/v2/health/ready", "/livez")], state

    (work, ready, v2_ready, live), state = asyncio.run(run())
    assert work[0] == ready[0] == v2_ready[0] == 503 and work[1][b"connection"] == b"close"
    assert live[0] == 200 and state.refused == 1


def test_more_requests_in_flight_than_the_limit_get_503(monkeypatch):
    monkeypatch.setenv("EDGESTACK_MAX_IN_FLIGHT", "4")

    async def run():
        admission = Admission(single_worker_app(0.05), DrainState())
        return await asyncio.gather(*(call(admission, f"/route-{i}") for i in range(6)))

    statuses = sorted(status for status, _, _ in asyncio.run(run()))
    assert statuses == [200] * 4 + [503] * 2
