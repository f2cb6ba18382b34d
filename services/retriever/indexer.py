"""`genir index`: embed a ChatIR-format corpus into a collection, resumably.

The corpus is a JSON list of image paths relative to --image-root; the list index is the corpus
id and the point id. Images are read, decoded and preprocessed on worker threads, in corpus
order, a few batches ahead of the model, so decoding overlaps the forward pass. Each batch is
written (and flushed) as soon as it is embedded, so a killed run loses at most one batch; a
rerun embeds only the ids the collection lacks and ends with exactly one point per readable
entry. Missing and corrupt files are listed at the end; they do not stop the run.

The embedded store (qdrant-edge) is single-process: run this while the retriever service is
stopped, or send the images through the service's Upsert stream (which uses `Indexer` below).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.common import config
from services.common.errors import ServiceError
from services.common.images import DEFAULT_MAX_PIXELS, decode_image

log = logging.getLogger("genir.index")


@dataclass
class Report:
    collection: str
    corpus: int
    already: int = 0
    embedded: int = 0
    failed: list[str] = field(default_factory=list)   # "id path: reason"
    points: int = 0
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


class Indexer:
    """Embeds and writes batches into one collection; shared by `genir index` and Retriever.Upsert."""

    def __init__(self, store, embedder, collection: str):
        self.store, self.embedder, self.collection = store, embedder, collection
        self.meta = store.ensure(collection, embedder.model_id, embedder.dim)

    def add_pixels(self, ids, pixels: np.ndarray, payloads: list[dict]) -> None:
        self.store.upsert(self.collection, ids, self.embedder.embed_pixels(pixels), payloads)

    def add_images(self, ids, images, payloads: list[dict]) -> None:
        self.store.upsert(self.collection, ids, self.embedder.embed_images(images), payloads)

    def add_vectors(self, ids, vectors: np.ndarray, payloads: list[dict]) -> None:
        self.store.upsert(self.collection, ids, vectors, payloads)


def read_corpus(path: str | Path) -> list[str]:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
        raise ValueError(f"{path}: expected a JSON list of relative image paths (ChatIR corpus format)")
    return data


def load_one(root: Path, rel: str, preprocess, max_pixels: int):
    """Read + decode + preprocess one file; returns the array or an error string."""
    try:
        data = (root / rel).read_bytes()
    except FileNotFoundError:
        return "missing file"
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    try:
        return preprocess(decode_image(data, "file", max_pixels))
    except ServiceError as e:
        return e.message
    except Exception as e:  # noqa: BLE001 - a bad file must not stop the run
        return f"{type(e).__name__}: {e}"


def decoded_batches(todo: list[int], paths: list[str], root: Path, preprocess, batch_size: int, workers: int,
                    max_pixels: int, ahead: int = 3):
    """Yields (ids, results) per batch in corpus order; decoding runs `ahead` batches in front."""
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode") as pool:
        pending: collections.deque = collections.deque()
        it = iter(todo)
        window = batch_size * (ahead + 1)
        while True:
            for i in it:
                pending.append((i, pool.submit(load_one, root, paths[i], preprocess, max_pixels)))
                if len(pending) >= window:
                    break
            if not pending:
                return
            batch = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
            yield [i for i, _ in batch], [f.result() for _, f in batch]


def index_corpus(store, embedder, collection: str, corpus: list[str], image_root: str | Path, *,
                 batch_size: int = 64, workers: int = 4, max_pixels: int = DEFAULT_MAX_PIXELS,
                 progress: bool = True, optimize: bool = True) -> Report:
    root = Path(image_root)
    indexer = Indexer(store, embedder, collection)
    have = store.existing_ids(collection)
    todo = [i for i in range(len(corpus)) if i not in have]
    rep = Report(collection, len(corpus), already=len(have & set(range(len(corpus)))))
    log.info("%s: %d in corpus, %d already indexed, %d to embed", collection, len(corpus), rep.already, len(todo))
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="img", desc=f"index {collection}", file=sys.stderr, smoothing=0.1)

    def write(ids, done, vecs, payloads):
        # On its own thread, so the write + flush of one batch overlaps the next forward pass.
        if len(ids):
            indexer.add_vectors(ids, vecs, payloads)
        log.debug("committed through id %d", done[-1])
        if bar is not None:
            bar.update(len(done))

    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write")
    last = None
    try:
        for ids, results in decoded_batches(todo, corpus, root, embedder.preprocess, batch_size, workers, max_pixels):
            ok = [(i, r) for i, r in zip(ids, results, strict=True) if isinstance(r, np.ndarray)]
            rep.failed += [f"{i} {corpus[i]}: {r}" for i, r in zip(ids, results, strict=True) if not isinstance(r, np.ndarray)]
            vecs = embedder.embed_pixels(np.stack([r for _, r in ok])) if ok else None
            if last is not None:
                last.result()           # one write in flight at a time: batches land in order
            last = writer.submit(write, [i for i, _ in ok], ids, vecs, [{"path": corpus[i]} for i, _ in ok])
            rep.embedded += len(ok)
        if last is not None:
            last.result()
    finally:
        writer.shutdown(wait=True)
        if bar is not None:
            bar.close()
    rep.seconds = time.perf_counter() - start
    if optimize:
        store.optimize(collection)
    rep.points = store.count(collection)
    return rep


# ---------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    f = lambda *a, **k: config.add_flag(parser, *a, service="index", **k)  # noqa: E731
    f("corpus", default=None, help="ChatIR corpus JSON (list of relative image paths; index = corpus id)")
    f("image-root", default=None, help="folder the corpus paths are relative to")
    f("model", default=None, help="local Hugging Face folder of a BLIP / CLIP / SigLIP checkpoint")
    f("collection", default=None, help="collection name, one per (corpus, model)")
    f("store-path", default=".cache/qdrant", help="embedded qdrant-edge store folder (default engine)")
    f("qdrant-url", default=None, help="Qdrant server URL (http://host:6333 or :6334 for gRPC); overrides --store-path")
    f("image-size", default=None, type=int, help="model input size (BLIP default 224 as GenIR; others: native)")
    f("text-max-tokens", default=200, type=int, help="text truncation (capped at the text tower's limit)")
    f("batch-size", default=64, type=int, help="images per forward pass and per write")
    f("workers", default=4, type=int, help="decode threads")
    f("device", default=None, help="torch device (default: cuda when present)")
    f("max-image-pixels", default=DEFAULT_MAX_PIXELS, type=int, help="skip images larger than this")
    f("hnsw-threshold-kb", default=10_000, type=int, help="qdrant-edge: build HNSW once a segment exceeds this many KB")
    f("no-progress", default=False, bool_flag=True, help="hide the progress bar")
    f("log-level", default="INFO", help="logging level")


def main(args: argparse.Namespace) -> int:
    from services.retriever.embedders import load_embedder
    from services.retriever.store import open_store

    config.setup_logging(args.log_level)
    missing = [n for n in ("corpus", "image_root", "model", "collection") if not getattr(args, n)]
    if missing:
        print(f"genir index: missing --{', --'.join(m.replace('_', '-') for m in missing)}", file=sys.stderr)
        return 2
    corpus = read_corpus(args.corpus)
    embedder = load_embedder(args.model, image_size=args.image_size, text_max_tokens=args.text_max_tokens,
                             device=args.device, batch_size=args.batch_size)
    store = open_store(args.store_path, args.qdrant_url, indexing_threshold_kb=args.hnsw_threshold_kb,
                       full_scan_threshold_kb=args.hnsw_threshold_kb)
    try:
        rep = index_corpus(store, embedder, args.collection, corpus, args.image_root, batch_size=args.batch_size,
                           workers=args.workers, max_pixels=args.max_image_pixels, progress=not args.no_progress)
    except ServiceError as e:
        print(f"genir index: {e.message}", file=sys.stderr)
        return 1
    finally:
        store.close()
    for line in rep.failed:
        log.warning("skipped %s", line)
    summary = dict(collection=rep.collection, model=embedder.model_id, corpus=rep.corpus, already=rep.already,
                   embedded=rep.embedded, failed=len(rep.failed), points=rep.points, seconds=round(rep.seconds, 3),
                   images_per_second=round(rep.images_per_second, 1))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="genir index")
    add_arguments(p)
    raise SystemExit(main(p.parse_args()))
