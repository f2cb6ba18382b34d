"""Content hashes a client has delivered to a server that keeps images by SHA-256.

Both legs that send images more than once use it: the orchestrator's refiner client and the
refiner's Triton client. The set is only a hint: the server says when it no longer holds an image,
and the client then forgets it and sends the bytes again.
"""

from __future__ import annotations

from collections import OrderedDict

# How a server says it does not hold a hash (the refiner, and the Triton model in its own words).
UNKNOWN_IMAGE = "unknown image sha256:"
SENT_HASHES = 4096  # image hashes remembered as delivered (32 bytes each)


class SentImages:
    """Digests of images the server has received, least recently used forgotten first."""

    def __init__(self, entries: int = SENT_HASHES):
        self.entries = entries
        self._items: OrderedDict[bytes, None] = OrderedDict()

    def __contains__(self, digest: bytes) -> bool:
        if digest in self._items:
            self._items.move_to_end(digest)
            return True
        return False

    def add(self, digests) -> None:
        for d in digests:
            self._items[d] = None
            self._items.move_to_end(d)
        while len(self._items) > self.entries:
            self._items.popitem(last=False)

    def forget(self, digests) -> None:
        for d in digests:
            self._items.pop(d, None)
