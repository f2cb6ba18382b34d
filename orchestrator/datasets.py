"""Loaders for the ChatIR protocol files (corpus list + query dialogs) and GenIR-style query files.

Corpus: a JSON array of relative image paths; the array index is the corpus id.
Queries: a JSON array of {"img": <path in the corpus>, "dialog": [str, ...]}; ChatIR dialogs hold a
caption and 10 "question? answer" strings, GenIR query files use "dialog": [] (only "img" is used).
Paths may have any shape ("unlabeled2017/000000000008.jpg", "61000/61801.png", "3618932839.jpg").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


class DatasetError(ValueError):
    """A malformed or inconsistent benchmark file; the message names the file and the entry."""


@dataclass(frozen=True)
class Corpus:
    paths: tuple[str, ...]
    index: dict[str, int] = field(repr=False, compare=False)
    source: str = ""

    def __len__(self) -> int:
        return len(self.paths)

    def id_of(self, path: str) -> int:
        try:
            return self.index[_norm(path)]
        except KeyError:
            raise DatasetError(f"{path!r} is not in the corpus {self.source or ''}".strip()) from None

    def path_of(self, corpus_id: int) -> str:
        if not 0 <= corpus_id < len(self.paths):
            raise DatasetError(f"corpus id {corpus_id} is out of range [0, {len(self.paths) - 1}]")
        return self.paths[corpus_id]


@dataclass(frozen=True)
class Query:
    target_id: int
    img: str
    dialog: tuple[str, ...]


def _norm(path: str) -> str:
    return path.replace("\\", "/").lstrip("./") if path.startswith("./") else path.replace("\\", "/")


def _load_json(path: str | Path, what: str):
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{what} file not found: {p}") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{what} file {p} is not valid JSON: {e}") from None


def load_corpus(path: str | Path) -> Corpus:
    data = _load_json(path, "corpus")
    if not isinstance(data, list) or not all(isinstance(x, str) and x for x in data):
        raise DatasetError(f"corpus file {path} must be a JSON array of non-empty path strings")
    paths = tuple(_norm(x) for x in data)
    index: dict[str, int] = {}
    for i, p in enumerate(paths):
        if p in index:
            raise DatasetError(f"corpus file {path}: {p!r} appears twice (ids {index[p]} and {i})")
        index[p] = i
    return Corpus(paths=paths, index=index, source=str(path))


def load_queries(path: str | Path, corpus: Corpus) -> list[Query]:
    """All queries, each resolved to its corpus id; every missing target is named before any work."""
    data = _load_json(path, "queries")
    if not isinstance(data, list):
        raise DatasetError(f"queries file {path} must be a JSON array of {{'img', 'dialog'}} objects")
    queries, missing = [], []
    for n, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("img"), str):
            raise DatasetError(f"queries file {path}: entry {n} has no 'img' path")
        dialog = item.get("dialog", [])
        if not isinstance(dialog, list) or not all(isinstance(s, str) for s in dialog):
            raise DatasetError(f"queries file {path}: entry {n} 'dialog' must be a list of strings")
        img = _norm(item["img"])
        if img not in corpus.index:
            missing.append(img)
            continue
        queries.append(Query(target_id=corpus.index[img], img=img, dialog=tuple(dialog)))
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetError(f"queries file {path}: {len(missing)} target(s) not in the corpus: {shown}")
    return queries


def chatir_query(dialog: tuple[str, ...] | list[str], round_index: int, per_round: bool = False) -> str:
    """The ChatIR protocol's round-t text query: the caption and the first t Q/A turns, comma-joined;
    with `per_round`, the t-th string alone (round 0: the caption; PlugIR's variant)."""
    if round_index < 0 or round_index >= len(dialog):
        raise DatasetError(f"round {round_index} needs a dialog of at least {round_index + 1} strings, got {len(dialog)}")
    if per_round:
        return dialog[round_index]
    return ", ".join(dialog[: round_index + 1])
