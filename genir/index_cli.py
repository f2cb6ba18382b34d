"""`genir index`: the retriever's indexer (services/retriever/indexer.py), with `--corpus` also
taking a folder of photos: its images are listed (recursive, sorted) into `--corpus-out` first.
Bad inputs stop with one line before any model loads."""

from __future__ import annotations

import argparse
import sys

from genir.corpus_folder import CorpusInputError, register_heif, resolve_corpus
from services.common import config
from services.retriever import indexer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    indexer.add_arguments(parser)
    config.add_flag(parser, "corpus-out", service="index", default=None,
                    help="where the list of a --corpus folder is written (default: COLLECTION.corpus.json)")


def main(args: argparse.Namespace) -> int:
    if args.corpus:
        out = args.corpus_out or f"{args.collection or 'corpus'}.corpus.json"
        try:
            args.corpus, args.image_root, n = resolve_corpus(args.corpus, args.image_root, out)
        except CorpusInputError as e:
            print(f"genir index: {e}", file=sys.stderr)
            return 2
        print(f"genir index: {n} images, list {args.corpus}, image root {args.image_root}", file=sys.stderr)
    register_heif()
    return indexer.main(args)
