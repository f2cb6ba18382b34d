"""The refiner's image cache: bytes are checked once on arrival, a hash reuses that check, the
cache is bounded by bytes, and an unknown hash is refused naming it (no server, no Triton)."""

from __future__ import annotations

import hashlib

import pytest

from genir.v1 import common_pb2, refiner_pb2
from services.common.errors import FailedPrecondition, InvalidArgument
from services.refiner.image_cache import RECEIVED, ImageCache
from services.refiner.server import Limits, parse_caption, parse_compare
from testkit.images import marked_png

LIMITS = Limits(max_new_tokens=64, max_pixels=10_000, max_request_pixels=15_000)


def by_hash(data: bytes) -> common_pb2.Image:
    return common_pb2.Image(sha256=hashlib.sha256(data).hexdigest())


def received() -> dict[str, float]:
    return {f: RECEIVED.labels(f)._value.get() for f in ("bytes", "reference", "unknown_reference")}


def test_bytes_once_then_the_hash_names_the_same_bytes_without_a_second_header_read():
    cache, data = ImageCache(1 << 20), marked_png((10, 200, 30), size=(60, 40))
    before = received()
    first = parse_caption(refiner_pb2.CaptionRequest(target=common_pb2.Image(data=data)), LIMITS, cache)
    again = parse_caption(refiner_pb2.CaptionRequest(target=by_hash(data)), LIMITS, cache)
    assert bytes(first.images[0]) == bytes(again.images[0]) == data
    assert again.images[0].field == "target" and again.images[0].digest == hashlib.sha256(data).digest()
    after = received()
    assert {k: after[k] - before[k] for k in after} == {"bytes": 1, "reference": 1, "unknown_reference": 0}


def test_an_unknown_hash_is_failed_precondition_naming_the_hash_and_the_field():
    digest = hashlib.sha256(b"never sent").hexdigest()
    with pytest.raises(FailedPrecondition, match=f"generated: unknown image sha256:{digest}.*send the bytes"):
        parse_compare(refiner_pb2.CompareRequest(target=common_pb2.Image(data=marked_png((1, 2, 3))),
                                                 generated=common_pb2.Image(sha256=digest), caption="a"),
                      LIMITS, ImageCache(1 << 20))


@pytest.mark.parametrize("image, message", [
    (common_pb2.Image(sha256="ABC"), "target.sha256: expected 64 lowercase hex digits"),
    (common_pb2.Image(data=marked_png((1, 2, 3)), sha256="0" * 64), "target: sha256 0+ does not match the bytes"),
])
def test_a_malformed_or_mismatched_hash_is_invalid_argument(image, message):
    with pytest.raises(InvalidArgument, match=message):
        parse_caption(refiner_pb2.CaptionRequest(target=image), LIMITS, ImageCache(1 << 20))


def test_a_hash_counts_against_the_request_pixel_budget_from_the_checked_header():
    cache = ImageCache(1 << 20)
    big = marked_png((5, 5, 5), size=(100, 90))                  # 9,000 px: within the 10,000 cap
    parse_caption(refiner_pb2.CaptionRequest(target=common_pb2.Image(data=big)), LIMITS, cache)
    with pytest.raises(InvalidArgument, match="2 image\\(s\\) of 18000 pixels.*budget of 15000"):
        parse_compare(refiner_pb2.CompareRequest(target=by_hash(big), generated=by_hash(big), caption="a"),
                      LIMITS, cache)


def test_the_cache_is_bounded_by_bytes_least_recently_used_first():
    images = [marked_png((i * 40, 10, 10), size=(40, 40)) for i in range(3)]
    cache = ImageCache(len(images[0]) + len(images[1]) + 10)
    for data in images[:2]:
        parse_caption(refiner_pb2.CaptionRequest(target=common_pb2.Image(data=data)), LIMITS, cache)
    parse_caption(refiner_pb2.CaptionRequest(target=by_hash(images[0])), LIMITS, cache)     # 0 is now recent
    parse_caption(refiner_pb2.CaptionRequest(target=common_pb2.Image(data=images[2])), LIMITS, cache)
    assert cache.held <= cache.max_bytes
    assert cache.get(hashlib.sha256(images[1]).digest()) is None        # the least recently used went
    assert cache.get(hashlib.sha256(images[0]).digest()) is not None
    with pytest.raises(FailedPrecondition, match="unknown image sha256"):
        parse_caption(refiner_pb2.CaptionRequest(target=by_hash(images[0])), LIMITS, ImageCache(0))  # 0: none kept
