"""One real genir stack (Triton + refiner, generator, retriever, orchestrator on tiny models) over a
generated corpus, shared by the evaluation's end-to-end tests.

The corpus holds shape images under the paths of the first ChatIR VisDial targets (so the real
ChatIR dialogs can be run against it) plus more shape images under ChatIR-style paths.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from testkit.images import shape_image
from testkit.procs import CHATIR_DIR, eval_cmd, run_captured

N_CHATIR = 4
N_SHAPES = 20


@dataclass
class EvalWorld:
    stack: object
    root: Path
    corpus: Path
    image_root: Path
    queries: Path           # GenIR-style ({"dialog": []}) over the shape images
    chatir_queries: Path    # the real ChatIR entries whose targets are in this corpus
    collection: str

    def eval_cmd(self, out: Path, *extra, queries: Path | None = None) -> list[str]:
        # the generator and refiner are asked only for model ids and effective settings, so every run records the same ones
        return eval_cmd(self.stack, self, out, "--generator", self.stack.target("generator"),
                        "--refiner", self.stack.target("refiner"), *extra, queries=queries)

    def run_eval(self, out: Path, *extra, queries: Path | None = None, timeout: float = 600):
        return run_captured(self.eval_cmd(out, *extra, queries=queries), timeout)


def make_world_files(root: Path) -> tuple[Path, Path, Path, Path]:
    chatir = json.loads((CHATIR_DIR / "VisDial_v1.0_queries_val.json").read_text())[:N_CHATIR]
    rng = random.Random(7)
    paths = [q["img"] for q in chatir] + [f"val2017/{1000 + 17 * k:012d}.jpg" for k in range(N_SHAPES)]
    images = root / "images"
    for rel in paths:
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        shape_image(rng, 96, 72).save(images / rel, format="JPEG", quality=90)
    corpus = root / "corpus.json"
    corpus.write_text(json.dumps(paths))
    queries = root / "queries.json"
    queries.write_text(json.dumps([{"img": p, "dialog": []} for p in paths[N_CHATIR::2]]))
    chatir_q = root / "chatir_queries.json"
    chatir_q.write_text(json.dumps(chatir))
    return corpus, images, queries, chatir_q


@pytest.fixture(scope="session")
def eval_world(tiny_models, tmp_path_factory):
    from stack.up import Stack

    root = tmp_path_factory.mktemp("evalworld")
    corpus, images, queries, chatir_q = make_world_files(root)
    stack = Stack(tiny_models, root / "stack", corpus=corpus, image_root=images, collection="evaltest",
                  ports="free", startup_timeout=300)
    stack.start()
    try:
        yield EvalWorld(stack, root, corpus, images, queries, chatir_q, "evaltest")
    finally:
        stack.stop()
