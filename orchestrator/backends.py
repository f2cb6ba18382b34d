"""Async clients of the three backends (generator, refiner, retriever) with deadlines and retries.

One channel per backend, opened once and reused by every call. Each attempt gets its own
deadline (the backend's per-call timeout, cut to what is left of the overall budget). Transient
failures (UNAVAILABLE, RESOURCE_EXHAUSTED) are retried with exponential backoff and jitter
while the overall deadline allows; anything else (INVALID_ARGUMENT, NOT_FOUND, ...) fails at once.
A final failure is raised as a services.common.errors exception whose message names the backend.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

import grpc

from genir.v1 import generator_pb2_grpc, refiner_pb2_grpc, retriever_pb2_grpc
from services.common import errors
from services.common.channels import open_channel, reconnect_options

log = logging.getLogger("genir.orchestrator.backends")

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})

# Reconnect quickly after a backend restarts (gRPC's default backoff grows to 120 s).
_RECONNECT = reconnect_options(2.0)


@dataclass
class RetryPolicy:
    attempts: int = 5               # total attempts, first one included
    initial_backoff: float = 0.2    # seconds before the first retry
    max_backoff: float = 3.0
    multiplier: float = 2.0

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Equal jitter: uniform in [cap/2, cap], cap = min(max, initial * multiplier^retry)."""
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** retry)
        return rng.uniform(0.5 * cap, cap)


@dataclass
class BackendConfig:
    name: str                       # "generator", "refiner", "retriever": named in errors
    target: str                     # host:port
    timeout: float = 60.0           # per attempt, seconds
    budget: float = 120.0           # overall, all attempts and backoff included
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    max_message_mb: int = 64
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    token: str | None = field(default=None, repr=False)   # bearer token the backend requires


class Backend:
    """One backend service: a reused channel, a stub, and `call` with deadlines and retries."""

    def __init__(self, cfg: BackendConfig, stub_cls):
        self.cfg = cfg
        self.name = cfg.name
        self._rng = random.Random()
        self.channel = open_channel(cfg.target, ca=cfg.ca, cert=cfg.cert, key=cfg.key,
                                    max_message_mb=cfg.max_message_mb, options=_RECONNECT)
        self.stub = stub_cls(self.channel)
        self.metadata = (("authorization", f"Bearer {cfg.token}"),) if cfg.token else None

    async def call(self, method: str, request, *, deadline: float | None = None):
        """Unary call `method` with retries; `deadline` is an absolute time.monotonic() bound."""
        end = time.monotonic() + self.cfg.budget
        if deadline is not None:
            end = min(end, deadline)
        rpc = getattr(self.stub, method)
        attempt = 0
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise errors.DeadlineExceeded(f"{self.name}: {method}: no time left in the deadline "
                                              f"after {attempt} attempt(s)")
            try:
                return await rpc(request, timeout=min(self.cfg.timeout, left), metadata=self.metadata)
            except grpc.aio.AioRpcError as e:
                attempt += 1
                pause = self.cfg.retry.backoff(attempt - 1, self._rng)
                retry = (e.code() in RETRYABLE and attempt < self.cfg.retry.attempts
                         and time.monotonic() + pause < end)
                if not retry:
                    raise errors.from_rpc_error(e, f"{self.name} {method}"
                                                + (f" (after {attempt} attempts)" if attempt > 1 else "")) from None
                log.warning("%s %s: %s (%s); retry %d in %.2fs", self.name, method, e.code().name,
                            e.details(), attempt, pause)
                await asyncio.sleep(pause)

    async def stream_unary(self, method: str, requests, *, timeout: float | None = None):
        """Client-streaming call without retries (its request iterator cannot be replayed)."""
        try:
            return await getattr(self.stub, method)(requests, timeout=timeout or self.cfg.budget,
                                                    metadata=self.metadata)
        except grpc.aio.AioRpcError as e:
            raise errors.from_rpc_error(e, f"{self.name} {method}") from None

    async def close(self) -> None:
        await self.channel.close()


class Backends:
    """The generator, refiner and retriever clients the round engine uses."""

    def __init__(self, generator: BackendConfig, refiner: BackendConfig, retriever: BackendConfig):
        self.generator = Backend(generator, generator_pb2_grpc.GeneratorStub)
        self.refiner = Backend(refiner, refiner_pb2_grpc.RefinerStub)
        self.retriever = Backend(retriever, retriever_pb2_grpc.RetrieverStub)

    @classmethod
    def local(cls, generator: str, refiner: str, retriever: str, **common) -> "Backends":
        """Plaintext clients with the same settings for all three (tests, benchmarks, the demo)."""
        return cls(BackendConfig("generator", generator, **common), BackendConfig("refiner", refiner, **common),
                   BackendConfig("retriever", retriever, **common))

    async def close(self) -> None:
        await asyncio.gather(self.generator.close(), self.refiner.close(), self.retriever.close())
