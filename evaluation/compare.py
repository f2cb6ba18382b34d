"""`genir eval compare DIR...`: a side-by-side table of modes per round, on their common targets.

`--hybrid oracle|random:P` over one verbal and one GenIR run adds the paper's hybrid (Table 5): per
target, the verbal or the visual dialog (evaluation/hybrid.py), scored on the targets
both runs finished; `--out FILE` writes that comparison and every target's choice as JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evaluation import hybrid, outputs
from evaluation.merge import MergeError, common_targets, load_runs, merged_summary
from evaluation.outputs import blocks
from evaluation.records import ranks_of

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
    parser.add_argument("--hybrid", default=None, metavar="oracle|random:P",
                        help="add the paper's hybrid of a verbal and a genir run (per target: one dialog or the other)")
    parser.add_argument("--seed", type=int, default=0, help="--hybrid random:P: seed of the per-target draw")
    parser.add_argument("--out", default=None, help="--hybrid: write the comparison and the choices to this JSON file")


def hybrid_summary(runs, policy_text: str, seed: int = 0) -> tuple[dict, dict[int, str]]:
    """Verbal, visual and hybrid summaries on the two runs' common targets, and the choices."""
    policy, p = hybrid.parse_policy(policy_text)
    if len(runs) != 2:
        raise MergeError(f"--hybrid needs exactly two runs (one verbal, one genir); got {len(runs)}: {', '.join(runs)}")
    by_kind = {}
    for label, lr in runs.items():
        mode = lr.identity.get("mode")
        kind = hybrid.VERBAL if mode == "verbal" else hybrid.VISUAL if mode in hybrid.VISUAL_MODES else None
        if kind is None or kind in by_kind:
            raise MergeError(f"--hybrid needs one verbal and one genir (or fusion) run; {label!r} is mode {mode!r}")
        by_kind[kind] = lr
    if len(by_kind) != 2:
        raise MergeError("--hybrid needs one verbal and one genir run")
    common = common_targets(runs)
    vis, verb = by_kind[hybrid.VISUAL], by_kind[hybrid.VERBAL]
    ranks = {kind: {t: ranks_of(lr.records[t][0]) for t in common} for kind, lr in by_kind.items()}
    if ranks[hybrid.VISUAL] and len(next(iter(ranks[hybrid.VISUAL].values()))) != \
            len(next(iter(ranks[hybrid.VERBAL].values()))):
        raise MergeError("--hybrid: the two runs have different numbers of rounds")
    choice = hybrid.choose(ranks[hybrid.VISUAL], ranks[hybrid.VERBAL], policy, p, seed)
    mixed = hybrid.hybrid_ranks(ranks[hybrid.VISUAL], ranks[hybrid.VERBAL], choice)
    ks = sorted(vis.ks | verb.ks)
    name = f"hybrid-{policy_text.strip().lower()}"
    per = {lr.label: outputs.label_summary({t: lr.records[t][0] for t in common}, ks, lr.identity, lr.models)
           for lr in (verb, vis)}
    mixed_recs = {t: {"target_id": t, "rounds": [{"rank": r, "seed": ""} for r in row]} for t, row in mixed.items()}
    per[name] = outputs.label_summary(mixed_recs, ks, {"label": name, "mode": "hybrid", "policy": policy,
                                                       "p_visual": p, "seed": seed if policy == "random" else None,
                                                       "from": [verb.label, vis.label]}, {})
    summary = outputs.comparison_summary(per, {lr.label: len(lr.records) for lr in (verb, vis)} | {name: len(common)},
                                         common, ks)
    return summary, choice


def main(args) -> int:
    try:
        runs = load_runs([Path(d) for d in args.dirs])
        if args.hybrid is not None:
            summary, choice = hybrid_summary(runs, args.hybrid, args.seed)
            n_vis = sum(c == hybrid.VISUAL for c in choice.values())
            print(table(summary, args.k, args.metric))
            print(f"{args.hybrid}: visual feedback for {n_vis} of {len(choice)} targets, verbal for {len(choice) - n_vis}")
            if args.out:
                outputs.write_json(Path(args.out), summary | {"choices": {str(t): c for t, c in choice.items()}})
        else:
            summary, _ = merged_summary(runs)
            print(table(summary, args.k, args.metric))
    except (MergeError, hybrid.HybridError) as e:
        print(f"genir eval compare: {e}", file=sys.stderr)
        return 2
    return 0
