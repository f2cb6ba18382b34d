"""Human-in-the-loop sessions and delivered images, persisted in SQLite (images as files beside it).

Layout: `<db>` (SQLite, WAL) and `<db>.images/<ref>` where a ref is 256 random bits + extension:
unguessable, and never shared between sessions. A round is stored as its serialized
genir.v1.Round with the image replaced by its reference, so a restarted orchestrator serves the
same sessions. A session is written together with its first round (a crash mid-CreateSession
leaves nothing). Sessions expire `ttl` seconds after their last round; expired and deleted
sessions are NOT_FOUND. A deleted session's images are removed in the same call; an expired
one's by the next purge (every min(60 s, ttl / 4)). Images of RunDialog (no session) live `ttl`.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from genir.contract import MAX_SESSION_ROUNDS
from genir.v1 import common_pb2, orchestrator_pb2
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.paths import echo

log = logging.getLogger("genir.orchestrator.sessions")

PROBE_BYTES = 64 << 10    # the least free space the storage probe asks for (SessionStore.writable)

_REF = re.compile(r"^[0-9a-f]{64}\.(png|jpg|webp|img)$")
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")

def parse_session_id(value: str) -> str:
    """A session id as minted here (32 hex digits); any other string names no session."""
    sid = (value or "").strip()
    if not sid:
        raise InvalidArgument("session_id: required")
    if not _SESSION_ID.match(sid):
        raise NotFound(f"session_id: session {echo(value)} not found (unknown, deleted or expired)")
    return sid


def parse_image_ref(value: str) -> str:
    """An image reference as minted here; the check also keeps the name inside the image folder."""
    if not _REF.match(value or ""):
        raise InvalidArgument(f"ref: {echo(value)} is not an image reference (64 hex digits + extension, as "
                              f"returned in Image.ref)")
    return value


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
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at REAL NOT NULL);
"""


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
        self._probe_bytes = PROBE_BYTES
        self._last_probe_error: str | None = None
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        # the server's calls run here, one at a time: SQLite and the image files stay off its event loop
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genir-sessions")

    async def off_loop(self, method, *args, **kw):
        """`method(*args, **kw)` (one of this store's) on the store's own thread, awaited."""
        return await asyncio.get_running_loop().run_in_executor(self._io, functools.partial(method, *args, **kw))

    # ------------------------------------------------------------------ sessions
    def new(self, mode: str, options: orchestrator_pb2.SessionOptions) -> SessionRecord:
        """A session not yet stored: `add_round(..., new=rec)` stores it with its first round."""
        now = time.time()
        return SessionRecord(uuid.uuid4().hex, mode, options, now, now + self.ttl)

    def create(self, mode: str, options: orchestrator_pb2.SessionOptions) -> SessionRecord:
        rec = self.new(mode, options)
        with self._lock:
            self._insert_session(rec)
        return rec

    def _insert_session(self, rec: SessionRecord) -> None:
        self._db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                         (rec.id, rec.mode, rec.options.SerializeToString(), rec.created_at, rec.expires_at))

    def get(self, session_id: str) -> SessionRecord:
        sid = parse_session_id(session_id)
        with self._lock:
            row = self._db.execute("SELECT id, mode, options, created_at, expires_at FROM sessions WHERE id = ?",
                                   (sid,)).fetchone()
        if row is None or row[4] <= time.time():
            raise NotFound(f"session_id: session {echo(session_id)} not found (unknown, deleted or expired)")
        return SessionRecord(row[0], row[1], orchestrator_pb2.SessionOptions.FromString(row[2]), row[3], row[4])

    def delete(self, session_id: str) -> bool:
        """Delete a session, its rounds and their image files now."""
        sid = parse_session_id(session_id)
        with self._lock:
            live = self._db.execute("SELECT 1 FROM sessions WHERE id = ? AND expires_at > ?",
                                    (sid, time.time())).fetchone()
            refs = self._drop_sessions("id = ?", (sid,))
        self._unlink(refs)
        self.purge()
        return live is not None

    def _drop_sessions(self, where: str, args: tuple) -> list[str]:
        """Delete the matching sessions (rounds cascade) and their images' rows; the refs to unlink."""
        refs = [r[0] for r in self._db.execute(
            f"SELECT image_ref FROM rounds WHERE image_ref IS NOT NULL AND session_id IN "
            f"(SELECT id FROM sessions WHERE {where})", args).fetchall()]
        self._db.execute(f"DELETE FROM sessions WHERE {where}", args)
        self._db.executemany("DELETE FROM images WHERE ref = ?", [(r,) for r in refs])
        return refs

    def _unlink(self, refs) -> None:
        for ref in refs:
            (self.images_dir / ref).unlink(missing_ok=True)

    def add_round(self, session_id: str, rnd: orchestrator_pb2.Round,
                  new: SessionRecord | None = None) -> tuple[float, orchestrator_pb2.Round]:
        """Store a round (its image as a file) and extend the session's life: (new expiry, stored round).

        With `new`, the session itself is inserted in the same transaction (atomic creation). A
        session deleted or expired while its round ran is NOT_FOUND, and the round's image goes.
        """
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
                if new is not None:
                    self._insert_session(new)
                alive = self._db.execute("UPDATE sessions SET expires_at = ? WHERE id = ? AND expires_at > ?",
                                         (expires, session_id, time.time())).rowcount
                if alive:
                    self._db.execute("INSERT INTO rounds VALUES (?, ?, ?, ?)",
                                     (session_id, rnd.index, stored.SerializeToString(), ref))
                    self._db.execute("COMMIT")
                else:
                    self._db.execute("ROLLBACK")
            except BaseException:
                self._db.execute("ROLLBACK")
                alive = None
                raise
            finally:
                if not alive and ref is not None:
                    self._db.execute("DELETE FROM images WHERE ref = ?", (ref,))
                    self._unlink([ref])
        if not alive:
            raise NotFound(f"session_id: session {echo(session_id)} was deleted or expired while this round ran")
        return expires, stored

    @staticmethod
    def check_room(rounds: list) -> None:
        if len(rounds) >= MAX_SESSION_ROUNDS:
            raise FailedPrecondition(f"session: it has reached the limit of {MAX_SESSION_ROUNDS} rounds; "
                                     f"start a new session with the current query")

    def rounds(self, session_id: str, inline: bool, inline_budget: int = 1 << 62) -> list[orchestrator_pb2.Round]:
        """The stored rounds; with `inline`, images as bytes while their total stays within
        `inline_budget` bytes, later ones as references (so the answer fits one message)."""
        with self._lock:
            rows = self._db.execute("SELECT round FROM rounds WHERE session_id = ? ORDER BY idx",
                                    (session_id,)).fetchall()
        out = [orchestrator_pb2.Round.FromString(r[0]) for r in rows]
        used = sum(len(r[0]) for r in rows)
        if inline:
            for rnd in out:
                if rnd.generated.ref:
                    img = self.get_image(rnd.generated.ref)
                    if used + len(img.data) > inline_budget:
                        break
                    used += len(img.data)
                    rnd.generated.CopyFrom(img)
        return out

    # ------------------------------------------------------------------ images
    def put_image(self, img: common_pb2.Image, expires_at: float | None = None) -> str:
        """Store bytes under a new random ref; kept until expires_at and while a round references it."""
        ext = _EXT.get(img.mime_type, "img")
        ref = f"{secrets.token_hex(32)}.{ext}"
        path = self.images_dir / ref
        tmp = path.with_suffix(f".tmp{uuid.uuid4().hex[:8]}")
        try:
            tmp.write_bytes(img.data)
            tmp.replace(path)
        except OSError:
            self._probe_bytes = max(PROBE_BYTES, min(len(img.data), 16 << 20))
            raise
        finally:
            tmp.unlink(missing_ok=True)     # disk full or read-only: no partial file stays behind
        expires = time.time() + self.ttl if expires_at is None else expires_at
        with self._lock:
            self._db.execute("INSERT INTO images VALUES (?, ?, ?, ?, ?) ON CONFLICT(ref) DO UPDATE SET "
                             "expires_at = max(expires_at, excluded.expires_at)",
                             (ref, img.mime_type, img.width, img.height, expires))
        return ref

    def get_image(self, ref: str) -> common_pb2.Image:
        ref = parse_image_ref(ref)
        with self._lock:
            row = self._db.execute("SELECT mime, width, height FROM images WHERE ref = ?", (ref,)).fetchone()
        path = self.images_dir / ref
        if row is None or not path.exists():
            raise NotFound(f"ref: image {ref!r} not found (unknown or expired)")
        return common_pb2.Image(data=path.read_bytes(), mime_type=row[0], width=row[1], height=row[2])

    def writable(self) -> bool:
        """Whether both stores take a write now (health follows this). The image folder's disk must
        have room for the last image that failed to be written (at least PROBE_BYTES) and take an
        empty probe file; the database must take one row. False on a full disk or a read-only
        folder. Free space is read, not written, so probing every few seconds costs no disk wear."""
        probe = self.images_dir / f".probe{uuid.uuid4().hex[:8]}"
        try:
            st = os.statvfs(self.images_dir)
            if st.f_flag & os.ST_RDONLY:
                raise OSError(errno.EROFS, "read-only file system")
            if st.f_bavail * st.f_frsize < self._probe_bytes:
                raise OSError(errno.ENOSPC, f"{st.f_bavail * st.f_frsize} bytes free")
            try:
                probe.touch()
            finally:
                probe.unlink(missing_ok=True)
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO probe VALUES (1, ?)", (time.time(),))
        except (OSError, sqlite3.Error) as e:
            if self._last_probe_error != str(e):     # once per new reason, not every probe
                log.warning("session storage cannot be written (needs %d bytes free): %s", self._probe_bytes, e)
            self._last_probe_error = str(e)
            return False
        self._probe_bytes, self._last_probe_error = PROBE_BYTES, None
        return True

    # ------------------------------------------------------------------ expiry
    def purge(self) -> int:
        """Drop expired sessions and images nothing references any more; returns files removed."""
        now = time.time()
        with self._lock:
            # rounds of expired sessions go by ON DELETE CASCADE, their images right here
            gone = self._drop_sessions("expires_at <= ?", (now,))
            gone += [r[0] for r in self._db.execute(
                "SELECT ref FROM images WHERE expires_at <= ? AND ref NOT IN "
                "(SELECT image_ref FROM rounds WHERE image_ref IS NOT NULL)", (now,)).fetchall()]
            self._db.executemany("DELETE FROM images WHERE ref = ?", [(r,) for r in gone])
        self._unlink(gone)
        return len(gone)

    def close(self) -> None:
        self._io.shutdown(wait=True)
        with self._lock:
            self._db.close()
