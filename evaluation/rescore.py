"""`genir eval rescore RUN --retriever HOST:PORT --collection C --out DIR`: "GenIR Text" (Table 1).

Scores a finished run's own queries (e.g. GenIR's refined captions) by text->image retrieval
instead of by their renderings: every round's query is searched as text, with the target's exact
rank, and the result is a run folder of its own (dialogs.jsonl, run.json, summary.json/csv,
hits_at_k.png) that `genir eval compare` and `merge` accept. The queries are never changed; a
query longer than the text tower reads is handled by the retriever as in every text search.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from evaluation import outputs
from evaluation.merge import MergeError, load_runs
from evaluation.records import DIALOGS, DialogLog

SCORING = "text->image retrieval of each round's query"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="a finished eval output folder (one label)")
    parser.add_argument("--retriever", default="127.0.0.1:50053", help="retriever HOST:PORT")
    parser.add_argument("--collection", required=True, help="the corpus collection the run searched")
    parser.add_argument("--out", required=True, help="output folder for the re-scored run")
    parser.add_argument("--label", default="", help="label of the re-scored run (default: LABEL-text)")
    parser.add_argument("--concurrency", type=int, default=8, help="searches in flight")


async def rescore_records(records: dict[int, dict], search, concurrency: int = 8) -> dict[int, dict]:
    """Each record with every round's rank replaced by `search(query, target_id)`'s rank."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(tid: int, rec: dict) -> dict:
        rounds = []
        best = None
        for rnd in rec["rounds"]:
            async with gate:
                rank, hits = await search(rnd["query"], tid)
            best = rank if best is None else min(best, rank)
            rounds.append({"index": rnd["index"], "query": rnd["query"], "feedback": rnd.get("feedback", ""),
                           "rank": rank, "hit": best < 10, "seed": rnd.get("seed", ""),
                           "prompt_id": rnd.get("prompt_id", ""), "image": None, "timings": {}, "hits": hits,
                           "image_rank": rnd["rank"]})
        return {**{k: v for k, v in rec.items() if k != "rounds"}, "rounds": rounds}

    done = await asyncio.gather(*(one(t, r) for t, r in sorted(records.items())))
    return {r["target_id"]: r for r in done}


def grpc_search(target: str, collection: str):
    """search(query, target_id) -> (exact rank, top-10 hits) over the retriever's Search."""
    from genir.v1 import retriever_pb2, retriever_pb2_grpc
    from services.common.channels import open_channel

    channel = open_channel(target)
    stub = retriever_pb2_grpc.RetrieverStub(channel)

    async def search(query: str, tid: int):
        resp = await stub.Search(retriever_pb2.SearchRequest(collection=collection, text=query, top_k=10,
                                                             target_id=str(tid)), timeout=60)
        hits = [{"id": h.id, "score": round(float(h.score), 6), "rank": h.rank, "path": h.payload.get("path", "")}
                for h in resp.hits]
        return int(resp.target_rank), hits

    return search, channel


async def rescore(run: Path, out: Path, search, label: str = "", concurrency: int = 8) -> dict:
    runs = load_runs([run])
    if len(runs) != 1:
        raise MergeError(f"{run}: holds {len(runs)} labels ({', '.join(runs)}); rescore one run at a time")
    (lr,) = runs.values()
    records = {t: rec for t, (rec, _) in lr.records.items()}
    new = await rescore_records(records, search, concurrency)
    out.mkdir(parents=True, exist_ok=True)
    if (out / DIALOGS).exists():
        raise MergeError(f"{out} already holds dialogs; use another --out")
    with DialogLog(out / DIALOGS) as dlog:
        for tid in sorted(new):
            dlog.append(new[tid])
    name = label or f"{lr.label}-text"
    identity = {**lr.identity, "label": name, "mode": f"{lr.identity.get('mode')}-text",
                "rescored_from": lr.label, "scoring": SCORING}
    ks = sorted(lr.ks)
    summary = outputs.label_summary(new, ks, identity, lr.models)
    outputs.write_json(out / "run.json", {"identity": identity, "ks": ks, "models": lr.models,
                                          "targets": sorted(new), "n_targets_selected": len(new),
                                          "rescored_from": lr.sources})
    outputs.write_all(out, summary)
    return summary


def main(args) -> int:
    async def go():
        search, channel = grpc_search(args.retriever, args.collection)
        try:
            return await rescore(Path(args.run), Path(args.out), search, args.label, args.concurrency)
        finally:
            await channel.close()

    try:
        summary = asyncio.run(go())
    except MergeError as e:
        print(f"genir eval rescore: {e}", file=sys.stderr)
        return 2
    k = summary["headline_k"]
    hits = summary["hits_at_k"][str(k)]
    print(f"{summary['label']}: n_targets={summary['n_targets']} Hits@{k} per round "
          + ", ".join(f"{h:.2f}" for h in hits) + f"; results in {args.out}")
    return 0
