"""Confining client-supplied relative paths to a served folder (the corpus image root).

Every reader of a corpus image (the orchestrator's engine, its GetCorpusImage RPC, `genir index`)
goes through `resolve_in_root`, so one rule decides what may be read: the path is relative, and
after resolving `..` and symlinks it still lies inside the root. Error messages name only the
relative path the caller sent, never a server path, and say the same thing whether or not a file
exists outside the root.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from services.common.errors import InvalidArgument

MAX_REL_CHARS = 1024
ECHO_CHARS = 80


def echo(value: str, limit: int = ECHO_CHARS) -> str:
    """A caller's value as shown in an error: repr of a short prefix, so messages stay small."""
    if not isinstance(value, str):
        text = repr(value)
        return text if len(text) <= limit else text[:limit] + "..."
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value)} chars)"


def resolve_in_root(root: str | Path, rel: str, what: str = "path") -> Path:
    """The real path of `rel` under `root`; InvalidArgument when it is absolute, empty or escapes.

    Symlinks inside the root are followed, but only to targets that stay inside it.
    """
    if not isinstance(rel, str) or not rel.strip():
        raise InvalidArgument(f"{what}: empty image path")
    if len(rel) > MAX_REL_CHARS or "\x00" in rel:
        raise InvalidArgument(f"{what}: {echo(rel)} is not a valid relative image path")
    posix = PurePosixPath(rel.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or (posix.parts and ":" in posix.parts[0]):
        raise InvalidArgument(f"{what}: {echo(rel)} must be a path relative to the image root, without '..'")
    base = Path(root).resolve()
    real = (base / posix).resolve()
    if real != base and base not in real.parents:
        # A symlink inside the root points outside it: the same answer as for '..'.
        raise InvalidArgument(f"{what}: {echo(rel)} leaves the image root")
    return real


def corpus_fingerprint(paths) -> str:
    """Identity of a corpus list: its paths in id order (the id of a path is its position).

    Two corpora with this fingerprint equal give every id the same path; any reorder, insertion or
    removal changes it. `genir index` records it in the collection, and every reader of target
    ids (the orchestrator, `genir eval`) compares its own list's fingerprint with it.
    """
    import hashlib

    h = hashlib.sha256()
    for p in paths:
        h.update(p.encode("utf-8", "surrogatepass") + b"\n")
    return f"{len(paths)}:{h.hexdigest()[:32]}"


def first_difference(mine, theirs, start: int = 0) -> str:
    """The first id where two path lists (pages starting at id `start`) differ, in words."""
    for i, (a, b) in enumerate(zip(mine, theirs, strict=False), start):
        if a != b:
            return f"id {i} is {echo(a)} here but {echo(b) if b else 'absent'} in the collection"
    if len(mine) != len(theirs):
        n = start + min(len(mine), len(theirs))
        longer = "here" if len(mine) > len(theirs) else "in the collection"
        return f"the lists agree up to id {n - 1}, then id {n} exists only {longer}"
    return "the lists are equal"


async def first_difference_paged(mine, size: int, fetch_page, page: int = 10_000) -> str:
    """first_difference against a stored list of `size` paths read in pages: `await fetch_page(offset, limit)`."""
    for offset in range(0, max(len(mine), size), page):
        theirs = list(await fetch_page(offset, min(page, size - offset))) if offset < size else []
        ours = list(mine[offset:offset + page])
        if ours != theirs:
            return first_difference(ours, theirs, start=offset)
    return first_difference(mine, mine)
