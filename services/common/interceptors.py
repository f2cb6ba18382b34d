"""The one server interceptor every genir server runs.

It (1) counts and times each call with the conventional gRPC metrics, (2) refuses service calls
with UNAVAILABLE until the backend has loaded, (3) bounds calls in flight (admission control,
RESOURCE_EXHAUSTED beyond the limit), (4) refuses a request over its RPC's size limit
(services.common.limits) before parsing it, and (5) maps exceptions to status codes: ServiceError ->
its code and message; anything else -> INTERNAL with a generic message, traceback only in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hmac
import inspect
import logging
import time
import uuid

import grpc

from services.common.errors import InvalidArgument, ResourceExhausted, ServiceError, storage_error
from services.common.limits import describe, request_limit
from services.common.metrics import SERVER_HANDLED, SERVER_HANDLING, SERVER_STARTED, rpc_type, split_method

log = logging.getLogger("genir.rpc")
# Status details travel in trailing metadata (hard limit 16 KiB): a message that echoes a huge
# client value would turn any error into RESOURCE_EXHAUSTED "metadata size exceeds hard limit".
MAX_DETAILS = 2000


def _cut(message: str) -> str:
    return message if len(message) <= MAX_DETAILS else message[:MAX_DETAILS] + f"... ({len(message)} chars)"

# Always answered, never counted against admission or readiness.
INFRA_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                  "grpc.reflection.v1.ServerReflection")


def token_problem(metadata, token: str) -> str | None:
    """Why a call's metadata does not carry `authorization: Bearer <token>`, or None when it does."""
    got = ""
    for k, v in metadata or ():
        if k.lower() == "authorization":
            got = v if isinstance(v, str) else v.decode("latin-1")
    if not got:
        return "authorization: metadata 'authorization: Bearer <token>' is required"
    scheme, _, value = got.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        return "authorization: missing or wrong bearer token (metadata 'authorization: Bearer <token>')"
    return None


class ServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, max_inflight: int = 0, token: str | None = None, max_message_bytes: int = 64 << 20):
        self.max_inflight = max_inflight
        self.max_message_bytes = max_message_bytes
        self.inflight = 0
        self.ready = False
        self.token = token or None

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        service, method = split_method(details.method)
        kind = rpc_type(handler.request_streaming, handler.response_streaming)
        labels = (kind, service, method)
        infra = service in INFRA_SERVICES
        if self.token and not infra:
            problem = token_problem(details.invocation_metadata, self.token)
            if problem is not None:
                return _refusal(handler, labels, problem)
        deserialize = _tolerant(handler.request_deserializer, method,
                                request_limit(service, method, self.max_message_bytes))
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, labels, infra),
                deserialize, handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, labels, infra, streaming=True),
                deserialize, handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, labels, infra),
                deserialize, handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(handler.stream_stream, labels, infra, streaming=True),
            deserialize, handler.response_serializer)

    # ------------------------------------------------------------------ admission
    def _admit(self, infra: bool) -> tuple[grpc.StatusCode, str] | None:
        if infra:
            return None
        if not self.ready:
            return grpc.StatusCode.UNAVAILABLE, "service is starting: the model is still loading"
        if self.max_inflight and self.inflight >= self.max_inflight:
            return (grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"server busy: {self.inflight} calls in flight (limit {self.max_inflight}); retry with backoff")
        return None

    # ------------------------------------------------------------------ wrapping
    @contextlib.asynccontextmanager
    async def _handling(self, labels, infra: bool, context):
        """Around one call's handler: admission, the in-flight count, exceptions mapped to a status,
        and the call's metrics."""
        SERVER_STARTED.labels(*labels).inc()
        start = time.perf_counter()
        refused = self._admit(infra)
        if refused:
            self._record(labels, start, refused[0])
            await context.abort(*refused)
        self.inflight += not infra
        code = grpc.StatusCode.OK
        try:
            yield
            code = context.code() or grpc.StatusCode.OK
        except BaseException as exc:  # noqa: BLE001 - mapped, then re-raised as a status
            code, message = self._classify(exc, context)
            if message is None:
                raise
            await context.abort(code, message)
        finally:
            self.inflight -= not infra
            self._record(labels, start, code)

    def _wrap_unary(self, behavior, labels, infra, streaming=False):
        async def wrapper(request, context):
            async with self._handling(labels, infra, context):
                return await behavior(_checked(request, streaming), context)

        return wrapper

    def _wrap_stream(self, behavior, labels, infra, streaming=False):
        async def wrapper(request, context):
            async with self._handling(labels, infra, context):
                request = _checked(request, streaming)
                if inspect.isasyncgenfunction(behavior):
                    async for item in behavior(request, context):
                        yield item
                else:  # handlers that write with context.write()
                    await behavior(request, context)

        return wrapper

    @staticmethod
    def _classify(exc: BaseException, context) -> tuple[grpc.StatusCode, str | None]:
        """(code, message to abort with); message None means re-raise as it is."""
        if isinstance(exc, grpc.aio.AbortError):
            return context.code() or grpc.StatusCode.UNKNOWN, None
        if isinstance(exc, asyncio.CancelledError):
            remaining = context.time_remaining()
            late = remaining is not None and remaining <= 0
            return (grpc.StatusCode.DEADLINE_EXCEEDED if late else grpc.StatusCode.CANCELLED), None
        if isinstance(exc, ServiceError):
            return exc.code, _cut(exc.message)
        if isinstance(exc, grpc.aio.AioRpcError):  # a downstream call failed and nobody mapped it
            return exc.code(), f"downstream call failed: {exc.code().name}: {(exc.details() or '')[:MAX_DETAILS]}"
        mapped = storage_error(exc)
        if mapped is not None:
            log.error("storage failure: %s", exc)
            return mapped.code, mapped.message
        ref = uuid.uuid4().hex[:12]
        log.error("unhandled error (ref %s)", ref, exc_info=exc)
        return grpc.StatusCode.INTERNAL, f"internal error (ref {ref}); details are in the server log"

    @staticmethod
    def _record(labels, start: float, code: grpc.StatusCode) -> None:
        SERVER_HANDLED.labels(*labels, code.name).inc()
        SERVER_HANDLING.labels(*labels, code.name).observe(time.perf_counter() - start)


# ---------------------------------------------------------------------- refused request bytes
class _Refused:
    """Stands in for request bytes that were not parsed (over the RPC's size limit, or not a valid
    message), so the call ends with that error instead of grpc's generic UNKNOWN from a raising
    deserializer."""

    def __init__(self, error: ServiceError, size: int = 0):
        self.error = error
        self.size = size


# After a refused body of this size, free heap goes back to the system: without it glibc keeps
# the pages gRPC buffered the body in, and 20 refused 50 MB calls left a server 90 MB larger.
TRIM_AFTER_BYTES = 1 << 20
TRIM_EVERY_S = 1.0


class _HeapTrimmer:
    """malloc_trim at once (at most once per TRIM_EVERY_S, so a stream of refused bodies does not
    spend the event loop on trimming), and again TRIM_EVERY_S after the last refusal: gRPC frees a
    call's own buffers only after the call has ended."""

    def __init__(self):
        self.last = 0.0
        self.due = 0.0
        self.pending = False

    def soon(self) -> None:
        now = time.monotonic()
        if now - self.last >= TRIM_EVERY_S:
            self._trim()
        self.due = now + TRIM_EVERY_S
        if not self.pending:
            self.pending = True
            asyncio.get_running_loop().call_later(TRIM_EVERY_S, self._later)

    def _later(self) -> None:
        wait = self.due - time.monotonic()
        if wait > 0:      # another refusal came meanwhile: trim after that one's call has ended
            asyncio.get_running_loop().call_later(wait, self._later)
            return
        self.pending = False
        self._trim()

    def _trim(self) -> None:
        self.last = time.monotonic()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: nothing to trim
            pass


_heap = _HeapTrimmer()


def _refusal(handler, labels, message: str):
    """A handler that answers UNAUTHENTICATED without parsing (or keeping) the request bytes."""
    async def refuse(request, context):
        SERVER_HANDLED.labels(*labels, grpc.StatusCode.UNAUTHENTICATED.name).inc()
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def refuse_stream(request, context):
        await refuse(request, context)
        yield  # pragma: no cover - abort raised above

    drop = lambda _data: None  # noqa: E731
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse, drop, handler.response_serializer)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse, drop, handler.response_serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, drop, handler.response_serializer)
    return grpc.stream_stream_rpc_method_handler(refuse_stream, drop, handler.response_serializer)


def _tolerant(deserializer, method: str, limit: int):
    if deserializer is None:
        return None

    def parse(data: bytes):
        if len(data) > limit:  # checked on the raw bytes: a small RPC never parses a big body
            return _Refused(ResourceExhausted(f"{method}: the request is {len(data)} bytes, over this RPC's "
                                              f"limit of {describe(limit)}"), len(data))
        try:
            return deserializer(data)
        except Exception as e:  # noqa: BLE001 - any parse failure is the client's bad input
            return _Refused(InvalidArgument(f"request: not a valid protobuf message ({type(e).__name__}: {e})"))

    return parse


def _check_decoded(request) -> None:
    if isinstance(request, _Refused):
        if request.size >= TRIM_AFTER_BYTES:
            _heap.soon()
        raise request.error


def _checked(request, streaming: bool):
    """The request, refused if it was not parsed; a request stream checks each message as it comes."""
    if streaming:
        return _checked_stream(request)
    _check_decoded(request)
    return request


async def _checked_stream(requests):
    async for request in requests:
        _check_decoded(request)
        yield request
