"""The retriever backend: one embedder + one vector store; no gRPC types here.

Search modes: image / text / vector go to the store's engine (HNSW, or exact brute force);
fusion scores every point with both queries, z-normalises each query's scores over the
collection, and ranks by the weighted sum. Target ranks are exact over the whole collection
(see store.py for the tie rule: equal scores -> smaller id first).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import Gauge, Histogram

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.metrics import LATENCY_BUCKETS
from services.retriever.embedders import load_embedder
from services.retriever.indexer import Indexer
from services.retriever.store import Hit, open_store, order, rank_of

log = logging.getLogger("genir.retriever")

SEARCH_SECONDS = Histogram("genir_retriever_search_seconds", "Search time (embed + search + rank), by query mode.",
                           ("mode", "exact"), buckets=LATENCY_BUCKETS)
EMBED_SECONDS = Histogram("genir_retriever_embed_seconds", "Embedding time per call, by tower.", ("tower",),
                          buckets=LATENCY_BUCKETS)
COLLECTION_POINTS = Gauge("genir_retriever_collection_points", "Points in a collection.", ("collection",))


@dataclass
class SearchResult:
    hits: list[Hit]
    target_rank: int | None = None
    timings: dict = field(default_factory=dict)
    text_truncated: bool = False
    points: int = 0


def zscore(s: np.ndarray) -> np.ndarray:
    """Per-query normalisation: scores relative to the collection's mean and spread."""
    sd = float(s.std())
    return (s - s.mean()) / (sd if sd > 1e-12 else 1.0)


class RetrieverBackend:
    def __init__(self, args):
        self.args = args
        self.embedder = None
        self.store = None

    # -- lifecycle ----------------------------------------------------------------------------
    def load(self) -> None:
        a = self.args
        self.embedder = load_embedder(a.model, image_size=a.image_size, text_max_tokens=a.text_max_tokens,
                                      device=a.device, batch_size=a.batch_size)
        self.store = open_store(a.store_path, a.qdrant_url, indexing_threshold_kb=a.hnsw_threshold_kb,
                                full_scan_threshold_kb=a.hnsw_threshold_kb, hnsw_ef=a.hnsw_ef)
        for name in self.store.collections():
            try:
                COLLECTION_POINTS.labels(name).set(self.store.count(name))
            except Exception as e:  # noqa: BLE001 - a foreign collection must not stop start-up
                log.warning("collection %s: %s", name, e)
        log.info("retriever ready: %s (dim %d) on %s, store %s", self.embedder.model_id, self.embedder.dim,
                 self.embedder.device, self.store.engine)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    # -- embedding ----------------------------------------------------------------------------
    def embed_images(self, images) -> tuple[np.ndarray, float]:
        t = time.perf_counter()
        v = self.embedder.embed_images(images)
        dt = time.perf_counter() - t
        EMBED_SECONDS.labels("image").observe(dt)
        return v, dt

    def embed_texts(self, texts: list[str]) -> tuple[np.ndarray, list[bool], float]:
        t = time.perf_counter()
        v, trunc = self.embedder.embed_texts(texts)
        dt = time.perf_counter() - t
        EMBED_SECONDS.labels("text").observe(dt)
        return v, trunc, dt

    # -- search -------------------------------------------------------------------------------
    def _meta_for_model(self, collection: str):
        meta = self.store.meta(collection)
        self.store.check_model(meta, self.embedder.model_id, self.embedder.dim)
        return meta

    def search(self, collection: str, *, image=None, text: str | None = None, vector: np.ndarray | None = None,
               fusion: tuple | None = None, top_k: int = 10, target_id: int | None = None,
               exact: bool = False) -> SearchResult:
        start = time.perf_counter()
        res = SearchResult(hits=[])
        mode = "image" if image is not None else "text" if text is not None else "vector" if vector is not None else "fusion"
        if vector is not None:
            meta = self.store.meta(collection)
            if vector.shape[0] != meta.dim:
                raise FailedPrecondition(f"vector: {vector.shape[0]} values, but collection {collection!r} holds "
                                         f"{meta.dim}-d vectors of {meta.model}")
            query = vector
        else:
            self._meta_for_model(collection)
            if image is not None:
                query, res.timings["embed"] = self.embed_images([image])
                query = query[0]
            elif text is not None:
                q, trunc, res.timings["embed"] = self.embed_texts([text])
                query, res.text_truncated = q[0], trunc[0]
        if target_id is not None:
            self._check_target(collection, target_id)
        t = time.perf_counter()
        if fusion is not None:
            f_image, f_text, w_image, w_text = fusion
            qi, ti = self.embed_images([f_image])
            qt, trunc, tt = self.embed_texts([f_text])
            res.timings["embed"], res.text_truncated = ti + tt, trunc[0]
            t = time.perf_counter()
            ids, scores = self.store.all_scores(collection, np.stack([qi[0], qt[0]]))
            fused = (w_image * zscore(scores[0]) + w_text * zscore(scores[1])).astype(np.float32)
            top = order(ids, fused, top_k)
            payloads = self.store.payloads(collection, ids[top].tolist())
            res.hits = [Hit(int(ids[i]), float(fused[i]), payloads.get(int(ids[i]), {})) for i in top]
            res.timings["search"] = time.perf_counter() - t
            if target_id is not None:
                t = time.perf_counter()
                res.target_rank = rank_of(ids, fused, target_id)
                res.timings["rank"] = time.perf_counter() - t
        else:
            res.hits = self.store.search(collection, query, top_k, exact)
            res.timings["search"] = time.perf_counter() - t
            if target_id is not None:
                t = time.perf_counter()
                res.target_rank = self.store.rank(collection, query, target_id)
                res.timings["rank"] = time.perf_counter() - t
        res.points = self.store.count(collection)
        COLLECTION_POINTS.labels(collection).set(res.points)
        SEARCH_SECONDS.labels(mode, str(bool(exact or fusion is not None)).lower()).observe(time.perf_counter() - start)
        return res

    def _check_target(self, collection: str, target_id: int) -> None:
        if not self.store.payloads(collection, [target_id]):
            raise NotFound(f"target_id: {target_id} is not in collection {collection!r}")

    # -- writes -------------------------------------------------------------------------------
    def indexer(self, collection: str) -> Indexer:
        return Indexer(self.store, self.embedder, collection)

    def upsert(self, indexer: Indexer, images: list[tuple[int, object, dict]],
               vectors: list[tuple[int, np.ndarray, dict]]) -> int:
        """Writes one message's items; returns how many were written."""
        n = 0
        if images or vectors:
            # Points written by hand name no corpus list: the ids no longer follow `genir index`'s.
            self.store.set_corpus(indexer.collection, "", 0)
        if images:
            t = time.perf_counter()
            indexer.add_images([i for i, _, _ in images], [im for _, im, _ in images], [p for _, _, p in images])
            EMBED_SECONDS.labels("image").observe(time.perf_counter() - t)
            n += len(images)
        if vectors:
            indexer.add_vectors([i for i, _, _ in vectors], np.stack([v for _, v, _ in vectors]),
                                [p for _, _, p in vectors])
            n += len(vectors)
        return n

    def finish_upsert(self, collection: str) -> int:
        self.store.optimize(collection)
        points = self.store.count(collection)
        COLLECTION_POINTS.labels(collection).set(points)
        return points

    def collection_info(self, collection: str) -> dict:
        info = self.store.info(collection)
        COLLECTION_POINTS.labels(collection).set(info["points"])
        return info

    def dim_for(self, collection: str) -> int:
        return self.store.meta(collection).dim


def check_weights(w_image: float, w_text: float) -> tuple[float, float]:
    for name, w in (("fusion.image_weight", w_image), ("fusion.text_weight", w_text)):
        if not np.isfinite(w) or w < 0 or w > 1000:
            raise InvalidArgument(f"{name}: {w:g} is out of range [0, 1000]")
    if w_image == 0 and w_text == 0:
        return 0.5, 0.5  # both unset (proto3 default): equal weights
    return float(w_image), float(w_text)
