"""Typed errors: each class carries its status code, and a downstream failure keeps its code."""

import grpc
import pytest

from services.common import errors


def rpc_error(code: grpc.StatusCode, details: str = "down there") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize("cls, code", [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT), (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED), (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED), (errors.Internal, grpc.StatusCode.INTERNAL),
])
def test_a_downstream_failure_is_raised_again_with_its_own_code(cls, code):
    exc = errors.from_rpc_error(rpc_error(code), "retriever Search")
    assert type(exc) is cls and exc.code == code
    assert exc.message == f"retriever Search: {code.name}: down there"


def test_cancelled_downstream_is_unavailable_and_an_unmapped_code_internal():
    assert type(errors.from_rpc_error(rpc_error(grpc.StatusCode.CANCELLED), "x")) is errors.Unavailable
    assert type(errors.from_rpc_error(rpc_error(grpc.StatusCode.DATA_LOSS), "x")) is errors.Internal


def test_a_subclass_of_a_typed_error_keeps_its_code():
    class TooLong(errors.InvalidArgument):
        pass

    assert TooLong("m").code == grpc.StatusCode.INVALID_ARGUMENT
    assert type(errors.from_rpc_error(rpc_error(grpc.StatusCode.INVALID_ARGUMENT), "x")) is errors.InvalidArgument
