"""The vector store on both real engines: qdrant-edge (embedded) and qdrant-client's local mode
(":memory:"), which stands in for a Qdrant server here (no server binary is available)."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.retriever.store import EdgeStore, ServerStore, order
from tests.retriever.conftest import numpy_rank


def clustered(n: int, dim: int, centers: int, seed: int) -> np.ndarray:
    """Points around a few centres (like real embeddings), not isotropic Gaussian noise."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, dim))
    x = c[rng.integers(0, centers, n)] + 0.35 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def numpy_top(vecs: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    s = vecs @ (q / np.linalg.norm(q))
    return [int(ids[i]) for i in np.lexsort((ids, -s))[:k]]


@pytest.fixture(params=["edge", "server"])
def store(request, tmp_path):
    # "server": qdrant-client local mode, the stand-in for a Qdrant server.
    s = EdgeStore(tmp_path / "store") if request.param == "edge" else ServerStore(":memory:")
    yield s
    s.close()


def test_exact_search_and_rank_match_numpy(store):
    x = clustered(1500, 24, 12, seed=3)
    ids = np.arange(1500) * 7 + 5          # sparse corpus ids
    store.ensure("c", "test-model", 24)
    for i in range(0, 1500, 500):
        store.upsert("c", ids[i:i + 500], x[i:i + 500], [{"path": f"p{j}"} for j in ids[i:i + 500]])
    assert store.count("c") == 1500
    m_ids, m_vecs = store.matrix("c")      # the engine's stored vectors
    m_ids_order = np.argsort(m_ids)
    m_ids, m_vecs = m_ids[m_ids_order], m_vecs[m_ids_order]
    assert (m_ids == ids).all()
    rng = np.random.default_rng(0)
    for t in rng.choice(1500, 20, replace=False):
        q = x[t] + 0.3 * rng.normal(size=24).astype(np.float32)
        hits = store.search("c", q, 10, exact=True)
        assert [h.id for h in hits] == numpy_top(m_vecs, m_ids, q, 10)
        assert hits[0].payload == {"path": f"p{hits[0].id}"}
        scores = m_vecs @ (q / np.linalg.norm(q)).astype(np.float32)
        target = int(ids[t])
        assert store.rank("c", q, target) == numpy_rank(m_ids, scores, target)
    with pytest.raises(NotFound):
        store.rank("c", x[0], 3)           # 3 is not a corpus id here


def test_ties_are_broken_by_id():
    ids = np.array([9, 2, 5, 7])
    scores = np.array([0.5, 0.5, 0.9, 0.5], np.float32)
    assert [int(ids[i]) for i in order(ids, scores, 4)] == [5, 2, 7, 9]
    assert numpy_rank(ids, scores, 7) == 2


def test_model_and_dimension_are_enforced(store):
    store.ensure("c", "model-a", 8)
    store.upsert("c", [1], np.ones((1, 8), np.float32))
    assert store.ensure("c", "model-a", 8).dim == 8            # idempotent
    with pytest.raises(FailedPrecondition, match="model-a"):
        store.ensure("c", "model-b", 8)
    with pytest.raises(FailedPrecondition, match="8-d"):
        store.upsert("c", [2], np.ones((1, 9), np.float32))
    with pytest.raises(NotFound):
        store.meta("nope")
    with pytest.raises(InvalidArgument):
        store.meta("../etc")
    store.upsert("c", [1], np.full((1, 8), 2, np.float32))     # same id again: replaced, not added
    assert store.count("c") == 1


def test_edge_store_persists_across_reopen(tmp_path):
    s = EdgeStore(tmp_path / "st")
    s.ensure("c", "m", 4)
    s.upsert("c", [0, 1, 2], np.eye(3, 4, dtype=np.float32), [{"path": "a"}, {"path": "b"}, {"path": "c"}])
    s.close()
    s = EdgeStore(tmp_path / "st")
    assert s.collections() == ["c"] and s.count("c") == 3 and s.meta("c").model == "m"
    assert s.payloads("c", [1]) == {1: {"path": "b"}}
    s.close()


def test_hnsw_recall_against_exact_on_clustered_vectors(tmp_path):
    # Thresholds of 1 KB make the engine build and use HNSW even for this small collection.
    s = EdgeStore(tmp_path / "h", indexing_threshold_kb=1, full_scan_threshold_kb=1)
    x = clustered(6000, 32, 40, seed=5)
    s.ensure("h", "m", 32)
    s.upsert("h", np.arange(6000), x)
    s.optimize("h")
    assert s.hnsw_ready("h")
    rng = np.random.default_rng(1)
    queries = x[rng.choice(6000, 200, replace=False)] + 0.2 * rng.normal(size=(200, 32)).astype(np.float32)
    approx = s.search_batch("h", queries, 10, exact=False)
    exact = s.search_batch("h", queries, 10, exact=True)
    recall = np.mean([len({h.id for h in a} & {h.id for h in e}) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.99, recall
    s.close()
