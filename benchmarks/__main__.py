"""python -m benchmarks [NAME ...] [--quick] [--out DIR]: run benchmarks, write <DIR>/<name>.json.

Full runs write the committed figures in benchmarks/results/. `--quick` is a smoke run (small
workloads, figures meaningless) and writes to .cache/bench-quick/ unless `--out` says otherwise,
so it can never overwrite a committed figure.
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
    args = parser.parse_args()
    out = args.out or (QUICK_OUT if args.quick else RESULTS)
    if args.quick and out.resolve() == RESULTS.resolve():
        parser.error(f"--quick figures are not measurements; they may not overwrite {RESULTS}")
    set_out_dir(out)
    names = args.names or available()
    failed = 0
    for name in names:
        mod_name = name if name.startswith("bench_") else f"bench_{name}"
        print(f"== {mod_name}", flush=True)
        try:
            result = importlib.import_module(f"benchmarks.{mod_name}").run(quick=args.quick)
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
            traceback.print_exc()
            failed += 1
            continue
        path = write(result)
        print(json.dumps({k: result[k] for k in ("name", "ratio", "target", "passed")}), "->", path, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
