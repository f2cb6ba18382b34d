"""The micro-batcher: grouping, limits, deadlines and cancellation.

Most tests drive it with a recording batch function (the pipeline's role is only to turn a
list of items into a list of outputs); one runs the real tiny pipeline behind it.
"""

import asyncio
import threading
import time

import pytest

from services.common.batching import Expired, MicroBatcher, QueueFull, ShuttingDown
from services.common.images import encode_image
from services.generator.batching import DROPPED, IMAGES, METRICS
from services.generator.pipeline import Item


class Recorder:
    """Batch function that records each call; `gate` (when set) holds calls until released."""

    def __init__(self, gate: threading.Event | None = None, fail_on: str | None = None):
        self.calls: list[list[str]] = []
        self.gate = gate
        self.fail_on = fail_on
        self.started = threading.Event()

    def __call__(self, items):
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(30), "test gate never released"
        self.calls.append(list(items))
        if self.fail_on in items:
            raise RuntimeError("boom")
        return [f"out:{x}" for x in items]


def run(coro):
    return asyncio.run(coro)


async def started(fn: Recorder):
    while not fn.started.is_set():
        await asyncio.sleep(0.005)


def test_compatible_requests_share_one_call_and_keep_their_outputs():
    rec = Recorder()

    async def main():
        b = MicroBatcher(rec, METRICS, max_batch_size=8, max_delay_s=0.2, max_queue=16)
        b.start()
        jobs = [b.submit("k", [f"r{i}a", f"r{i}b"] if i == 2 else [f"r{i}"]) for i in range(5)]
        results = await asyncio.gather(*jobs)
        await b.close()
        return results

    results = run(main())
    assert rec.calls == [["r0", "r1", "r2a", "r2b", "r3", "r4"]]
    assert [r[0] for r in results] == [["out:r0"], ["out:r1"], ["out:r2a", "out:r2b"], ["out:r3"], ["out:r4"]]
    assert {r[1].batch_size for r in results} == {6}


def test_incompatible_keys_never_mix_and_batches_respect_the_size_cap():
    rec = Recorder()

    async def main():
        b = MicroBatcher(rec, METRICS, max_batch_size=4, max_delay_s=0.2, max_queue=32)
        b.start()
        jobs = [b.submit("A" if i % 3 else "B", [f"{'A' if i % 3 else 'B'}{i}"]) for i in range(12)]
        await asyncio.gather(*jobs)
        await b.close()

    run(main())
    for call in rec.calls:
        assert len(call) <= 4 and len({x[0] for x in call}) == 1
    assert sorted(x for c in rec.calls for x in c) == sorted(f"{'A' if i % 3 else 'B'}{i}" for i in range(12))
    assert [len(c) for c in rec.calls if c[0][0] == "A"] == [4, 4]


def test_lone_request_runs_without_waiting_for_a_full_batch():
    rec = Recorder()

    async def main():
        b = MicroBatcher(rec, METRICS, max_batch_size=8, max_delay_s=0.01, max_queue=4)
        b.start()
        out, info = await asyncio.wait_for(b.submit("k", ["solo"]), 10)
        await b.close()
        return out, info

    out, info = run(main())
    assert out == ["out:solo"] and info.batch_size == 1 and rec.calls == [["solo"]]


def test_queue_beyond_max_queue_is_refused_and_the_rest_complete():
    gate = threading.Event()
    rec = Recorder(gate)

    async def main():
        b = MicroBatcher(rec, METRICS, max_batch_size=1, max_delay_s=0.0, max_queue=3)
        b.start()
        first = asyncio.ensure_future(b.submit("k", ["busy"]))
        await started(rec)  # the worker holds "busy"; the queue is empty again
        waiting = [asyncio.ensure_future(b.submit("k", [f"q{i}"])) for i in range(3)]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull, match="max-queue 3"):
            await b.submit("k", ["overflow"])
        gate.set()
        results = await asyncio.gather(first, *waiting)
        await b.close()
        return results

    results = run(main())
    assert [r[0][0] for r in results] == ["out:busy", "out:q0", "out:q1", "out:q2"]
    assert all("overflow" not in c for c in rec.calls)


def test_request_whose_deadline_passes_in_the_queue_is_not_computed():
    gate = threading.Event()
    rec = Recorder(gate)
    before_images = IMAGES._value.get()
    before_dropped = DROPPED.labels("deadline")._value.get()

    async def main():
        b = MicroBatcher(rec, METRICS, max_batch_size=1, max_delay_s=0.0, max_queue=8)
        b.start()
        first = asyncio.ensure_future(b.submit("k", ["busy"]))
        await started(rec)
        late = asyncio.ensure_future(b.submit("k", ["late"], deadline=time.monotonic() + 0.05))
        ok = asyncio.ensure_future(b.submit("k", ["ok"], deadline=time.monotonic() + 30))
        await asyncio.sleep(0.1)
        gate.set()
        with pytest.raises(Expired, match="deadline"):
            await late
        await asyncio.gather(first, ok)
        await b.close()

    run(main())
    assert [c for c in rec.calls] == [["busy"], ["ok"]]
    assert IMAGES._value.get() - before_images == 2
    assert DROPPED.labels("deadline")._value.get() - before_dropped == 1


def test_cancelled_caller_is_dropped_before_inference():
    gate = threading.Event()
    rec = Recorder(gate)

    async def main():
        b = MicroBatcher(rec, METRICS, max_batch_size=1, max_delay_s=0.0, max_queue=8)
        b.start()
        first = asyncio.ensure_future(b.submit("k", ["busy"]))
        await started(rec)
        gone = asyncio.ensure_future(b.submit("k", ["gone"]))
        await asyncio.sleep(0.01)
        gone.cancel()
        gate.set()
        await first
        out, _ = await b.submit("k", ["after"])
        await b.close()
        return out

    assert run(main()) == ["out:after"]
    assert rec.calls == [["busy"], ["after"]]


def test_pipeline_failure_reaches_every_caller_of_the_batch_and_serving_continues():
    rec = Recorder(fail_on="bad")

    async def main():
        b = MicroBatcher(rec, METRICS, max_batch_size=4, max_delay_s=0.1, max_queue=8)
        b.start()
        res = await asyncio.gather(b.submit("k", ["bad"]), b.submit("k", ["good"]), return_exceptions=True)
        again = await b.submit("k", ["next"])
        await b.close()
        return res, again

    res, again = run(main())
    assert all(isinstance(r, RuntimeError) for r in res)
    assert again[0] == ["out:next"]


def test_real_pipeline_concurrent_requests_batch_and_match_single_runs(sd3):
    items = [Item(f"a painting of a boat, variant {i}", 500 + i, 32, 32, 2, 5.0) for i in range(6)]

    async def main():
        b = MicroBatcher(sd3.generate_batch, METRICS, max_batch_size=8, max_delay_s=0.5, max_queue=16)
        b.start()
        res = await asyncio.gather(*(b.submit(it.key(), [it]) for it in items))
        await b.close()
        return res

    res = run(main())
    assert {info.batch_size for _, info in res} == {6}
    alone = [sd3.generate_batch([it])[0] for it in items]
    assert [encode_image(r[0][0]) for r in res] == [encode_image(a) for a in alone]


def test_close_fails_waiting_requests_with_shutting_down():
    gate = threading.Event()
    rec = Recorder(gate)

    async def main():
        b = MicroBatcher(rec, METRICS, max_batch_size=1, max_delay_s=0.0, max_queue=8)
        b.start()
        first = asyncio.ensure_future(b.submit("k", ["busy"]))
        await started(rec)
        waiting = asyncio.ensure_future(b.submit("k", ["queued"]))
        await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(b.close())
        await asyncio.sleep(0.01)
        gate.set()
        await closing
        for fut in (first, waiting):  # the running batch's caller and the queued one
            with pytest.raises(ShuttingDown):
                await fut

    run(main())
    assert rec.calls == [["busy"]]


def test_an_exception_returned_for_one_item_fails_only_its_request():
    """The retriever's batch function returns a per-query error in place of that query's output."""

    def batch_fn(items):
        return [ValueError(f"bad {x}") if x == "bad" else f"out:{x}" for x in items]

    async def main():
        b = MicroBatcher(batch_fn, METRICS, max_batch_size=8, max_delay_s=0.2, max_queue=8)
        b.start()
        res = await asyncio.gather(*(b.submit("k", [x]) for x in ("a", "bad", "c")), return_exceptions=True)
        await b.close()
        return res

    ok_a, bad, ok_c = run(main())
    assert ok_a[0] == ["out:a"] and ok_c[0] == ["out:c"] and ok_a[1].batch_size == 3
    assert isinstance(bad, ValueError) and str(bad) == "bad bad"
