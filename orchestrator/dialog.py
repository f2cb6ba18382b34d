"""The state of one dialog between rounds, shared by the engine and the modes.

Seeds derive from (base seed, target or session key, round index, stage), so the same request
replays the same dialog; every stage is timed into the round and the `genir_stage_seconds`
histogram.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass, field

from prometheus_client import Histogram

from genir import contract
from genir.v1 import common_pb2, orchestrator_pb2
from orchestrator.settings import sampling_for
from services.common.metrics import LATENCY_BUCKETS

STAGE_SECONDS = Histogram("genir_stage_seconds", "Wall time of one dialog stage (all retries included).",
                          ["stage"], buckets=LATENCY_BUCKETS)  # a stage with retries runs up to --call-budget


def derive_seed(base: int, key: str, index: int, stage: str = "round") -> int:
    """A 63-bit seed that depends only on (base seed, target/session key, round, stage)."""
    digest = hashlib.sha256(f"{base}|{key}|{index}|{stage}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & contract.MAX_SEED  # 2^63 - 1: all ones, a mask


@dataclass
class Last:
    """The previous round, as the next round's feedback needs it."""
    query: str
    image: common_pb2.Image | None
    target_rank: int | None


@dataclass
class DialogState:
    options: orchestrator_pb2.SessionOptions
    collection: str
    top_k: int
    base_seed: int
    key: str                                   # target id, or a session's fixed key
    mode: str = "genir"
    target_id: str | None = None
    target: common_pb2.Image | None = None
    dialog: tuple[str, ...] = ()
    index: int = 0
    deadline: float | None = None               # absolute time.monotonic()
    timings: list = field(default_factory=list)
    backend_timings: list = field(default_factory=list)
    last: Last | None = None

    def begin(self, index: int, deadline: float | None) -> None:
        self.index, self.deadline, self.timings = index, deadline, []
        self.backend_timings = []

    def record_backend(self, stage: str, timings) -> None:
        """A backend's own timings of one call, kept as "<stage>.<its stage>"."""
        self.backend_timings += [common_pb2.Timing(stage=f"{stage}.{t.stage}", seconds=t.seconds) for t in timings]

    def seed(self, stage: str = "round") -> int:
        return derive_seed(self.base_seed, self.key, self.index, stage)

    def sampling(self, stage: str) -> common_pb2.Sampling:
        """The stage's seed plus the preset's sampling and token budget (settings.sampling_for)."""
        return sampling_for(self.options, self.mode, stage, self.seed(stage))

    @property
    def prompt_set(self) -> str:
        return self.options.prompt_set

    @contextlib.contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            self.timings.append(common_pb2.Timing(stage=name, seconds=seconds))
            STAGE_SECONDS.labels(name).observe(seconds)
