"""Shared benchmark helpers: the result record (docs/conventions.md, "Benchmarks") and a JSON writer."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"  # committed figures: only `make bench` writes here
_out = RESULTS


def out_dir() -> Path:
    """Where this run's records go (RESULTS unless `--out`/`--quick` chose another folder)."""
    return _out


def set_out_dir(path: Path) -> None:
    global _out
    _out = Path(path)


def record(name: str, ratio: float, target: float, details: dict, **extra) -> dict:
    """ratio = ours / reference measured side by side in the same run; passed = ratio >= target."""
    return {"name": name, "ratio": round(float(ratio), 4), "target": target, "passed": bool(ratio >= target),
            "details": details, "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                                            # above the bench's own use: other work shared the cores
                                            "load_average_1m": round(os.getloadavg()[0], 2)},
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}


def write(result: dict) -> Path:
    folder = out_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result['name']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def pin(pids, cpus: set[int], descendants: bool = True) -> None:
    """Run every thread of each process in `pids` (and of all their descendants) on `cpus` only.

    Threads started later inherit the set from the thread that starts them, so pinning once after
    start-up holds for the rest of the run.
    """
    import psutil

    procs = []
    for pid in pids:
        p = psutil.Process(pid)
        procs += [p, *(p.children(recursive=True) if descendants else ())]
    for p in procs:
        for t in p.threads():
            try:
                os.sched_setaffinity(t.id, cpus)
            except ProcessLookupError:  # a thread that ended meanwhile
                pass
