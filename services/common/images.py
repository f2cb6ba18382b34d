"""Image decoding with validation, and deterministic encoding.

Decoding rejects, with InvalidArgument naming the field: empty payloads, bytes that are not an
image, truncated or corrupt files, and images whose header announces more pixels than the cap
(decompression bombs are refused before any pixel is decoded).
"""

from __future__ import annotations

import asyncio
import io
import warnings

from PIL import Image, ImageFile, UnidentifiedImageError

from services.common.errors import InvalidArgument

DEFAULT_MAX_PIXELS = 40_000_000
# Pixels of all images of one request together (headers are read first, nothing is decoded
# beyond it), and decodes running at once per process: decoded RGB costs 3 bytes a pixel, so
# one process holds at most DECODE_SLOTS * DEFAULT_MAX_REQUEST_PIXELS * 3 bytes of decoded images.
DEFAULT_MAX_REQUEST_PIXELS = 64_000_000
DECODE_SLOTS = 2
_slots: asyncio.Semaphore | None = None
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Our own cap (below) replaces PIL's global one, so the message can say what the limit is.
Image.MAX_IMAGE_PIXELS = None

MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif", "BMP": "image/bmp"}


def _open_header(data: bytes, field: str) -> Image.Image:
    if data is None or len(data) == 0:
        raise InvalidArgument(f"{field}: image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        raise InvalidArgument(f"{field}: not a recognised image ({len(data)} bytes; expected PNG, JPEG or WebP)") from None
    except Exception as e:  # noqa: BLE001 - header parse errors of any kind
        raise InvalidArgument(f"{field}: unreadable image header ({type(e).__name__})") from None


def header_pixels(data: bytes, field: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """Pixels the header announces, checked against the per-image cap; nothing is decoded."""
    width, height = _open_header(data, field).size
    if width <= 0 or height <= 0:
        raise InvalidArgument(f"{field}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidArgument(f"{field}: image is {width}x{height} = {width * height} pixels, "
                              f"over the limit of {max_pixels} pixels")
    return width * height


def check_request_pixels(items, max_pixels: int, max_request_pixels: int) -> None:
    """items: (bytes, field) of one request; refuses the request when their headers sum over the budget."""
    check_pixel_budget([header_pixels(data, field, max_pixels) for data, field in items], max_request_pixels)


def check_pixel_budget(pixels: list[int], max_request_pixels: int) -> None:
    """Refuses one request whose images (their checked pixel counts) sum over the budget."""
    total = sum(pixels)
    if total > max_request_pixels:
        raise InvalidArgument(f"images: {len(pixels)} image(s) of {total} pixels in all, over the per-request "
                              f"budget of {max_request_pixels} pixels; send fewer or smaller images per call")


def check_protos(items, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS) -> None:
    """What can be checked of (genir.v1.Image, field) pairs from their headers alone: present, a
    known format, each within the pixel cap, all within the request budget. Nothing is decoded."""
    for msg, field in items:
        if not msg.data or msg.sha256:
            decode_proto(msg, field, max_pixels)    # the missing/ref-only/sha256 message, in words
    check_request_pixels([(msg.data, field) for msg, field in items], max_pixels, max_request_pixels)


async def decode_protos(items, max_pixels: int = DEFAULT_MAX_PIXELS,
                        max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS) -> list[Image.Image]:
    """Decode (genir.v1.Image, field) pairs of one request: budget first (headers only), then the
    pixels on a worker thread, at most DECODE_SLOTS requests at a time, so the event loop (and
    with it the health service) never waits on a decode."""
    global _slots
    check_protos(items, max_pixels, max_request_pixels)
    if _slots is None:
        _slots = asyncio.Semaphore(DECODE_SLOTS)
    async with _slots:
        return await asyncio.to_thread(lambda: [decode_image(msg.data, field, max_pixels) for msg, field in items])


def decode_image(data: bytes, field: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS,
                 mode: str = "RGB") -> Image.Image:
    img = _open_header(data, field)
    width, height = img.size
    if width <= 0 or height <= 0:
        raise InvalidArgument(f"{field}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidArgument(f"{field}: image is {width}x{height} = {width * height} pixels, "
                              f"over the limit of {max_pixels} pixels")
    try:
        img.load()
    except Exception as e:  # noqa: BLE001 - truncated streams raise OSError, corrupt ones others
        raise InvalidArgument(f"{field}: truncated or corrupt {img.format or 'image'} data ({e})") from None
    return img.convert(mode) if img.mode != mode else img


def encode_image(img: Image.Image, fmt: str = "PNG", quality: int = 90) -> bytes:
    """PNG (lossless, no metadata: same pixels -> same bytes) or JPEG at `quality`."""
    buf = io.BytesIO()
    fmt = fmt.upper()
    if fmt == "PNG":
        img.save(buf, format="PNG", compress_level=6)
    elif fmt in ("JPEG", "JPG"):
        img.convert("RGB").save(buf, format="JPEG", quality=int(quality))
    else:
        raise InvalidArgument(f"output_format: unsupported {fmt!r} (PNG or JPEG)")
    return buf.getvalue()


def mime_type(fmt: str) -> str:
    return MIME.get(fmt.upper().replace("JPG", "JPEG"), "application/octet-stream")


def to_proto(data: bytes, fmt: str, width: int, height: int):
    from genir.v1 import common_pb2

    return common_pb2.Image(data=data, mime_type=mime_type(fmt), width=width, height=height)


def decode_proto(msg, field: str, max_pixels: int = DEFAULT_MAX_PIXELS, required: bool = True):
    """Decode a genir.v1.Image message; None when absent and not required. Only the refiner keeps
    images by hash (services/refiner/image_cache.py); here a sha256 is refused, never ignored."""
    if msg is not None and msg.sha256:
        raise InvalidArgument(f"{field}: images named by sha256 are accepted by the refiner only; "
                              f"send the bytes in data")
    if msg is None or not msg.data:
        if required:
            if msg is not None and msg.ref:
                raise InvalidArgument(f"{field}: image references are not accepted here; send the bytes in data")
            raise InvalidArgument(f"{field}: required image is missing")
        return None
    return decode_image(msg.data, field, max_pixels)
