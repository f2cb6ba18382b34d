"""Generated test images: random coloured shapes on coloured backgrounds, saved under ChatIR-style
paths (`unlabeled2017/000000000008.jpg`). Deterministic for a given seed."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw


def marked_png(colour, size=(48, 40)) -> bytes:
    """A flat-colour PNG with one white pixel, so it is not all one value."""
    buf = io.BytesIO()
    img = Image.new("RGB", size, colour)
    img.putpixel((3, 5), (255, 255, 255))
    img.save(buf, format="PNG")
    return buf.getvalue()


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
