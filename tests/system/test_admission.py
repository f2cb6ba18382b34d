"""Admission control: every genir service bounds the calls it works on (--max-inflight, 2 in the
hardened stack) and answers RESOURCE_EXHAUSTED beyond it, for unary and streaming RPCs alike;
the generator also bounds its batching queue (--max-queue). Floods are real concurrent calls;
every call that is not refused must succeed."""

from __future__ import annotations

import asyncio
import collections
import sys

import grpc
import pytest

from genir.v1 import (
    common_pb2,
    generator_pb2,
    generator_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    refiner_pb2,
    refiner_pb2_grpc,
    retriever_pb2,
    retriever_pb2_grpc,
)
from testkit.procs import Proc, free_port, health_status, proc_env, sample_sum, scrape
from tests.system.conftest import MAX_INFLIGHT

pytestmark = pytest.mark.timeout(600)

FLOOD = 12


def _request(name: str, stub_channel, token: str):
    """One slow-enough call per service: its coroutine factory (every service requires the token)."""
    md = (("authorization", f"Bearer {token}"),) if token else None
    if name == "generator":
        stub = generator_pb2_grpc.GeneratorStub(stub_channel)
        return lambda i: stub.Generate(generator_pb2.GenerateRequest(prompt=f"a red cube {i}", seed=i,
                                                                     num_inference_steps=4), timeout=120, metadata=md)
    if name == "refiner":
        stub = refiner_pb2_grpc.RefinerStub(stub_channel)
        return lambda i: stub.Refine(refiner_pb2.RefineRequest(
            caption="a dog on grass", feedback=f"it is brown {i}",
            sampling=common_pb2.Sampling(max_new_tokens=24, seed=i)), timeout=120, metadata=md)
    if name == "retriever":
        stub = retriever_pb2_grpc.RetrieverStub(stub_channel)
        return lambda i: stub.EmbedTexts(retriever_pb2.EmbedTextsRequest(
            texts=[f"a photo of thing {i} number {k}" for k in range(128)]), timeout=120, metadata=md)
    stub = orchestrator_pb2_grpc.OrchestratorStub(stub_channel)

    async def dialog(i):
        call = stub.RunDialog(orchestrator_pb2.RunDialogRequest(
            target_id=str(i % 10), rounds=1, options=orchestrator_pb2.SessionOptions(top_k=3, seed=i)),
            metadata=md, timeout=120)
        return [r async for r in call]

    return dialog


async def _flood(target: str, name: str, token: str, n: int = FLOOD) -> list[tuple[str, str]]:
    async with grpc.aio.insecure_channel(target) as ch:
        await ch.channel_ready()
        make = _request(name, ch, token)

        async def one(i):
            try:
                await make(i)
                return "OK", ""
            except grpc.aio.AioRpcError as e:
                return e.code().name, e.details() or ""

        return await asyncio.gather(*(one(i) for i in range(n)))


@pytest.mark.parametrize("name", ["generator", "refiner", "retriever", "orchestrator"])
def test_flood_beyond_max_inflight_is_refused_and_the_rest_succeed(hardened, name):
    stack = hardened.stack
    before = sample_sum(scrape(stack.metrics_port(name)), "grpc_server_handled_total", grpc_code="RESOURCE_EXHAUSTED")
    triton_before = _triton_requests(stack)
    codes, results = collections.Counter(), []
    for _ in range(3):  # a flood whose calls happen not to overlap proves nothing: send another
        batch = asyncio.run(_flood(stack.target(name), name, hardened.token))
        results += batch
        codes.update(code for code, _ in batch)
        assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, batch
        if codes["RESOURCE_EXHAUSTED"]:
            break
    assert codes["RESOURCE_EXHAUSTED"] > 0, codes
    assert codes["OK"] >= MAX_INFLIGHT, codes  # the first ones in are served
    busy = [msg for code, msg in results if code == "RESOURCE_EXHAUSTED"]
    assert all(f"(limit {MAX_INFLIGHT})" in m and "server busy" in m for m in busy), busy
    after = sample_sum(scrape(stack.metrics_port(name)), "grpc_server_handled_total", grpc_code="RESOURCE_EXHAUSTED")
    assert after - before == codes["RESOURCE_EXHAUSTED"]
    assert health_status(stack.target(name)) == 1
    if name == "refiner":  # refused calls never reach Triton: one Triton request per admitted call
        assert _triton_requests(stack) - triton_before == codes["OK"]


def _triton_requests(stack) -> float:
    # plain text matching: Triton's counters lack the _total suffix prometheus_client's parser expects
    lines = scrape(stack.metrics_port("triton")).splitlines()
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines
               if ln.startswith(("nv_inference_request_success{", "nv_inference_request_failure{")) and 'model="gemma3"' in ln)


def test_open_client_streams_hold_their_slots(hardened):
    """Client-streaming Upsert counts as in flight from its start to its answer: with two streams
    open, a third stream and a unary call are refused; once they finish, calls pass again."""
    stack = hardened.stack
    target = stack.target("retriever")
    md = (("authorization", f"Bearer {hardened.token}"),)

    def upserts_started() -> float:  # counted by the interceptor right before its admission check
        return sample_sum(scrape(stack.metrics_port("retriever")), "grpc_server_started_total", grpc_method="Upsert")

    async def scenario():
        async with grpc.aio.insecure_channel(target) as ch:
            stub = retriever_pb2_grpc.RetrieverStub(ch)
            release = asyncio.Event()

            async def held():
                yield retriever_pb2.UpsertRequest(collection="hard")  # no items: changes nothing
                await release.wait()

            before = await asyncio.to_thread(upserts_started)
            streams = [stub.Upsert(held(), timeout=60, metadata=md) for _ in range(MAX_INFLIGHT)]
            for _ in range(200):  # no other call may reach the retriever until both streams are in
                if await asyncio.to_thread(upserts_started) - before >= MAX_INFLIGHT:
                    break
                await asyncio.sleep(0.05)
            assert not any(s.done() for s in streams), [await s for s in streams if s.done()]
            info = retriever_pb2.CollectionInfoRequest(collection="hard")
            with pytest.raises(grpc.aio.AioRpcError) as unary:
                await stub.CollectionInfo(info, timeout=10, metadata=md)
            with pytest.raises(grpc.aio.AioRpcError) as third:
                await stub.Upsert(iter([retriever_pb2.UpsertRequest(collection="hard")]), timeout=10, metadata=md)
            release.set()
            done = await asyncio.gather(*streams)
            after = await stub.CollectionInfo(info, timeout=10, metadata=md)
            return unary.value, third.value, done, after

    unary, third, done, after = asyncio.run(scenario())
    for refused in (unary, third):
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "server busy" in refused.details(), refused
    assert [d.upserted for d in done] == [0] * MAX_INFLIGHT
    assert after.points == 12


@pytest.fixture(scope="module")
def tight_generator(tiny_models, tmp_path_factory):
    """A generator with no in-flight cap but a batching queue of 1 and batches of 1."""
    root = tmp_path_factory.mktemp("tightgen")
    port, mport = free_port(), free_port()
    cmd = ["-m", "genir.cli", "serve", "generator", "--host", "127.0.0.1", "--port", port, "--metrics-port", mport,
           "--model", tiny_models / "sd3", "--max-inflight", 0, "--max-queue", 1, "--max-batch-size", 1,
           "--max-batch-delay-ms", 0]
    proc = Proc([sys.executable, *cmd], root / "generator.log", env=proc_env()).start()
    try:
        proc.wait_healthy(port, timeout=180)
        yield f"127.0.0.1:{port}"
    finally:
        assert proc.terminate() == 0, proc.log()


@pytest.mark.slow
def test_generator_queue_bound(tight_generator):
    results = asyncio.run(_flood(tight_generator, "generator", "", n=10))
    codes = collections.Counter(code for code, _ in results)
    assert set(codes) == {"OK", "RESOURCE_EXHAUSTED"}, results
    busy = [msg for code, msg in results if code == "RESOURCE_EXHAUSTED"]
    assert all("generator queue is full" in m and "--max-queue 1" in m for m in busy), busy
    assert health_status(tight_generator) == 1
