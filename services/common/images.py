"""Image decoding with validation, and deterministic encoding.

Decoding rejects, with InvalidArgument naming the field: empty payloads, bytes that are not an
image, truncated or corrupt files, and images whose header announces more pixels than the cap
(decompression bombs are refused before any pixel is decoded).
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageFile, UnidentifiedImageError

from services.common.errors import InvalidArgument

DEFAULT_MAX_PIXELS = 40_000_000
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Our own cap (below) replaces PIL's global one, so the message can say what the limit is.
Image.MAX_IMAGE_PIXELS = None

MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif", "BMP": "image/bmp"}


def decode_image(data: bytes, field: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS,
                 mode: str = "RGB") -> Image.Image:
    if data is None or len(data) == 0:
        raise InvalidArgument(f"{field}: image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        raise InvalidArgument(f"{field}: not a recognised image ({len(data)} bytes; expected PNG, JPEG or WebP)") from None
    except Exception as e:  # noqa: BLE001 - header parse errors of any kind
        raise InvalidArgument(f"{field}: unreadable image header ({type(e).__name__})") from None
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
    """Decode a genir.v1.Image message; None when absent and not required."""
    if msg is None or not msg.data:
        if required:
            if msg is not None and msg.ref:
                raise InvalidArgument(f"{field}: image references are not accepted here; send the bytes in data")
            raise InvalidArgument(f"{field}: required image is missing")
        return None
    return decode_image(msg.data, field, max_pixels)
