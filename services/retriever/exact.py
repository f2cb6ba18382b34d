"""Exact top-k by inner product over the store's mirror of a collection, on FAISS.

The store keeps a read-only numpy mirror of every vector for exact target ranks (store.py); exact
search runs on the same vectors, so Qdrant stays the store of record and nothing is indexed
twice on disk. A flat FAISS index (a BLAS matrix product plus a k-best selection, the fastest
exact search on a CPU) is built from the mirror on first use and rebuilt when a write replaces
the mirror.

Results follow the store's ranking rule (higher score first, equal scores by smaller id). FAISS
breaks ties its own way, so it is asked for one extra neighbour: when the k-th and (k+1)-th
scores are equal, the tie straddles the cut and that query is re-ranked over all its scores.
"""

from __future__ import annotations

import threading

import numpy as np

from services.retriever.store import Hit, order


class ExactIndex:
    def __init__(self):
        self._lock = threading.Lock()
        self._built: dict[str, tuple[np.ndarray, object]] = {}  # collection -> (the mirror it was built from, index)

    def _index(self, collection: str, vectors: np.ndarray):
        import faiss

        with self._lock:
            cached = self._built.get(collection)
            if cached is not None and cached[0] is vectors:
                return cached[1]
            index = faiss.IndexFlatIP(vectors.shape[1])
            if len(vectors):
                index.add(vectors)
            self._built[collection] = (vectors, index)   # holding the array keeps its identity unique
            return index

    def top_k(self, collection: str, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray,
              k: int) -> list[list[Hit]]:
        """Top-k hits of each (normalised) query row over `vectors` (rows of the mirror, ids beside)."""
        n = len(ids)
        if n == 0:
            return [[] for _ in queries]
        want = min(k + 1, n)
        _, rows = self._index(collection, vectors).search(np.ascontiguousarray(queries, np.float32), want)
        out = []
        for qi in range(len(queries)):
            picked = rows[qi, :want]
            # The hits' scores come from the mirror, one query at a time: FAISS's own scores depend on
            # how many queries shared its call (per-query dot products below 20, BLAS above), and a
            # rerun must report the same numbers. The ranking rule is then applied to these scores.
            scores = vectors[picked] @ queries[qi]
            ranked = sorted(range(want), key=lambda j: (-scores[j], int(ids[picked[j]])))  # noqa: B023
            if want > k and scores[ranked[k - 1]] == scores[ranked[k]]:
                full = vectors @ queries[qi]
                top = order(ids, full, k)
                out.append([Hit(int(ids[r]), float(full[r]), {}) for r in top])
                continue
            out.append([Hit(int(ids[picked[j]]), float(scores[j]), {}) for j in ranked[:k]])
        return out
