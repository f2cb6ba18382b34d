"""Human-in-the-loop sessions and delivered images, persisted in SQLite (images as files beside it).

Layout: `<db>` (SQLite, WAL) and `<db>.images/<sha256>.<ext>` (content-addressed). A round is
stored as its serialized genir.v1.Round with the image replaced by its reference, so a restarted
orchestrator serves the same sessions. Sessions expire `ttl` seconds after their last round;
expired and deleted sessions are NOT_FOUND, and their images go once nothing references them.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from genir.v1 import common_pb2, orchestrator_pb2
from services.common.errors import InvalidArgument, NotFound

_REF = re.compile(r"^[0-9a-f]{64}\.(png|jpg|webp|img)$")
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, mode TEXT NOT NULL, options BLOB NOT NULL,
    created_at REAL NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE, idx INTEGER NOT NULL,
    round BLOB NOT NULL, image_ref TEXT, PRIMARY KEY (session_id, idx));
CREATE TABLE IF NOT EXISTS images (
    ref TEXT PRIMARY KEY, mime TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS rounds_image ON rounds(image_ref);
"""


class StoredRound(NamedTuple):
    expires_at: float
    round: orchestrator_pb2.Round      # as stored: the image by reference


@dataclass
class SessionRecord:
    id: str
    mode: str
    options: orchestrator_pb2.SessionOptions
    created_at: float
    expires_at: float


class SessionStore:
    def __init__(self, db_path: str | Path, ttl: float = 86400.0):
        self.path = Path(db_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.images_dir = self.path.with_name(self.path.name + ".images")
        self.images_dir.mkdir(exist_ok=True)
        self.ttl = float(ttl)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    # ------------------------------------------------------------------ sessions
    def create(self, mode: str, options: orchestrator_pb2.SessionOptions) -> SessionRecord:
        now = time.time()
        rec = SessionRecord(uuid.uuid4().hex, mode, options, now, now + self.ttl)
        with self._lock:
            self._db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                             (rec.id, mode, options.SerializeToString(), rec.created_at, rec.expires_at))
        return rec

    def get(self, session_id: str) -> SessionRecord:
        sid = self._check_id(session_id)
        with self._lock:
            row = self._db.execute("SELECT id, mode, options, created_at, expires_at FROM sessions WHERE id = ?",
                                   (sid,)).fetchone()
        if row is None or row[4] <= time.time():
            raise NotFound(f"session_id: session {session_id!r} not found (unknown, deleted or expired)")
        return SessionRecord(row[0], row[1], orchestrator_pb2.SessionOptions.FromString(row[2]), row[3], row[4])

    def delete(self, session_id: str) -> bool:
        sid = self._check_id(session_id)
        with self._lock:
            live = self._db.execute("SELECT 1 FROM sessions WHERE id = ? AND expires_at > ?",
                                    (sid, time.time())).fetchone()
            self._db.execute("DELETE FROM sessions WHERE id = ?", (sid,))
        self.purge()
        return live is not None

    def discard(self, session_id: str) -> None:
        """Remove a session whose first round failed (it was never shown to anyone)."""
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def add_round(self, session_id: str, rnd: orchestrator_pb2.Round) -> StoredRound:
        """Store a round (its image as a file, named by its hash); extends the session's life.
        Returns the new expiry and the round as stored (image by reference), which is what a
        caller asking for references gets, without hashing and storing the image again."""
        stored = orchestrator_pb2.Round()
        stored.CopyFrom(rnd)
        ref = None
        if rnd.generated.data:
            # a short grace period covers the gap until the round row references the file
            ref = self.put_image(rnd.generated, expires_at=time.time() + 300.0)
            stored.generated.ClearField("data")
            stored.generated.ref = ref
        expires = time.time() + self.ttl
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute("INSERT INTO rounds VALUES (?, ?, ?, ?)",
                                 (session_id, rnd.index, stored.SerializeToString(), ref))
                self._db.execute("UPDATE sessions SET expires_at = ? WHERE id = ?", (expires, session_id))
                self._db.execute("COMMIT")
            except Exception:
                self._db.execute("ROLLBACK")
                raise
        return StoredRound(expires, stored)

    def rounds(self, session_id: str, inline: bool) -> list[orchestrator_pb2.Round]:
        with self._lock:
            rows = self._db.execute("SELECT round FROM rounds WHERE session_id = ? ORDER BY idx",
                                    (session_id,)).fetchall()
        out = [orchestrator_pb2.Round.FromString(r[0]) for r in rows]
        if inline:
            for rnd in out:
                if rnd.generated.ref:
                    rnd.generated.CopyFrom(self.get_image(rnd.generated.ref))
        return out

    # ------------------------------------------------------------------ images
    def put_image(self, img: common_pb2.Image, expires_at: float | None = None) -> str:
        """Store bytes under their hash; kept until expires_at and while any round references it."""
        ext = _EXT.get(img.mime_type, "img")
        ref = f"{hashlib.sha256(img.data).hexdigest()}.{ext}"
        path = self.images_dir / ref
        if not path.exists():
            tmp = path.with_suffix(f".tmp{uuid.uuid4().hex[:8]}")
            tmp.write_bytes(img.data)
            tmp.replace(path)
        expires = time.time() + self.ttl if expires_at is None else expires_at
        with self._lock:
            self._db.execute("INSERT INTO images VALUES (?, ?, ?, ?, ?) ON CONFLICT(ref) DO UPDATE SET "
                             "expires_at = max(expires_at, excluded.expires_at)",
                             (ref, img.mime_type, img.width, img.height, expires))
        return ref

    def get_image(self, ref: str) -> common_pb2.Image:
        if not _REF.match(ref or ""):
            raise InvalidArgument(f"ref: {ref!r} is not an image reference (<sha256>.<ext>, as returned in Image.ref)")
        with self._lock:
            row = self._db.execute("SELECT mime, width, height FROM images WHERE ref = ?", (ref,)).fetchone()
        path = self.images_dir / ref
        if row is None or not path.exists():
            raise NotFound(f"ref: image {ref!r} not found (unknown or expired)")
        return common_pb2.Image(data=path.read_bytes(), mime_type=row[0], width=row[1], height=row[2])

    # ------------------------------------------------------------------ expiry
    def purge(self) -> int:
        """Drop expired sessions and images nothing references any more; returns files removed."""
        now = time.time()
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            # rounds of deleted sessions go by ON DELETE CASCADE
            gone = [r[0] for r in self._db.execute(
                "SELECT ref FROM images WHERE expires_at <= ? AND ref NOT IN "
                "(SELECT image_ref FROM rounds WHERE image_ref IS NOT NULL)", (now,)).fetchall()]
            self._db.executemany("DELETE FROM images WHERE ref = ?", [(r,) for r in gone])
        for ref in gone:
            (self.images_dir / ref).unlink(missing_ok=True)
        return len(gone)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @staticmethod
    def _check_id(session_id: str) -> str:
        sid = (session_id or "").strip()
        if not sid:
            raise InvalidArgument("session_id: required")
        if not _SESSION_ID.match(sid):
            raise NotFound(f"session_id: session {session_id!r} not found (unknown, deleted or expired)")
        return sid
