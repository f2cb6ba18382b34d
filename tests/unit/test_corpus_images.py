"""GetCorpusImage's parts: confinement to the image root, thumbnails, the cache, the validator."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from genir.v1 import orchestrator_pb2
from orchestrator.corpus_images import CorpusImages, confined_path
from orchestrator.datasets import Corpus
from orchestrator.requests import parse_get_corpus_image
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound


@pytest.fixture
def root(tmp_path):
    img = tmp_path / "root" / "a"
    img.mkdir(parents=True)
    Image.new("RGB", (400, 200), (200, 10, 10)).save(img / "x.jpg", quality=90)
    Image.new("RGBA", (50, 100), (0, 0, 0, 0)).save(img / "t.png")
    (tmp_path / "secret.jpg").write_bytes(b"outside")
    (img / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    return tmp_path / "root"


@pytest.mark.parametrize("rel", ["../secret.jpg", "a/../../secret.jpg", "/etc/passwd", "a/link.jpg"])
def test_paths_leaving_the_root_are_refused_without_saying_what_is_there(root, rel):
    with pytest.raises(FailedPrecondition) as e:
        confined_path(root, rel)
    assert "leaves the image root" in str(e.value) and str(root.parent) not in str(e.value)


def test_thumbnails_are_scaled_and_cached_originals_are_the_file(root):
    images = CorpusImages(root)
    orig = images.get("a/x.jpg", 0)
    assert orig.data == (root / "a" / "x.jpg").read_bytes() and (orig.width, orig.height) == (400, 200)
    assert orig.mime_type == "image/jpeg" and images.cached() == 0
    th = images.get("a/x.jpg", 100)
    assert (th.width, th.height) == (100, 50) and th.mime_type == "image/jpeg"
    assert Image.open(io.BytesIO(th.data)).size == (100, 50)
    assert images.get("a/x.jpg", 100) is th and images.cached() == 1
    png = images.get("a/t.png", 40)
    assert png.mime_type == "image/png" and (png.width, png.height) == (20, 40)


def test_cache_is_bounded_in_bytes(root):
    images = CorpusImages(root, cache_bytes=1)
    images.get("a/x.jpg", 64)
    images.get("a/x.jpg", 32)
    assert images.cached() == 0 and images._size == 0


def test_missing_and_broken_files_are_clear_errors(root):
    (root / "a" / "bad.jpg").write_bytes(b"not an image")
    images = CorpusImages(root)
    with pytest.raises(NotFound, match="'a/none.jpg' is missing"):
        images.get("a/none.jpg", 64)
    with pytest.raises(FailedPrecondition, match="unreadable"):
        images.get("a/bad.jpg", 64)
    with pytest.raises(FailedPrecondition, match="no --image-root"):
        CorpusImages(None).get("a/x.jpg", 64)


def test_parse_get_corpus_image():
    corpus = Corpus(("a/x.jpg", "a/t.png"), {"a/x.jpg": 0, "a/t.png": 1})
    req = orchestrator_pb2.GetCorpusImageRequest
    assert parse_get_corpus_image(req(id="1", max_side=64), "demo", corpus) == ("a/t.png", 64)
    assert parse_get_corpus_image(req(collection="demo", id="0"), "demo", corpus) == ("a/x.jpg", 0)
    with pytest.raises(NotFound, match="ids 0..1"):
        parse_get_corpus_image(req(id="2"), "demo", corpus)
    with pytest.raises(InvalidArgument, match="id:"):
        parse_get_corpus_image(req(id="x"), "demo", corpus)
    with pytest.raises(InvalidArgument, match="max_side"):
        parse_get_corpus_image(req(id="0", max_side=5000), "demo", corpus)
    with pytest.raises(FailedPrecondition, match="'demo' only"):
        parse_get_corpus_image(req(collection="other", id="0"), "demo", corpus)
    with pytest.raises(FailedPrecondition, match="no corpus"):
        parse_get_corpus_image(req(id="0"), "demo", None)
