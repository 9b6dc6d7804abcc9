"""`vitkit.serve.batching.MicroBatcher` on its own: batches by key and size, in order, errors to every
caller, a bounded queue."""

from __future__ import annotations

import asyncio
import threading

import pytest

from vitkit.serve.batching import MicroBatcher, QueueFull


def run(coro):
    return asyncio.run(coro)


def test_requests_split_into_batches_of_at_most_max_batch_in_order():
    calls = []

    def double(items):
        calls.append(list(items))
        return [2 * x for x in items]

    async def go():
        batcher = MicroBatcher(max_batch=3, window_s=0.05, queue_size=16)
        try:
            return await asyncio.gather(*(batcher.submit("k", double, i) for i in range(7)))
        finally:
            await batcher.close()

    results = run(go())
    assert [r for r, _ in results] == [2 * i for i in range(7)]
    assert calls == [[0, 1, 2], [3, 4, 5], [6]]
    assert [size for _, size in results] == [3, 3, 3, 3, 3, 3, 1]


def test_keys_are_never_mixed_in_one_batch():
    calls = []

    def record(items):
        calls.append(list(items))
        return items

    async def go():
        batcher = MicroBatcher(max_batch=8, window_s=0.05, queue_size=16)
        try:
            await asyncio.gather(*(batcher.submit(i % 2, record, i) for i in range(6)))
        finally:
            await batcher.close()

    run(go())
    assert sorted(calls) == [[0, 2, 4], [1, 3, 5]]


def test_a_failing_batch_fails_each_of_its_requests_and_the_batcher_goes_on():
    def fail(items):
        raise RuntimeError("boom")

    async def go():
        batcher = MicroBatcher(max_batch=4, window_s=0.01, queue_size=16)
        try:
            failed = await asyncio.gather(*(batcher.submit("bad", fail, i) for i in range(3)),
                                          return_exceptions=True)
            ok = await batcher.submit("good", lambda items: items, 5)
            return failed, ok
        finally:
            await batcher.close()

    failed, ok = run(go())
    assert all(isinstance(e, RuntimeError) for e in failed) and ok == (5, 1)


def test_the_queue_is_bounded_while_the_model_is_busy():
    busy, release = threading.Event(), threading.Event()

    def block(items):
        busy.set()
        release.wait(5)
        return items

    async def go():
        batcher = MicroBatcher(max_batch=1, window_s=0.0, queue_size=2)
        try:
            running = asyncio.ensure_future(batcher.submit("k", block, 0))
            while not busy.is_set():
                await asyncio.sleep(0.005)
            waiting = [asyncio.ensure_future(batcher.submit("k", block, i)) for i in (1, 2)]
            await asyncio.sleep(0.01)
            with pytest.raises(QueueFull) as refused:
                await batcher.submit("k", block, 3)
            release.set()
            return await asyncio.gather(running, *waiting), refused.value, batcher.stats
        finally:
            await batcher.close()

    results, refused, stats = run(go())
    assert [r for r, _ in results] == [0, 1, 2] and refused.retry_after >= 1
    assert stats.rejected == 1 and stats.calls == 3


def test_bad_settings_are_refused():
    async def go():
        with pytest.raises(ValueError, match="queue_size ≥ 1"):
            MicroBatcher(queue_size=0)

    run(go())


def test_closing_refuses_the_requests_still_waiting():
    async def go():
        batcher = MicroBatcher(max_batch=2, window_s=10.0, queue_size=4)  # one request waits 10 s
        waiting = asyncio.ensure_future(batcher.submit("k", lambda items: items, 1))
        await asyncio.sleep(0.01)
        await batcher.close()
        return await asyncio.gather(waiting, return_exceptions=True)

    (refused,) = run(go())
    assert isinstance(refused, QueueFull)
