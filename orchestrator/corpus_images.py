"""Corpus photos for remote clients (Orchestrator.GetCorpusImage): files confined to the image
root, downscaled to thumbnails on request, with a byte-bounded LRU cache of the results.

Model code only: errors are services.common.errors, which the interceptor maps to gRPC codes.
"""

from __future__ import annotations

import io
import mimetypes
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image as PILImage

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.paths import echo, resolve_in_root

MIN_SIDE, MAX_SIDE = 16, 2048
CACHE_BYTES = 64 << 20


def confined_path(root: Path, rel: str) -> Path:
    """`rel` resolved under `root` by the one confinement rule (services.common.paths.resolve_in_root).

    The client names an id, not a path, so a corpus entry that leaves the root is the server's
    misconfiguration: FAILED_PRECONDITION, naming the corpus path only, never what lies outside.
    """
    try:
        return resolve_in_root(root, rel, "corpus path")
    except InvalidArgument:
        raise FailedPrecondition(f"corpus path {echo(rel)} leaves the image root; refused") from None


@dataclass(frozen=True)
class Picture:
    data: bytes
    mime_type: str
    width: int
    height: int


def _encode(path: Path, rel: str, max_side: int) -> Picture:
    try:
        data = path.read_bytes()
        with PILImage.open(io.BytesIO(data)) as im:
            if not max_side:
                return Picture(data, mimetypes.guess_type(rel)[0] or f"image/{(im.format or 'png').lower()}",
                               *im.size)
            im.draft("RGB", (max_side, max_side))  # JPEG: decode at reduced scale, much faster
            im.thumbnail((max_side, max_side))
            alpha = im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info)
            out = io.BytesIO()
            if alpha:
                im.convert("RGBA").save(out, format="PNG")
                return Picture(out.getvalue(), "image/png", *im.size)
            im.convert("RGB").save(out, format="JPEG", quality=85)
            return Picture(out.getvalue(), "image/jpeg", *im.size)
    except FileNotFoundError:
        raise NotFound(f"corpus image {rel!r} is missing under the image root") from None
    except (OSError, ValueError) as e:
        raise FailedPrecondition(f"corpus image {rel!r} is unreadable ({type(e).__name__})") from None


class CorpusImages:
    """Reads corpus photos under `root`; thumbnails are cached (LRU, at most `cache_bytes`)."""

    def __init__(self, root: str | Path | None, cache_bytes: int = CACHE_BYTES):
        from genir.corpus_folder import register_heif

        register_heif()  # HEIC photos in folders given as corpora
        self.root = Path(root) if root else None
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[tuple[str, int], Picture] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, rel: str, max_side: int) -> Picture:
        if self.root is None:
            raise FailedPrecondition("the orchestrator has no --image-root; it cannot serve corpus images")
        key = (rel, max_side)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        pic = _encode(confined_path(self.root, rel), rel, max_side)
        if max_side:  # originals are not cached: they are the biggest and fetched least
            self._remember(key, pic)
        return pic

    def _remember(self, key, pic: Picture) -> None:
        with self._lock:
            if key in self._cache:
                return
            self._cache[key] = pic
            self._size += len(pic.data)
            while self._size > self.cache_bytes and self._cache:
                _, old = self._cache.popitem(last=False)
                self._size -= len(old.data)

    def cached(self) -> int:
        return len(self._cache)
