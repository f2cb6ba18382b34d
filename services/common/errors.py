"""Exceptions that carry a gRPC status code, and their mapping.

Servicers and backends raise these; the server interceptor turns them into a status with the
message as details. Anything else becomes INTERNAL with a generic message (the traceback goes to
the log, never to the client).
"""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class Internal(ServiceError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE = {cls.code: cls for cls in (InvalidArgument, NotFound, AlreadyExists, FailedPrecondition,
                                       ResourceExhausted, Unavailable, DeadlineExceeded, Unauthenticated,
                                       Internal)}


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
