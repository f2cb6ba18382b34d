"""`genir tiny-models build DIR`: the tiny random checkpoints tests and the demo run on."""

from __future__ import annotations

import time

from . import MODEL_NAMES, build_all


def add_arguments(parser) -> None:
    parser.add_argument("out_dir", metavar="DIR", help="writes DIR/{sd3,gemma3,blip,clip,siglip}/")
    parser.add_argument("--seed", type=int, default=0, help="same seed -> byte-identical files")
    parser.add_argument("--only", nargs="+", choices=MODEL_NAMES, help="build just these")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete folder exists")


def main(args) -> int:
    start = time.perf_counter()
    for name, path in build_all(args.out_dir, seed=args.seed, only=args.only, force=args.force).items():
        print(f"{name}\t{path}")
    print(f"done in {time.perf_counter() - start:.1f}s")
    return 0
