"""The adaptive batcher with a real ORT session of the digits model: who shares a batch, and when."""

import asyncio
import threading

import numpy as np
import pytest

from edgestack.runtime import open_session
from serving.batching import MicroBatcher
from training.data import images


@pytest.fixture(scope="module")
def model(digits_artifact):
    """(run, calls): the int8 digits session run on a batch, and the batch sizes it saw."""
    session = open_session(digits_artifact.variant_path("int8"), device="cpu", threads=1)
    name = session.input_names[0]
    calls: list[int] = []

    def run(rows):
        calls.append(len(rows))
        return session.run({name: rows})

    return run, calls


@pytest.fixture(scope="module")
def rows():
    x = images.digits().test.images[:20].astype(np.float32) / 255.0
    return x[:, None, :, :]


def test_lone_request_runs_alone_and_gets_its_own_rows(model, rows):
    run, calls = model
    calls.clear()

    async def one():
        return await MicroBatcher(run).submit(rows[:3])

    (logits,) = asyncio.run(one())
    assert calls == [3]
    np.testing.assert_allclose(logits, run(rows[:3])[0], rtol=1e-5, atol=1e-5)


def test_greedy_batching_merges_requests_that_queue_up_together(model, rows):
    run, calls = model
    calls.clear()
    batcher = MicroBatcher(run, max_wait_ms=0)

    async def burst():
        return await asyncio.gather(*(batcher.submit(rows[i:i + 1]) for i in range(10)))

    answers = asyncio.run(burst())
    assert sum(calls) == 10 and len(calls) < 10  # fewer ORT calls than requests
    expected = run(rows[:10])[0]
    for i, (logits,) in enumerate(answers):  # every request gets exactly its own row back
        np.testing.assert_allclose(logits[0], expected[i], rtol=1e-4, atol=1e-4)


def test_max_batch_caps_the_rows_of_one_call(model, rows):
    run, calls = model
    calls.clear()
    batcher = MicroBatcher(run, max_batch=4)

    async def burst():
        await asyncio.gather(*(batcher.submit(rows[i:i + 1]) for i in range(12)))

    asyncio.run(burst())
    assert sum(calls) == 12 and max(calls) <= 4


def test_a_window_lets_a_later_request_join_the_batch(model, rows):
    run, calls = model
    calls.clear()
    batcher = MicroBatcher(run, max_wait_ms=2000)  # generous: the second request comes 20 ms later

    async def staggered():
        first = asyncio.ensure_future(batcher.submit(rows[:1]))
        await asyncio.sleep(0.02)
        await asyncio.gather(first, batcher.submit(rows[1:2]))

    asyncio.run(staggered())
    assert calls == [2]


def test_a_failing_batch_fails_its_requests_and_the_batcher_keeps_serving(model, rows):
    run, calls = model
    batcher = MicroBatcher(run)

    async def scenario():
        with pytest.raises(Exception, match="INVALID_ARGUMENT|Got invalid dimensions|rank"):
            await batcher.submit(rows[:2, 0])  # rank 3, the model takes rank 4
        (logits,) = await batcher.submit(rows[:2])
        return logits

    assert asyncio.run(scenario()).shape == (2, 10)


def test_batches_expected_to_be_quick_skip_the_worker_thread(model, rows):
    run, _ = model
    threads: list[str] = []

    def traced(batch):
        threads.append(threading.current_thread().name)
        return run(batch)

    batcher = MicroBatcher(traced, inline_ms=0.25, name="digits")

    async def scenario():
        await batcher.submit(rows[:1])  # no estimate yet: the worker thread
        batcher.row_seconds = 1e-5  # as if rows took 10 us: one row is due well under 0.25 ms
        await batcher.submit(rows[:1])
        batcher.row_seconds = 10.0  # as if rows took 10 s: 20 rows are the worker thread's again
        await batcher.submit(rows[:20])
        return threading.current_thread().name

    loop_thread = asyncio.run(scenario())
    assert threads[0].startswith("ort-digits") and threads[2].startswith("ort-digits")
    assert threads[1] == loop_thread
    # the estimate follows real runs: 20 real rows took far less than 200 s, however busy the machine
    assert batcher.row_seconds is not None and batcher.row_seconds < 10.0


def test_a_request_whose_deadline_passes_while_queued_is_refused_and_the_rest_served(model, rows):
    """serving/batching.py: a request queued behind a running batch, with a deadline that passes
    before the batch ends, is refused with Overloaded (the server's 503) when its turn comes; the
    requests without a deadline behind it are served. The running batch is held until the
    deadline has passed: no timing is assumed."""
    from serving.batching import Overloaded, deadline

    run, _ = model
    release = threading.Event()

    def held(batch):
        release.wait(30)
        return run(batch)

    batcher = MicroBatcher(held, max_batch=4)

    async def scenario():
        first = asyncio.ensure_future(batcher.submit(rows[:4]))  # a full batch: runs alone, held
        while batcher.running_rows == 0:
            await asyncio.sleep(0.005)
        with deadline(0.05):  # X-Request-Timeout-Ms: 50 as the server sets it
            late = asyncio.ensure_future(batcher.submit(rows[4:5]))
        patient = asyncio.ensure_future(batcher.submit(rows[5:6]))
        await asyncio.sleep(0)
        assert batcher.queued_rows == 2  # both admitted: nothing measured yet, so no wait was expected
        await asyncio.sleep(0.2)  # the deadline passes while they queue
        release.set()
        return await asyncio.gather(first, late, patient, return_exceptions=True)

    first, late, patient = asyncio.run(scenario())
    assert isinstance(late, Overloaded) and "deadline passed after" in str(late) and "in the queue" in str(late)
    np.testing.assert_allclose(first[0], run(rows[:4])[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(patient[0], run(rows[5:6])[0], rtol=1e-5, atol=1e-5)
    assert batcher.stats.shed.count == 1
