"""Cross-request micro-batching for the generator.

Requests wait in one FIFO queue. The scheduler takes the oldest request, adds every queued
request with the same key (size, steps, guidance, negative-prompt use) until the batch holds
`max_batch_size` images, and waits at most `max_delay` (counted from the oldest request's
arrival) for more to arrive while the batch is short. One pipeline call runs at a time, in a
worker thread, so the event loop keeps accepting (and refusing) calls meanwhile; while it runs,
the next batch gathers by itself. A request that expired or whose caller went away while
queued is dropped before the pipeline sees it. Beyond `max_queue` waiting requests, `submit`
raises QueueFull at once instead of letting memory grow.

No gRPC here: the servicer maps QueueFull / Expired / ShuttingDown to status codes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger("genir.generator.batching")

BATCH_SIZE = Histogram("genir_generator_batch_size", "Images computed together in one pipeline call.",
                       buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64))
QUEUE_SECONDS = Histogram("genir_generator_queue_seconds", "Time a request waited before its batch started.",
                          buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
INFERENCE_SECONDS = Histogram("genir_generator_inference_seconds", "Wall time of one pipeline call (a batch).",
                              buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300))
IMAGES = Counter("genir_generator_images_total", "Images computed by the pipeline.")
DROPPED = Counter("genir_generator_dropped_total", "Requests dropped before inference.", ["reason"])
QUEUE_DEPTH = Gauge("genir_generator_queue_depth", "Requests waiting for a batch.")
for _reason in ("deadline", "cancelled", "queue_full"):
    DROPPED.labels(_reason)


class QueueFull(Exception):
    """More requests are waiting than the queue admits."""


class ShuttingDown(Exception):
    """The batcher closed before the request ran."""


class Expired(Exception):
    """The request's deadline passed while it waited; it was not computed."""


@dataclass
class BatchInfo:
    queue_seconds: float
    inference_seconds: float
    batch_size: int          # images in the pipeline call this request ran in


@dataclass
class _Job:
    key: Hashable
    items: list
    deadline: float | None   # time.monotonic() value, None = no deadline
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def size(self) -> int:
        return len(self.items)

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline


class MicroBatcher:
    """`await submit(key, items, deadline)` -> (outputs for `items`, BatchInfo)."""

    def __init__(self, run_batch: Callable[[list], Sequence], *, max_batch_size: int = 8,
                 max_delay_s: float = 0.01, max_queue: int = 64):
        if max_batch_size < 1 or max_queue < 1 or max_delay_s < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_delay_s >= 0")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self._queue: deque[_Job] = deque()
        self._running: list[_Job] = []
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genir-pipeline")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="generator-batcher")

    async def close(self) -> None:
        pending = list(self._queue) + list(self._running)  # before cancelling clears _running
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for job in pending:
            if not job.future.done():
                job.future.set_exception(ShuttingDown("generator is shutting down; retry on another replica"))
        self._queue.clear()
        await asyncio.to_thread(self._executor.shutdown, True)

    @property
    def depth(self) -> int:
        return len(self._queue)

    # ------------------------------------------------------------------ requests
    async def submit(self, key: Hashable, items: list, deadline: float | None = None):
        if self._task is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        if len(self._queue) >= self.max_queue:
            DROPPED.labels("queue_full").inc()
            raise QueueFull(f"generator queue is full: {len(self._queue)} requests waiting "
                            f"(--max-queue {self.max_queue}); retry with backoff")
        job = _Job(key, list(items), deadline, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        QUEUE_DEPTH.set(len(self._queue))
        self._arrived.set()
        # Cancelling the caller cancels the future; the scheduler then skips the job.
        return await job.future

    # ------------------------------------------------------------------ scheduling
    def _prune(self) -> None:
        """Drop queued jobs whose caller left or whose deadline passed."""
        now = time.monotonic()
        kept = deque()
        for job in self._queue:
            if job.future.done():  # the caller went away (gRPC cancels the handler at its deadline too)
                DROPPED.labels("deadline" if job.expired(now) else "cancelled").inc()
            elif job.expired(now):
                DROPPED.labels("deadline").inc()
                job.future.set_exception(Expired(f"deadline passed after {now - job.enqueued:.3f}s in the queue"))
            else:
                kept.append(job)
        self._queue = kept
        QUEUE_DEPTH.set(len(kept))

    def _select(self) -> list[_Job]:
        """FIFO head plus later jobs with its key, up to max_batch_size images (head always fits)."""
        head = self._queue[0]
        batch, images = [head], head.size
        for job in list(self._queue)[1:]:
            if job.key == head.key and images + job.size <= self.max_batch_size:
                batch.append(job)
                images += job.size
        return batch

    async def _wait_for_more(self, head: _Job) -> None:
        """Wait until the head's batch is full or its delay budget is spent."""
        while True:
            batch = self._select()
            if sum(j.size for j in batch) >= self.max_batch_size:
                return
            remaining = head.enqueued + self.max_delay_s - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._wait_for_more(self._queue[0])
            self._prune()
            if not self._queue:
                continue
            batch = self._select()
            chosen = {id(j) for j in batch}
            self._queue = deque(j for j in self._queue if id(j) not in chosen)
            QUEUE_DEPTH.set(len(self._queue))
            await self._run(loop, batch)

    async def _run(self, loop, batch: list[_Job]) -> None:
        items = [it for job in batch for it in job.items]
        self._running = batch
        start = time.monotonic()
        for job in batch:
            QUEUE_SECONDS.observe(start - job.enqueued)
        try:
            outputs = await loop.run_in_executor(self._executor, self.run_batch, items)
        except Exception as exc:  # noqa: BLE001 - every waiting caller gets the failure
            log.error("pipeline call failed for a batch of %d images", len(items), exc_info=exc)
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        finally:
            self._running = []
        took = time.monotonic() - start
        INFERENCE_SECONDS.observe(took)
        BATCH_SIZE.observe(len(items))
        IMAGES.inc(len(items))
        offset = 0
        for job in batch:
            out = list(outputs[offset:offset + job.size])
            offset += job.size
            if not job.future.done():
                job.future.set_result((out, BatchInfo(start - job.enqueued, took, len(items))))
