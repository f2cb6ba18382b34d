"""Free TCP ports for local stacks and tests.

Binding port 0 hands out a port from the kernel's ephemeral range, the same range outgoing
connections draw from: between our check and the server's bind, a client connection can take it.
So ports are drawn at random below that range, checked by binding, and never handed out twice by
this process. Processes that run side by side on one machine (parallel test workers) each set
GENIR_PORT_SLICE=k/n and draw from the k-th of n disjoint slices of that range, so one cannot hand
out a port another has handed out but not bound yet.
"""

from __future__ import annotations

import os
import random
import socket

_handed_out: set[int] = set()
_rng = random.SystemRandom()


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int, host: str) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _draw_range() -> tuple[int, int]:
    lo, hi = _ephemeral_range()
    first, last = (10_000, lo - 1) if lo > 12_000 else (hi + 1, 65_535)
    k, _, n = os.environ.get("GENIR_PORT_SLICE", "0/1").partition("/")
    k, n = int(k), int(n)
    if not 0 <= k < n:
        raise ValueError(f"GENIR_PORT_SLICE={k}/{n}: want k/n with 0 <= k < n")
    width = (last - first + 1) // n
    return first + k * width, first + (k + 1) * width - 1


def free_port(host: str = "127.0.0.1") -> int:
    first, last = _draw_range()
    for _ in range(500):
        port = _rng.randint(first, last)
        if port not in _handed_out and _bindable(port, host):
            _handed_out.add(port)
            return port
    with socket.socket() as s:  # crowded machine: fall back to the kernel's choice
        s.bind((host, 0))
        return s.getsockname()[1]
