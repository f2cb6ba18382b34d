"""Retriever test fixtures: a generated ChatIR-style corpus and helpers to run `genir index`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from testkit.images import make_corpus
from testkit.procs import proc_env

N_IMAGES = 240      # readable images; two more corpus entries are a missing and a corrupt file
BLIP_SIZE = 32      # tiny BLIP: 48 px checkpoint, 8 px patches -> run at 32 (position embeddings interpolated)


@pytest.fixture(scope="session")
def blip_model(tiny_models) -> Path:
    """The tiny BLIP image-text retrieval checkpoint, loaded by the production code."""
    return tiny_models / "blip"


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("chatir")
    images = root / "images"
    paths = make_corpus(images, N_IMAGES, seed=1)
    paths += ["unlabeled2017/000000999991.jpg", "unlabeled2017/000000999992.jpg"]
    (images / paths[-1]).write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")  # corrupt; [-2] is missing
    corpus_file = root / "corpus.json"
    corpus_file.write_text(json.dumps(paths))
    return {"root": images, "file": corpus_file, "paths": paths, "n_ok": N_IMAGES}


def index_cmd(model: Path, corpus: dict, collection: str, store: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "genir.cli", "index", "--corpus", corpus["file"], "--image-root", corpus["root"],
            "--model", model, "--collection", collection, "--store-path", store, "--image-size", BLIP_SIZE,
            "--batch-size", 16, "--workers", 2, *extra]


def run_index(*args, timeout: float = 120, rc: int = 0) -> tuple[dict, str]:
    out = subprocess.run([str(a) for a in index_cmd(*args)], capture_output=True, text=True, env=proc_env(),
                         timeout=timeout)
    assert out.returncode == rc, out.stdout + out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def numpy_rank(ids: np.ndarray, scores: np.ndarray, target: int) -> int:
    """Brute-force rank with the documented rule: higher score first, ties by smaller id."""
    s = scores[list(ids).index(target)]
    return int(((scores > s) | ((scores == s) & (ids < target))).sum())
