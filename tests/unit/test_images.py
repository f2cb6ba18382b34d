
import pytest
from PIL import Image

from services.common.errors import InvalidArgument
from services.common.images import decode_image, encode_image
from testkit.images import png, png_header_only


def test_valid_png_roundtrip():
    img = decode_image(png(16, 12, (10, 20, 30)), "target")
    assert img.size == (16, 12) and img.mode == "RGB"
    assert encode_image(img) == encode_image(decode_image(encode_image(img)))  # deterministic bytes


@pytest.mark.parametrize("data,needle", [
    (b"", "empty"),
    (b"hello, this is a plain text file\n", "not a recognised image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 10, "image"),
])
def test_rejects_non_images(data, needle):
    with pytest.raises(InvalidArgument) as e:
        decode_image(data, "target")
    assert e.value.message.startswith("target:") and needle in e.value.message


def test_rejects_truncated_png():
    data = png(64, 64, (1, 2, 3))
    with pytest.raises(InvalidArgument) as e:
        decode_image(data[: len(data) // 2], "generated")
    assert "generated:" in e.value.message and ("truncated" in e.value.message or "corrupt" in e.value.message)


def test_rejects_decompression_bomb_before_decoding():
    bomb = png_header_only(20000, 20000)
    assert len(bomb) < 200
    with pytest.raises(InvalidArgument) as e:
        decode_image(bomb, "image", max_pixels=40_000_000)
    assert "20000x20000" in e.value.message and "limit" in e.value.message


def test_jpeg_encoding_and_quality():
    img = Image.new("RGB", (32, 32), (200, 10, 10))
    hi, lo = encode_image(img, "JPEG", 95), encode_image(img, "JPEG", 5)
    assert hi[:2] == b"\xff\xd8" and decode_image(hi).size == (32, 32)
    with pytest.raises(InvalidArgument):
        encode_image(img, "TIFF")
    assert lo != hi


def test_check_protos_reads_headers_only():
    """The refiner's validation: a truncated image passes (only its header is read; the Triton
    model, which decodes it once, reports the damage), a missing one, a bomb header and an
    over-budget request do not."""
    from genir.v1 import common_pb2
    from services.common.images import check_protos

    data = png(64, 64, (1, 2, 3))
    check_protos([(common_pb2.Image(data=data[: len(data) // 2]), "target")], 40_000_000, 64_000_000)
    for items, needle in [
        ([(common_pb2.Image(), "target")], "target: required image is missing"),
        ([(common_pb2.Image(data=png_header_only(20000, 20000)), "generated")], "generated: image is 20000x20000"),
        ([(common_pb2.Image(data=png_header_only(5000, 5000)), "target"),
          (common_pb2.Image(data=png_header_only(5000, 5000)), "generated")], "per-request budget"),
    ]:
        with pytest.raises(InvalidArgument) as e:
            check_protos(items, 40_000_000, 40_000_000)
        assert needle in e.value.message, e.value.message
