"""Cross-request micro-batching, shared by the generator (images) and the retriever (queries).

Requests wait in one FIFO queue. The scheduler takes the oldest request, adds every queued
request with the same key (for the generator: size, steps, guidance, negative-prompt use) until
the batch holds `max_batch_size` items, and waits at most `max_delay` (counted from the oldest
request's arrival) for more to arrive while the batch is short. One batch call runs at a time,
in a worker thread, so the event loop keeps accepting (and refusing) calls meanwhile; while it
runs, the next batch gathers by itself. A request that expired or whose caller went away while
queued is dropped before the batch function sees it. Beyond `max_queue` waiting requests, `submit`
raises QueueFull at once instead of letting memory grow. The batch function may return an
exception in place of one item's output: only the request owning that item fails, so one bad
query does not sink the others it shared a batch with.

Each service names its own metrics (BatchMetrics), so dashboards keep per-service series.
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

log = logging.getLogger("genir.batching")


@dataclass(frozen=True)
class BatchMetrics:
    """The series one batcher reports; `dropped` is labelled by reason (deadline, cancelled, queue_full)."""
    batch_size: Histogram
    queue_seconds: Histogram
    inference_seconds: Histogram
    items: Counter
    dropped: Counter
    queue_depth: Gauge

    def __post_init__(self):
        for reason in ("deadline", "cancelled", "queue_full"):
            self.dropped.labels(reason)


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
    batch_size: int          # items in the batch call this request ran in


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

    def __init__(self, run_batch: Callable[[list], Sequence], metrics: BatchMetrics, *, max_batch_size: int = 8,
                 max_delay_s: float = 0.01, max_queue: int = 64, name: str = "batcher"):
        if max_batch_size < 1 or max_queue < 1 or max_delay_s < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_delay_s >= 0")
        self.run_batch = run_batch
        self.metrics = metrics
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self._queue: deque[_Job] = deque()
        self._running: list[_Job] = []
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"genir-{name}")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"{self.name}-batcher")

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
                job.future.set_exception(ShuttingDown(f"{self.name} is shutting down; retry on another replica"))
        self._queue.clear()
        await asyncio.to_thread(self._executor.shutdown, True)

    # ------------------------------------------------------------------ requests
    async def submit(self, key: Hashable, items: list, deadline: float | None = None):
        if self._task is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        if len(self._queue) >= self.max_queue:
            self.metrics.dropped.labels("queue_full").inc()
            raise QueueFull(f"{self.name} queue is full: {len(self._queue)} requests waiting "
                            f"(--max-queue {self.max_queue}); retry with backoff")
        job = _Job(key, list(items), deadline, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self.metrics.queue_depth.set(len(self._queue))
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
                self.metrics.dropped.labels("deadline" if job.expired(now) else "cancelled").inc()
            elif job.expired(now):
                self.metrics.dropped.labels("deadline").inc()
                job.future.set_exception(Expired(f"deadline passed after {now - job.enqueued:.3f}s in the queue"))
            else:
                kept.append(job)
        self._queue = kept
        self.metrics.queue_depth.set(len(kept))

    def _select(self) -> list[_Job]:
        """FIFO head plus later jobs with its key, up to max_batch_size items (head always fits)."""
        head = self._queue[0]
        batch, count = [head], head.size
        for job in list(self._queue)[1:]:
            if job.key == head.key and count + job.size <= self.max_batch_size:
                batch.append(job)
                count += job.size
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
            self.metrics.queue_depth.set(len(self._queue))
            await self._run(loop, batch)

    async def _run(self, loop, batch: list[_Job]) -> None:
        items = [it for job in batch for it in job.items]
        self._running = batch
        start = time.monotonic()
        for job in batch:
            self.metrics.queue_seconds.observe(start - job.enqueued)
        try:
            outputs = await loop.run_in_executor(self._executor, self.run_batch, items)
        except Exception as exc:  # noqa: BLE001 - every waiting caller gets the failure
            log.error("%s: batch call failed for %d items", self.name, len(items), exc_info=exc)
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        finally:
            self._running = []
        took = time.monotonic() - start
        self.metrics.inference_seconds.observe(took)
        self.metrics.batch_size.observe(len(items))
        self.metrics.items.inc(len(items))
        offset = 0
        for job in batch:
            out = list(outputs[offset:offset + job.size])
            offset += job.size
            if job.future.done():
                continue
            failed = next((o for o in out if isinstance(o, BaseException)), None)
            if failed is not None:
                job.future.set_exception(failed)
            else:
                job.future.set_result((out, BatchInfo(start - job.enqueued, took, len(items))))


async def submit_for_call(batcher: MicroBatcher, key: Hashable, items: list, time_remaining: float | None):
    """`batcher.submit` for a servicer: the call's deadline travels with the request, and the
    batcher's refusals become the status codes clients retry on."""
    from services.common.errors import DeadlineExceeded, ResourceExhausted, Unavailable

    deadline = time.monotonic() + time_remaining if time_remaining is not None else None
    try:
        return await batcher.submit(key, items, deadline)
    except QueueFull as e:
        raise ResourceExhausted(str(e)) from None
    except Expired as e:
        raise DeadlineExceeded(str(e)) from None
    except ShuttingDown as e:
        raise Unavailable(str(e)) from None
