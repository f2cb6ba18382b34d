"""Generated images: PNG payloads (plain, or only a header announcing a size) and corpora of random
coloured shapes saved under ChatIR-style paths (`unlabeled2017/000000000008.jpg`). Deterministic."""

from __future__ import annotations

import io
import json
import random
import struct
import zlib
from pathlib import Path

from PIL import Image, ImageDraw


def png(width: int = 32, height: int = 32, colour=(200, 40, 40), *, marks=(), mode: str = "RGB",
        optimize: bool = False) -> bytes:
    """A PNG of one colour, with `marks` ((x, y), colour) pixels set on it."""
    img = Image.new(mode, (width, height), colour)
    for xy, mark in marks:
        img.putpixel(xy, mark)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=optimize)
    return buf.getvalue()


def marked_png(colour, size=(48, 40)) -> bytes:
    """A flat-colour PNG with one white pixel, so it is not all one value."""
    return png(*size, colour, marks=[((3, 5), (255, 255, 255))])


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width: int, height: int) -> bytes:
    """A well-formed PNG header announcing width x height, with (almost) no pixel data: a
    decompression bomb is refused from this header alone, before any pixel is inflated."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")


def shape_image(rng: random.Random, width: int, height: int) -> Image.Image:
    colour = lambda: tuple(rng.randrange(256) for _ in range(3))  # noqa: E731
    img = Image.new("RGB", (width, height), colour())
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(2, 6)):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randint(8, width // 2), y0 + rng.randint(8, height // 2)
        kind = rng.choice(("rect", "ellipse", "line"))
        if kind == "rect":
            draw.rectangle((x0, y0, x1, y1), fill=colour())
        elif kind == "ellipse":
            draw.ellipse((x0, y0, x1, y1), fill=colour())
        else:
            draw.line((x0, y0, x1, y1), fill=colour(), width=rng.randint(2, 8))
    return img


def make_corpus(root: Path, n: int, seed: int = 0, size: tuple[int, int] = (96, 72),
                corpus_file: Path | None = None) -> list[str]:
    """Writes n JPEGs under root and returns their relative paths (the corpus list)."""
    rng = random.Random(seed)
    root = Path(root)
    (root / "unlabeled2017").mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        rel = f"unlabeled2017/{8 + 13 * k:012d}.jpg"
        path = root / rel
        if not path.exists():
            shape_image(rng, *size).save(path, format="JPEG", quality=90)
        else:
            shape_image(rng, *size)  # keep the RNG stream identical
        paths.append(rel)
    if corpus_file is not None:
        Path(corpus_file).write_text(json.dumps(paths))
    return paths
