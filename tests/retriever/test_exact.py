"""Exact top-k on FAISS over the store's mirror: the same hits, in the same order, as the
documented ranking rule computed in numpy (higher score first, equal scores by smaller id)."""

from __future__ import annotations

import numpy as np

from services.retriever.exact import ExactIndex
from services.retriever.store import normalise_rows, order


def numpy_top(ids, vecs, q, k):
    s = vecs @ q
    return [(int(ids[i]), float(s[i])) for i in order(ids, s, k)]


def test_exact_top_k_matches_the_ranking_rule_on_random_data():
    rng = np.random.default_rng(3)
    vecs = normalise_rows(rng.normal(size=(3000, 32)))
    ids = rng.permutation(10_000)[:3000].astype(np.int64)
    q = normalise_rows(rng.normal(size=(20, 32)))
    got = ExactIndex().top_k("c", ids, vecs, q, 10)
    for row, hits in enumerate(got):
        want = numpy_top(ids, vecs, q[row], 10)
        assert [h.id for h in hits] == [i for i, _ in want]
        assert np.allclose([h.score for h in hits], [s for _, s in want], atol=1e-5)


def test_ties_across_the_cut_go_to_the_smaller_ids():
    # 12 identical vectors tie for first place: the 10 smallest ids must be returned, in id order.
    base = normalise_rows(np.ones((1, 8)))
    vecs = np.vstack([np.repeat(base, 12, axis=0), normalise_rows(-np.ones((5, 8)))]).astype(np.float32)
    ids = np.array([50, 3, 41, 7, 99, 12, 8, 60, 1, 33, 25, 70, 2, 4, 5, 6, 9], np.int64)
    (hits,) = ExactIndex().top_k("c", ids, vecs, base, 10)
    assert [h.id for h in hits] == sorted(ids[:12].tolist())[:10]


def test_a_new_mirror_rebuilds_the_index():
    idx = ExactIndex()
    a = normalise_rows(np.eye(4, dtype=np.float32))
    q = a[:1]
    assert idx.top_k("c", np.arange(4), a, q, 1)[0][0].id == 0
    b = np.ascontiguousarray(a[::-1])          # a write replaced the mirror: ids now map to other vectors
    assert idx.top_k("c", np.arange(4), b, q, 1)[0][0].id == 3


def test_k_larger_than_the_collection_returns_everything():
    vecs = normalise_rows(np.random.default_rng(0).normal(size=(5, 4)))
    (hits,) = ExactIndex().top_k("c", np.arange(5), vecs, vecs[:1], 10)
    assert sorted(h.id for h in hits) == [0, 1, 2, 3, 4] and hits[0].id == 0
