"""Orchestrator parts without model servers: backend retries against a real in-process gRPC server
(scripted status codes), the SQLite session store, seeds and mode validation."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest

from genir.v1 import common_pb2, generator_pb2, generator_pb2_grpc, orchestrator_pb2
from orchestrator.clients import ClientConfig, ServiceClient
from orchestrator.dialog import derive_seed
from orchestrator.modes import mode_name
from orchestrator.requests import resolve_options
from orchestrator.sessions import SessionStore
from services.common import errors
from services.common.retry import RetryPolicy
from testkit.procs import free_port


class Scripted(generator_pb2_grpc.GeneratorServicer):
    """Answers Generate with the scripted status codes in order, then OK."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = 0

    async def Generate(self, request, context):
        self.calls += 1
        if self.script:
            await context.abort(self.script.pop(0), "scripted failure")
        return generator_pb2.GenerateResponse(model="scripted")


async def _with_server(script, fn, **cfg):
    port = free_port()
    server = grpc.aio.server()
    servicer = Scripted(script)
    generator_pb2_grpc.add_GeneratorServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    backend = ServiceClient(ClientConfig("generator", f"127.0.0.1:{port}", **cfg), generator_pb2_grpc.GeneratorStub)
    try:
        return await fn(backend), servicer.calls
    finally:
        await backend.close()
        await server.stop(0)


FAST = RetryPolicy(attempts=4, initial_backoff=0.01, max_backoff=0.05)


def test_transient_codes_are_retried_until_success():
    script = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED]
    resp, calls = asyncio.run(_with_server(script, lambda b: b.call("Generate", generator_pb2.GenerateRequest()),
                                           retry=FAST))
    assert resp.model == "scripted" and calls == 3


def test_invalid_argument_is_never_retried():
    async def go(b):
        with pytest.raises(errors.InvalidArgument) as e:
            await b.call("Generate", generator_pb2.GenerateRequest())
        return e.value.message

    msg, calls = asyncio.run(_with_server([grpc.StatusCode.INVALID_ARGUMENT], go, retry=FAST))
    assert calls == 1 and msg.startswith("generator Generate: INVALID_ARGUMENT")


def test_retries_stop_at_the_attempt_limit_naming_the_backend():
    async def go(b):
        with pytest.raises(errors.Unavailable) as e:
            await b.call("Generate", generator_pb2.GenerateRequest())
        return e.value.message

    msg, calls = asyncio.run(_with_server([grpc.StatusCode.UNAVAILABLE] * 10, go, retry=FAST))
    assert calls == 4 and "generator" in msg and "after 4 attempts" in msg


def test_overall_deadline_bounds_the_retries():
    slow = RetryPolicy(attempts=100, initial_backoff=0.2, max_backoff=0.2)

    async def go(b):
        start = time.monotonic()
        with pytest.raises(errors.ServiceError) as e:
            await b.call("Generate", generator_pb2.GenerateRequest(), deadline=time.monotonic() + 1.0)
        return e.value, time.monotonic() - start

    (err, took), calls = asyncio.run(_with_server([grpc.StatusCode.UNAVAILABLE] * 100, go, retry=slow))
    assert isinstance(err, (errors.Unavailable, errors.DeadlineExceeded))
    assert 2 <= calls < 100


def test_session_store_persists_expires_and_cleans_images(tmp_path):
    db = tmp_path / "s.sqlite"
    store = SessionStore(db, ttl=3600)
    opts = orchestrator_pb2.SessionOptions(collection="c", top_k=5, seed=7)
    rec = store.create("genir", opts)
    rnd = orchestrator_pb2.Round(index=0, query="a cat", seed=1,
                                 generated=common_pb2.Image(data=b"\x89PNG-bytes", mime_type="image/png", width=2, height=2))
    store.add_round(rec.id, rnd)
    store.close()

    again = SessionStore(db, ttl=3600)                     # a restarted orchestrator
    got = again.get(rec.id)
    assert got.mode == "genir" and got.options.seed == 7
    [stored] = again.rounds(rec.id, inline=False)
    assert stored.generated.ref and not stored.generated.data
    [inline] = again.rounds(rec.id, inline=True)
    assert inline.generated.data == b"\x89PNG-bytes"
    assert again.delete(rec.id) is True
    with pytest.raises(errors.NotFound):
        again.get(rec.id)
    assert again.delete(rec.id) is False
    with pytest.raises(errors.InvalidArgument):
        again.get_image("../secrets")

    short = SessionStore(tmp_path / "t.sqlite", ttl=0.2)
    rec2 = short.create("verbal", opts)
    time.sleep(0.3)
    with pytest.raises(errors.NotFound):
        short.get(rec2.id)


def test_session_store_calls_run_on_one_thread_off_the_event_loop(tmp_path):
    store = SessionStore(tmp_path / "s.sqlite")

    async def go():
        rec = await store.off_loop(store.create, "genir", orchestrator_pb2.SessionOptions(collection="c"))
        got = await store.off_loop(store.get, rec.id)
        threads = {await store.off_loop(threading.get_ident) for _ in range(4)}
        return got.id == rec.id, threads, threading.get_ident()

    same, threads, loop_thread = asyncio.run(go())
    store.close()
    assert same and len(threads) == 1 and loop_thread not in threads


def test_retry_policy_doubles_to_its_cap_and_jitters_within_half():
    plain = RetryPolicy(attempts=None, initial_backoff=0.1, max_backoff=1.0, jitter=False)
    assert [plain.backoff(n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert plain.allows(10_000)
    jittered = RetryPolicy(attempts=3, initial_backoff=0.2, max_backoff=3.0)
    assert all(0.4 <= jittered.backoff(2) <= 0.8 and 1.5 <= jittered.backoff(9) <= 3.0 for _ in range(50))
    assert jittered.allows(2) and not jittered.allows(3)


def test_seeds_depend_on_base_target_round_and_stage():
    a = derive_seed(0, "5", 1)
    assert a == derive_seed(0, "5", 1) and 0 <= a < 2 ** 63
    assert len({a, derive_seed(1, "5", 1), derive_seed(0, "6", 1), derive_seed(0, "5", 2),
                derive_seed(0, "5", 1, "refine")}) == 5


def test_mode_names_and_options():
    assert mode_name("", session=True) == "genir"
    with pytest.raises(errors.InvalidArgument) as e:
        mode_name("chatir", session=True)
    assert "RunDialog" in e.value.message
    assert mode_name("chatir", session=False) == "chatir"
    opts = resolve_options(orchestrator_pb2.SessionOptions(), "default")
    assert opts.collection == "default" and opts.top_k == 10
    with pytest.raises(errors.InvalidArgument):
        resolve_options(orchestrator_pb2.SessionOptions(top_k=101), "c")
