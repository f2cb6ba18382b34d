"""Async gRPC clients of the three backend services (generator, refiner, retriever) with deadlines and retries.

One channel per backend, opened once and reused by every call. Each attempt gets its own
deadline (the backend's per-call timeout, cut to what is left of the overall budget). Transient
failures (UNAVAILABLE, RESOURCE_EXHAUSTED) are retried with exponential backoff and jitter
while the overall deadline allows; anything else (INVALID_ARGUMENT, NOT_FOUND, ...) fails at once.
A final failure is raised as a services.common.errors exception whose message names the backend.

The refiner's client sends each image once: it remembers (bounded) the SHA-256 of images the
refiner has accepted and names those by `Image.sha256` afterwards. A refiner that does not hold
one (evicted, restarted, another replica behind round_robin) answers FAILED_PRECONDITION
"unknown image sha256:..."; the client then forgets the request's hashes and sends the bytes once more.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from dataclasses import dataclass, field

import grpc

from genir.v1 import common_pb2, generator_pb2_grpc, refiner_pb2_grpc, retriever_pb2_grpc
from services.common import errors
from services.common.channels import open_channel
from services.common.digests import UNKNOWN_IMAGE, SentImages
from services.common.retry import RetryPolicy

log = logging.getLogger("genir.orchestrator.clients")

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
REFINER_IMAGE_FIELDS = ("target", "generated")   # every image field of the refiner's requests


@dataclass
class ClientConfig:
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


class ServiceClient:
    """The client of one backend service: a reused channel, a stub, and `call` with deadlines and retries."""

    def __init__(self, cfg: ClientConfig, stub_cls):
        self.cfg = cfg
        self.name = cfg.name
        self._rng = random.Random()
        self.channel = open_channel(cfg.target, ca=cfg.ca, cert=cfg.cert, key=cfg.key,
                                    max_message_mb=cfg.max_message_mb)
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
                retry = (e.code() in RETRYABLE and self.cfg.retry.allows(attempt)
                         and time.monotonic() + pause < end)
                if not retry:
                    raise errors.from_rpc_error(e, f"{self.name} {method}"
                                                + (f" (after {attempt} attempts)" if attempt > 1 else "")) from None
                log.warning("%s %s: %s (%s); retry %d in %.2fs", self.name, method, e.code().name,
                            e.details(), attempt, pause)
                await asyncio.sleep(pause)

    async def close(self) -> None:
        await self.channel.close()


class RefinerClient(ServiceClient):
    """The refiner's client: images the refiner already holds go by their sha256, not their bytes."""

    def __init__(self, cfg: ClientConfig):
        super().__init__(cfg, refiner_pb2_grpc.RefinerStub)
        self.sent = SentImages()

    async def call(self, method: str, request, *, deadline: float | None = None):
        digests = image_digests(request)
        if not digests:
            return await super().call(method, request, deadline=deadline)
        wire = by_reference(request, digests, self.sent)
        try:
            response = await super().call(method, wire, deadline=deadline)
        except errors.FailedPrecondition as e:
            if wire is request or UNKNOWN_IMAGE not in e.message:
                raise
            log.info("refiner %s: %s; sending the bytes again", method, e.message)
            self.sent.forget(digests.values())
            response = await super().call(method, request, deadline=deadline)
        self.sent.add(digests.values())
        return response


def image_digests(request) -> dict[str, bytes]:
    """SHA-256 of each image a refiner request carries as bytes, by field."""
    return {f: hashlib.sha256(getattr(request, f).data).digest() for f in REFINER_IMAGE_FIELDS
            if request.DESCRIPTOR.fields_by_name.get(f) and request.HasField(f) and getattr(request, f).data}


def by_reference(request, digests: dict[str, bytes], sent: SentImages):
    """`request` with each image the refiner was sent before named by its hash (itself if none was)."""
    known = [f for f, d in digests.items() if d in sent]
    if not known:
        return request
    wire = type(request)()
    wire.CopyFrom(request)
    for f in known:
        img = getattr(request, f)
        getattr(wire, f).CopyFrom(common_pb2.Image(sha256=digests[f].hex(), mime_type=img.mime_type,
                                                   width=img.width, height=img.height))
    return wire


class ServiceClients:
    """The generator, refiner and retriever clients the round engine uses."""

    def __init__(self, generator: ClientConfig, refiner: ClientConfig, retriever: ClientConfig):
        self.generator = ServiceClient(generator, generator_pb2_grpc.GeneratorStub)
        self.refiner = RefinerClient(refiner)
        self.retriever = ServiceClient(retriever, retriever_pb2_grpc.RetrieverStub)

    @classmethod
    def local(cls, generator: str, refiner: str, retriever: str, **common) -> "ServiceClients":
        """Plaintext clients with the same settings for all three (tests, benchmarks, the demo)."""
        return cls(ClientConfig("generator", generator, **common), ClientConfig("refiner", refiner, **common),
                   ClientConfig("retriever", retriever, **common))

    async def close(self) -> None:
        await asyncio.gather(self.generator.close(), self.refiner.close(), self.retriever.close())
