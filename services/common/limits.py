"""How the largest request each RPC accepts is enforced. The table itself is part of the
contract and lives in genir/contract.py (REQUEST_LIMITS).

Two layers enforce a limit. gRPC core refuses any message over the service's ceiling (its largest
RPC limit) before Python sees it, so memory stays bounded by the ceiling.
The server interceptor then checks each request's size against its own RPC's limit before the
protobuf is parsed (services.common.interceptors), so a small RPC never parses a big body.
Both refusals are RESOURCE_EXHAUSTED. Import-light on purpose: no grpc, no generated code.
"""

from __future__ import annotations

from genir.contract import REQUEST_LIMITS, KiB, MiB  # noqa: F401 - the table lives with the contract


def request_limit(service: str, method: str, max_message_bytes: int) -> int:
    """Bytes one request message of `service`/`method` may have. Methods not in the table (health,
    reflection) get the server's message limit."""
    limit = REQUEST_LIMITS.get(service, {}).get(method)
    return max_message_bytes if limit is None else min(limit, max_message_bytes)


def service_ceiling(services: list[str], max_message_bytes: int) -> int:
    """The receive limit gRPC core enforces for a server hosting `services`: its largest RPC limit."""
    def largest(service: str) -> int:
        methods = REQUEST_LIMITS.get(service)
        if not methods:
            return max_message_bytes
        return max(request_limit(service, m, max_message_bytes) for m in methods)

    return max(largest(s) for s in services)


def describe(size: int) -> str:
    """A size as people read it: '64 KiB', '9 MiB', '1000 bytes'."""
    for unit, name in ((MiB, "MiB"), (KiB, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} bytes"
