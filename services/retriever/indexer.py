"""`genir index`: embed a ChatIR-format corpus into a collection, resumably.

The corpus is a JSON list of image paths relative to --image-root, read as the orchestrator reads
it (services/common/corpus.py: normalised, no path twice); the list index is the corpus id and the
point id, and every point stores {"path", "sha256"} of its file. A (re-)index is keyed
by path and content: unchanged points stay, a path whose id moved gets its vector copied, new and
changed files are embedded, and points past the end of the list or of unreadable files are
deleted, so the collection ends holding exactly the list. The counts are printed. Only then is
the list's fingerprint recorded in the collection; the orchestrator and `genir eval` refuse
target ids of any other list. Images are read, decoded and preprocessed on worker threads a few
batches ahead of the model. Each batch is flushed when embedded, so a killed run loses at most
one batch and a rerun resumes. Skipped (missing or corrupt) files make the exit code 1 unless
--allow-missing is given.

The embedded store (qdrant-edge) is single-process: run this while the retriever service is
stopped, or send the images through the service's Upsert stream (which uses `Indexer` below).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.common import config
from services.common.corpus import DatasetError, read_corpus
from services.common.errors import ServiceError
from services.common.images import DEFAULT_MAX_PIXELS, decode_image
from services.common.paths import corpus_fingerprint, resolve_in_root

log = logging.getLogger("genir.index")


@dataclass
class Report:
    collection: str
    corpus: int
    kept: int = 0          # same path, same content, same id: untouched
    added: int = 0         # a path the collection did not hold: embedded
    changed: int = 0       # a known path whose content (or id) changed: embedded again
    moved: int = 0         # same path and content under another id: vector copied, not embedded
    removed: int = 0       # points whose id no longer names a (readable) corpus entry
    failed: list[str] = field(default_factory=list)   # "id path: reason"
    points: int = 0
    seconds: float = 0.0
    fingerprint: str = ""  # recorded in the collection ("" = the collection names no corpus)

    @property
    def embedded(self) -> int:
        return self.added + self.changed

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def counts(self) -> dict:
        return dict(kept=self.kept, added=self.added, changed=self.changed, moved=self.moved, removed=self.removed,
                    embedded=self.embedded, failed=len(self.failed))


class Indexer:
    """Embeds and writes batches into one collection; shared by `genir index` and Retriever.Upsert."""

    def __init__(self, store, embedder, collection: str):
        self.store, self.embedder, self.collection = store, embedder, collection
        self.meta = store.ensure(collection, embedder.model_id, embedder.dim)

    def add_images(self, ids, images, payloads: list[dict]) -> None:
        self.store.upsert(self.collection, ids, self.embedder.embed_images(images), payloads)

    def add_vectors(self, ids, vectors: np.ndarray, payloads: list[dict]) -> None:
        self.store.upsert(self.collection, ids, vectors, payloads)


def read_file(root: Path, rel: str) -> bytes | str:
    """The bytes of a corpus file confined to the root, or why not (no server path in the reason)."""
    try:
        return resolve_in_root(root, rel, "corpus path").read_bytes()
    except ServiceError as e:
        return e.message
    except FileNotFoundError:
        return "missing file"
    except IsADirectoryError:
        return "a folder, not an image file"
    except OSError as e:
        return f"unreadable ({e.strerror or type(e).__name__})"


def file_stat(root: Path, rel: str) -> tuple[int, int] | tuple[str]:
    """(size, mtime_ns) of a regular corpus file confined to the root, or (reason,)."""
    try:
        st = resolve_in_root(root, rel, "corpus path").stat()
    except ServiceError as e:
        return (e.message,)
    except FileNotFoundError:
        return ("missing file",)
    except OSError as e:
        return (f"unreadable ({e.strerror or type(e).__name__})",)
    return (st.st_size, st.st_mtime_ns)


def load_one(root: Path, rel: str, preprocess, max_pixels: int):
    """Read + decode + preprocess one file: (array, sha256 hex of the bytes), or an error string."""
    data = read_file(root, rel)
    if isinstance(data, str):
        return data
    try:
        return preprocess(decode_image(data, "file", max_pixels)), hashlib.sha256(data).hexdigest()
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


@dataclass
class Plan:
    """What a re-index does, decided from the stored points and a stat of every file (no reads)."""
    stats: dict[int, tuple[int, int]] = field(default_factory=dict)
    embed: list[int] = field(default_factory=list)
    copy: dict[int, int] = field(default_factory=dict)       # new id -> old id holding the same file
    delete: set[int] = field(default_factory=set)
    known_paths: set = field(default_factory=set)

    def uncount(self, path: str, rep: Report) -> None:
        """An entry planned for embedding did not decode: it is a failure, not an addition."""
        if path in self.known_paths:
            rep.changed -= 1
        else:
            rep.added -= 1


def file_key(path: str, size: int, mtime_ns: int) -> tuple:
    """A file is unchanged when its path, size and modification time are (as rsync decides)."""
    return (path, int(size), int(mtime_ns))


def plan_index(old: dict[int, dict], corpus: list[str], stats: list, rep: Report) -> Plan:
    plan = Plan(known_paths={e.get("path") for e in old.values()})
    stored = {i: file_key(e.get("path"), e.get("size", -1), e.get("mtime_ns", -1)) for i, e in old.items()
              if e.get("sha256")}
    by_file = {k: i for i, k in stored.items()}
    for i, (path, st) in enumerate(zip(corpus, stats, strict=True)):
        if len(st) == 1:
            rep.failed.append(f"{i} {path}: {st[0]}")
            if i in old:
                plan.delete.add(i)      # a stale vector must not answer for a file that is gone
            continue
        plan.stats[i] = st
        key = file_key(path, *st)
        if stored.get(i) == key:
            rep.kept += 1
        elif key in by_file:
            plan.copy[i] = by_file[key]
        else:
            plan.embed.append(i)
            if path in plan.known_paths:
                rep.changed += 1
            else:
                rep.added += 1
    plan.delete |= {i for i in old if i >= len(corpus)}
    rep.moved = len(plan.copy)
    return plan


def index_corpus(store, embedder, collection: str, corpus: list[str], image_root: str | Path, *,
                 batch_size: int = 64, workers: int = 4, max_pixels: int = DEFAULT_MAX_PIXELS,
                 progress: bool = True, optimize: bool = True, allow_missing: bool = False) -> Report:
    """Make the collection hold exactly `corpus`: point id i = the image at corpus[i], by path and content.

    Unchanged points stay, moved ones are copied, new or changed files are embedded, points past
    the end or of unreadable files are deleted. The corpus fingerprint is recorded only when the
    collection then matches the list (or when `allow_missing` accepts the skipped files' absence).
    """
    root = Path(image_root)
    indexer = Indexer(store, embedder, collection)
    rep = Report(collection, len(corpus))
    start = time.perf_counter()
    old = store.entries(collection)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="stat") as pool:
        stats = list(pool.map(lambda rel: file_stat(root, rel), corpus))
    plan = plan_index(old, corpus, stats, rep)
    log.info("%s: %d in corpus; %s", collection, len(corpus), ", ".join(f"{k} {v}" for k, v in rep.counts().items()))
    # Until this run completes, the collection names no corpus (a killed run is not mistaken for a done one).
    store.set_corpus(collection, "", 0)
    copied = store.vectors(collection, list(plan.copy.values())) if plan.copy else {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plan.embed), unit="img", desc=f"index {collection}", file=sys.stderr, smoothing=0.1)

    def payload(i: int, sha: str) -> dict:
        size, mtime_ns = plan.stats[i]
        return {"path": corpus[i], "sha256": sha, "size": size, "mtime_ns": mtime_ns}

    def write(ids, done, vecs, payloads):
        # On its own thread, so the write + flush of one batch overlaps the next forward pass.
        if len(ids):
            indexer.add_vectors(ids, vecs, payloads)
        log.debug("committed through id %d", done[-1])
        if bar is not None:
            bar.update(len(done))

    if plan.copy:
        new_ids = sorted(plan.copy)
        indexer.add_vectors(new_ids, np.stack([copied[plan.copy[i]] for i in new_ids]),
                            [payload(i, old[plan.copy[i]]["sha256"]) for i in new_ids])
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write")
    last = None
    try:
        for ids, results in decoded_batches(plan.embed, corpus, root, embedder.preprocess, batch_size, workers,
                                            max_pixels):
            ok = [(i, r) for i, r in zip(ids, results, strict=True) if not isinstance(r, str)]
            for i, r in zip(ids, results, strict=True):
                if isinstance(r, str):
                    rep.failed.append(f"{i} {corpus[i]}: {r}")
                    plan.uncount(corpus[i], rep)
                    if i in old:
                        plan.delete.add(i)
            vecs = embedder.embed_pixels(np.stack([px for _, (px, _) in ok])) if ok else None
            if last is not None:
                last.result()           # one write in flight at a time: batches land in order
            last = writer.submit(write, [i for i, _ in ok], ids, vecs, [payload(i, sha) for i, (_, sha) in ok])
        if last is not None:
            last.result()
    finally:
        writer.shutdown(wait=True)
        if bar is not None:
            bar.close()
    store.delete(collection, sorted(plan.delete))
    rep.removed = len(plan.delete)
    rep.seconds = time.perf_counter() - start
    if optimize:
        store.optimize(collection)
    rep.points = store.count(collection)
    if not rep.failed or allow_missing:
        rep.fingerprint = corpus_fingerprint(corpus)
        store.set_corpus(collection, rep.fingerprint, len(corpus))
    return rep


# ---------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    f = config.flags(parser, "index")
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
    f("allow-missing", default=False, bool_flag=True,
      help="exit 0 although some files were skipped (missing or unreadable); their ids have no point")
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
    try:
        corpus = list(read_corpus(args.corpus))
    except DatasetError as e:
        print(f"genir index: {e}", file=sys.stderr)
        return 2
    embedder = load_embedder(args.model, image_size=args.image_size, text_max_tokens=args.text_max_tokens,
                             device=args.device, batch_size=args.batch_size)
    store = open_store(args.store_path, args.qdrant_url, indexing_threshold_kb=args.hnsw_threshold_kb,
                       full_scan_threshold_kb=args.hnsw_threshold_kb)
    try:
        rep = index_corpus(store, embedder, args.collection, corpus, args.image_root, batch_size=args.batch_size,
                           workers=args.workers, max_pixels=args.max_image_pixels, progress=not args.no_progress,
                           allow_missing=args.allow_missing)
    except ServiceError as e:
        print(f"genir index: {e.message}", file=sys.stderr)
        return 1
    finally:
        store.close()
    for line in rep.failed:
        log.warning("skipped %s", line)
    summary = dict(collection=rep.collection, model=embedder.model_id, corpus=rep.corpus, **rep.counts(),
                   points=rep.points, fingerprint=rep.fingerprint, seconds=round(rep.seconds, 3),
                   images_per_second=round(rep.images_per_second, 1))
    print(json.dumps(summary), flush=True)
    if rep.failed and not args.allow_missing:
        print(f"genir index: {len(rep.failed)} file(s) skipped, first {rep.failed[0]}; the collection records no "
              f"corpus until they index (or pass --allow-missing to accept their absence)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="genir index")
    add_arguments(p)
    raise SystemExit(main(p.parse_args()))
