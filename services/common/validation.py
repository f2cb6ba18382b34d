"""Small request validators: each raises InvalidArgument naming the field and the allowed range."""

from __future__ import annotations

import math

from genir import contract
from genir.v1 import common_pb2
from services.common.errors import InvalidArgument
from services.common.paths import echo

MAX_TEXT_CHARS = contract.MAX_TEXT_CHARS


def text(value: str, field: str, *, max_chars: int = MAX_TEXT_CHARS, required: bool = True) -> str:
    value = value or ""
    if required and not value.strip():
        raise InvalidArgument(f"{field}: must not be empty")
    if len(value) > max_chars:
        raise InvalidArgument(f"{field}: {len(value)} characters, over the limit of {max_chars}")
    if "\x00" in value:
        raise InvalidArgument(f"{field}: contains a NUL character")
    return value.strip()


def int_range(value: int, field: str, lo: int, hi: int) -> int:
    if not (lo <= value <= hi):
        raise InvalidArgument(f"{field}: {value} is out of range [{lo}, {hi}]")
    return int(value)


def float_range(value: float, field: str, lo: float, hi: float, *, lo_open: bool = False) -> float:
    if value is None or math.isnan(value) or math.isinf(value):
        raise InvalidArgument(f"{field}: must be a finite number")
    ok = (lo < value if lo_open else lo <= value) and value <= hi
    if not ok:
        bracket = "(" if lo_open else "["
        raise InvalidArgument(f"{field}: {value:g} is out of range {bracket}{lo:g}, {hi:g}]")
    return float(value)


def in_range(value, field: str, allowed: contract.Range):
    """`value` checked against one of the contract's ranges (float ranges also refuse NaN/inf)."""
    if isinstance(allowed.lo, float):
        return float_range(value, field, allowed.lo, allowed.hi, lo_open=allowed.lo_open)
    return int_range(value, field, allowed.lo, allowed.hi)


def choice(value: str, field: str, allowed) -> str:
    if value not in allowed:
        raise InvalidArgument(f"{field}: unknown value {echo(value)}; allowed: {', '.join(map(str, sorted(allowed)))}")
    return value


def image_delivery(value: int, field: str = "image_delivery") -> int:
    return choice(value, field, set(common_pb2.ImageDelivery.values()))


def corpus_id(value: str, field: str) -> int:
    """Corpus ids are decimal integers (the index in the corpus list)."""
    cid = contract.parse_corpus_id(value)
    if cid is None:
        raise InvalidArgument(f"{field}: {echo(value)} is not a corpus id (a non-negative decimal integer)")
    return cid
