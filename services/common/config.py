"""Flags with GENIR_<SERVICE>_<NAME> environment fallbacks, and the flags every server shares."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("genir")

_TRUE = {"1", "true", "yes", "on"}


def env_name(service: str, flag: str) -> str:
    return f"GENIR_{service.upper()}_{flag.upper().replace('-', '_')}"


def add_flag(parser: argparse.ArgumentParser, flag: str, *, service: str, default: Any = None,
             type: Callable | None = str, help: str = "", choices=None, bool_flag: bool = False) -> None:
    """--flag, defaulting to $GENIR_<SERVICE>_<FLAG>, then to `default`."""
    env = env_name(service, flag)
    raw = os.environ.get(env)
    if bool_flag:
        value = raw.strip().lower() in _TRUE if raw is not None else bool(default)
        parser.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=value,
                            help=f"{help} [env {env}]")
        return
    value = default
    if raw is not None:
        try:
            value = type(raw) if type else raw
        except ValueError as e:
            raise SystemExit(f"{env}={raw!r}: {e}") from None
    parser.add_argument(f"--{flag}", type=type, default=value, choices=choices, help=f"{help} [env {env}]")


def add_server_flags(parser: argparse.ArgumentParser, service: str, port: int, metrics_port: int) -> None:
    """The flags every genir server takes (docs/conventions.md)."""
    f = lambda *a, **k: add_flag(parser, *a, service=service, **k)  # noqa: E731
    f("host", default="127.0.0.1", help="address to bind (0.0.0.0 in containers)")
    f("port", default=port, type=int, help="gRPC port")
    f("metrics-port", default=metrics_port, type=int, help="Prometheus /metrics port (-1 disables)")
    f("metrics-host", default=None, help="metrics bind address (default: --host)")
    f("max-message-mb", default=64, type=int, help="largest gRPC message, MiB: responses, and requests that carry "
      "images (other RPCs have smaller limits, services/common/limits.py)")
    f("max-inflight", default=64, type=int, help="calls in flight before RESOURCE_EXHAUSTED (0 = no limit)")
    f("drain-seconds", default=30.0, type=float, help="SIGTERM grace period for in-flight calls")
    f("max-connection-age", default=300.0, type=float,
      help="seconds before a client connection is sent GOAWAY, so clients re-resolve and reach new replicas (0 = never)")
    f("max-connection-age-grace", default=14400.0, type=float,
      help="seconds a connection past its age may finish in-flight calls; longer than the slowest call "
      "(default: a 20-round RunDialog at the 10-minute round timeout)")
    f("health-port", default=-1, type=int,
      help="plaintext port serving only grpc.health.v1, for kubelet probes when --tls-cert is on (-1 = none)")
    f("max-image-pixels", default=40_000_000, type=int, help="decoded image size cap (decompression bombs)")
    f("max-request-pixels", default=64_000_000, type=int,
      help="pixels of all images of one request together (read from headers before any decoding)")
    f("tls-cert", default=None, help="PEM server certificate (enables TLS)")
    f("tls-key", default=None, help="PEM server private key")
    f("tls-client-ca", default=None, help="PEM CA bundle; when set, clients must present a certificate (mTLS)")
    f("auth-token-file", default=None, help=f"file holding the bearer token every call must carry "
      f"(else env {INBOUND_TOKEN_ENV}; neither = no token check). Never on the command line")
    f("log-level", default="INFO", help="logging level")


INBOUND_TOKEN_ENV = "GENIR_AUTH_TOKEN"
BACKEND_TOKEN_ENV = "GENIR_BACKEND_TOKEN"


def read_secret(path: str | None, env: str) -> str | None:
    """A secret from a file (wins) or an environment variable; None when neither is set.

    Secrets never come from argv (visible to every user in `ps`); an empty one is a mistake.
    """
    if path:
        try:
            value = Path(path).read_text().strip()
        except OSError as e:
            raise SystemExit(f"cannot read the secret file given for {env} ({type(e).__name__})") from None
        where = "its file"
    else:
        value = os.environ.get(env)
        if value is None:
            return None
        value, where = value.strip(), env
    if not value:
        raise SystemExit(f"the secret from {where} is empty")
    return value


def inbound_token(args) -> str | None:
    return read_secret(getattr(args, "auth_token_file", None), INBOUND_TOKEN_ENV)


def add_client_tls_flags(parser: argparse.ArgumentParser, service: str) -> None:
    """TLS for a service's outgoing calls (orchestrator -> backends, refiner -> Triton)."""
    f = lambda *a, **k: add_flag(parser, *a, service=service, **k)  # noqa: E731
    f("client-tls-ca", default=None, help="PEM CA to verify backends (enables TLS to backends)")
    f("client-tls-cert", default=None, help="PEM client certificate for mTLS to backends")
    f("client-tls-key", default=None, help="PEM client key for mTLS to backends")


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def log_config(service: str, args: argparse.Namespace) -> None:
    """Print the effective configuration once at start-up (key material is named, never read)."""
    shown = {k: v for k, v in sorted(vars(args).items()) if not callable(v) and not k.startswith("_")}
    for k in list(shown):
        if ("token" in k or "secret" in k or "password" in k) and shown[k] and not k.endswith("_file"):
            shown[k] = "***"
    log.info("%s config %s", service, json.dumps(shown, default=str))
