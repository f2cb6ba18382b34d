"""summary.json, summary.csv and hits_at_k.png from finished dialog records.

Everything here is a pure function of the records (sorted by target id), so an interrupted and
resumed run, a sharded and merged run, and an uninterrupted run write byte-identical summaries.
Wall times and settings that do not change results live in run.json instead.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from evaluation import metrics
from evaluation.records import ranks_of

SUMMARY = "summary.json"
SUMMARY_CSV = "summary.csv"
PLOT = "hits_at_k.png"


def target_set_digest(target_ids) -> str:
    """Names a target set: two summaries with the same digest were scored on the same targets."""
    return hashlib.sha256(",".join(str(t) for t in sorted(target_ids)).encode()).hexdigest()[:16]


def _seed_digest(records: Sequence[dict]) -> str:
    h = hashlib.sha256()
    for rec in records:
        h.update(f"{rec['target_id']}:" .encode() + ",".join(str(r.get("seed", "")) for r in rec["rounds"]).encode()
                 + b";")
    return h.hexdigest()[:16]


def headline_k(ks: Sequence[int]) -> int:
    return 10 if 10 in ks else max(ks)


def label_summary(records: Mapping[int, dict], ks: Sequence[int], identity: Mapping, models: Mapping) -> dict:
    """Summary of one run (one label/mode) over exactly the given records."""
    recs = [records[t] for t in sorted(records)]
    block = metrics.summarize([ranks_of(r) for r in recs], ks)
    return {
        "label": identity.get("label") or identity.get("mode"),
        "mode": identity.get("mode"),
        "rounds": identity.get("rounds"),
        "k": list(ks),
        "headline_k": headline_k(ks),
        **block,
        "models": dict(models),
        "seeds": {"base": identity.get("seed"), "round_seeds_sha256": _seed_digest(recs),
                  "derivation": "each round's seed derives from (base seed, target id, round)"},
        "target_set": target_set_digest(records),
        "settings": {k: v for k, v in identity.items() if k not in ("label", "mode", "rounds", "seed")},
    }


def comparison_summary(per_label: Mapping[str, dict], n_by_label: Mapping[str, int], common: Sequence[int],
                       ks: Sequence[int]) -> dict:
    """Several runs (modes) scored on the same target set `common`."""
    return {
        "n_targets": len(common),
        "n_targets_by_mode": dict(n_by_label),
        "target_set": target_set_digest(common),
        "k": list(ks),
        "headline_k": headline_k(ks),
        "modes": dict(per_label),
    }


def blocks(summary: dict) -> dict[str, dict]:
    """label -> per-run block, for a single-run or a comparison summary."""
    return dict(summary["modes"]) if "modes" in summary else {summary["label"]: summary}


def models_line(summary: dict) -> str:
    """"generator X, refiner Y, retriever Z" over every run of the summary (distinct values joined)."""
    seen: dict[str, list[str]] = {}
    for b in blocks(summary).values():
        for role, name in sorted((b.get("models") or {}).items()):
            if str(name) not in seen.setdefault(role, []):
                seen[role].append(str(name))
    return ", ".join(f"{role} {' / '.join(names)}" for role, names in seen.items()) or "not recorded"


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def write_csv(path: Path, summary: dict) -> None:
    ks = summary["k"]
    header = ["label", "mode", "round", "n_targets"] + [f"hits@{k}" for k in ks] + [f"recall@{k}" for k in ks] \
        + [f"mrr@{k}" for k in ks] + ["bri"]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for label, b in blocks(summary).items():
            for r in range(b["n_rounds"]):
                w.writerow([label, b["mode"], r, b["n_targets"]]
                           + [b["hits_at_k"][str(k)][r] for k in ks] + [b["recall_at_k"][str(k)][r] for k in ks]
                           + [b["mrr"][str(k)][r] for k in ks] + [b["bri"]])
    tmp.replace(path)


PLOT_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
PLOT_DASHES = ("-", "--", ":", "-.")


def plot_hits(path: Path, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    draw_hits(ax, summary)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)


def draw_hits(ax, summary: dict) -> None:
    from matplotlib.ticker import MaxNLocator

    k = summary["headline_k"]
    runs = blocks(summary)
    for i, (label, b) in enumerate(runs.items()):
        ys = b["hits_at_k"][str(k)]
        # equal curves must stay visible: each run its own marker and dash, shifted a little sideways
        dx = (i - (len(runs) - 1) / 2) * 0.08
        ax.plot([x + dx for x in range(len(ys))], ys, marker=PLOT_MARKERS[i % len(PLOT_MARKERS)],
                linestyle=PLOT_DASHES[i % len(PLOT_DASHES)], alpha=0.85, label=f"{label} (n={b['n_targets']})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(f"cumulative Hits@{k} (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(f"Hits@{k} per round, n_targets={summary['n_targets']}\n{models_line(summary)[:110]}", fontsize=9)


def write_all(out: Path, summary: dict) -> None:
    write_json(out / SUMMARY, summary)
    write_csv(out / SUMMARY_CSV, summary)
    plot_hits(out / PLOT, summary)
