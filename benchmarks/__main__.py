"""python -m benchmarks [NAME ...] [--quick]: run benchmarks, write benchmarks/results/<name>.json."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import traceback
from pathlib import Path

from benchmarks.common import write


def available() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", help=f"default: all of {available()}")
    parser.add_argument("--quick", action="store_true", help="smaller workloads (smoke run)")
    args = parser.parse_args()
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
