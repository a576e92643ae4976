"""Edges of the admission middleware that mutation testing (scripts/mutation.py) found unchecked:
every shed counted, the budget quoted in the answer, the exact headers of each 503, lifespan
messages passed through both ways, and a queueing budget of 0 (off)."""

from __future__ import annotations

import asyncio

import pytest

from serving.admission import Admission, DrainState
from tests.unit.test_admission import call, error_of, run_calls, single_worker_app, standing


def test_each_shed_is_counted_and_the_budget_is_quoted(monkeypatch):
    monkeypatch.setenv("EDGESTACK_MAX_QUEUE_MS", "2000")
    state = DrainState()
    admission = Admission(single_worker_app(0.0), state)
    answers = []
    for _ in range(2):
        standing(state, "/c", in_flight=2, sojourn=5.0, floor=0.5)  # waiting 4500 ms
        answers += run_calls(admission, ("/c",))
    assert [a[0] for a in answers] == [503, 503] and state.shed == 2
    assert error_of(answers[0]).endswith("(2 in flight), more than 2000 ms")
    assert sorted(answers[0][1]) == [b"content-length", b"content-type", b"retry-after"]


def test_the_in_flight_and_drain_refusals_carry_exactly_their_headers(monkeypatch):
    monkeypatch.setenv("EDGESTACK_MAX_IN_FLIGHT", "1")

    async def go():
        admission = Admission(single_worker_app(0.2), DrainState())
        return await asyncio.gather(*(call(admission, f"/r{i}") for i in range(2))), admission

    answers, admission = asyncio.run(go())
    (refused,) = [a for a in answers if a[0] == 503]
    assert sorted(refused[1]) == [b"content-length", b"content-type", b"retry-after"]
    admission.state.draining = True
    (drain,) = run_calls(admission, ("/classify",))
    assert sorted(drain[1]) == [b"connection", b"content-length", b"content-type", b"retry-after"]


def test_lifespan_messages_pass_through_both_ways():
    sent = []

    async def app(scope, receive, send):
        await receive()
        await send({"type": "lifespan.startup.complete"})

    async def go():
        async def receive():
            return {"type": "lifespan.startup"}

        async def send(message):
            sent.append(message)

        await Admission(app, DrainState())({"type": "lifespan"}, receive, send)

    asyncio.run(go())
    assert sent == [{"type": "lifespan.startup.complete"}]


def test_a_queueing_budget_of_0_turns_shedding_off(monkeypatch):
    monkeypatch.setenv("EDGESTACK_MAX_QUEUE_MS", "0")
    state = DrainState()
    admission = Admission(single_worker_app(0.0), state)
    assert admission.budget == float("inf")
    standing(state, "/c", in_flight=5, sojourn=60.0, floor=0.01)
    assert run_calls(admission, ("/c",))[0][0] == 200 and state.shed == 0
