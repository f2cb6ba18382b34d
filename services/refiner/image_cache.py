"""Images the refiner has received, kept by content hash so a caller can name them again.

A dialog shows the refiner the same target on every call. The first call carries the bytes; the
refiner checks their header once (format, pixel cap), keeps bytes, digest and pixel count here,
and later calls send only `Image.sha256`. The cache is bounded by bytes, least recently used
dropped first; a hash it no longer holds (evicted, restarted, another replica) is refused with
FAILED_PRECONDITION naming the hash, and the caller sends the bytes again.

genir_refiner_images_received_total{form="bytes"|"reference"|"unknown_reference"} counts what arrived.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from services.common import images
from services.common.digests import UNKNOWN_IMAGE
from services.common.errors import FailedPrecondition, InvalidArgument

HEX_DIGEST = re.compile(r"[0-9a-f]{64}")

RECEIVED = Counter("genir_refiner_images_received_total",
                   "Images in refiner requests, by how they came: bytes, a known reference, an unknown one.", ["form"])
HELD_BYTES = Gauge("genir_refiner_image_cache_bytes", "Bytes of images the refiner holds by hash.")
for _form in ("bytes", "reference", "unknown_reference"):
    RECEIVED.labels(_form)


@dataclass(frozen=True)
class Checked:
    """One image's bytes, its SHA-256 and the pixels its header announced (already within the cap)."""
    data: bytes
    digest: bytes
    pixels: int


class ImageCache:
    """Checked images by digest, at most `max_bytes` of image data (0 keeps nothing)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.held = 0
        self._items: OrderedDict[bytes, Checked] = OrderedDict()

    def get(self, digest: bytes) -> Checked | None:
        item = self._items.get(digest)
        if item is not None:
            self._items.move_to_end(digest)
        return item

    def put(self, item: Checked) -> None:
        if len(item.data) > self.max_bytes or item.digest in self._items:
            return
        self._items[item.digest] = item
        self.held += len(item.data)
        while self.held > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.held -= len(old.data)
        HELD_BYTES.set(self.held)

    def resolve(self, msg, field: str, max_pixels: int) -> Checked:
        """A request's Image (bytes or sha256) -> its checked bytes; bytes are checked and kept."""
        if msg.data:
            return self._arrived(msg, field, max_pixels)
        if not msg.sha256:
            images.decode_proto(msg, field, max_pixels)   # raises the missing / ref-only message
        digest = parse_digest(msg.sha256, field)
        item = self.get(digest)
        if item is None:
            RECEIVED.labels("unknown_reference").inc()
            raise FailedPrecondition(f"{field}: {UNKNOWN_IMAGE}{msg.sha256} is not held by this refiner "
                                     f"(evicted, restarted or another replica); send the bytes in {field}.data")
        if item.pixels > max_pixels:      # the cap can only differ if the same cache served another limit
            raise InvalidArgument(f"{field}: image of {item.pixels} pixels is over the limit of {max_pixels} pixels")
        RECEIVED.labels("reference").inc()
        return item

    def _arrived(self, msg, field: str, max_pixels: int) -> Checked:
        digest = hashlib.sha256(msg.data).digest()
        if msg.sha256 and parse_digest(msg.sha256, field) != digest:
            raise InvalidArgument(f"{field}: sha256 {msg.sha256} does not match the bytes in data "
                                  f"(sha256 {digest.hex()}); send one or the other")
        known = self.get(digest)
        item = known or Checked(bytes(msg.data), digest, images.header_pixels(msg.data, field, max_pixels))
        RECEIVED.labels("bytes").inc()
        self.put(item)
        return item


def parse_digest(text: str, field: str) -> bytes:
    if not HEX_DIGEST.fullmatch(text):
        raise InvalidArgument(f"{field}.sha256: expected 64 lowercase hex digits, got {text[:80]!r}")
    return bytes.fromhex(text)
