"""dialogs.jsonl: one JSON line per finished dialog, appended and fsynced.

The file is the run's only state. A run that is killed part-way leaves complete lines plus at most
one partial last line; loading drops (and, when asked, truncates away) that partial tail and keeps
the first record of every target, so resuming never loses or double-counts a dialog.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger("genir.eval")

DIALOGS = "dialogs.jsonl"


def load_dialogs(path: str | Path, repair: bool = False) -> dict[int, dict]:
    """Finished dialogs by target id (first record wins). `repair` truncates a partial last line."""
    p = Path(path)
    if not p.exists():
        return {}
    data = p.read_bytes()
    good_end = data.rfind(b"\n") + 1  # everything after the last newline is an unfinished write
    out: dict[int, dict] = {}
    for n, line in enumerate(data[:good_end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            tid = int(rec["target_id"])
        except (ValueError, KeyError, TypeError):
            # A torn line followed by a newline can only come from outside tampering; skip it loudly.
            log.warning("%s line %d is not a dialog record; ignored", p, n)
            continue
        if tid in out:
            log.warning("%s line %d repeats target %d; the first record is kept", p, n, tid)
            continue
        out[tid] = rec
    if good_end < len(data):
        log.warning("%s ends in a partial line (%d bytes) from an interrupted run; ignored",
                    p, len(data) - good_end)
        if repair:
            with open(p, "r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())
    return out


class DialogLog:
    """Appends one record per line and makes it durable before returning."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "ab")

    def append(self, record: dict) -> None:
        line = json.dumps(record, sort_keys=True, ensure_ascii=False).encode() + b"\n"
        self._f.write(line)
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def ranks_of(record: dict) -> list[int]:
    return [int(r["rank"]) for r in record["rounds"]]
