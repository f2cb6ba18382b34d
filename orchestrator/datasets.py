"""Loaders for the ChatIR protocol files (corpus list + query dialogs) and GenIR-style query files.

Corpus: a JSON array of relative image paths; the array index is the corpus id (read by
services/common/corpus.py, which `genir index` shares).
Queries: a JSON array of {"img": <path in the corpus>, "dialog": [str, ...]}; ChatIR dialogs hold a
caption and 10 "question? answer" strings, GenIR query files use "dialog": [] (only "img" is used).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from services.common.corpus import DatasetError, load_json, norm_path, read_corpus

__all__ = ["Corpus", "DatasetError", "Query", "chatir_query", "load_corpus", "load_queries", "read_queries",
           "resolve_queries"]


@dataclass(frozen=True)
class Corpus:
    paths: tuple[str, ...]
    index: dict[str, int] = field(repr=False, compare=False)
    source: str = ""

    def __len__(self) -> int:
        return len(self.paths)

    def path_of(self, corpus_id: int) -> str:
        if not 0 <= corpus_id < len(self.paths):
            raise DatasetError(f"corpus id {corpus_id} is out of range [0, {len(self.paths) - 1}]")
        return self.paths[corpus_id]


@dataclass(frozen=True)
class Query:
    target_id: int
    img: str
    dialog: tuple[str, ...]


def load_corpus(path: str | Path) -> Corpus:
    paths = read_corpus(path)
    return Corpus(paths=paths, index={p: i for i, p in enumerate(paths)}, source=str(path))


def read_queries(path: str | Path) -> list[Query]:
    """The entries of a queries file, not yet resolved to corpus ids (target_id -1)."""
    data = load_json(path, "queries")
    if not isinstance(data, list):
        raise DatasetError(f"queries file {path} must be a JSON array of {{'img', 'dialog'}} objects")
    out = []
    for n, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("img"), str) or not item["img"]:
            raise DatasetError(f"queries file {path}: entry {n} has no 'img' path")
        dialog = item.get("dialog", [])
        if not isinstance(dialog, list) or not all(isinstance(s, str) for s in dialog):
            raise DatasetError(f"queries file {path}: entry {n} 'dialog' must be a list of strings")
        out.append(Query(target_id=-1, img=norm_path(item["img"]), dialog=tuple(dialog)))
    return out


def resolve_queries(queries: list[Query], corpus: Corpus, source: str | Path = "") -> list[Query]:
    """Each query with its target's corpus id; every missing target is named before any work."""
    missing = [q.img for q in queries if q.img not in corpus.index]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetError(f"queries file {source}: {len(missing)} target(s) not in the corpus: {shown}")
    return [Query(target_id=corpus.index[q.img], img=q.img, dialog=q.dialog) for q in queries]


def load_queries(path: str | Path, corpus: Corpus) -> list[Query]:
    """All queries, each resolved to its corpus id; every missing target is named before any work."""
    return resolve_queries(read_queries(path), corpus, path)


def chatir_query(dialog: tuple[str, ...] | list[str], round_index: int, per_round: bool = False) -> str:
    """The ChatIR protocol's round-t text query: the caption and the first t Q/A turns, comma-joined;
    with `per_round`, the t-th string alone (round 0: the caption; PlugIR's variant)."""
    if round_index < 0 or round_index >= len(dialog):
        raise DatasetError(f"round {round_index} needs a dialog of at least {round_index + 1} strings, got {len(dialog)}")
    if per_round:
        return dialog[round_index]
    return ", ".join(dialog[: round_index + 1])
