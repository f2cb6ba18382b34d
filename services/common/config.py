"""Configuration in one typed place: each service declares a frozen dataclass whose fields are also
its flags (`flag(...)`), each flag defaulting to $GENIR_<SERVICE>_<NAME>. `register` adds the fields
to a parser; `Config.from_args(namespace)` builds the typed config the backends receive.

    @dataclass(frozen=True)
    class GeneratorConfig(ServerConfig):
        model: str | None = flag("model folder")
        max_batch_size: int = flag("most images in one pipeline call", 8)

The flags every server shares are `ServerConfig`; outgoing TLS is `ClientTLSConfig`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

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


def flags(parser: argparse.ArgumentParser, service: str) -> Callable[..., None]:
    """`add_flag` bound to one parser and one service: add("port", default=1, type=int, help=...)."""
    return functools.partial(add_flag, parser, service=service)


def flag(help: str, default: Any = None, *, choices=None) -> Any:
    """A config field that is also a --flag; its type (int, float, str, bool = on/off) is the annotation's."""
    return dataclasses.field(metadata={"help": help, "default": default, "choices": choices})


def default_of(cls: type, name: str) -> Any:
    """The default of config class `cls`'s field `name` (what its flag gives when not set)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata["default"]
    raise TypeError(f"{cls.__name__} has no field {name!r}")


def _flag_type(annotation) -> type:
    """int for `int`, `int | None`, ...; str for anything else that is not int/float/bool."""
    kinds = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return kinds[0] if kinds[0] in (int, float, bool) else str


def register(parser: argparse.ArgumentParser, cls: type, service: str, **defaults) -> None:
    """Add every field of config class `cls` as a flag; `defaults` replaces some fields' defaults."""
    add, hints = flags(parser, service), typing.get_type_hints(cls)
    unknown = set(defaults) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {sorted(unknown)} to default")
    for f in dataclasses.fields(cls):
        kind = _flag_type(hints[f.name])
        default = defaults.get(f.name, default_of(cls, f.name))
        name = f.name.replace("_", "-")
        if kind is bool:
            add(name, default=default, bool_flag=True, help=f.metadata["help"])
        else:
            add(name, default=default, type=kind, choices=f.metadata["choices"], help=f.metadata["help"])


C = TypeVar("C")


class FromArgs:
    """`from_args`: the typed config from parsed flags (a Namespace, or anything with the attributes)."""

    @classmethod
    def from_args(cls: type[C], ns) -> C:
        return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})


INBOUND_TOKEN_ENV = "GENIR_AUTH_TOKEN"
BACKEND_TOKEN_ENV = "GENIR_BACKEND_TOKEN"


@dataclasses.dataclass(frozen=True)
class ServerConfig(FromArgs):
    """The flags every genir server takes (docs/conventions.md); port defaults are per service."""
    host: str = flag("address to bind (0.0.0.0 in containers)", "127.0.0.1")
    port: int = flag("gRPC port")
    metrics_port: int = flag("Prometheus /metrics port (-1 disables)")
    metrics_host: str | None = flag("metrics bind address (default: --host)")
    max_message_mb: int = flag("largest gRPC message, MiB: responses, and requests that carry images "
                               "(other RPCs have smaller limits, genir/contract.py REQUEST_LIMITS)", 64)
    max_inflight: int = flag("calls in flight before RESOURCE_EXHAUSTED (0 = no limit)", 64)
    drain_seconds: float = flag("SIGTERM grace period for in-flight calls", 30.0)
    max_connection_age: float = flag(
        "seconds before a client connection is sent GOAWAY, so clients re-resolve and reach new replicas (0 = never)",
        300.0)
    max_connection_age_grace: float = flag(
        "seconds a connection past its age may finish in-flight calls; longer than the slowest call "
        "(default: a 20-round RunDialog at the 10-minute round timeout)", 14400.0)
    health_port: int = flag(
        "plaintext port serving only grpc.health.v1, for kubelet probes when --tls-cert is on (-1 = none)", -1)
    max_image_pixels: int = flag("decoded image size cap (decompression bombs)", 40_000_000)
    max_request_pixels: int = flag(
        "pixels of all images of one request together (read from headers before any decoding)", 64_000_000)
    tls_cert: str | None = flag("PEM server certificate (enables TLS)")
    tls_key: str | None = flag("PEM server private key")
    tls_client_ca: str | None = flag("PEM CA bundle; when set, clients must present a certificate (mTLS)")
    auth_token_file: str | None = flag(
        f"file holding the bearer token every call must carry (else env {INBOUND_TOKEN_ENV}; neither = no token "
        "check). Never on the command line")
    log_level: str = flag("logging level", "INFO")


@dataclasses.dataclass(frozen=True)
class ClientTLSConfig(FromArgs):
    """TLS for a service's outgoing calls (orchestrator -> backends, refiner -> Triton, web -> orchestrator)."""
    client_tls_ca: str | None = flag("PEM CA to verify backends (enables TLS to backends)")
    client_tls_cert: str | None = flag("PEM client certificate for mTLS to backends")
    client_tls_key: str | None = flag("PEM client key for mTLS to backends")


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
