"""The largest request each RPC accepts: part of the contract, written once here.

Two layers enforce a limit. gRPC core refuses any message over the service's ceiling (its largest
RPC limit) before Python sees it, so memory stays bounded by the ceiling.
The server interceptor then checks each request's size against its own RPC's limit before the
protobuf is parsed (services.common.interceptors), so a small RPC never parses a big body.
Both refusals are RESOURCE_EXHAUSTED. Import-light on purpose: no grpc, no generated code.
"""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB

# Sizes from the field limits, with room for protobuf framing and 4-byte UTF-8 characters.
IDS = 64 * KiB          # ids, refs, options: identifiers of 20 000 characters still get their own error
TEXT = 256 * KiB        # a 4096-character query or prompt (plus negative prompt) and options
DIALOG = 1 * MiB        # RunDialog: a chatir dialog of 21 strings of at most 8192 characters
TEXTS = 9 * MiB         # EmbedTexts: 256 texts of at most 8192 characters
LARGE = None            # carries images: up to the server's --max-message-mb

REQUEST_LIMITS: dict[str, dict[str, int | None]] = {
    "genir.v1.Orchestrator": {
        "CreateSession": TEXT, "NextRound": TEXT, "GetSession": IDS, "DeleteSession": IDS,
        "RunDialog": DIALOG, "GetImage": IDS, "GetCorpusImage": IDS, "Describe": IDS,
    },
    "genir.v1.Generator": {"Generate": TEXT, "Info": IDS},
    "genir.v1.Refiner": {"Caption": LARGE, "Compare": LARGE, "Refine": LARGE, "Critique": LARGE, "Info": IDS},
    "genir.v1.Retriever": {
        "Search": LARGE, "EmbedImages": LARGE, "EmbedTexts": TEXTS, "Upsert": LARGE, "CollectionInfo": IDS,
    },
}


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
