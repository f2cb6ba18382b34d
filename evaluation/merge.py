"""`genir eval merge DIR... --out DIR`: shards of one run and runs of several modes, one summary.

A run folder holds run.json + dialogs.jsonl. Folders with the same label (by default the mode) are
shards of one run: their settings must match, and their dialogs are united (a target present twice
must have the same ranks). With several labels, every mode is scored on the intersection of their
target sets so the comparison is fair; summary.json reports that n_targets and each mode's own n.
The merged folder is itself a run folder (one label) or holds runs/<label>/ run folders (several),
so it can be merged or compared again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from evaluation import outputs
from evaluation.records import DIALOGS, DialogLog, load_dialogs, ranks_of
from evaluation.runner import RUN_FILE

RUNS = "runs"


class MergeError(Exception):
    pass


@dataclass
class LabelRun:
    label: str
    identity: dict
    models: dict
    ks: set[int]
    records: dict[int, tuple[dict, Path]] = field(default_factory=dict)  # tid -> (record, its run folder)
    sources: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def run_dirs(path: Path) -> list[Path]:
    path = Path(path)
    if (path / RUN_FILE).exists():
        return [path]
    if (path / RUNS).is_dir():
        subs = sorted(p for p in (path / RUNS).iterdir() if (p / RUN_FILE).exists())
        if subs:
            return subs
    raise MergeError(f"{path} is not an eval output folder (no {RUN_FILE}, no {RUNS}/)")


# Settings that make runs of different modes comparable: the same corpus list (so a target id is
# the same image), the same number of rounds and the same cut-offs.
COMPARABLE = ("corpus", "rounds")


def read_run_info(d: Path) -> dict:
    try:
        info = json.loads((d / RUN_FILE).read_text())
        ident = info["identity"]
        if not isinstance(ident, dict) or not isinstance(ident.get("mode"), str) or not isinstance(ident.get("rounds"), int):
            raise TypeError("identity needs a mode and an integer rounds")
        ks = info.get("ks", [10])
        if not isinstance(ks, list) or not all(isinstance(k, int) and k >= 1 for k in ks):
            raise TypeError("ks must be a list of integers >= 1")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MergeError(f"{d / RUN_FILE}: not a valid run file ({e})") from None
    return info


def check_record(rec: dict, n_rounds: int, where: str) -> None:
    """A dialog record as the runner writes it: n_rounds rounds, each with a rank >= 0, indexed 0.."""
    rounds = rec.get("rounds")
    if not isinstance(rounds, list) or len(rounds) != n_rounds:
        got = len(rounds) if isinstance(rounds, list) else "no"
        raise MergeError(f"{where}: target {rec.get('target_id')} has {got} rounds, its run has {n_rounds}")
    for t, r in enumerate(rounds):
        rank = r.get("rank") if isinstance(r, dict) else None
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0 or r.get("index", t) != t:
            raise MergeError(f"{where}: target {rec.get('target_id')} round {t} has no valid rank "
                             f"(a non-negative integer), got {str(rank)[:40]!r}")


def check_comparable(runs: dict[str, "LabelRun"], force: bool) -> list[str]:
    """Refuse (or, with force, list) differences that make a comparison of labels meaningless."""
    first = next(iter(runs.values()))
    diffs = []
    for lr in list(runs.values())[1:]:
        for k in COMPARABLE:
            if lr.identity.get(k) != first.identity.get(k):
                diffs.append(f"{k}: {first.label}={first.identity.get(k)!r}, {lr.label}={lr.identity.get(k)!r}")
        if lr.ks != first.ks:
            diffs.append(f"k: {first.label}={sorted(first.ks)}, {lr.label}={sorted(lr.ks)}")
    if diffs and not force:
        raise MergeError("runs are not comparable (" + "; ".join(diffs) + "); a target id or a round would "
                         "mean different things. Pass --force to merge anyway (recorded in summary.json)")
    return diffs


def load_runs(paths) -> dict[str, LabelRun]:
    runs: dict[str, LabelRun] = {}
    for d in (d for p in paths for d in run_dirs(p)):
        info = read_run_info(d)
        ident = info["identity"]
        label = ident.get("label") or ident["mode"]
        models = info.get("models", {})
        lr = runs.get(label)
        if lr is None:
            lr = runs[label] = LabelRun(label, ident, models, set(info.get("ks", [10])))
        else:
            if ident != lr.identity:
                diff = sorted(k for k in set(ident) | set(lr.identity) if ident.get(k) != lr.identity.get(k))
                raise MergeError(f"{d}: label {label!r} was run with other settings ({', '.join(diff)}) than "
                                 f"{lr.sources[0]}; give one of them another --label")
            if models and lr.models and models != lr.models:
                raise MergeError(f"{d}: label {label!r} used models {models} but {lr.sources[0]} used {lr.models}")
            lr.models = lr.models or models
            lr.ks |= set(info.get("ks", []))
        lr.sources.append(str(d))
        if info.get("failed"):
            lr.warnings.append(f"{d}: {len(info['failed'])} dialog(s) failed in that run and are missing")
        dialogs = load_dialogs(d / DIALOGS)
        if info.get("targets") is not None:  # the folder may hold dialogs of an earlier, larger run
            wanted = set(info["targets"])
            dialogs = {t: r for t, r in dialogs.items() if t in wanted}
        selected = info.get("n_targets_selected")
        if selected is not None and len(dialogs) < selected:
            lr.warnings.append(f"{d}: {len(dialogs)} of its {selected} dialogs finished")
        for tid, rec in dialogs.items():
            check_record(rec, ident["rounds"] + 1, str(d / DIALOGS))
            if tid in lr.records:
                prev, prev_dir = lr.records[tid]
                if ranks_of(prev) != ranks_of(rec):
                    raise MergeError(f"target {tid} ({rec.get('img')}) has different ranks in {prev_dir} and {d}")
                continue
            lr.records[tid] = (rec, d)
    if not runs:
        raise MergeError("no runs given")
    return runs


def common_targets(runs: dict[str, LabelRun]) -> list[int]:
    sets = [set(r.records) for r in runs.values()]
    return sorted(set.intersection(*sets)) if sets else []


def merged_summary(runs: dict[str, LabelRun], ks=None) -> tuple[dict, list[int]]:
    ks = sorted(ks or set.union(*(r.ks for r in runs.values())))
    if len(runs) == 1:
        (lr,) = runs.values()
        recs = {t: rec for t, (rec, _) in lr.records.items()}
        return outputs.label_summary(recs, ks, lr.identity, lr.models), sorted(recs)
    common = common_targets(runs)
    per = {label: outputs.label_summary({t: lr.records[t][0] for t in common}, ks, lr.identity, lr.models)
           for label, lr in runs.items()}
    return outputs.comparison_summary(per, {label: len(lr.records) for label, lr in runs.items()}, common, ks), common


def _rebased(rec: dict, src: Path, dest: Path) -> dict:
    out = dict(rec)
    out["rounds"] = [dict(r, image=Path(os.path.relpath(src / r["image"], dest)).as_posix()) if r.get("image") else r
                     for r in rec["rounds"]]
    return out


def _write_run_folder(dest: Path, lr: LabelRun, tids, ks) -> dict[int, tuple[dict, Path]]:
    dest.mkdir(parents=True, exist_ok=True)
    info = {"identity": lr.identity, "ks": sorted(ks), "models": lr.models, "merged_from": lr.sources,
            "n_targets_selected": len(tids), "targets": list(tids)}
    outputs.write_json(dest / RUN_FILE, info)
    tmp = dest / (DIALOGS + ".tmp")
    tmp.unlink(missing_ok=True)
    rebased = {}
    with DialogLog(tmp) as log:
        for t in tids:
            rec, src = lr.records[t]
            rebased[t] = (_rebased(rec, src, dest), dest)
            log.append(rebased[t][0])
    tmp.replace(dest / DIALOGS)
    return rebased


def merge(paths, out: Path, ks=None, image_root=None, report_max: int = 200, force: bool = False) -> dict:
    from evaluation.report import write_report

    out = Path(out)
    runs = load_runs(paths)
    forced = check_comparable(runs, force)
    for f in forced:
        print(f"genir eval merge: warning: --force: {f}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    for lr in runs.values():
        for w in lr.warnings:
            print(f"genir eval merge: warning: {w}", file=sys.stderr)
    summary, common = merged_summary(runs, ks)
    if forced:
        summary["merge_forced"] = forced
    ks = summary["k"]
    shown: dict[str, dict] = {}
    if len(runs) == 1:
        (lr,) = runs.values()
        shown[lr.label] = _write_run_folder(out, lr, sorted(lr.records), ks)
    else:
        for label, lr in runs.items():
            all_recs = _write_run_folder(out / RUNS / label, lr, sorted(lr.records), ks)
            shown[label] = {t: all_recs[t] for t in common}
    outputs.write_all(out, summary)
    write_report(out, summary, shown, image_root=image_root, max_dialogs=report_max)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="eval output folders (shards and/or modes)")
    parser.add_argument("--out", required=True, help="merged output folder")
    parser.add_argument("--k", default=None, help="cut-offs (default: the union of the runs' --k)")
    parser.add_argument("--image-root", default=None, help="corpus image folder, for report thumbnails")
    parser.add_argument("--report-max-dialogs", type=int, default=200)
    parser.add_argument("--force", action="store_true",
                        help="merge runs whose corpus, rounds or --k differ (the differences go into summary.json)")


def main(args) -> int:
    from evaluation.runner import EvalError, parse_ks

    try:
        ks = parse_ks(args.k) if args.k else None
        summary = merge([Path(d) for d in args.dirs], Path(args.out), ks, args.image_root, args.report_max_dialogs,
                        force=args.force)
    except (MergeError, EvalError) as e:
        print(f"genir eval merge: {e}", file=sys.stderr)
        return 2
    bl = outputs.blocks(summary)
    if len(bl) > 1:
        by = ", ".join(f"{k} {v}" for k, v in summary["n_targets_by_mode"].items())
        print(f"merged {len(bl)} modes on the {summary['n_targets']} targets common to all ({by})")
    else:
        print(f"merged {summary['n_targets']} targets of {next(iter(bl))}")
    print(f"results in {args.out}")
    return 0
