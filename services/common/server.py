"""Start-up and shutdown of a genir gRPC server, and the entry point every service shares.

    main(GeneratorConfig.from_args(ns), "generator", start, check)   # logging, checks, config, serve
    serve(args, [Service("genir.v1.Generator", add_GeneratorServicer_to_server, servicer)],
          load=backend.load, close=backend.close)

Health is NOT_SERVING until `load` returns, SERVING after (or while a readiness check passes),
NOT_SERVING again while draining. The service name "liveness" only says the process has loaded
and is not draining: what Kubernetes liveness probes ask.
SIGTERM/SIGINT: new calls are refused, in-flight calls get --drain-seconds to finish, exit 0.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common import channels, config, tls
from services.common.interceptors import ServerInterceptor
from services.common.metrics import serve_metrics

log = logging.getLogger("genir.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Health service name for liveness probes: SERVING from the end of the load until drain, whatever
# the readiness check says, so a pod whose dependency (Triton, the disk) is down is taken out of
# rotation by its readiness probe but not restarted in a loop by its liveness probe.
LIVENESS = "liveness"


@dataclass
class Service:
    name: str                       # full proto name, e.g. "genir.v1.Generator"
    add_to_server: Callable         # generated add_<X>Servicer_to_server
    servicer: Any


def connection_age_options(age_s: float, grace_s: float) -> list[tuple[str, int]]:
    """Server-side GOAWAY after `age_s`, so DNS round-robin clients pick up added replicas (gRFC A9);
    `grace_s` lets calls in flight on an aged connection finish. An age of 0 turns both off."""
    if age_s <= 0:
        return []
    if grace_s <= 0:
        raise SystemExit("--max-connection-age-grace must be > 0 when --max-connection-age is set")
    return [("grpc.max_connection_age_ms", int(age_s * 1000)), ("grpc.max_connection_age_grace_ms", int(grace_s * 1000))]


async def _maybe_await(fn: Callable | None) -> None:
    if fn is None:
        return
    result = fn()
    if inspect.isawaitable(result):
        await result


async def _follow(readiness: Callable[[], Awaitable[bool]], health_servicer, names: list[str],
                  every: float) -> None:
    """Health follows a readiness check (the refiner: Triton's; the orchestrator: its storage takes
    writes), run every `every` s."""
    state = None
    while True:
        try:
            ok = bool(await readiness())
        except Exception:  # noqa: BLE001 - a failing probe means not ready
            ok = False
        if ok != state:
            state = ok
            log.log(logging.INFO if ok else logging.WARNING, "readiness check %s: health %s", "passed" if ok else
                    "failed", "SERVING" if ok else "NOT_SERVING")
            for name in [""] + names:
                await health_servicer.set(name, SERVING if ok else NOT_SERVING)
        await asyncio.sleep(every)


async def serve(args, services: Sequence[Service], *, load: Callable[[], Awaitable | None] | None = None,
                close: Callable[[], Awaitable | None] | None = None,
                readiness: Callable[[], Awaitable[bool]] | None = None, readiness_every: float = 2.0) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code. With `readiness`, health is
    SERVING only while it answers True (polled every `readiness_every` seconds)."""
    token = config.inbound_token(args)
    interceptor = ServerInterceptor(max_inflight=args.max_inflight, token=token,
                                    max_message_bytes=args.max_message_mb * 1024 * 1024)
    names = [svc.name for svc in services]
    options = channels.server_options(args.max_message_mb, names) + connection_age_options(
        args.max_connection_age, args.max_connection_age_grace)
    server = grpc.aio.server(interceptors=[interceptor], options=options)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for svc in services:
        svc.add_to_server(svc.servicer, server)
    reflection.enable_server_reflection(names + [health.SERVICE_NAME, reflection.SERVICE_NAME], server)

    address = f"{args.host}:{args.port}"
    creds = tls.server_credentials(args.tls_cert, args.tls_key, args.tls_client_ca)
    try:
        port = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
    except RuntimeError as e:
        log.error("cannot bind %s: %s", address, e)
        return 2
    health_only = await _health_server(args, health_servicer)
    if health_only is False:
        await server.stop(0)
        return 2
    for name in ["", LIVENESS] + names:
        await health_servicer.set(name, NOT_SERVING)
    await server.start()
    serve_metrics(args.metrics_port, args.metrics_host or args.host)
    log.info("listening on %s (%s)%s%s", address, ", ".join(names), " with TLS" if creds else "",
             " with bearer-token auth" if token else "")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    loader = asyncio.ensure_future(_maybe_await(load))
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({loader, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if loader.done() and loader.exception() is not None:
        log.error("backend failed to load: %s", loader.exception(), exc_info=loader.exception())
        await server.stop(0)
        if health_only:
            await health_only.stop(0)
        return 1
    if loader.done():
        interceptor.ready = True
        await health_servicer.set(LIVENESS, SERVING)
        follower = None
        if readiness is None:
            for name in [""] + names:
                await health_servicer.set(name, SERVING)
        else:
            follower = asyncio.ensure_future(_follow(readiness, health_servicer, names, readiness_every))
        log.info("ready: serving on port %d", port)
        await stopper
        if follower is not None:
            follower.cancel()
    else:
        loader.cancel()

    log.info("draining: refusing new calls, waiting up to %.0fs for %d in flight",
             args.drain_seconds, interceptor.inflight)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(args.drain_seconds)
    if health_only:
        await health_only.stop(0)
    await _maybe_await(close)
    log.info("stopped")
    return 0


async def _health_server(args, health_servicer):
    """The same health status on a plaintext port (--health-port): kubelet gRPC probes cannot speak
    TLS. None when not asked for; False when the port cannot be bound."""
    port = getattr(args, "health_port", -1)
    if port is None or port < 0:
        return None
    server = grpc.aio.server(options=channels.NO_PORT_SHARING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        server.add_insecure_port(f"{args.host}:{port}")
    except RuntimeError as e:
        log.error("cannot bind health port %s:%d: %s", args.host, port, e)
        return False
    await server.start()
    return server


def main(cfg, service: str, start: Callable[[Any], Awaitable[int]],
         check: Callable[[Any], str | None] | None = None) -> int:
    """Every service's entry point: logging, the config's own checks (a message = exit 2), the
    effective config logged once, then `start(cfg)`, which builds the servicer and awaits `serve`."""
    config.setup_logging(cfg.log_level)
    problem = check(cfg) if check else None
    if problem:
        log.error("%s", problem)
        return 2
    config.log_config(service, cfg)
    return asyncio.run(start(cfg))
