"""bench_retriever: 16 concurrent Search calls to the service against one direct batch-16 embed + search.

Ours: a real `genir serve retriever` process (1 thread) over a collection of random vectors, sent
16 concurrent image `Search` calls (exact top 10 plus the target's rank, as the orchestrator
asks in a simulated GenIR round), so its micro-batcher answers them together. Reference: the same 16 JPEGs decoded and embedded in
one batch by the same embedder code in this process, then top-10 and exact ranks by one numpy
matrix product over the same vectors: the least work these 16 queries need, with no service
around it. ratio = ours queries/s / reference queries/s, median over repeats, measured
interleaved; target 0.85. Also recorded: the same 16 calls one after another (what the service
did before it batched), and how many batches the service formed for each burst.

Model: a BLIP-base-shaped retrieval model with random weights (genir.tiny_models.real_configs,
ViT-B/16 at the paper's 224 px), built once into .cache/bench-models. `--quick` uses the tiny
BLIP at its own 48 px instead (at 224 px the tiny checkpoint's 8 px patches give 785 tokens whose
attention outgrows the CPU caches, so it would say nothing about BLIP-base).
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import record

NAME = "retriever"
TARGET = 0.85
ROOT = Path(__file__).resolve().parents[1]
CONCURRENT = 16


def _reference(embedder, ids: np.ndarray, vectors: np.ndarray):
    """One batch: decode, embed, score every point once, top-10 and exact ranks."""
    from PIL import Image

    def run(blobs: list[bytes], targets: list[int]) -> list[tuple[list[int], int]]:
        images = [Image.open(io.BytesIO(b)).convert("RGB") for b in blobs]
        q = embedder.embed_images(images)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        scores = q @ vectors.T
        out = []
        for row, t in zip(scores, targets, strict=True):
            top = np.argpartition(-row, 10)[:10]
            top = top[np.lexsort((ids[top], -row[top]))]
            s_t = row[np.searchsorted(ids, t)]
            out.append((ids[top].tolist(), int(np.count_nonzero(row > s_t) + np.count_nonzero((row == s_t) & (ids < t)))))
        return out

    return run


def run(quick: bool = False) -> dict:
    import grpc
    import torch

    from genir.tiny_models import build_one
    from genir.tiny_models._common import build_atomically
    from genir.tiny_models.real_configs import build_blip_base
    from genir.v1 import common_pb2, retriever_pb2, retriever_pb2_grpc
    from services.retriever.embedders import load_embedder
    from services.retriever.store import EdgeStore, normalise_rows
    from testkit.images import make_corpus
    from testkit.procs import Proc, free_port, sample_sum, scrape

    points, reps = (2_000, 2) if quick else (50_000, 3)
    if quick:
        model_dir, image_size, model = build_one(ROOT / ".cache" / "tiny-models", "blip"), 48, "tiny BLIP"
    else:
        model_dir = build_atomically(ROOT / ".cache" / "bench-models", "blip-base", 0, build_blip_base)
        image_size, model = 224, "BLIP-base-shaped"
    work = Path(tempfile.mkdtemp(prefix="bench-retriever-"))
    proc = None
    try:
        paths = make_corpus(work / "images", CONCURRENT * reps, seed=5)
        blobs = [(work / "images" / p).read_bytes() for p in paths]
        torch.set_num_threads(1)
        embedder = load_embedder(model_dir, image_size=image_size, batch_size=CONCURRENT, device="cpu")
        rng = np.random.default_rng(0)
        ids = np.arange(points, dtype=np.int64)
        vectors = normalise_rows(rng.normal(size=(points, embedder.dim)))
        store = EdgeStore(work / "store")
        store.ensure("bench", embedder.model_id, embedder.dim)
        for i in range(0, points, 5000):
            store.upsert("bench", ids[i:i + 5000], vectors[i:i + 5000], [{"path": f"p{j}"} for j in ids[i:i + 5000]])
        store.close()
        reference = _reference(embedder, ids, vectors)

        port, mport = free_port(), free_port()
        proc = Proc([sys.executable, "-m", "genir.cli", "serve", "retriever", "--model", model_dir, "--port", port,
                     "--metrics-port", mport, "--store-path", work / "store", "--device", "cpu",
                     "--batch-size", CONCURRENT, "--image-size", image_size], work / "retriever.log").start()
        proc.wait_healthy(port, timeout=120)
        stub = retriever_pb2_grpc.RetrieverStub(grpc.insecure_channel(f"127.0.0.1:{port}"))

        def call(job: tuple[bytes, int]) -> tuple[list[int], int]:
            r = stub.Search(retriever_pb2.SearchRequest(collection="bench", image=common_pb2.Image(data=job[0]),
                                                        top_k=10, target_id=str(job[1]), exact=True),
                            timeout=120)
            return [int(h.id) for h in r.hits], r.target_rank

        def batch_of(rep: int):
            sel = range(rep * CONCURRENT, (rep + 1) * CONCURRENT)
            return [blobs[i] for i in sel], [int(rng.integers(points)) for _ in sel]

        warm_blobs, warm_targets = batch_of(0)
        reference(warm_blobs, warm_targets), call((warm_blobs[0], warm_targets[0]))
        ours, ref, seq, agree, batches = [], [], [], [], []
        with cf.ThreadPoolExecutor(CONCURRENT) as pool:
            for rep in range(reps):
                b, targets = batch_of(rep)
                before = sample_sum(scrape(mport), "genir_retriever_batch_size_count")
                t = time.perf_counter()
                got = list(pool.map(call, zip(b, targets, strict=True)))
                ours.append(CONCURRENT / (time.perf_counter() - t))
                batches.append(int(sample_sum(scrape(mport), "genir_retriever_batch_size_count") - before))
                t = time.perf_counter()
                want = reference(b, targets)
                ref.append(CONCURRENT / (time.perf_counter() - t))
                agree.append(float(np.mean([g[1] == w[1] and set(g[0]) == set(w[0])
                                            for g, w in zip(got, want, strict=True)])))
                t = time.perf_counter()
                for job in zip(b, targets, strict=True):
                    call(job)
                seq.append(CONCURRENT / (time.perf_counter() - t))
        ratio = statistics.median(ours) / statistics.median(ref)
        details = {"concurrent_calls": CONCURRENT, "repeats": reps, "collection_points": points,
                   "dim": embedder.dim, "image_size": embedder.image_size,
                   "service_queries_per_s": [round(x, 1) for x in ours],
                   "direct_batch_queries_per_s": [round(x, 1) for x in ref],
                   "service_sequential_queries_per_s": [round(x, 1) for x in seq],
                   "service_vs_sequential_calls": round(statistics.median(ours) / statistics.median(seq), 3),
                   "service_batches_per_16_calls": batches,
                   "answers_agree_with_reference": min(agree),
                   "model": f"{model} (random weights) at {image_size} px, CPU, 1 thread each side; service defaults otherwise"}
        return record(NAME, ratio, TARGET, details)
    finally:
        if proc is not None:
            proc.terminate()
        shutil.rmtree(work, ignore_errors=True)
