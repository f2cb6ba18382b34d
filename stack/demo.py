"""`genir demo` (`make demo`): the whole system end to end on tiny models, in a few minutes.

1. builds the tiny checkpoints (genir.tiny_models.build_all);
2. starts the generator and renders a small corpus from captions written for the demo, saved
   under ChatIR-style paths with a corpus JSON;
3. indexes it and starts Triton, the refiner, the retriever and the orchestrator (stack.up);
4. over gRPC: simulated dialogs (GenIR on a few targets, then one per baseline mode) and one
   human-style session (a query, then short feedback merged by the refiner, then a new query);
5. prints the per-round table, writes report.json / report.md (+ the renderings), stops everything.

Tiny random models render noise and write word salad, so ranks are at chance level; the demo
shows the plumbing, not retrieval quality.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from pathlib import Path

import grpc

from genir.v1 import common_pb2, generator_pb2, generator_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc
from services.common import config
from stack.up import Stack, StartError

log = logging.getLogger("genir.demo")

# Captions written for the demo: COCO-like scenes, one corpus image each.
CAPTIONS = [
    "a brown dog running on a sandy beach at sunset",
    "a red double-decker bus on a rainy city street",
    "two cats sleeping on a grey couch by a window",
    "a bowl of green apples on a wooden kitchen table",
    "a surfer riding a large blue wave",
    "a snowy mountain above a quiet lake at dawn",
    "a child flying a yellow kite in a green field",
    "a plate with a slice of pizza and a glass of water",
    "a giraffe eating leaves from a tall tree",
    "a man riding a bicycle across an old stone bridge",
    "a white sailboat on a calm sea under a cloudy sky",
    "a bright red fire hydrant next to a brick wall",
    "an elephant walking through tall dry grass",
    "a laptop and a cup of coffee on a desk",
    "a train crossing a bridge over a river",
    "a woman holding an umbrella on a crowded street",
    "a black and white cow standing in a field",
    "a small wooden house in a pine forest",
    "a clock tower under a blue sky",
    "three zebras drinking at a water hole",
    "a birthday cake with candles on a table",
    "a plane flying over snowy mountains",
    "a bench in a park covered with autumn leaves",
    "a boy playing with a ball on the grass",
    "a kitchen with white cabinets and a steel fridge",
    "a horse standing behind a wooden fence",
    "a street sign at a busy crossroads",
    "a bird sitting on a branch in the rain",
    "a bed with striped sheets in a sunny room",
    "a banana and a sandwich on a plate",
    "a group of people walking on a beach",
    "a teddy bear sitting on a chair",
    "a city skyline at night with bright lights",
    "a truck parked beside a red barn",
    "a sheep grazing on a green hill",
    "a vase of pink flowers on a window sill",
]
FEEDBACK = "the dog should be darker and the sky more orange"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    f = config.flags(parser, "demo")
    f("models", default=".cache/tiny-models", help="tiny models folder (built when missing)")
    f("workdir", default=".cache/demo", help="corpus, logs, report")
    f("rounds", default=3, type=int, help="rounds per simulated dialog (0..rounds)")
    f("targets", default=3, type=int, help="GenIR dialogs (targets 0..N-1, spread over the corpus)")
    f("log-level", default="WARNING", help="logging level of the demo's own messages")


async def render_corpus(generator: str, root: Path) -> tuple[Path, Path]:
    """Render CAPTIONS with the generator into ChatIR-style paths; return (corpus json, image root)."""
    images = root / "images"
    paths = []
    async with grpc.aio.insecure_channel(generator) as ch:
        stub = generator_pb2_grpc.GeneratorStub(ch)
        for i, caption in enumerate(CAPTIONS):
            rel = f"demo2026/{i:012d}.jpg"
            resp = await stub.Generate(generator_pb2.GenerateRequest(
                prompt=caption, seed=1000 + i, output_format=generator_pb2.OUTPUT_FORMAT_JPEG, jpeg_quality=92),
                timeout=120)
            (images / rel).parent.mkdir(parents=True, exist_ok=True)
            (images / rel).write_bytes(resp.images[0].data)
            paths.append(rel)
    corpus = root / "corpus.json"
    corpus.write_text(json.dumps(paths, indent=1))
    (root / "captions.json").write_text(json.dumps(dict(zip(paths, CAPTIONS, strict=True)), indent=1))
    return corpus, images


def _row(mode: str, target: str, rnd: orchestrator_pb2.Round) -> dict:
    return {"mode": mode, "target": target, "round": rnd.index, "query": rnd.query, "feedback": rnd.feedback,
            "target_rank": rnd.target_rank if rnd.HasField("target_rank") else None,
            "top3": [h.id for h in rnd.hits[:3]], "seed": rnd.seed, "prompt_id": rnd.prompt_id,
            "timings": {t.stage: round(t.seconds, 4) for t in rnd.timings},
            "image": rnd.generated.ref or None}


async def run_dialogs(target: str, n_targets: int, rounds: int, corpus_size: int) -> list[dict]:
    rows = []
    ref = orchestrator_pb2.SessionOptions(image_delivery=common_pb2.IMAGE_DELIVERY_REFERENCE)
    step = max(1, corpus_size // max(1, n_targets))
    plan = [("genir", str(i * step)) for i in range(n_targets)]
    plan += [(m, "0") for m in ("verbal", "prediction", "fusion", "chatir")]
    async with grpc.aio.insecure_channel(target) as ch:
        stub = orchestrator_pb2_grpc.OrchestratorStub(ch)
        for mode, tid in plan:
            req = orchestrator_pb2.RunDialogRequest(target_id=tid, mode=mode, rounds=rounds, options=ref)
            if mode == "chatir":  # a hand-written ChatIR-style dialog about target 0
                req.dialog.extend([CAPTIONS[int(tid)]] + [f"is it daytime? yes, turn {i + 1}" for i in range(rounds)])
            async for rnd in stub.RunDialog(req, timeout=300):
                rows.append(_row(mode, tid, rnd))
    return rows


async def human_session(target: str) -> tuple[dict, list[dict]]:
    async with grpc.aio.insecure_channel(target) as ch:
        stub = orchestrator_pb2_grpc.OrchestratorStub(ch)
        opts = orchestrator_pb2.SessionOptions(image_delivery=common_pb2.IMAGE_DELIVERY_REFERENCE, top_k=5, seed=7)
        s = await stub.CreateSession(orchestrator_pb2.CreateSessionRequest(query=CAPTIONS[0], mode="genir",
                                                                           options=opts), timeout=120)
        await stub.NextRound(orchestrator_pb2.NextRoundRequest(session_id=s.session_id, feedback=FEEDBACK), timeout=120)
        await stub.NextRound(orchestrator_pb2.NextRoundRequest(session_id=s.session_id, query=CAPTIONS[1]), timeout=120)
        full = await stub.GetSession(orchestrator_pb2.GetSessionRequest(session_id=s.session_id), timeout=30)
        image = await stub.GetImage(orchestrator_pb2.GetImageRequest(ref=full.rounds[0].generated.ref), timeout=30)
        deleted = await stub.DeleteSession(orchestrator_pb2.DeleteSessionRequest(session_id=s.session_id), timeout=30)
    info = {"session_id": full.session_id, "rounds": len(full.rounds), "first_image_bytes": len(image.data),
            "deleted": deleted.deleted}
    return info, [_row("session", "-", r) for r in full.rounds]


def table(rows: list[dict]) -> str:
    head = f"{'mode':<10} {'target':>6} {'rnd':>3} {'rank':>5} {'hit@10':>6} {'top-3 hits':<14} {'secs':>6}  query"
    lines = [head, "-" * len(head)]
    for r in rows:
        rank = "-" if r["target_rank"] is None else str(r["target_rank"] + 1)  # people count from 1
        hit = "-" if r["target_rank"] is None else ("yes" if r["target_rank"] < 10 else "no")
        secs = sum(r["timings"].values())
        query = r["query"].replace("\n", " ")
        lines.append(f"{r['mode']:<10} {r['target']:>6} {r['round']:>3} {rank:>5} {hit:>6} "
                     f"{','.join(r['top3']):<14} {secs:6.2f}  {query[:60]}{'…' if len(query) > 60 else ''}")
    return "\n".join(lines)


def write_report(workdir: Path, rows: list[dict], session: dict, seconds: dict, corpus_size: int) -> tuple[Path, Path]:
    data = {"corpus_size": corpus_size, "rounds": rows, "session": session, "seconds": seconds,
            "note": "tiny random models: renderings are noise, queries are word salad, ranks are at chance level"}
    js = workdir / "report.json"
    js.write_text(json.dumps(data, indent=1))
    md = workdir / "report.md"
    md.write_text("# genir demo report\n\n" + data["note"] + ".\n\n"
                  f"Corpus: {corpus_size} rendered images. Timings (s): {json.dumps(seconds)}.\n\n"
                  f"Human session: {json.dumps(session)}\n\n```\n{table(rows)}\n```\n\n"
                  "Images delivered by reference are stored under `stack/sessions.sqlite.images/<ref>`.\n")
    return js, md


def main(args) -> int:
    config.setup_logging(args.log_level)
    t0 = time.monotonic()
    models, workdir = Path(args.models), Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    seconds = {}
    print(f"[demo] building tiny models in {models} ...", flush=True)
    from genir.tiny_models import build_all

    build_all(models, seed=0)
    seconds["models"] = round(time.monotonic() - t0, 1)
    stack = Stack(models, workdir / "stack", collection="demo", ports="free", startup_timeout=300)
    try:
        t = time.monotonic()
        print("[demo] starting the generator and rendering the demo corpus ...", flush=True)
        stack.start(["generator"])
        corpus, image_root = asyncio.run(render_corpus(stack.target("generator"), workdir / "corpus"))
        seconds["corpus"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        print(f"[demo] indexing {len(CAPTIONS)} images and starting Triton, refiner, retriever, orchestrator ...",
              flush=True)
        stack.corpus, stack.image_root = corpus, image_root
        stack.start(["triton", "retriever", "refiner", "orchestrator"])
        seconds["start"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        target = stack.target("orchestrator")
        print(f"[demo] orchestrator on {target}; running simulated dialogs ...", flush=True)
        rows = asyncio.run(run_dialogs(target, args.targets, args.rounds, len(CAPTIONS)))
        seconds["dialogs"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        print("[demo] human-style session: query, feedback, new query ...", flush=True)
        session, session_rows = asyncio.run(human_session(target))
        seconds["session"] = round(time.monotonic() - t, 1)
    except (StartError, grpc.RpcError) as e:
        print(f"[demo] FAILED: {e}", flush=True)
        print(f"[demo] logs: {workdir / 'stack' / 'logs'}")
        return 1
    finally:
        stack.stop()
    seconds["total"] = round(time.monotonic() - t0, 1)
    all_rows = rows + session_rows
    print()
    print(table(all_rows))
    js, md = write_report(workdir, all_rows, session, seconds, len(CAPTIONS))
    print("\n[demo] tiny random models: noise images and chance-level ranks (plumbing only).")
    print(f"[demo] report: {md} and {js}; logs: {workdir / 'stack' / 'logs'}; {seconds['total']} s in all")
    return 0
