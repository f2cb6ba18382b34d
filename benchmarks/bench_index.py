"""bench_index: `genir index` images/s against its slowest stage measured alone, same run.

Corpus: generated 640x480 JPEGs (COCO-like size) under ChatIR paths. Model: the tiny BLIP at the
GenIR input size (224 px), so decoding matters as it does with a GPU. Stages measured alone with
the same settings (workers, batch size): (a) read + decode + preprocess on the worker threads,
(b) the model forward on pre-decoded tensors. ratio = pipeline images/s / slowest stage images/s:
how well decoding overlaps the model (1.0 = perfect overlap).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.common import record

ROOT = Path(__file__).resolve().parents[1]


def run(quick: bool = False) -> dict:
    from genir.tiny_models import build_all
    from services.common.images import decode_image
    from services.retriever.embedders import load_embedder
    from testkit.images import make_corpus

    n, batch, workers, size = (160, 32, 2, 224) if quick else (480, 32, 2, 224)
    model = build_all(ROOT / ".cache" / "tiny-models", seed=0, only=["blip"])["blip"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_corpus(tmp / "img", n, seed=0, size=(640, 480), corpus_file=tmp / "corpus.json")
        emb = load_embedder(model, image_size=size, batch_size=batch)

        def decode(rel):
            return emb.preprocess(decode_image((tmp / "img" / rel).read_bytes(), "file"))

        decode(paths[0])
        with ThreadPoolExecutor(workers) as pool:          # (a) decode + preprocess alone
            t = time.perf_counter()
            pixels = np.stack(list(pool.map(decode, paths)))
            decode_ips = n / (time.perf_counter() - t)
        emb.embed_pixels(pixels[:batch])                    # warm-up
        t = time.perf_counter()                             # (b) model alone
        emb.embed_pixels(pixels)
        model_ips = n / (time.perf_counter() - t)
        del pixels

        cmd = [sys.executable, "-m", "genir.cli", "index", "--corpus", tmp / "corpus.json", "--image-root",
               tmp / "img", "--model", model, "--collection", "bench", "--store-path", tmp / "store",
               "--image-size", size, "--batch-size", batch, "--workers", workers, "--no-progress"]
        out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT, timeout=900)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        summary = json.loads(out.stdout.strip().splitlines()[-1])
    index_ips = summary["images_per_second"]
    slowest = min(decode_ips, model_ips)
    details = {"images": n, "image_size_on_disk": "640x480 JPEG", "model": "tiny BLIP (random weights) at 224 px",
               "batch_size": batch, "workers": workers, "decode_preprocess_ips": round(decode_ips, 1),
               "model_forward_ips": round(model_ips, 1), "slowest_stage": "decode" if decode_ips < model_ips else "model",
               "genir_index_ips": index_ips, "points": summary["points"]}
    return record("index", index_ips / slowest, 0.8, details)
