"""Prometheus metrics: the conventional gRPC server/client series and the /metrics endpoint.

Names and labels follow go-grpc-prometheus so existing dashboards work:
grpc_server_started_total, grpc_server_handled_total, grpc_server_handling_seconds
(grpc_type, grpc_service, grpc_method, grpc_code) and the grpc_client_* twins.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from prometheus_client import REGISTRY, Counter, Histogram, start_http_server

log = logging.getLogger("genir.metrics")

# Fine between 5 s and 2 min, where generation and dialog rounds fall and the round SLO's 60 s
# threshold sits, and up to 4 h: a RunDialog stream of 20 rounds at the 10-minute round timeout.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 7.5, 10, 15, 20, 30, 45, 60,
                   90, 120, 180, 300, 450, 600, 900, 1800, 3600, 7200, 14400)
_BASE = ("grpc_type", "grpc_service", "grpc_method")

SERVER_STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", _BASE)
SERVER_HANDLED = Counter("grpc_server_handled_total", "RPCs completed on the server, by status code.",
                         _BASE + ("grpc_code",))
SERVER_HANDLING = Histogram("grpc_server_handling_seconds", "Server-side RPC handling time.",
                            _BASE + ("grpc_code",), buckets=LATENCY_BUCKETS)
CLIENT_STARTED = Counter("grpc_client_started_total", "RPCs started by this process as a client.", _BASE)
CLIENT_HANDLED = Counter("grpc_client_handled_total", "RPCs completed as a client, by status code.",
                         _BASE + ("grpc_code",))
CLIENT_HANDLING = Histogram("grpc_client_handling_seconds", "Client-side RPC time, until the status arrives.",
                            _BASE + ("grpc_code",), buckets=LATENCY_BUCKETS)


def split_method(full: str) -> tuple[str, str]:
    """'/genir.v1.Generator/Generate' -> ('genir.v1.Generator', 'Generate')."""
    _, service, method = (full.split("/") + ["", ""])[:3]
    return service or "unknown", method or "unknown"


def rpc_type(client_streaming: bool, server_streaming: bool) -> str:
    return {(False, False): "unary", (False, True): "server_stream",
            (True, False): "client_stream", (True, True): "bidi_stream"}[(client_streaming, server_streaming)]


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Start the /metrics HTTP endpoint in a daemon thread (port < 0 disables it)."""
    if port is None or port < 0:
        return
    start_http_server(port, addr=host, registry=REGISTRY)
    log.info("metrics on http://%s:%d/metrics", host, port)


# --------------------------------------------------------------------------- client side
class _ClientMetrics:
    """Shared bookkeeping of the three aio client interceptors."""

    def _labels(self, details, kind: str) -> tuple[str, str, str]:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        service, name = split_method(method)
        return kind, service, name

    async def _start(self, continuation, details, request, kind: str):
        """Count the call as started and make it: (labels, start time, call)."""
        labels = self._labels(details, kind)
        CLIENT_STARTED.labels(*labels).inc()
        start = time.perf_counter()
        return labels, start, await continuation(details, request)

    async def _streaming(self, continuation, details, request, kind: str):
        labels, start, call = await self._start(continuation, details, request, kind)
        self._record_when_done(call, labels, start)
        return call

    def _record_when_done(self, call, labels, start: float) -> None:
        # aio's Call.code() is a coroutine: read it in a task once the call has finished.
        async def read_code():
            try:
                code = await call.code()
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
            self._record(labels, start, code)

        call.add_done_callback(lambda _c: asyncio.ensure_future(read_code()))

    @staticmethod
    def _record(labels, start: float, code: grpc.StatusCode) -> None:
        CLIENT_HANDLED.labels(*labels, code.name).inc()
        CLIENT_HANDLING.labels(*labels, code.name).observe(time.perf_counter() - start)


class UnaryUnaryClientMetrics(_ClientMetrics, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        labels, start, call = await self._start(continuation, details, request, "unary")
        try:
            await call
            code = await call.code()
        except grpc.aio.AioRpcError as e:
            code = e.code()
        except BaseException:
            code = grpc.StatusCode.CANCELLED
            self._record(labels, start, code)
            raise
        self._record(labels, start, code)
        return call


class UnaryStreamClientMetrics(_ClientMetrics, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        return await self._streaming(continuation, details, request, "server_stream")


class StreamUnaryClientMetrics(_ClientMetrics, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, details, request_iterator):
        return await self._streaming(continuation, details, request_iterator, "client_stream")


def client_interceptors() -> list:
    return [UnaryUnaryClientMetrics(), UnaryStreamClientMetrics(), StreamUnaryClientMetrics()]
