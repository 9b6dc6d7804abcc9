"""Micro-batching: requests for the same endpoint and options that arrive within a short window run as one
pipeline call, on one worker thread, so the event loop never waits on the model.

    batcher = MicroBatcher(max_batch=8, window_s=0.005, queue_size=64)
    result = await batcher.submit(("classify", (("top_k", 5),)), run, image)   # inside a request handler

`run(items)` takes the batch as a list and returns one result per item, in order. Requests wait in groups
keyed by (endpoint, options); a group runs when it is full (`max_batch`) or its oldest request has waited
`window_s`. While the model is busy, groups keep filling, so a loaded server runs full batches. At most
`queue_size` requests wait (the running batch not counted); one more raises `QueueFull`, which the app turns
into 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

RunBatch = Callable[[list[Any]], Sequence[Any]]


class QueueFull(Exception):
    """The server already holds `queue_size` waiting requests; try again after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the server is busy; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class _Group:
    """Waiting requests of one (endpoint, options) key: their items and futures, in arrival order."""

    run: RunBatch
    since: float
    items: list[Any] = field(default_factory=list)
    futures: list[asyncio.Future] = field(default_factory=list)


@dataclass
class BatchStats:
    """What the batcher has done: model calls, the requests they served, and refusals."""

    calls: int = 0
    requests: int = 0
    rejected: int = 0
    largest: int = 0


class MicroBatcher:
    """Gathers concurrent requests into batches and runs them one batch at a time on a worker thread.

    Create it inside the running event loop (the app's lifespan); `close` stops the runner and the thread.
    """

    def __init__(self, max_batch: int = 8, window_s: float = 0.005, queue_size: int = 64) -> None:
        if max_batch < 1 or window_s < 0 or queue_size < 1:
            raise ValueError(f"need max_batch ≥ 1, window ≥ 0, queue_size ≥ 1 (got {max_batch}, {window_s}, "
                             f"{queue_size})")
        self.max_batch, self.window_s, self.queue_size = max_batch, window_s, queue_size
        self.stats = BatchStats()
        self._groups: dict[Hashable, _Group] = {}
        self._waiting = 0
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vitkit-model")
        self._recent_batch_s = 1.0  # a moving average of how long one batch takes, for Retry-After
        self._runner = asyncio.get_running_loop().create_task(self._run_forever())

    @property
    def waiting(self) -> int:
        """Requests queued and not yet running."""
        return self._waiting

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the queue's batches at the recent pace, at least 1."""
        return max(1, round(self._waiting / self.max_batch * self._recent_batch_s))

    async def submit(self, key: Hashable, run: RunBatch, item: Any) -> Any:
        """Queue `item` under `key` and wait for (its result ``run(batch)[i]``, the batch's size).

        Raises:
            QueueFull: `queue_size` requests already wait.
            Exception: whatever `run` raised for the batch.
        """
        if self._waiting >= self.queue_size:
            self.stats.rejected += 1
            raise QueueFull(self.retry_after())
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(run, time.monotonic())
        future = asyncio.get_running_loop().create_future()
        group.items.append(item)
        group.futures.append(future)
        self._waiting += 1
        self._arrived.set()
        return await future

    async def close(self) -> None:
        """Stop: requests still waiting are refused (`QueueFull`), the batch running finishes."""
        for group in self._groups.values():
            for future in group.futures:
                if not future.done():
                    future.set_exception(QueueFull(1))
        self._groups.clear()
        self._runner.cancel()
        try:
            await self._runner
        except asyncio.CancelledError:
            pass
        self._executor.shutdown(wait=True)

    async def _next_key(self) -> Hashable:
        """The key of the group to run next: the oldest one that is full or has waited the window."""
        while True:
            self._arrived.clear()
            if self._groups:
                key, group = min(self._groups.items(), key=lambda kv: kv[1].since)
                due = group.since + self.window_s - time.monotonic()
                if due <= 0 or len(group.items) >= self.max_batch:
                    return key
                full = [k for k, g in self._groups.items() if len(g.items) >= self.max_batch]
                if full:
                    return full[0]
                try:
                    await asyncio.wait_for(self._arrived.wait(), due)
                except TimeoutError:
                    pass
            else:
                await self._arrived.wait()

    def _take(self, key: Hashable) -> tuple[RunBatch, list[Any], list[asyncio.Future]]:
        """Up to `max_batch` requests of a group, leaving the rest (with a fresh window) for the next call."""
        group = self._groups[key]
        n = self.max_batch
        items, futures = group.items[:n], group.futures[:n]
        del group.items[:n], group.futures[:n]
        if group.items:
            group.since = time.monotonic()
        else:
            del self._groups[key]
        self._waiting -= len(items)
        live = [i for i, f in enumerate(futures) if not f.done()]  # a disconnected client cancels its future
        return group.run, [items[i] for i in live], [futures[i] for i in live]

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            run, items, futures = self._take(await self._next_key())
            if not items:
                continue
            start = time.monotonic()
            try:
                results = await loop.run_in_executor(self._executor, _run_checked, run, items)
            except Exception as e:  # the batch failed: every request in it gets the error
                for future in futures:
                    if not future.done():
                        future.set_exception(e)
                continue
            finally:
                self._recent_batch_s = 0.8 * self._recent_batch_s + 0.2 * (time.monotonic() - start)
            self.stats.calls += 1
            self.stats.requests += len(items)
            self.stats.largest = max(self.stats.largest, len(items))
            for future, result in zip(futures, results, strict=True):
                if not future.done():
                    future.set_result((result, len(items)))


def _run_checked(run: RunBatch, items: list[Any]) -> list[Any]:
    results = list(run(items))
    if len(results) != len(items):
        raise RuntimeError(f"a batch of {len(items)} gave {len(results)} results")
    return results
