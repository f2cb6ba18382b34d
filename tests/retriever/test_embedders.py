"""Embedders in-process: family detection, GenIR preprocessing for BLIP, CLIP/SigLIP towers, and
CLIP indexed into the embedded store with the same indexing code as `genir index`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from services.retriever.embedders import CLIP_MEAN, CLIP_STD, detect_family, load_embedder
from services.retriever.indexer import index_corpus
from services.retriever.store import EdgeStore


def test_family_detection(tiny_models, tmp_path):
    assert [detect_family(tiny_models / m) for m in ("blip", "clip", "siglip")] == ["blip", "clip", "siglip"]
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="bert"):
        detect_family(tmp_path)


def test_blip_default_is_genir_preprocessing(blip_model):
    emb = load_embedder(blip_model)              # defaults: 224 px, 200 tokens
    assert emb.kind == "blip" and emb.preprocess.height == emb.preprocess.width == 224
    assert emb.interpolate and emb.text_max_tokens == 200 and emb.model_id == "blip:blip@224"
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 120, 3), np.uint8))  # wide image
    got = emb.preprocess(img)
    # whole image squeezed to 224x224 (no crop), bicubic, then CLIP mean/std
    want = np.asarray(img.resize((224, 224), Image.BICUBIC), np.float32).transpose(2, 0, 1) / 255.0
    want = (want - np.array(CLIP_MEAN, np.float32)[:, None, None]) / np.array(CLIP_STD, np.float32)[:, None, None]
    assert got.shape == (3, 224, 224) and np.allclose(got, want, atol=1e-6)
    v = emb.embed_images([img, img.rotate(90, expand=True)])
    assert v.shape == (2, 16) and v.dtype == np.float32 and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-6)
    vecs, trunc = emb.embed_texts(["a dog", "dog " * 250])
    assert trunc == [False, True] and vecs.shape == (2, 16)


@pytest.mark.parametrize("family,dim,limit", [("clip", 16, 77), ("siglip", 32, 64)])
def test_clip_and_siglip_towers(tiny_models, family, dim, limit):
    emb = load_embedder(tiny_models / family, text_max_tokens=200)
    assert (emb.kind, emb.dim, emb.text_max_tokens) == (family, dim, limit)
    imgs = [Image.new("RGB", (40, 30), (200, 10, 10)), Image.new("RGB", (30, 60), (10, 10, 200))]
    v = emb.embed_images(imgs)
    assert v.shape == (2, dim) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    t, trunc = emb.embed_texts(["a red square", "red " * 100])
    assert t.shape == (2, dim) and trunc == [False, True]
    # batching does not change a vector
    assert np.allclose(emb.embed_images(imgs[:1])[0], v[0], atol=1e-5)


def test_clip_index_and_search(tiny_models, corpus, tmp_path):
    emb = load_embedder(tiny_models / "clip")
    store = EdgeStore(tmp_path / "store")
    paths = corpus["paths"][:60]
    rep = index_corpus(store, emb, "clip-coco", paths, corpus["root"], batch_size=16, workers=2, progress=False)
    assert (rep.embedded, rep.points, rep.failed) == (60, 60, [])
    for i in (4, 33):
        q = emb.embed_images([Image.open(corpus["root"] / paths[i])])[0]
        hits = store.search("clip-coco", q, 3, exact=True)
        assert hits[0].id == i and hits[0].payload["path"] == paths[i]
        assert store.rank("clip-coco", q, i) == 0
    store.close()


def test_batch_invariant_vectors_do_not_depend_on_the_batch(blip_model):
    """A query embedded alone or among others gives the same bits (the retriever micro-batches
    concurrent Searches; a rerun must reproduce them)."""
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 255, (48, 64, 3), np.uint8)) for _ in range(6)]
    texts = ["a dog", "a red car on a long wet street at night", "two cats on a sofa", "a horse"]
    plain = load_embedder(blip_model)
    alone = np.stack([plain.embed_images([im])[0] for im in images])
    assert not np.array_equal(alone, plain.embed_images(images))   # the default math is batch-dependent here
    emb = load_embedder(blip_model, batch_invariant=True)
    alone = np.stack([emb.embed_images([im])[0] for im in images])
    for size in (2, 3, 6):
        batched = np.concatenate([emb.embed_images(images[i:i + size]) for i in range(0, 6, size)])
        assert np.array_equal(alone, batched), size
    text_alone = np.stack([emb.embed_texts([t])[0][0] for t in texts])
    assert np.array_equal(text_alone, emb.embed_texts(texts)[0])
