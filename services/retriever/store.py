"""Vector store on Qdrant: one small interface, two real engines.

- EdgeStore (default): qdrant-edge, the Qdrant shard engine in-process. One shard folder per
  collection under --store-path, with `collection.json` beside it holding the model id and the
  dimension. A shard is single-process: the process that opened it (the retriever service, or
  `genir index` while the service is stopped) owns it; other writers go through Retriever.Upsert.
- ServerStore: qdrant-client against a Qdrant server URL (gRPC preferred); the model id and
  dimension live in the collection's metadata. In tests it runs in qdrant-client's local mode
  (":memory:"), the stand-in for a server.

Point ids are corpus ids (non-negative integers); payload {"path": relative image path}.

Exact ranks and fusion need every score of the collection, so each store keeps a read-only
numpy mirror of its vectors (loaded from the engine by scroll, dropped on every write). Ranking
rule, used everywhere (hits, target_rank, fused results): higher score first; equal scores are
ordered by smaller id first. So rank(t) = #{score > s_t} + #{score == s_t and id < t}.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import shutil
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.paths import echo

log = logging.getLogger("genir.retriever.store")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
META_FILE = "collection.json"
MAX_OPEN_SHARDS = 4
SCROLL_PAGE = 10_000      # points per page when reading a whole collection
DISTANCE = "Cosine"


@dataclass
class CollectionMeta:
    name: str
    model: str
    dim: int
    distance: str = DISTANCE
    created: float = 0.0
    # What `genir index` last made the collection hold (see services.common.paths.corpus_fingerprint);
    # "" once anything else (Upsert, a failed or partial index) changed it: its ids then name no corpus.
    corpus_fingerprint: str = ""
    corpus_size: int = 0


@dataclass
class Hit:
    id: int
    score: float
    payload: dict


def check_name(name: str) -> str:
    if not name or not NAME_RE.match(name):
        raise InvalidArgument(f"collection: {echo(name)} is not a valid name (1-128 of letters, digits, '_', '-', '.', "
                              f"starting with a letter or digit)")
    return name


def order(ids: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best by (score desc, id asc)."""
    n = len(scores)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, np.int64)
    if k < n:
        # Take everything at least as good as the k-th score, so ties at the border are kept.
        kth = np.partition(scores, n - k)[n - k]
        cand = np.nonzero(scores >= kth)[0]
    else:
        cand = np.arange(n)
    idx = cand[np.lexsort((ids[cand], -scores[cand]))]
    return idx[:k]


def rank_of(ids: np.ndarray, scores: np.ndarray, target: int) -> int:
    """0-based rank of id `target` under the ranking rule above."""
    pos = np.nonzero(ids == target)[0]
    if len(pos) == 0:
        raise NotFound(f"target_id: {target} is not in the collection")
    s = scores[pos[0]]
    return int(np.count_nonzero(scores > s) + np.count_nonzero((scores == s) & (ids < target)))


def normalise_rows(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


class VectorStore(ABC):
    engine: str

    def __init__(self):
        self._lock = threading.RLock()
        self._mirror: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # -- engine specifics ---------------------------------------------------------------------
    @abstractmethod
    def collections(self) -> list[str]: ...

    @abstractmethod
    def _read_meta(self, name: str) -> CollectionMeta | None: ...

    @abstractmethod
    def _create(self, meta: CollectionMeta) -> None: ...

    @abstractmethod
    def _upsert(self, name: str, ids: list[int], vectors: np.ndarray, payloads: list[dict]) -> None: ...

    @abstractmethod
    def _search(self, name: str, vector: np.ndarray, limit: int, exact: bool) -> list[Hit]: ...

    @abstractmethod
    def _scroll_page(self, name: str, offset, with_payload: bool, with_vectors: bool) -> tuple[list, object]:
        """One page of points (records with .id, .payload, .vector) and the next page's offset (None: last)."""

    @abstractmethod
    def count(self, name: str) -> int: ...

    @abstractmethod
    def payloads(self, name: str, ids: list[int]) -> dict[int, dict]: ...

    @abstractmethod
    def _delete(self, name: str, ids: list[int]) -> None: ...

    @abstractmethod
    def _vectors(self, name: str, ids: list[int]) -> dict[int, np.ndarray]: ...

    @abstractmethod
    def _write_meta(self, meta: CollectionMeta) -> None: ...

    def optimize(self, name: str) -> None:  # noqa: B027 - optional for engines
        """Build the HNSW index now (the embedded engine); a server does it by itself."""

    def hnsw_ready(self, name: str) -> bool:
        return False

    def close(self) -> None:  # noqa: B027 - optional for engines
        pass

    # -- shared -------------------------------------------------------------------------------
    def _records(self, name: str, *, with_payload: bool = False, with_vectors: bool = False):
        """Every point of a collection, page by page."""
        offset = None
        while True:
            recs, offset = self._scroll_page(name, offset, with_payload, with_vectors)
            yield from recs
            if offset is None:
                return

    def _scroll(self, name: str, with_vectors: bool) -> tuple[list[int], np.ndarray | None]:
        recs = list(self._records(name, with_vectors=with_vectors))
        ids = [int(r.id) for r in recs]
        return ids, (np.asarray([_vector_of(r) for r in recs], np.float32) if with_vectors else None)

    def _entries(self, name: str) -> dict[int, dict]:
        return {int(r.id): _payload_dict(r.payload) for r in self._records(name, with_payload=True)}

    def meta(self, name: str) -> CollectionMeta:
        check_name(name)
        meta = self._read_meta(name)
        if meta is None:
            raise NotFound(f"collection: {name!r} does not exist")
        return meta

    def ensure(self, name: str, model: str, dim: int) -> CollectionMeta:
        """Create the collection for (model, dim), or check that the existing one matches."""
        check_name(name)
        with self._lock:
            meta = self._read_meta(name)
            if meta is None:
                meta = CollectionMeta(name, model, int(dim), DISTANCE, time.time())
                self._create(meta)
                log.info("created collection %s (%s, dim %d, %s)", name, model, dim, self.engine)
            self.check_model(meta, model, dim)
            return meta

    @staticmethod
    def check_model(meta: CollectionMeta, model: str | None, dim: int) -> None:
        if dim != meta.dim:
            raise FailedPrecondition(f"collection {meta.name!r} holds {meta.dim}-d vectors of {meta.model}; "
                                     f"got a {dim}-d vector" + (f" from {model}" if model else ""))
        if model is not None and model != meta.model:
            raise FailedPrecondition(f"collection {meta.name!r} was built with {meta.model}; this query is "
                                     f"embedded by {model}: vectors of different models are not comparable")

    def upsert(self, name: str, ids, vectors: np.ndarray, payloads: list[dict] | None = None) -> None:
        vectors = np.asarray(vectors, np.float32)
        if len(ids) == 0:
            return
        meta = self.meta(name)
        if vectors.ndim != 2 or vectors.shape[1] != meta.dim:
            raise FailedPrecondition(f"collection {name!r} holds {meta.dim}-d vectors; got shape {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise InvalidArgument("vector: values must be finite")
        with self._lock:
            self._upsert(name, [int(i) for i in ids], vectors, payloads or [{} for _ in ids])
            self._mirror.pop(name, None)

    def delete(self, name: str, ids) -> None:
        ids = [int(i) for i in ids]
        if not ids:
            return
        with self._lock:
            self._delete(name, ids)
            self._mirror.pop(name, None)

    def entries(self, name: str) -> dict[int, dict]:
        """Every point's payload by id ({"path", "sha256"} for points `genir index` wrote)."""
        with self._lock:
            return self._entries(name)

    def vectors(self, name: str, ids) -> dict[int, np.ndarray]:
        with self._lock:
            return self._vectors(name, [int(i) for i in ids])

    def set_corpus(self, name: str, fingerprint: str, size: int) -> None:
        """Record which corpus the collection now holds ("" = none known)."""
        with self._lock:
            meta = self.meta(name)
            if (meta.corpus_fingerprint, meta.corpus_size) != (fingerprint, size):
                meta.corpus_fingerprint, meta.corpus_size = fingerprint, int(size)
                self._write_meta(meta)

    def corpus_paths(self, name: str, offset: int, limit: int) -> list[str]:
        """Paths of ids offset .. offset+limit-1 ("" where an id has no point)."""
        ents = self.payloads(name, list(range(offset, offset + limit)))
        return [str(ents.get(i, {}).get("path", "")) for i in range(offset, offset + limit)]

    def existing_ids(self, name: str) -> set[int]:
        with self._lock:
            ids, _ = self._scroll(name, with_vectors=False)
            return set(ids)

    def matrix(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 (n,), vectors float32 (n, d)) of the whole collection, cached until the next write."""
        with self._lock:
            cached = self._mirror.get(name)
            if cached is None:
                meta = self.meta(name)
                ids, vecs = self._scroll(name, with_vectors=True)
                vecs = vecs if vecs is not None and len(ids) else np.zeros((0, meta.dim), np.float32)
                cached = (np.asarray(ids, np.int64), np.ascontiguousarray(vecs, np.float32))
                self._mirror[name] = cached
            return cached

    def all_scores(self, name: str, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cosine scores of (q, d) queries against every point: (ids (n,), scores (q, n))."""
        ids, vecs = self.matrix(name)
        return ids, normalise_rows(np.atleast_2d(queries)) @ vecs.T

    def search(self, name: str, vector: np.ndarray, top_k: int, exact: bool) -> list[Hit]:
        """Top-k by the engine (HNSW unless exact), ordered by the ranking rule."""
        with self._lock:
            hits = self._search(name, np.asarray(vector, np.float32), top_k, exact)
        hits.sort(key=lambda h: (-h.score, h.id))
        return hits[:top_k]

    def search_batch(self, name: str, vectors: np.ndarray, top_k: int, exact: bool) -> list[list[Hit]]:
        return [self.search(name, v, top_k, exact) for v in vectors]

    def rank(self, name: str, vector: np.ndarray, target: int) -> int:
        ids, scores = self.all_scores(name, vector)
        return rank_of(ids, scores[0], target)

    def info(self, name: str) -> dict:
        meta = self.meta(name)
        return dict(asdict(meta), points=self.count(name), engine=self.engine, hnsw_ready=self.hnsw_ready(name))


def _payload_dict(p) -> dict:
    return dict(p or {})


def _vector_of(record) -> list:
    """A point's vector: both engines give the unnamed vector as a list, or in a dict under ""."""
    return record.vector if isinstance(record.vector, list) else record.vector[""]


# ----------------------------------------------------------------------------------- embedded
class EdgeStore(VectorStore):
    """qdrant-edge shards under `root/<collection>/shard`, metadata in `root/<collection>/collection.json`."""

    engine = "qdrant-edge"

    def __init__(self, root: str | Path, *, hnsw_m: int = 16, ef_construct: int = 100,
                 indexing_threshold_kb: int = 10_000, full_scan_threshold_kb: int = 10_000, hnsw_ef: int | None = None):
        super().__init__()
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hnsw = dict(m=hnsw_m, ef_construct=ef_construct, full_scan_threshold=full_scan_threshold_kb)
        self.indexing_threshold_kb = indexing_threshold_kb
        self.hnsw_ef = hnsw_ef
        # Each open shard runs its own threads (~8) and holds files: at most MAX_OPEN_SHARDS stay
        # open, least recently used closed first (a later call reopens it from disk).
        self._shards: collections.OrderedDict = collections.OrderedDict()

    def _dir(self, name: str) -> Path:
        return self.root / check_name(name)

    def collections(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob(f"*/{META_FILE}"))

    def _read_meta(self, name):
        try:
            d = json.loads((self._dir(name) / META_FILE).read_text())
        except FileNotFoundError:
            return None
        return CollectionMeta(**d)

    def _config(self, dim: int):
        import qdrant_edge as qe

        return qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
                             hnsw_config=qe.HnswIndexConfig(**self.hnsw),
                             optimizers=qe.EdgeOptimizersConfig(indexing_threshold=self.indexing_threshold_kb))

    def _create(self, meta):
        import qdrant_edge as qe

        d = self._dir(meta.name)
        if (d / "shard").exists():  # left by a crash between shard creation and metadata
            shutil.rmtree(d / "shard")
        d.mkdir(parents=True, exist_ok=True)
        self._keep_open(meta.name, qe.EdgeShard.create(str(d / "shard"), self._config(meta.dim)))
        # Metadata last, atomically: a crash before this leaves a shard without metadata, which
        # the next _create replaces (see _shard).
        self._write_meta(meta)

    def _write_meta(self, meta):
        d = self._dir(meta.name)
        tmp = d / (META_FILE + ".tmp")
        try:
            tmp.write_text(json.dumps(asdict(meta), indent=1))
            os.replace(tmp, d / META_FILE)
        finally:
            tmp.unlink(missing_ok=True)

    def _delete(self, name, ids):
        import qdrant_edge as qe

        shard = self._shard(name)
        shard.update(qe.UpdateOperation.delete_points(ids))
        shard.flush()

    def _vectors(self, name, ids):
        recs = self._shard(name).retrieve(ids, with_payload=False, with_vector=True)
        return {int(r.id): np.asarray(_vector_of(r), np.float32) for r in recs}

    def _shard(self, name: str):
        """The open shard of a collection (callers hold self._lock: a shard may be closed here)."""
        shard = self._shards.get(name)
        if shard is None:
            import qdrant_edge as qe

            meta = self.meta(name)
            shard = qe.EdgeShard.load(str(self._dir(name) / "shard"), self._config(meta.dim))
            self._keep_open(name, shard)
        else:
            self._shards.move_to_end(name)
        return shard

    def _keep_open(self, name: str, shard) -> None:
        self._shards[name] = shard
        self._shards.move_to_end(name)
        while len(self._shards) > MAX_OPEN_SHARDS:
            old_name, old = self._shards.popitem(last=False)
            old.flush()
            old.close()
            log.debug("closed shard %s (more than %d open)", old_name, MAX_OPEN_SHARDS)

    def _upsert(self, name, ids, vectors, payloads):
        import qdrant_edge as qe

        pts = [qe.Point(i, v.tolist(), p) for i, v, p in zip(ids, vectors, payloads, strict=True)]
        shard = self._shard(name)
        shard.update(qe.UpdateOperation.upsert_points(pts))
        shard.flush()

    def _params(self, exact: bool):
        import qdrant_edge as qe

        return qe.SearchParams(exact=exact, hnsw_ef=None if exact else self.hnsw_ef)

    def _search(self, name, vector, limit, exact):
        import qdrant_edge as qe

        req = qe.QueryRequest(limit=limit, query=qe.Query.Nearest(vector.tolist()), with_payload=True,
                              params=self._params(exact))
        return [Hit(int(p.id), float(p.score), dict(p.payload or {})) for p in self._shard(name).query(req)]

    def search_batch(self, name, vectors, top_k, exact):
        import qdrant_edge as qe

        reqs = [qe.QueryRequest(limit=top_k, query=qe.Query.Nearest(np.asarray(v, np.float32).tolist()),
                                with_payload=False, params=self._params(exact)) for v in vectors]
        with self._lock:
            res = self._shard(name).query_batch(qe.QueryBatchRequest(reqs))
        out = []
        for pts in res:
            hits = sorted((Hit(int(p.id), float(p.score), {}) for p in pts), key=lambda h: (-h.score, h.id))
            out.append(hits[:top_k])
        return out

    def _scroll_page(self, name, offset, with_payload, with_vectors):
        import qdrant_edge as qe

        return self._shard(name).scroll(qe.ScrollRequest(offset=offset, limit=SCROLL_PAGE, with_payload=with_payload,
                                                         with_vector=with_vectors))

    def count(self, name):
        import qdrant_edge as qe

        self.meta(name)
        with self._lock:
            return int(self._shard(name).count(qe.CountRequest(exact=True)))

    def payloads(self, name, ids):
        with self._lock:
            recs = self._shard(name).retrieve([int(i) for i in ids], with_payload=True, with_vector=False)
        return {int(r.id): dict(r.payload or {}) for r in recs}

    def optimize(self, name):
        with self._lock:
            t = time.perf_counter()
            shard = self._shard(name)
            changed = shard.optimize()
            shard.flush()
            if changed:
                log.info("optimized %s in %.1fs", name, time.perf_counter() - t)

    def hnsw_ready(self, name):
        with self._lock:
            info = self._shard(name).info()
        return info.points_count > 0 and info.indexed_vectors_count >= info.points_count

    def close(self):
        with self._lock:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()


# ------------------------------------------------------------------------------------- server
class ServerStore(VectorStore):
    """qdrant-client: a Qdrant server URL (gRPC preferred), or ":memory:" (local mode, tests)."""

    engine = "qdrant"

    def __init__(self, url: str, *, prefer_grpc: bool = True, api_key: str | None = None, hnsw_ef: int | None = None):
        super().__init__()
        from qdrant_client import QdrantClient

        self.url = url
        self.local = not re.match(r"^https?://", url)   # qdrant-client's local mode (no server)
        if self.local:
            self.client = QdrantClient(location=url) if url == ":memory:" else QdrantClient(path=url)
        else:
            self.client = QdrantClient(url=url, prefer_grpc=prefer_grpc, api_key=api_key)
        self.hnsw_ef = hnsw_ef

    def collections(self):
        return sorted(c.name for c in self.client.get_collections().collections)

    def _read_meta(self, name):
        if not self.client.collection_exists(name):
            return None
        md = self.client.get_collection(name).config.metadata or {}
        if "genir_model" not in md:
            raise FailedPrecondition(f"collection {name!r} exists but was not created by genir (no model metadata)")
        return CollectionMeta(name, md["genir_model"], int(md["genir_dim"]), DISTANCE, float(md.get("genir_created", 0)),
                              str(md.get("genir_corpus", "")), int(md.get("genir_corpus_size", 0)))

    def _write_meta(self, meta):
        self.client.update_collection(meta.name, metadata={
            "genir_model": meta.model, "genir_dim": meta.dim, "genir_created": meta.created,
            "genir_corpus": meta.corpus_fingerprint, "genir_corpus_size": meta.corpus_size})

    def _delete(self, name, ids):
        from qdrant_client import models

        self.client.delete(name, points_selector=models.PointIdsList(points=ids), wait=True)

    def _vectors(self, name, ids):
        recs = self.client.retrieve(name, ids, with_payload=False, with_vectors=True)
        return {int(r.id): np.asarray(_vector_of(r), np.float32) for r in recs}

    def _create(self, meta):
        from qdrant_client import models

        self.client.create_collection(
            meta.name, vectors_config=models.VectorParams(size=meta.dim, distance=models.Distance.COSINE),
            metadata={"genir_model": meta.model, "genir_dim": meta.dim, "genir_created": meta.created})

    def _upsert(self, name, ids, vectors, payloads):
        from qdrant_client import models

        self.client.upsert(name, points=[models.PointStruct(id=i, vector=v.tolist(), payload=p)
                                         for i, v, p in zip(ids, vectors, payloads, strict=True)], wait=True)

    def _search(self, name, vector, limit, exact):
        from qdrant_client import models

        # Local mode is always brute force and warns about search params, so send none there.
        params = None if self.local else models.SearchParams(exact=exact, hnsw_ef=None if exact else self.hnsw_ef)
        res = self.client.query_points(name, query=vector.tolist(), limit=limit, with_payload=True,
                                       search_params=params)
        return [Hit(int(p.id), float(p.score), dict(p.payload or {})) for p in res.points]

    def _scroll_page(self, name, offset, with_payload, with_vectors):
        return self.client.scroll(name, limit=SCROLL_PAGE, offset=offset, with_payload=with_payload,
                                  with_vectors=with_vectors)

    def count(self, name):
        self.meta(name)
        return int(self.client.count(name, exact=True).count)

    def payloads(self, name, ids):
        recs = self.client.retrieve(name, [int(i) for i in ids], with_payload=True, with_vectors=False)
        return {int(r.id): dict(r.payload or {}) for r in recs}

    def hnsw_ready(self, name):
        info = self.client.get_collection(name)
        return bool(info.points_count) and (info.indexed_vectors_count or 0) >= (info.points_count or 0)

    def close(self):
        self.client.close()


def qdrant_api_key() -> str | None:
    """The Qdrant server's API key: $GENIR_QDRANT_API_KEY_FILE (a mounted Secret) wins over
    $GENIR_QDRANT_API_KEY; never a flag, so it stays out of argv."""
    from services.common.config import read_secret

    return read_secret(os.environ.get("GENIR_QDRANT_API_KEY_FILE"), "GENIR_QDRANT_API_KEY")


def open_store(store_path: str | None = None, qdrant_url: str | None = None, **edge_options) -> VectorStore:
    """--qdrant-url selects the server engine; otherwise the embedded one in --store-path."""
    if qdrant_url:
        return ServerStore(qdrant_url, api_key=qdrant_api_key(), hnsw_ef=edge_options.get("hnsw_ef"))
    return EdgeStore(store_path or ".cache/qdrant", **edge_options)
