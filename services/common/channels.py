"""Every gRPC channel option genir sets, in one place, and the client channels to genir backends
(TLS when configured, message limits, client metrics). The refiner's Triton client uses
`channel_options` too; servers take `server_options`."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from services.common import limits, tls
from services.common.metrics import client_interceptors

MB = 1024 * 1024
NO_PORT_SHARING = [("grpc.so_reuseport", 0)]  # a port already taken must fail start-up, not be shared


def channel_options(max_message_mb: int = 64, max_reconnect_backoff: float = 2.0) -> list[tuple[str, object]]:
    """Message limits both ways; gRPC's own retries off (ours are bounded by deadlines); after a
    server restarts, reconnects at most `max_reconnect_backoff` s apart (gRPC's default grows to 120 s)."""
    size = max_message_mb * MB
    backoff_ms = int(max_reconnect_backoff * 1000)
    first_ms = min(200, backoff_ms)
    return [("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", size),
            ("grpc.enable_retries", 0), ("grpc.initial_reconnect_backoff_ms", first_ms),
            ("grpc.min_reconnect_backoff_ms", first_ms), ("grpc.max_reconnect_backoff_ms", backoff_ms)]


def server_options(max_message_mb: int, services: Sequence[str] = ()) -> list[tuple[str, object]]:
    """A server's limits: responses up to --max-message-mb; requests up to what the largest RPC of
    `services` needs (services.common.limits), so gRPC core refuses a bigger one before buffering it."""
    size = max_message_mb * MB
    request = limits.service_ceiling(list(services), size) if services else size
    return [("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", request)] + NO_PORT_SHARING


def open_channel(target: str, *, ca: str | None = None, cert: str | None = None, key: str | None = None,
                 max_message_mb: int = 64, metrics: bool = True) -> grpc.aio.Channel:
    # round_robin spreads calls over every address a name resolves to (a headless Service's pods);
    # with one address it behaves like the default pick_first.
    options = channel_options(max_message_mb) + [("grpc.keepalive_time_ms", 30_000),
                                                 ("grpc.lb_policy_name", "round_robin")]
    interceptors = client_interceptors() if metrics else None
    creds = tls.channel_credentials(ca, cert, key)
    if creds is not None:
        return grpc.aio.secure_channel(target, creds, options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
