"""The per-RPC request limits (services.common.limits) cover the whole contract."""

from __future__ import annotations

import pytest

from genir.v1 import generator_pb2, orchestrator_pb2, refiner_pb2, retriever_pb2
from services.common import limits
from services.common.channels import server_options

MODULES = [generator_pb2, orchestrator_pb2, refiner_pb2, retriever_pb2]
MIB64 = 64 << 20


def contract_methods() -> list[tuple[str, str]]:
    return [(svc.full_name, m.name) for mod in MODULES for svc in mod.DESCRIPTOR.services_by_name.values()
            for m in svc.methods]


def test_every_rpc_of_the_contract_has_a_limit_and_nothing_else_does():
    table = {(s, m) for s, methods in limits.REQUEST_LIMITS.items() for m in methods}
    assert table == set(contract_methods())


@pytest.mark.parametrize("service,method,want", [
    ("genir.v1.Orchestrator", "GetSession", 64 << 10),
    ("genir.v1.Orchestrator", "CreateSession", 256 << 10),
    ("genir.v1.Orchestrator", "RunDialog", 1 << 20),
    ("genir.v1.Retriever", "EmbedImages", MIB64),             # images: the server's --max-message-mb
    ("genir.v1.Retriever", "EmbedTexts", 9 << 20),
    ("grpc.health.v1.Health", "Check", MIB64),                # not in the table: the server's limit
])
def test_request_limit(service, method, want):
    assert limits.request_limit(service, method, MIB64) == want


def test_a_smaller_message_limit_caps_every_rpc():
    assert limits.request_limit("genir.v1.Retriever", "EmbedTexts", 1 << 20) == 1 << 20
    assert limits.request_limit("genir.v1.Orchestrator", "GetSession", 1 << 10) == 1 << 10


def test_core_refuses_above_the_largest_rpc_of_the_service():
    def ceiling(service, mb=64):
        return dict(server_options(mb, [service]))["grpc.max_receive_message_length"]

    assert ceiling("genir.v1.Orchestrator") == 1 << 20
    assert ceiling("genir.v1.Generator") == 256 << 10
    assert ceiling("genir.v1.Refiner") == MIB64 and ceiling("genir.v1.Retriever") == MIB64
    assert ceiling("genir.v1.Retriever", mb=1) == 1 << 20
    assert dict(server_options(64))["grpc.max_receive_message_length"] == MIB64   # clients: no service


def test_describe():
    assert [limits.describe(n) for n in (64 << 10, 9 << 20, 1000)] == ["64 KiB", "9 MiB", "1000 bytes"]


def test_heap_trims_are_rate_capped_and_one_follows_the_last_refusal():
    import asyncio
    import time

    from services.common import interceptors

    class Counting(interceptors._HeapTrimmer):
        def __init__(self):
            super().__init__()
            self.at = []

        def _trim(self):
            super()._trim()
            self.at.append(time.monotonic())

    async def burst() -> tuple[list[float], float]:
        heap = Counting()
        for _ in range(20):                      # a stream of refused bodies over 0.4 s
            heap.soon()
            await asyncio.sleep(0.02)
        last = time.monotonic()
        await asyncio.sleep(interceptors.TRIM_EVERY_S + 0.5)
        return heap.at, last

    at, last = asyncio.run(burst())
    assert len(at) == 2, at                      # one at once, one after the burst: not 20
    assert at[1] >= last + interceptors.TRIM_EVERY_S - 0.05
