"""The retriever backend: one embedder + one vector store; no gRPC types here.

Search modes: image / text / vector go to HNSW in the store's engine, or, when asked for exact
results or when the collection is small enough that exhaustive search is the faster one
(--exact-below-points), to FAISS exact inner product over the vectors the store mirrors for
exact ranks (exact.py); Qdrant stays the store of record. Concurrent queries are answered in
batches (search_many): one embedding pass, one top-k pass, one scoring pass for ranks. Fusion
scores every point with both queries, z-normalises each query's scores over the
collection, and ranks by the weighted sum. Target ranks are exact over the whole collection
(see store.py for the tie rule: equal scores -> smaller id first).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from services.common.batching import BatchMetrics
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, ServiceError
from services.common.metrics import LATENCY_BUCKETS
from services.retriever.embedders import load_embedder
from services.retriever.exact import ExactIndex
from services.retriever.indexer import Indexer
from services.retriever.store import Hit, normalise_rows, open_store, order, rank_of

log = logging.getLogger("genir.retriever")

SEARCH_SECONDS = Histogram("genir_retriever_search_seconds", "Search time (embed + search + rank), by query mode.",
                           ("mode", "exact"), buckets=LATENCY_BUCKETS)
EMBED_SECONDS = Histogram("genir_retriever_embed_seconds", "Embedding time per call, by tower.", ("tower",),
                          buckets=LATENCY_BUCKETS)
COLLECTION_POINTS = Gauge("genir_retriever_collection_points", "Points in a collection.", ("collection",))
BATCH_METRICS = BatchMetrics(
    batch_size=Histogram("genir_retriever_batch_size", "Queries or inputs answered together in one batch.",
                         buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)),
    queue_seconds=Histogram("genir_retriever_queue_seconds", "Time a call waited before its batch started.",
                            buckets=LATENCY_BUCKETS),
    inference_seconds=Histogram("genir_retriever_batch_seconds", "Wall time of one batch (embed + search).",
                                buckets=LATENCY_BUCKETS),
    items=Counter("genir_retriever_batched_items_total", "Queries and inputs answered through the batcher."),
    dropped=Counter("genir_retriever_dropped_total", "Calls dropped before their batch ran.", ["reason"]),
    queue_depth=Gauge("genir_retriever_queue_depth", "Calls waiting for a batch."))


@dataclass(frozen=True)
class EmbedInput:
    """One image or text of an Embed* call, as the batcher carries it."""
    tower: str       # "image" or "text"
    value: object


@dataclass
class Query:
    """One search: exactly one of image / text / vector / fusion (image, text, w_image, w_text)."""
    collection: str
    image: object = None
    text: str | None = None
    vector: np.ndarray | None = None
    fusion: tuple | None = None
    top_k: int = 10
    target_id: int | None = None
    exact: bool = False
    truncated: bool = False      # set once the text is embedded

    @property
    def mode(self) -> str:
        return ("image" if self.image is not None else "text" if self.text is not None
                else "vector" if self.vector is not None else "fusion")


@dataclass
class SearchResult:
    hits: list[Hit]
    target_rank: int | None = None
    timings: dict = field(default_factory=dict)
    text_truncated: bool = False
    points: int = 0
    exact: bool = False          # answered by exhaustive scoring (asked for, or below --exact-below-points)


def zscore(s: np.ndarray) -> np.ndarray:
    """Per-query normalisation: scores relative to the collection's mean and spread."""
    sd = float(s.std())
    return (s - s.mean()) / (sd if sd > 1e-12 else 1.0)


class RetrieverBackend:
    def __init__(self, args):
        self.args = args
        self.embedder = None
        self.store = None
        self.exact = ExactIndex()

    # -- lifecycle ----------------------------------------------------------------------------
    def load(self) -> None:
        a = self.args
        self.embedder = load_embedder(a.model, image_size=a.image_size, text_max_tokens=a.text_max_tokens,
                                      device=a.device, batch_size=a.batch_size,
                                      batch_invariant=getattr(a, "batch_invariant", False))
        self.open_store()
        for name in self.store.collections():
            try:
                COLLECTION_POINTS.labels(name).set(self.store.count(name))
            except Exception as e:  # noqa: BLE001 - a foreign collection must not stop start-up
                log.warning("collection %s: %s", name, e)
        log.info("retriever ready: %s (dim %d) on %s, store %s", self.embedder.model_id, self.embedder.dim,
                 self.embedder.device, self.store.engine)

    def open_store(self) -> None:
        a = self.args
        self.store = open_store(a.store_path, a.qdrant_url, indexing_threshold_kb=a.hnsw_threshold_kb,
                                full_scan_threshold_kb=a.hnsw_threshold_kb, hnsw_ef=a.hnsw_ef)

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

    def run_batch(self, items: list) -> list:
        """The batcher's function: a batch is all Query (one collection) or all EmbedInput (one tower)."""
        if isinstance(items[0], Query):
            return self.search_many(items)
        values = [it.value for it in items]
        if items[0].tower == "image":
            vecs, dt = self.embed_images(values)
            return [(v, False, dt) for v in vecs]
        vecs, trunc, dt = self.embed_texts(values)
        return [(v, t, dt) for v, t in zip(vecs, trunc, strict=True)]

    # -- search -------------------------------------------------------------------------------
    def search(self, collection: str, *, image=None, text: str | None = None, vector: np.ndarray | None = None,
               fusion: tuple | None = None, top_k: int = 10, target_id: int | None = None,
               exact: bool = False) -> SearchResult:
        """One query; the service batches concurrent queries through `search_many`."""
        (res,) = self.search_many([Query(collection, image=image, text=text, vector=vector, fusion=fusion,
                                         top_k=top_k, target_id=target_id, exact=exact)])
        if isinstance(res, Exception):
            raise res
        return res

    def search_many(self, queries: list[Query]) -> list[SearchResult | Exception]:
        """Queries on one collection, answered together: one embedding pass per tower, one
        top-k pass per search path, one scoring pass for the target ranks. A query that fails
        validation gets its error in its slot; the others still run."""
        start = time.perf_counter()
        collection = queries[0].collection
        assert all(q.collection == collection for q in queries), "one collection per batch"
        out: list = self._validate(collection, queries)
        live = [i for i, r in enumerate(out) if r is None]
        for i in live:
            out[i] = SearchResult(hits=[])
        embed_s, embedded = self._embed_queries([queries[i] for i in live])
        vecs = dict(zip(live, embedded, strict=True))
        plain = [i for i in live if queries[i].fusion is None]
        for i in live:
            out[i].timings["embed"] = embed_s
        if plain:
            self._top_k(collection, [queries[i] for i in plain], [vecs[i] for i in plain], [out[i] for i in plain])
        for i in live:
            if queries[i].fusion is not None:
                self._fused(collection, queries[i], vecs[i], out[i])
        if live:
            points = self.store.count(collection)
            COLLECTION_POINTS.labels(collection).set(points)
        took = time.perf_counter() - start
        for i in live:
            out[i].points = points
            q = queries[i]
            SEARCH_SECONDS.labels(q.mode, str(bool(out[i].exact or q.fusion is not None)).lower()).observe(took)
        return out

    def _validate(self, collection: str, queries: list[Query]) -> list[Exception | None]:
        """The per-query checks (collection, model, dimension, target), with one metadata read and
        one target lookup for the batch; a failing query gets its error, the others None."""
        try:
            meta = self.store.meta(collection)
        except ServiceError as e:
            return [e] * len(queries)
        targets = {q.target_id for q in queries if q.target_id is not None}
        present = set(self.store.payloads(collection, sorted(targets))) if targets else set()
        errors: list[Exception | None] = []
        for q in queries:
            try:
                if q.vector is not None:
                    if q.vector.shape[0] != meta.dim:
                        raise FailedPrecondition(f"vector: {q.vector.shape[0]} values, but collection {collection!r} "
                                                 f"holds {meta.dim}-d vectors of {meta.model}")
                else:
                    self.store.check_model(meta, self.embedder.model_id, self.embedder.dim)
                if q.target_id is not None and q.target_id not in present:
                    raise NotFound(f"target_id: {q.target_id} is not in collection {collection!r}")
                errors.append(None)
            except ServiceError as e:
                errors.append(e)
        return errors

    def _embed_queries(self, queries: list[Query]) -> tuple[float, dict]:
        """Each query's vector (fusion: an (image, text) pair), with both towers run once for all."""
        images = [q.image if q.image is not None else q.fusion[0] for q in queries
                  if q.image is not None or q.fusion is not None]
        texts = [q.text if q.text is not None else q.fusion[1] for q in queries
                 if q.text is not None or q.fusion is not None]
        took = 0.0
        iv = tv = None
        trunc: list[bool] = []
        if images:
            iv, dt = self.embed_images(images)
            took += dt
        if texts:
            tv, trunc, dt = self.embed_texts(texts)
            took += dt
        vecs, ii, ti = [], 0, 0
        for q in queries:
            if q.vector is not None:
                vecs.append(q.vector)
            elif q.image is not None:
                vecs.append(iv[ii])
                ii += 1
            elif q.text is not None:
                vecs.append(tv[ti])
                q.truncated = trunc[ti]
                ti += 1
            else:
                vecs.append((iv[ii], tv[ti]))
                q.truncated = trunc[ti]
                ii, ti = ii + 1, ti + 1
        return took, vecs

    def _exact_below(self, collection: str) -> bool:
        """Approximate queries on a collection this small are answered exactly (faster there, recall 1)."""
        limit = getattr(self.args, "exact_below_points", 0) or 0
        return limit > 0 and self.store.count(collection) <= limit

    def _top_k(self, collection: str, queries: list[Query], vecs: list, results: list[SearchResult]) -> None:
        q = normalise_rows(np.stack(vecs))
        k = max(x.top_k for x in queries)
        exact_all = self._exact_below(collection)
        ex = [i for i, x in enumerate(queries) if x.exact or exact_all]
        ap = [i for i, x in enumerate(queries) if not (x.exact or exact_all)]
        t = time.perf_counter()
        hits: dict[int, list[Hit]] = {}
        if ex:
            ids, vectors = self.store.matrix(collection)
            for i, h in zip(ex, self.exact.top_k(collection, ids, vectors, q[ex], k), strict=True):
                hits[i] = h
        if ap:
            for i, h in zip(ap, self.store.search_batch(collection, q[ap], k, exact=False), strict=True):
                hits[i] = h
        want = {h.id for i in hits for h in hits[i][:queries[i].top_k] if not h.payload}
        payloads = self.store.payloads(collection, sorted(want)) if want else {}
        search_s = time.perf_counter() - t
        for i, r in enumerate(results):
            r.hits = [h if h.payload else Hit(h.id, h.score, payloads.get(h.id, {}))
                      for h in hits[i][:queries[i].top_k]]
            r.exact = i in ex
            r.text_truncated = queries[i].truncated
            r.timings["search"] = search_s
        ranked = [i for i, x in enumerate(queries) if x.target_id is not None]
        if ranked:
            t = time.perf_counter()
            ids, scores = self.store.all_scores(collection, q[ranked])
            for row, i in enumerate(ranked):
                results[i].target_rank = rank_of(ids, scores[row], queries[i].target_id)
            rank_s = time.perf_counter() - t
            for i in ranked:
                results[i].timings["rank"] = rank_s

    def _fused(self, collection: str, q: Query, vec: tuple, res: SearchResult) -> None:
        _, _, w_image, w_text = q.fusion
        t = time.perf_counter()
        ids, scores = self.store.all_scores(collection, np.stack(vec))
        fused = (w_image * zscore(scores[0]) + w_text * zscore(scores[1])).astype(np.float32)
        top = order(ids, fused, q.top_k)
        payloads = self.store.payloads(collection, ids[top].tolist())
        res.hits = [Hit(int(ids[i]), float(fused[i]), payloads.get(int(ids[i]), {})) for i in top]
        res.text_truncated, res.exact = q.truncated, True
        res.timings["search"] = time.perf_counter() - t
        if q.target_id is not None:
            t = time.perf_counter()
            res.target_rank = rank_of(ids, fused, q.target_id)
            res.timings["rank"] = time.perf_counter() - t

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

def check_weights(w_image: float, w_text: float) -> tuple[float, float]:
    for name, w in (("fusion.image_weight", w_image), ("fusion.text_weight", w_text)):
        if not np.isfinite(w) or w < 0 or w > 1000:
            raise InvalidArgument(f"{name}: {w:g} is out of range [0, 1000]")
    if w_image == 0 and w_text == 0:
        return 0.5, 0.5  # both unset (proto3 default): equal weights
    return float(w_image), float(w_text)
