"""Small request validators: each raises InvalidArgument naming the field and the allowed range."""

from __future__ import annotations

import math

from services.common.errors import InvalidArgument
from services.common.paths import echo

MAX_TEXT_CHARS = 8192


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


def choice(value: str, field: str, allowed) -> str:
    if value not in allowed:
        raise InvalidArgument(f"{field}: unknown value {echo(value)}; allowed: {', '.join(map(str, sorted(allowed)))}")
    return value


def corpus_id(value: str, field: str) -> int:
    """Corpus ids are decimal integers (the index in the corpus list)."""
    s = (value or "").strip()
    # ASCII digits only: str.isdigit() also accepts '²' and Arabic-Indic digits, which int() rejects
    # or reads as another number.
    if not (s.isascii() and s.isdigit()) or len(s) > 16:
        raise InvalidArgument(f"{field}: {echo(value)} is not a corpus id (a non-negative decimal integer)")
    return int(s)
