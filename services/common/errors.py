"""Exceptions that carry a gRPC status code, and their mapping.

Servicers and backends raise these; the server interceptor turns them into a status with the
message as details. Anything else becomes INTERNAL with a generic message (the traceback goes to
the log, never to the client).
"""

from __future__ import annotations

import grpc

_BY_CODE: dict[grpc.StatusCode, type] = {}


class ServiceError(Exception):
    """A failure with its status code; each subclass names its code once, in its class line."""
    code = grpc.StatusCode.INTERNAL

    def __init_subclass__(cls, code: grpc.StatusCode | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if code is not None:     # a subclass of a subclass keeps its parent's code
            cls.code = code
            _BY_CODE[code] = cls

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError, code=grpc.StatusCode.INVALID_ARGUMENT):
    """The request itself is wrong; the message names the field."""


class NotFound(ServiceError, code=grpc.StatusCode.NOT_FOUND):
    """What the request names does not exist (or no longer: expired, deleted)."""


class AlreadyExists(ServiceError, code=grpc.StatusCode.ALREADY_EXISTS):
    pass


class FailedPrecondition(ServiceError, code=grpc.StatusCode.FAILED_PRECONDITION):
    """A valid request this server cannot answer in its state (no corpus, another model...)."""


class ResourceExhausted(ServiceError, code=grpc.StatusCode.RESOURCE_EXHAUSTED):
    pass


class Unavailable(ServiceError, code=grpc.StatusCode.UNAVAILABLE):
    """Try again later, with backoff."""


class DeadlineExceeded(ServiceError, code=grpc.StatusCode.DEADLINE_EXCEEDED):
    pass


class Unauthenticated(ServiceError, code=grpc.StatusCode.UNAUTHENTICATED):
    pass


class Internal(ServiceError, code=grpc.StatusCode.INTERNAL):
    pass


def from_rpc_error(err: grpc.aio.AioRpcError | grpc.RpcError, what: str) -> ServiceError:
    """Re-raise a downstream call's failure as our own error, naming the downstream service."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    cls = _BY_CODE.get(code, Internal)
    if code == grpc.StatusCode.CANCELLED:
        cls = Unavailable
    exc = cls(f"{what}: {code.name}: {details}")
    return exc


_NO_SPACE = {28, 122}            # ENOSPC, EDQUOT
_READ_ONLY = {30, 13, 1}         # EROFS, EACCES, EPERM


def storage_error(exc: BaseException) -> ServiceError | None:
    """A clear status for a server-side storage failure (disk full, read-only folder), or None.

    The message names the condition only: the OSError's text carries a server path.
    """
    import sqlite3

    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return ResourceExhausted("server storage is full (no space left on its disk); retry after space is freed")
    if isinstance(exc, OSError) and exc.errno in _READ_ONLY:
        return Unavailable("server storage is not writable (read-only or permission denied)")
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        if "full" in text:
            return ResourceExhausted("server storage is full (database or disk is full)")
        if "readonly" in text or "read-only" in text or "locked" in text or "unable to open" in text:
            return Unavailable(f"server storage is not writable ({text[:60]})")
    return None
