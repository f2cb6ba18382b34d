"""`genir eval compare DIR...`: a side-by-side table of modes per round, on their common targets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.evaluation.merge import MergeError, load_runs, merged_summary
from orchestrator.evaluation.outputs import blocks

METRICS = {"hits": ("hits_at_k", "cumulative Hits@{k} (%)"), "recall": ("recall_at_k", "Recall@{k} (%)"),
           "mrr": ("mrr", "MRR@{k}")}


def table(summary: dict, k: int | None = None, metric: str = "hits") -> str:
    k = k or summary["headline_k"]
    key, title = METRICS[metric]
    bl = blocks(summary)
    if str(k) not in next(iter(bl.values()))[key]:
        raise MergeError(f"--k {k} was not computed; available: {', '.join(map(str, summary['k']))}")
    labels = list(bl)
    width = max(8, *(len(x) for x in labels)) + 2
    n_by = summary.get("n_targets_by_mode")
    lines = [f"{title.format(k=k)} per round; n_targets = {summary['n_targets']}"
             + (" common to all modes (" + ", ".join(f"{m} {n}" for m, n in n_by.items()) + ")" if n_by else "")]
    lines.append("round".ljust(7) + "".join(lab.rjust(width) for lab in labels))
    n_rounds = max(b["n_rounds"] for b in bl.values())
    fmt = "{:.4f}" if metric == "mrr" else "{:.2f}"
    for r in range(n_rounds):
        cells = [fmt.format(b[key][str(k)][r]) if r < b["n_rounds"] else "-" for b in bl.values()]
        lines.append(str(r).ljust(7) + "".join(c.rjust(width) for c in cells))
    lines.append("BRI".ljust(7) + "".join(("-" if b["bri"] is None else f"{b['bri']:.4f}").rjust(width)
                                          for b in bl.values()))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="eval output folders (runs, shards or merges)")
    parser.add_argument("--k", type=int, default=None, help="cut-off (default: the headline K, 10)")
    parser.add_argument("--metric", choices=sorted(METRICS), default="hits")


def main(args) -> int:
    try:
        summary, _ = merged_summary(load_runs([Path(d) for d in args.dirs]))
        print(table(summary, args.k, args.metric))
    except MergeError as e:
        print(f"genir eval compare: {e}", file=sys.stderr)
        return 2
    return 0
