"""python -m benchmarks [NAME ...] [--quick] [--out DIR]: run benchmarks, write <DIR>/<name>.json.

Full runs write the committed figures in benchmarks/results/. `--quick` is a smoke run (small
workloads, figures meaningless) and writes to .cache/bench-quick/ unless `--out` says otherwise,
so it can never overwrite a committed figure.

`python -m benchmarks gpu_round --device cuda` is the whole-round GPU harness (benchmarks/gpu_round.py,
not in the default list); `--device cpu` runs its code path on the tiny models as a smoke run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import traceback
from pathlib import Path

from benchmarks.common import RESULTS, set_out_dir, write

QUICK_OUT = Path(__file__).resolve().parents[1] / ".cache" / "bench-quick"


def available() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", help=f"default: all of {available()}")
    parser.add_argument("--quick", action="store_true", help=f"smaller workloads (smoke run; writes to {QUICK_OUT})")
    parser.add_argument("--out", type=Path, help=f"folder for the JSON records (default {RESULTS})")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="gpu_round only: cuda measures, cpu is a smoke run")
    args = parser.parse_args()
    if args.device and args.names != ["gpu_round"]:
        parser.error("--device goes with `gpu_round` alone")
    smoke = args.quick or args.device == "cpu"
    out = args.out or (QUICK_OUT if smoke else RESULTS)
    if smoke and out.resolve() == RESULTS.resolve():
        parser.error(f"--quick / --device cpu figures are not measurements; they may not overwrite {RESULTS}")
    set_out_dir(out)
    names = args.names or available()
    failed = 0
    for name in names:
        mod_name = name if name.startswith("bench_") or name == "gpu_round" else f"bench_{name}"
        print(f"== {mod_name}", flush=True)
        extra = {"device": args.device or "cuda"} if name == "gpu_round" else {}
        try:
            result = importlib.import_module(f"benchmarks.{mod_name}").run(quick=args.quick, **extra)
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
            traceback.print_exc()
            failed += 1
            continue
        path = write(result)
        print(json.dumps({k: result[k] for k in ("name", "ratio", "target", "passed")}), "->", path, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
