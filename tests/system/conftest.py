"""Shared pieces of the system suite: a generated corpus and a whole genir stack (every service a
real process on tiny models, started by stack.up.Stack on free ports)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import psutil

from testkit.images import make_corpus
from testkit.procs import ROOT


@dataclass
class World:
    """A corpus of generated shape images and GenIR-style queries over all of them."""
    root: Path
    corpus: Path
    image_root: Path
    queries: Path


def make_world(root: Path, n_images: int = 24, seed: int = 11) -> World:
    images = root / "images"
    paths = make_corpus(images, n_images, seed=seed, corpus_file=root / "corpus.json")
    queries = root / "queries.json"
    queries.write_text(json.dumps([{"img": p, "dialog": []} for p in paths]))
    return World(root, root / "corpus.json", images, queries)


def start_stack(tiny_models, world: World, workdir: Path, collection: str, **kw):
    from stack.up import Stack

    stack = Stack(tiny_models, workdir, corpus=world.corpus, image_root=world.image_root, collection=collection,
                  ports="free", startup_timeout=300, **kw)
    return stack.start()


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, bytes."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


# ---------------------------------------------------------------------- hardened stack (bad inputs, auth, admission)
import pytest  # noqa: E402

AUTH_TOKEN = "tok-7f3c9b1e5d2a4c68-do-not-leak"
MAX_INFLIGHT = 2
MAX_MESSAGE_MB = 1
HARDENED_FLAGS = ["--max-inflight", MAX_INFLIGHT, "--max-message-mb", MAX_MESSAGE_MB]


@dataclass
class Hardened:
    """One stack for the bad-input corpus, token auth and admission control: every genir service with
    --max-inflight 2 and --max-message-mb 1, the orchestrator with --auth-token."""
    stack: object
    world: World
    token: str = AUTH_TOKEN

    def secrets(self) -> list[str]:
        """Strings no error message may contain: the token and every server-side path."""
        s = self.stack
        return [self.token, str(s.workdir), str(s.models), str(s.db_path), str(s.store_path),
                str(self.world.image_root), str(self.world.root), str(ROOT)]


@pytest.fixture(scope="session")
def hardened(tiny_models, tmp_path_factory):
    world = make_world(tmp_path_factory.mktemp("hardened"), n_images=12, seed=5)
    extra = {n: HARDENED_FLAGS for n in ("generator", "refiner", "retriever")}
    stack = start_stack(tiny_models, world, world.root / "stack", "hard", auth_token=AUTH_TOKEN,
                        extra_args=extra, orchestrator_args=HARDENED_FLAGS + ["--retry-attempts", 2])
    try:
        yield Hardened(stack, world)
    finally:
        stack.stop()
