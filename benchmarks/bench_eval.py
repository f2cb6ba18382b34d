"""bench_eval: evaluation throughput (dialogs/s) vs the capacity of the slowest service alone.

Same run, same machine, tiny models, a generated corpus, all services as real processes:
1. `genir eval`'s runner drives GenIR dialogs through the orchestrator at --concurrency 1, 8, 24
   and 48 (the same targets each time, a sample of them at 1; fresh output folders) -> dialogs/s.
   Why so many: the generator and Triton both batch up to 8, so 8 dialogs move in lockstep (all
   render, then all compare, then all refine) and the two services never work at the same time.
   With 24 in flight the cohorts overlap, but about a third of the dialogs are rendering at any
   moment, so Triton's batches are not full (measured: 5.9 rows of 8 on average); with 48 they are
   (7.4), and the refiner works at the rate it has alone.
2. Each backend alone replays exactly the calls of those dialogs (taken from the recorded
   dialogs: the generator's Generate per round, the retriever's image Search per round, the
   refiner's Caption + Compare/Refine per round), as many dialogs in flight as the highest
   concurrency, nothing else running -> that service's capacity in dialogs/s.
ratio = best eval dialogs/s / min capacity; target 0.95. On one shared CPU the services compete
for the same cores during an eval, so the details also give the serial bound 1/sum(1/capacity)
(no overlap at all between services) and, from Round.timings of the concurrency-1 run, where a
dialog's time goes: stage seconds that add up to the dialog's wall time mean the eval and the
orchestrator add nothing of their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import record

NAME = "eval"
TARGET = 0.95
CONCURRENCY = (1, 8, 24, 48)
MAX_VALID_RATIO = 1.05
C1_DIALOGS = 12  # the slowest run; a sample is enough for its rate and the stage split


def _corpus(root: Path, n: int) -> tuple[Path, Path, Path]:
    from testkit.images import shape_image

    rng = random.Random(11)
    paths = [f"bench2026/{k:012d}.jpg" for k in range(n)]
    for rel in paths:
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        shape_image(rng, 96, 72).save(root / "images" / rel, format="JPEG", quality=90)
    (root / "corpus.json").write_text(json.dumps(paths))
    (root / "queries.json").write_text(json.dumps([{"img": p, "dialog": []} for p in paths]))
    return root / "corpus.json", root / "images", root / "queries.json"


async def _eval(target: str, targets, cfg, out: Path) -> tuple[float, dict]:
    from evaluation.runner import EvalRunner, GrpcDialogSource

    src = GrpcDialogSource(target)
    try:
        t = time.perf_counter()
        res = await EvalRunner(src, targets, cfg, out).run()
        secs = time.perf_counter() - t
    finally:
        await src.close()
    if res.failed:
        raise RuntimeError(f"eval dialogs failed: {res.failed}")
    return secs, res.finished


def _triton_rows_and_runs(stack) -> tuple[float, float]:
    """(requests answered, execute() calls) of the gemma3 model so far: their ratio is the mean
    batch Triton ran."""
    import urllib.request

    from testkit.procs import sample_sum

    url = f"http://127.0.0.1:{stack.metrics_port('triton')}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return (sample_sum(text, "nv_inference_count_total", model="gemma3"),
            sample_sum(text, "nv_inference_exec_count_total", model="gemma3"))


async def _alone(n_units: int, concurrency: int, unit) -> float:
    """Units per second when `concurrency` units run at a time."""
    sem = asyncio.Semaphore(concurrency)

    async def one(i):
        async with sem:
            await unit(i)

    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n_units)))
    return n_units / (time.perf_counter() - t)


async def _capacities(stack, records: list[dict], out: Path, image_root: Path, corpus, collection: str,
                      seed: int, concurrency: int) -> dict:
    import grpc

    from genir.v1 import (
        common_pb2,
        generator_pb2,
        generator_pb2_grpc,
        refiner_pb2,
        refiner_pb2_grpc,
        retriever_pb2,
        retriever_pb2_grpc,
    )
    from orchestrator.dialog import derive_seed
    from services.common.presets import FAMILIES

    sd3 = FAMILIES["StableDiffusion3Pipeline"]

    def image(rel: str, root: Path) -> common_pb2.Image:
        return common_pb2.Image(data=(root / rel).read_bytes(), mime_type="image/png")

    def target(rec) -> common_pb2.Image:
        return common_pb2.Image(data=(image_root / corpus.path_of(rec["target_id"])).read_bytes(),
                                mime_type="image/jpeg")

    caps = {}
    async with grpc.aio.insecure_channel(stack.target("generator")) as gch, \
            grpc.aio.insecure_channel(stack.target("retriever")) as rch, \
            grpc.aio.insecure_channel(stack.target("refiner")) as fch:
        gen = generator_pb2_grpc.GeneratorStub(gch)
        ret = retriever_pb2_grpc.RetrieverStub(rch)
        ref = refiner_pb2_grpc.RefinerStub(fch)

        async def gen_unit(i):
            rec = records[i % len(records)]
            for r in rec["rounds"]:
                # as the engine sends it: over-long queries rendered from their head, the paper
                # preset's steps and guidance (the tiny model renders at its own default size)
                await gen.Generate(generator_pb2.GenerateRequest(
                    prompt=r["query"], seed=r["seed"], truncate_prompt=True, num_inference_steps=sd3.steps,
                    guidance_scale=sd3.guidance, output_format=generator_pb2.OUTPUT_FORMAT_PNG), timeout=300)

        async def ret_unit(i):
            rec = records[i % len(records)]
            for r in rec["rounds"]:
                await ret.Search(retriever_pb2.SearchRequest(collection=collection, image=image(r["image"], out),
                                                             top_k=10, target_id=str(rec["target_id"])), timeout=300)

        async def ref_unit(i):
            rec = records[i % len(records)]
            key, tgt, rounds = str(rec["target_id"]), target(rec), rec["rounds"]

            def sampling(index, stage):
                return common_pb2.Sampling(seed=derive_seed(seed, key, index, stage))

            await ref.Caption(refiner_pb2.CaptionRequest(target=tgt, sampling=sampling(0, "caption")), timeout=300)
            for t in range(1, len(rounds)):
                prev = rounds[t - 1]
                shown = image(prev["image"], out)
                await ref.Compare(refiner_pb2.CompareRequest(target=tgt, generated=shown, caption=prev["query"],
                                                             sampling=sampling(t, "compare")), timeout=300)
                # GenIR's refine sees the target, the caption and the comparison, not the rendering;
                # after an empty comparison the orchestrator keeps the query and asks no refine
                if not rounds[t]["feedback"]:
                    continue
                await ref.Refine(refiner_pb2.RefineRequest(caption=prev["query"], feedback=rounds[t]["feedback"],
                                                           target=tgt, sampling=sampling(t, "refine")), timeout=300)

        n = len(records)
        for name, unit in (("generator", gen_unit), ("retriever", ret_unit), ("refiner", ref_unit)):
            await unit(0)  # warm
            caps[name] = await _alone(n, concurrency, unit)
    return caps


def run(quick: bool = False) -> dict:
    from evaluation.runner import EvalConfig, select_targets
    from orchestrator.datasets import load_corpus, load_queries
    from stack.up import Stack
    from testkit.procs import ROOT

    n_dialogs, rounds = (4, 1) if quick else (48, 2)
    levels = (1, 4) if quick else CONCURRENCY  # quick: that it runs and writes a record, not a figure
    models = ROOT / ".cache" / "tiny-models"
    from genir.tiny_models import build_all

    build_all(models, seed=0)
    work = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    load_at_start = os.getloadavg()[0]
    try:
        corpus_file, image_root, queries_file = _corpus(work, 8 if quick else max(32, n_dialogs))  # one dialog per photo
        corpus = load_corpus(corpus_file)
        targets = select_targets(load_queries(queries_file, corpus), n_dialogs)
        collection, seed = "bench", 5
        stack = Stack(models, work / "stack", corpus=corpus_file, image_root=image_root, collection=collection,
                      ports="free", startup_timeout=300)
        with stack:
            orch = stack.target("orchestrator")
            cfg = lambda c: EvalConfig(mode="genir", rounds=rounds, seed=seed, concurrency=c,  # noqa: E731
                                       progress=False)
            asyncio.run(_eval(orch, targets[:1], cfg(1), work / "warm"))
            per = {}
            finished = None
            for c in levels:
                chosen = targets[:C1_DIALOGS] if c == 1 else targets
                rows, runs = _triton_rows_and_runs(stack)
                secs, finished = asyncio.run(_eval(orch, chosen, cfg(c), work / f"c{c}"))
                rows2, runs2 = _triton_rows_and_runs(stack)
                if c == 1:
                    c1_records = list(finished.values())
                per[c] = {"dialogs": len(chosen), "seconds": round(secs, 3),
                          "dialogs_per_s": round(len(chosen) / secs, 4),
                          "triton_mean_batch": round((rows2 - rows) / max(1.0, runs2 - runs), 2)}
            records = [finished[q.target_id] for q in targets]
            rows, runs = _triton_rows_and_runs(stack)
            caps = asyncio.run(_capacities(stack, records, work / f"c{levels[-1]}", image_root, corpus,
                                           collection, seed, max(levels)))
            rows2, runs2 = _triton_rows_and_runs(stack)
        best_c = max(per, key=lambda c: per[c]["dialogs_per_s"])
        # where a dialog's time goes (concurrency 1 run): stage seconds per dialog, from Round.timings
        stages: dict[str, float] = {}
        for rec in c1_records:
            for r in rec["rounds"]:
                for k, v in r["timings"].items():
                    stages[k] = stages.get(k, 0.0) + v / len(c1_records)
        serial = 1.0 / sum(1.0 / v for v in caps.values())
        slowest = min(caps, key=caps.get)
        ratio = per[best_c]["dialogs_per_s"] / caps[slowest]
        # The system cannot outrun its slowest service working alone: a ratio above 1 (beyond a few
        # percent of timing noise) means other work on the shared cores changed the machine's speed
        # between the runs, and the figure is not a measurement.
        valid = ratio <= MAX_VALID_RATIO
        details = {"dialogs": len(targets), "rounds_per_dialog": rounds + 1, "mode": "genir",
                   "eval": {str(c): v for c, v in per.items()}, "best_concurrency": best_c,
                   "capacity_dialogs_per_s_alone": {k: round(v, 4) for k, v in caps.items()},
                   "triton_mean_batch_refiner_alone": round((rows2 - rows) / max(1.0, runs2 - runs), 2),
                   "slowest_service": slowest,
                   "stage_seconds_per_dialog_c1": {k: round(v, 3) for k, v in sorted(stages.items())},
                   "serial_bound_dialogs_per_s": round(serial, 4),
                   # other work on the machine shows here (a load above the bench's own ~2 = sharing)
                   "load_average_1m": {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)},
                   "note": "all services share this machine's cores; capacities are each service alone "
                           f"replaying the recorded dialogs' calls, {max(levels)} dialogs in flight; serial_bound = "
                           "1/sum(1/capacity): the rate if the services' work could not overlap at all",
                   "valid": valid}
        if not valid:
            details["invalid_because"] = (f"ratio {ratio:.2f} > {MAX_VALID_RATIO}: the eval beat the slowest service "
                                          "alone, so the machine's speed changed between the runs (shared cores)")
        return record(NAME, ratio, TARGET, details, **({} if valid else {"passed": False}))
    finally:
        shutil.rmtree(work, ignore_errors=True)
