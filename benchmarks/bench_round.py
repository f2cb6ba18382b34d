"""bench_round: rounds/s of RunDialog through the orchestrator vs the same rounds run in-process.

One stack of real services on tiny models (stack.up.Stack). "ours" streams RunDialog
from the orchestrator process; the reference runs the identical dialogs (same targets, modes,
seeds, so the same backend work) with the round engine inside the benchmark process, calling
the generator, refiner and retriever directly. Each dialog runs through both paths back to back
(order alternating), so machine noise hits both. ratio = median over dialogs of in-process seconds / orchestrator seconds
(= orchestrator rounds/s over in-process rounds/s, dialog by dialog; target >= 0.95).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from benchmarks.common import record
from genir.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from orchestrator.clients import ServiceClients
from orchestrator.datasets import load_corpus
from orchestrator.engine import Engine
from stack.up import Stack

ROOT = Path(__file__).resolve().parents[1]


def _corpus(root: Path, n: int = 24) -> tuple[Path, Path]:
    from testkit.images import make_corpus

    make_corpus(root / "images", n, seed=1, size=(64, 64), corpus_file=root / "corpus.json")
    return root / "corpus.json", root / "images"


def _requests(targets: int, rounds: int) -> list[orchestrator_pb2.RunDialogRequest]:
    return [orchestrator_pb2.RunDialogRequest(target_id=str(t * 3), mode=mode, rounds=rounds)
            for t in range(targets) for mode in ("genir", "prediction")]


async def _via_orchestrator(target: str, reqs) -> tuple[int, float]:
    async with grpc.aio.insecure_channel(target) as ch:
        stub = orchestrator_pb2_grpc.OrchestratorStub(ch)
        start, n = time.perf_counter(), 0
        for req in reqs:
            async for _ in stub.RunDialog(req, timeout=600):
                n += 1
        return n, time.perf_counter() - start


async def _in_process(engine: Engine, reqs) -> tuple[int, float]:
    start, n = time.perf_counter(), 0
    for req in reqs:
        async for _ in engine.run_dialog(req):
            n += 1
    return n, time.perf_counter() - start


def run(quick: bool = False) -> dict:
    reps, targets, rounds = (1, 1, 1) if quick else (3, 2, 3)
    models = ROOT / ".cache" / "tiny-models"
    from genir.tiny_models import build_all

    build_all(models, seed=0)
    with tempfile.TemporaryDirectory(prefix="bench-round-") as tmp:
        corpus, images = _corpus(Path(tmp))
        with Stack(models, Path(tmp) / "stack", corpus=corpus, image_root=images, collection="bench",
                   ports="free", startup_timeout=300) as stack:
            reqs = _requests(targets, rounds)

            async def measure():
                engine = Engine(ServiceClients.local(stack.target("generator"), stack.target("refiner"),
                                               stack.target("retriever")),
                                corpus=load_corpus(corpus), image_root=images, collection="bench")
                orch = stack.target("orchestrator")
                try:
                    await _in_process(engine, reqs[:1])               # warm both paths once
                    await _via_orchestrator(orch, reqs[:1])
                    pairs = []                                        # (ours s, reference s) per dialog
                    for i in range(reps):
                        for j, req in enumerate(reqs):
                            # the same dialog through both paths back to back, order alternating,
                            # so load from other processes hits both sides of each pair alike
                            first_ours = (i + j) % 2 == 0
                            a = await (_via_orchestrator(orch, [req]) if first_ours else _in_process(engine, [req]))
                            b = await (_in_process(engine, [req]) if first_ours else _via_orchestrator(orch, [req]))
                            ours, ref = (a, b) if first_ours else (b, a)
                            assert ours[0] == ref[0] == req.rounds + 1
                            pairs.append((ours[1], ref[1]))
                    return pairs
                finally:
                    await engine.close()

            pairs = asyncio.run(measure())
    rounds_total = sum(r.rounds + 1 for r in reqs) * reps
    o = rounds_total / sum(p[0] for p in pairs)
    r = rounds_total / sum(p[1] for p in pairs)
    ratios = [ref / ours for ours, ref in pairs]                      # ours rounds/s over the reference's
    ratio = statistics.median(ratios)
    details = {"ratio_statistic": "median over dialogs of (in-process seconds / orchestrator seconds), "
                                  "each dialog run through both paths back to back",
               "orchestrator_rounds_per_s": round(o, 3), "in_process_rounds_per_s": round(r, 3),
               "aggregate_ratio": round(o / r, 4), "pair_ratios": [round(x, 3) for x in ratios],
               "repetitions": reps, "dialogs_per_repetition": len(reqs),
               "rounds_per_dialog": rounds + 1, "modes": ["genir", "prediction"], "models": "tiny (random weights)",
               "note": "same dialogs, seeds and backends; the reference skips only the orchestrator hop"}
    return record("round", ratio, 0.95, details)
