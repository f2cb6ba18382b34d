"""Client channels to genir backends: TLS when configured, message limits, client metrics."""

from __future__ import annotations

import grpc

from services.common import tls
from services.common.metrics import client_interceptors
from services.common.server import grpc_options


def open_channel(target: str, *, ca: str | None = None, cert: str | None = None, key: str | None = None,
                 max_message_mb: int = 64, metrics: bool = True,
                 options: list[tuple[str, object]] | None = None) -> grpc.aio.Channel:
    """`options`: extra channel arguments (e.g. reconnect backoff), appended last so they win."""
    base = [o for o in grpc_options(max_message_mb) if o[0] != "grpc.so_reuseport"]
    # round_robin spreads calls over every address a name resolves to (a headless Service's pods);
    # with one address it behaves like the default pick_first.
    base += [("grpc.keepalive_time_ms", 30_000), ("grpc.enable_retries", 0), ("grpc.lb_policy_name", "round_robin")]
    options = base + list(options or [])
    interceptors = client_interceptors() if metrics else None
    creds = tls.channel_credentials(ca, cert, key)
    if creds is not None:
        return grpc.aio.secure_channel(target, creds, options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
