"""A folder of photos as a corpus: the sorted list of its images, written as a ChatIR corpus JSON.

`genir index --corpus DIR` and `genir up --corpus DIR` call `resolve_corpus`, which checks the
inputs up front (one-line CorpusInputError messages, no tracebacks) and, for a folder, writes the
list that the indexer, the orchestrator and `genir eval` read. Ids are positions in that list,
which is sorted by relative path so the same folder gives the same list.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

BASE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
HEIF_EXTENSIONS = (".heic", ".heif")


class CorpusInputError(ValueError):
    """Bad --corpus / --image-root; the message is one line for the console."""


def register_heif() -> bool:
    """Let Pillow open HEIC/HEIF (iPhone photos) when pillow-heif is installed; True if it is."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def extensions() -> tuple[str, ...]:
    return BASE_EXTENSIONS + (HEIF_EXTENSIONS if register_heif() else ())


def list_images(folder: str | Path) -> list[str]:
    """Relative POSIX paths of the supported images under `folder`, recursively, sorted.
    Hidden files and folders (".thumbnails", ".DS_Store") are left out."""
    root = Path(folder)
    exts = extensions()
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(exts):
                found.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(found)


def write_corpus(folder: str | Path, out: str | Path) -> list[str]:
    paths = list_images(folder)
    if not paths:
        raise CorpusInputError(f"--corpus {folder}: no images found (looked for {', '.join(extensions())})")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(paths, indent=0))
    os.replace(tmp, out)
    return paths


def resolve_corpus(corpus: str | Path, image_root: str | Path | None, list_out: str | Path) -> tuple[Path, Path, int]:
    """(corpus JSON, image root, number of images) for a corpus file or a folder of photos.

    A folder is listed into `list_out` and is its own image root. A file needs an existing
    --image-root folder and must be a valid corpus list.
    """
    from orchestrator.datasets import DatasetError, load_corpus

    path = Path(corpus).expanduser()
    if not path.exists():
        raise CorpusInputError(f"--corpus {corpus}: no such file or folder")
    if path.is_dir():
        if image_root and Path(image_root).expanduser().resolve() != path.resolve():
            raise CorpusInputError(f"--corpus {corpus} is a folder, which is its own image root; "
                                   f"drop --image-root {image_root}")
        paths = write_corpus(path, list_out)
        return Path(list_out).resolve(), path.resolve(), len(paths)
    if not image_root:
        raise CorpusInputError(f"--corpus {corpus}: a corpus file needs --image-root (the folder its paths are "
                               "relative to); or pass a folder of photos as --corpus")
    root = Path(image_root).expanduser()
    if not root.is_dir():
        raise CorpusInputError(f"--image-root {image_root}: no such folder")
    try:
        n = len(load_corpus(path))
    except DatasetError as e:
        raise CorpusInputError(str(e)) from None
    return path.resolve(), root.resolve(), n
