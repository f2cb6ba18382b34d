"""Every gRPC channel option genir sets, in one place, and the client channels to genir backends
(TLS when configured, message limits, client metrics)."""

from __future__ import annotations

import grpc

from services.common import tls
from services.common.metrics import client_interceptors

MB = 1024 * 1024
# Retries are ours (orchestrator/backends.py, the refiner's Triton client), bounded by deadlines.
NO_TRANSPORT_RETRIES = [("grpc.enable_retries", 0)]


NO_PORT_SHARING = [("grpc.so_reuseport", 0)]  # a port already taken must fail start-up, not be shared


def message_options(max_message_mb: int, max_request_mb: float | None = None) -> list[tuple[str, int]]:
    """Sends up to `max_message_mb`; receives up to that, or `max_request_mb` when smaller."""
    size = max_message_mb * MB
    receive = size if max_request_mb is None else min(size, int(max_request_mb * MB))
    return [("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", receive)]


def server_options(max_message_mb: int, max_request_mb: float | None = None) -> list[tuple[str, int]]:
    """A server's limits: responses up to --max-message-mb; requests up to what the service's RPCs
    need (`max_request_mb`), so an oversized request is refused before it is buffered."""
    return message_options(max_message_mb, max_request_mb) + NO_PORT_SHARING


def reconnect_options(max_backoff_s: float) -> list[tuple[str, int]]:
    """Reconnect attempts at most `max_backoff_s` apart, so calls recover soon after a peer returns."""
    cap = int(max_backoff_s * 1000)
    first = min(200, cap)
    return [("grpc.initial_reconnect_backoff_ms", first), ("grpc.min_reconnect_backoff_ms", first),
            ("grpc.max_reconnect_backoff_ms", cap)]


def client_options(max_message_mb: int) -> list[tuple[str, object]]:
    """A channel to a genir service. round_robin spreads calls over every address a name resolves
    to (a headless Service's pods); with one address it behaves like the default pick_first."""
    return message_options(max_message_mb) + NO_TRANSPORT_RETRIES + [
        ("grpc.keepalive_time_ms", 30_000), ("grpc.lb_policy_name", "round_robin")]


def open_channel(target: str, *, ca: str | None = None, cert: str | None = None, key: str | None = None,
                 max_message_mb: int = 64, metrics: bool = True,
                 options: list[tuple[str, object]] | None = None) -> grpc.aio.Channel:
    """`options`: extra channel arguments (e.g. reconnect_options), appended last so they win."""
    options = client_options(max_message_mb) + list(options or [])
    interceptors = client_interceptors() if metrics else None
    creds = tls.channel_credentials(ca, cert, key)
    if creds is not None:
        return grpc.aio.secure_channel(target, creds, options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
