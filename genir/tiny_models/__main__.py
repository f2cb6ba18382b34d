"""``python -m genir.tiny_models DIR [--seed N] [--only ...] [--force]`` (same as ``genir tiny-models build``)."""

from __future__ import annotations

import argparse

from .cli import add_arguments, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m genir.tiny_models")
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
