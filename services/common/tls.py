"""TLS and mutual TLS credentials from PEM files."""

from __future__ import annotations

from pathlib import Path

import grpc


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def server_credentials(cert: str | None, key: str | None, client_ca: str | None = None):
    """None for plaintext; TLS when cert+key are given; mTLS (client certs required) with client_ca."""
    if not cert and not key:
        if client_ca:
            raise SystemExit("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if not (cert and key):
        raise SystemExit("TLS needs both --tls-cert and --tls-key")
    ca = _read(client_ca)
    return grpc.ssl_server_credentials([(_read(key), _read(cert))], root_certificates=ca,
                                       require_client_auth=ca is not None)


def channel_credentials(ca: str | None, cert: str | None = None, key: str | None = None):
    """None for plaintext; otherwise TLS verifying the server with `ca`, presenting cert/key if given."""
    if not ca:
        return None
    return grpc.ssl_channel_credentials(root_certificates=_read(ca), private_key=_read(key),
                                        certificate_chain=_read(cert))
