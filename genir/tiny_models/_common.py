"""Shared helpers: seeding, and building a model folder atomically with a completion marker."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

MARKER = ".genir-tiny.json"
# Bump whenever a builder's output changes, so existing folders are rebuilt.
BUILDER_VERSION = 2


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed python, numpy and torch for the duration of the block, then restore the caller's RNG state."""
    import numpy as np
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def list_files(root: Path) -> list[str]:
    """Relative POSIX paths of every regular file under ``root`` (sorted, marker excluded)."""
    out = []
    for p in root.rglob("*"):
        if p.is_file() and p.name != MARKER:
            out.append(p.relative_to(root).as_posix())
    return sorted(out)


def read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def is_complete(folder: Path, name: str, seed: int) -> bool:
    """True when ``folder`` holds a finished build of ``name`` for ``seed`` by this builder version."""
    marker = read_marker(folder)
    if not marker or marker.get("model") != name or marker.get("seed") != seed:
        return False
    if marker.get("builder_version") != BUILDER_VERSION:
        return False
    files = marker.get("files") or {}
    if not files:
        return False
    for rel, digest in files.items():
        p = folder / rel
        if not p.is_file() or sha256_file(p) != digest:
            return False
    return True


def _library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("torch", "transformers", "diffusers", "tokenizers"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def _write_marker(folder: Path, name: str, seed: int) -> None:
    marker = {
        "builder": "genir.tiny_models",
        "builder_version": BUILDER_VERSION,
        "model": name,
        "seed": seed,
        "files": {rel: sha256_file(folder / rel) for rel in list_files(folder)},
        # informational: weights are byte-identical only under the same torch version
        # (e.g. trunc_normal_ init changed between torch 2.11 and 2.13)
        "versions": _library_versions(),
    }
    (folder / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")


def _remove_stale(out_dir: Path, name: str, max_age_s: float = 3600.0) -> None:
    """Remove leftovers of crashed builds (old enough not to belong to a build in progress)."""
    now = time.time()
    for pattern in (f".{name}.tmp-*", f".{name}.old-*"):
        for p in out_dir.glob(pattern):
            with contextlib.suppress(OSError):
                if now - p.stat().st_mtime > max_age_s:
                    shutil.rmtree(p, ignore_errors=True)


def build_atomically(
    out_dir: Path, name: str, seed: int, builder: Callable[[Path, int], None], force: bool = False
) -> Path:
    """Build ``out_dir/name`` with ``builder(staging_path, seed)`` unless a complete one exists.

    The model is written to a hidden staging folder next to the target, stamped with the
    marker, then renamed into place, so readers never see a half-written folder and a crash
    leaves at most a stale ``.name.tmp-*`` folder behind (removed on the next build).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / name
    if not force and is_complete(final, name, seed):
        return final
    _remove_stale(out_dir, name)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging = out_dir / f".{name}.tmp-{token}"
    staging.mkdir()
    try:
        builder(staging, seed)
        _write_marker(staging, name, seed)
        if final.exists():
            if not force and is_complete(final, name, seed):  # another process won the race
                shutil.rmtree(staging)
                return final
            trash = out_dir / f".{name}.old-{token}"
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(staging, final)
        except OSError:
            if final.exists() and is_complete(final, name, seed):  # lost a race after all
                shutil.rmtree(staging, ignore_errors=True)
                return final
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final
