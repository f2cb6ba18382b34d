"""The corpus file, read one way by everyone (`genir index`, the orchestrator, `genir eval`).

A corpus file is the ChatIR protocol's JSON array of relative image paths; the array index is the
corpus id. Paths may have any shape ("unlabeled2017/000000000008.jpg", "61000/61801.png",
"3618932839.jpg"); they are normalised (forward slashes, no leading "./") so the same photo has
one spelling in the index, in sessions and in query files, and a path listed twice is refused (two
ids for one photo would make every rank of it ambiguous).
"""

from __future__ import annotations

import json
from pathlib import Path


class DatasetError(ValueError):
    """A malformed or inconsistent benchmark file; the message names the file and the entry."""


def norm_path(path: str) -> str:
    return path.replace("\\", "/").lstrip("./") if path.startswith("./") else path.replace("\\", "/")


def load_json(path: str | Path, what: str):
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{what} file not found: {p}") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{what} file {p} is not valid JSON: {e}") from None


def read_corpus(path: str | Path) -> tuple[str, ...]:
    """The corpus file's paths in id order, normalised; DatasetError when malformed or repeating."""
    data = load_json(path, "corpus")
    if not isinstance(data, list) or not all(isinstance(x, str) and x for x in data):
        raise DatasetError(f"corpus file {path} must be a JSON array of non-empty path strings")
    paths = tuple(norm_path(x) for x in data)
    first: dict[str, int] = {}
    for i, p in enumerate(paths):
        if p in first:
            raise DatasetError(f"corpus file {path}: {p!r} appears twice (ids {first[p]} and {i})")
        first[p] = i
    return paths
