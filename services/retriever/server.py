"""genir.v1.Retriever: a thin grpc.aio servicer over RetrieverBackend (validation + proto conversion).

The embedded store (qdrant-edge) is owned by this process while it runs; to add images to it
meanwhile, use the Upsert stream (or stop the service and run `genir index`).
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass

import numpy as np

from genir import contract
from genir.v1 import common_pb2, retriever_pb2, retriever_pb2_grpc
from services.common import config, images, server, validation
from services.common.batching import MicroBatcher, submit_for_call
from services.common.errors import InvalidArgument, ServiceError
from services.common.paths import echo
from services.common.server import Service, serve
from services.retriever.backend import BATCH_METRICS, EmbedInput, Query, RetrieverBackend, check_weights

SERVICE = "retriever"
MAX_BATCH = 256
MAX_PATHS_PAGE = 10_000
MAX_PAYLOAD_KEYS = 16
MAX_PAYLOAD_CHARS = 4096
MAX_VECTOR_DIM = 16_384   # BLIP, CLIP and SigLIP embed in at most a few thousand dimensions; checked before any array is built
# Measured on the bench data (benchmarks/results/search.json, 100k x 256): ef 512 reaches top-10
# recall 0.96 (the engine's default 0.63); exact search beats HNSW at that ef below ~24k points for
# batches of 32 and ~53k for lone queries, so collections up to 20k points are searched exactly.
HNSW_EF = 512
EXACT_BELOW_POINTS = 20_000


def timings(d: dict) -> list:
    return [common_pb2.Timing(stage=k, seconds=float(v)) for k, v in d.items()]


def hit_proto(h, rank: int) -> common_pb2.Hit:
    return common_pb2.Hit(id=str(h.id), score=h.score, rank=rank, payload={k: str(v) for k, v in h.payload.items()})


def vector_from(msg, field: str) -> np.ndarray:
    if not msg.values:
        raise InvalidArgument(f"{field}: empty vector")
    if len(msg.values) > MAX_VECTOR_DIM:
        raise InvalidArgument(f"{field}: {len(msg.values)} values, over the limit of {MAX_VECTOR_DIM}")
    v = np.asarray(msg.values, np.float32)
    if not np.isfinite(v).all():
        raise InvalidArgument(f"{field}: values must be finite numbers")
    if not np.any(v):
        raise InvalidArgument(f"{field}: the zero vector has no direction")
    return v


def parse_collection(name: str, default: str | None, field: str = "collection") -> str:
    name = (name or "").strip() or (default or "")
    if not name:
        raise InvalidArgument(f"{field}: required (no --default-collection is set)")
    return name


def parse_search(request, default_collection: str | None) -> tuple[Query, tuple | None]:
    """A SearchRequest as a Query, and (image proto, field) when the query still needs an image
    decoded (image and fusion queries; the servicer decodes it off the event loop)."""
    collection = parse_collection(request.collection, default_collection)
    top_k = contract.DEFAULT_TOP_K if request.top_k == 0 else \
        validation.int_range(request.top_k, "top_k", 1, contract.MAX_SEARCH_TOP_K)
    target = validation.corpus_id(request.target_id, "target_id") if request.HasField("target_id") else None
    query = Query(collection, top_k=top_k, target_id=target, exact=request.exact)
    which = request.WhichOneof("query")
    if which == "image":
        return query, (request.image, "image")
    if which == "text":
        query.text = validation.text(request.text, "text")
    elif which == "vector":
        query.vector = vector_from(request.vector, "vector.values")
    elif which == "fusion":
        f = request.fusion
        w_image, w_text = check_weights(f.image_weight, f.text_weight)
        query.fusion = (None, validation.text(f.text, "fusion.text"), w_image, w_text)
        return query, (f.image, "fusion.image")
    else:
        raise InvalidArgument("query: one of image, text, vector or fusion is required")
    return query, None


def parse_embed_images(request) -> list[tuple]:
    """(image proto, field) of each image of an EmbedImagesRequest, still to decode."""
    n = validation.int_range(len(request.images), "images (count)", 1, MAX_BATCH)
    return [(request.images[i], f"images[{i}]") for i in range(n)]


def parse_embed_texts(request) -> list[EmbedInput]:
    n = validation.int_range(len(request.texts), "texts (count)", 1, MAX_BATCH)
    return [EmbedInput("text", validation.text(request.texts[i], f"texts[{i}]")) for i in range(n)]


def parse_collection_info(request, default_collection: str | None) -> tuple[str, int, int]:
    """(collection, paths_offset, paths_limit) of a CollectionInfoRequest (limit 0: no paths)."""
    collection = parse_collection(request.collection, default_collection)
    offset = validation.int_range(request.paths_offset, "paths_offset", 0, 1 << 40)
    limit = validation.int_range(request.paths_limit, "paths_limit", 0, MAX_PATHS_PAGE)
    return collection, offset, limit


def parse_upsert_message(msg, stream_collection: str | None, default_collection: str | None) -> str:
    """The collection of an Upsert stream after one of its messages: named by the first message
    (else the default) and the same in every later one that names it."""
    collection = stream_collection
    if msg.collection:
        if collection is not None and msg.collection != collection:
            raise InvalidArgument(f"collection: {echo(msg.collection)} differs from the stream's {collection!r}")
        collection = msg.collection
    if collection is None:
        collection = parse_collection("", default_collection)
    validation.int_range(len(msg.items), "items (count per message)", 0, MAX_BATCH)
    return collection


@dataclass(frozen=True)
class UpsertItem:
    """One Upsert item: an image still to decode (its header checked) or a vector, never both."""
    id: int
    payload: dict
    image: tuple | None = None          # (image proto, field)
    pixels: int = 0
    vector: np.ndarray | None = None


def parse_upsert_item(item, k: int, dim: int, max_image_pixels: int) -> UpsertItem:
    """Item `k` of an Upsert message; payloads are small strings (a path and a hash), vectors have
    the collection's `dim`."""
    cid = validation.corpus_id(item.id, f"items[{k}].id")
    payload = dict(item.payload)
    if len(payload) > MAX_PAYLOAD_KEYS:
        raise InvalidArgument(f"items[{k}].payload: {len(payload)} keys, over the limit of {MAX_PAYLOAD_KEYS}")
    size = sum(len(key) + len(value) for key, value in payload.items())
    if size > MAX_PAYLOAD_CHARS:
        raise InvalidArgument(f"items[{k}].payload: {size} characters, over the limit of {MAX_PAYLOAD_CHARS}")
    which = item.WhichOneof("content")
    if which == "image":
        field = f"items[{k}].image"
        if item.image.sha256 or not item.image.data:
            images.decode_proto(item.image, field, max_image_pixels)  # the missing/sha256 message
        return UpsertItem(cid, payload, image=(item.image, field),
                          pixels=images.header_pixels(item.image.data, field, max_image_pixels))
    if which == "vector":
        v = vector_from(item.vector, f"items[{k}].vector")
        if v.shape[0] != dim:
            raise InvalidArgument(f"items[{k}].vector: {v.shape[0]} values, collection holds {dim}-d vectors")
        return UpsertItem(cid, payload, vector=v)
    raise InvalidArgument(f"items[{k}]: needs an image or a vector")


def parse_upsert_items(items, dim: int, max_image_pixels: int, max_request_pixels: int) -> tuple[list, list]:
    """(items that pass, a line for each that does not) of one Upsert message: a bad item is
    reported in the response, not fatal. The images of one message share one pixel budget."""
    ok, failed, pixels = [], [], 0
    for k, item in enumerate(items):
        try:
            parsed = parse_upsert_item(item, k, dim, max_image_pixels)
            if pixels + parsed.pixels > max_request_pixels:
                raise InvalidArgument(f"items[{k}].image: over the per-message pixel budget of "
                                      f"{max_request_pixels}; send it in a later message")
            pixels += parsed.pixels
            ok.append(parsed)
        except ServiceError as e:
            failed.append(f"{(item.id or '?')[:40]}: {e.message}")
    return ok, failed


class RetrieverServicer(retriever_pb2_grpc.RetrieverServicer):
    def __init__(self, backend: RetrieverBackend, batcher: MicroBatcher, cfg: RetrieverConfig):
        self.backend, self.batcher, self.args = backend, batcher, cfg

    async def _decode(self, items) -> list:
        """(msg, field) pairs of one request: one pixel budget, decoded off the event loop."""
        return await images.decode_protos(items, self.args.max_image_pixels, self.args.max_request_pixels)

    async def _image(self, msg, field: str):
        return (await self._decode([(msg, field)]))[0]

    async def Search(self, request, context):
        query, image = parse_search(request, self.args.default_collection)
        if image is not None:
            pic = await self._image(*image)
            if query.fusion is None:
                query.image = pic
            else:
                query.fusion = (pic, *query.fusion[1:])
        collection = query.collection
        (res,), info = await submit_for_call(self.batcher, ("search", collection), [query], context.time_remaining())
        res.timings = {"queue": info.queue_seconds, **res.timings}
        resp = retriever_pb2.SearchResponse(hits=[hit_proto(h, r) for r, h in enumerate(res.hits)],
                                            timings=timings(res.timings), model=self.backend.model_id,
                                            text_truncated=res.text_truncated, collection_points=res.points)
        if res.target_rank is not None:
            resp.target_rank = res.target_rank
        return resp

    async def EmbedImages(self, request, context):
        imgs = await self._decode(parse_embed_images(request))
        return await self._embed([EmbedInput("image", im) for im in imgs], context)

    async def EmbedTexts(self, request, context):
        return await self._embed(parse_embed_texts(request), context)

    async def _embed(self, inputs: list[EmbedInput], context):
        """Embeds through the batcher (one tower per batch); texts report truncation, images nothing."""
        tower = inputs[0].tower
        outs, info = await submit_for_call(self.batcher, ("embed", tower), inputs, context.time_remaining())
        return retriever_pb2.EmbedResponse(
            vectors=[retriever_pb2.Vector(values=v.tolist()) for v, _, _ in outs], dim=self.backend.embedder.dim,
            model=self.backend.model_id, truncated=[t for _, t, _ in outs] if tower == "text" else [],
            timings=timings({"queue": info.queue_seconds, "embed": outs[0][2]}))

    async def Upsert(self, request_iterator, context):
        collection, indexer, upserted, failed = None, None, 0, []
        async for msg in request_iterator:
            collection = parse_upsert_message(msg, collection, self.args.default_collection)
            if indexer is None:
                indexer = await asyncio.to_thread(self.backend.indexer, collection)
            items, bad = parse_upsert_items(msg.items, indexer.meta.dim, self.args.max_image_pixels,
                                            self.args.max_request_pixels)
            failed += bad
            imgs = [(it.id, it.image, it.payload) for it in items if it.image is not None]
            vecs = [(it.id, it.vector, it.payload) for it in items if it.vector is not None]
            decoded, imgs = await self._decode_items(imgs, failed)
            imgs = [(cid, im, p) for (cid, _, p), im in zip(imgs, decoded, strict=True)]
            upserted += await asyncio.to_thread(self.backend.upsert, indexer, imgs, vecs)
        if collection is None:
            raise InvalidArgument("collection: the stream was empty; the first message must name the collection")
        if indexer is None:
            indexer = await asyncio.to_thread(self.backend.indexer, collection)
        points = await asyncio.to_thread(self.backend.finish_upsert, collection)
        return retriever_pb2.UpsertResponse(upserted=upserted, collection_points=points, failed=failed)

    async def _decode_items(self, imgs: list, failed: list) -> tuple[list, list]:
        """Decode the image items of one Upsert message; an item that fails is reported, not fatal."""
        if not imgs:
            return [], []
        try:
            return await self._decode([spec for _, spec, _ in imgs]), imgs
        except ServiceError:
            pass
        ok_items, ok_images = [], []
        for item in imgs:   # one of them is bad: find which, one at a time
            try:
                ok_images.append((await self._decode([item[1]]))[0])
                ok_items.append(item)
            except ServiceError as e:
                failed.append(f"{item[0]}: {e.message}")
        return ok_images, ok_items

    async def CollectionInfo(self, request, context):
        collection, offset, limit = parse_collection_info(request, self.args.default_collection)
        info = await asyncio.to_thread(self.backend.collection_info, collection)
        resp = retriever_pb2.CollectionInfoResponse(
            name=info["name"], model=info["model"], dim=info["dim"], points=info["points"], engine=info["engine"],
            distance=info["distance"], hnsw_ready=info["hnsw_ready"],
            corpus_fingerprint=info["corpus_fingerprint"], corpus_size=info["corpus_size"])
        if limit:
            resp.paths.extend(await asyncio.to_thread(self.backend.store.corpus_paths, collection, offset, limit))
        return resp


@dataclass(frozen=True)
class RetrieverConfig(config.ServerConfig):
    """Every retriever setting (flags, env GENIR_RETRIEVER_*); RetrieverBackend gets this object."""
    model: str | None = config.flag("local Hugging Face folder: BLIP retrieval, CLIP or SigLIP (auto-detected)")
    image_size: int | None = config.flag(
        "model input size; default: 224 for BLIP (GenIR/ChatIR), the checkpoint's own size for CLIP/SigLIP")
    text_max_tokens: int = config.flag("text truncation in tokens (capped at the text tower's limit)", 200)
    store_path: str = config.flag("embedded qdrant-edge store folder (owned by this process)", ".cache/qdrant")
    qdrant_url: str | None = config.flag(
        "Qdrant server URL; when set, the server engine is used instead of --store-path")
    default_collection: str | None = config.flag("collection used when a request leaves it empty")
    batch_size: int = config.flag("images/texts per forward pass", 32)
    device: str | None = config.flag("torch device (default: cuda when present)")
    hnsw_threshold_kb: int = config.flag(
        "qdrant-edge: segments above this size get an HNSW index; below it search is a full scan", 10_000)
    hnsw_ef: int = config.flag(
        "HNSW search breadth (the engine's own default reaches top-10 recall 0.63 on the bench data)", HNSW_EF)
    exact_below_points: int = config.flag(
        "collections of at most this many points answer approximate queries exactly too (faster there, "
        "recall 1; 0 = always HNSW); see benchmarks/results/search.json", EXACT_BELOW_POINTS)
    max_batch_delay_ms: float = config.flag("longest wait for concurrent Search/Embed calls to join a batch, ms", 2.0)
    max_queue: int = config.flag("calls waiting for a batch before RESOURCE_EXHAUSTED", 256)
    batch_invariant: bool = config.flag(
        "answer each Search exactly as if it ran alone (query vectors and exact scores independent of the "
        "batch), so reruns and resumed evaluations reproduce bit for bit; off = faster batched math", True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.register(parser, RetrieverConfig, SERVICE, port=50053, metrics_port=9103)


def check(cfg: RetrieverConfig) -> str | None:
    return None if cfg.model else "genir serve retriever: --model is required"


async def start(cfg: RetrieverConfig) -> int:
    backend = RetrieverBackend(cfg)
    batcher = build_batcher(backend, cfg)
    servicer = RetrieverServicer(backend, batcher, cfg)
    svc = Service("genir.v1.Retriever", retriever_pb2_grpc.add_RetrieverServicer_to_server, servicer)

    async def load():
        await asyncio.to_thread(backend.load)
        batcher.start()

    async def close():
        await batcher.close()
        backend.close()

    return await serve(cfg, [svc], load=load, close=close)


def main(args) -> int:
    return server.main(RetrieverConfig.from_args(args), SERVICE, start, check)


def build_batcher(backend: RetrieverBackend, cfg: RetrieverConfig) -> MicroBatcher:
    """One batcher for every model call, so one forward pass runs at a time; a batch holds
    up to --batch-size queries or inputs of one kind (searches of one collection, or one tower)."""
    return MicroBatcher(backend.run_batch, BATCH_METRICS, max_batch_size=cfg.batch_size,
                        max_delay_s=cfg.max_batch_delay_ms / 1000.0, max_queue=cfg.max_queue, name=SERVICE)


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="genir serve retriever")
    add_arguments(p)
    raise SystemExit(main(p.parse_args()))
