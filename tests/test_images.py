"""Decoding whatever a dataset holds into 8-bit RGB: ``open_image`` and ``to_rgb``."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from img_search.images import ImageDecodeError, open_image, to_rgb
from img_search.testing.fixtures import jpeg_bytes, synthetic_image


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def palette_image() -> Image.Image:
    """2x1 palette image: index 0 = red, index 1 = blue."""
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    return image


# -- modes ---------------------------------------------------------------------


def test_rgb_passes_through_unchanged() -> None:
    image = synthetic_image(1, size=(17, 9))
    out = to_rgb(image)
    assert out.mode == "RGB"
    assert out.size == (17, 9)
    np.testing.assert_array_equal(pixels(out), pixels(image))
    # Lossless round trip through open_image keeps every pixel.
    decoded = open_image(encode(image, "PNG"))
    assert decoded.mode == "RGB"
    np.testing.assert_array_equal(pixels(decoded), pixels(image))


def test_grayscale_becomes_rgb_with_equal_channels() -> None:
    gray = np.array([[0, 50, 128], [200, 254, 255]], dtype=np.uint8)
    out = open_image(encode(Image.fromarray(gray, "L"), "PNG"))
    assert out.mode == "RGB"
    array = pixels(out)
    assert array.shape == (2, 3, 3)
    for channel in range(3):
        np.testing.assert_array_equal(array[..., channel], gray)


def test_palette_without_transparency_keeps_its_colours() -> None:
    out = open_image(encode(palette_image(), "PNG"))
    assert out.mode == "RGB"
    assert pixels(out).tolist() == [[[255, 0, 0], [0, 0, 255]]]


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparent_index_becomes_white(fmt: str) -> None:
    data = encode(palette_image(), fmt, transparency=1)
    assert Image.open(io.BytesIO(data)).mode == "P"
    out = open_image(data)
    assert out.mode == "RGB"
    assert pixels(out).tolist() == [[[255, 0, 0], [255, 255, 255]]]


def test_rgba_transparent_pixel_becomes_white_and_opaque_kept() -> None:
    rgba = np.array(
        [[[10, 20, 30, 255], [10, 20, 30, 0], [200, 100, 0, 128]]],
        dtype=np.uint8,
    )
    out = open_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out.mode == "RGB"
    array = pixels(out).astype(int)
    assert array[0, 0].tolist() == [10, 20, 30]  # opaque: unchanged
    assert array[0, 1].tolist() == [255, 255, 255]  # fully transparent: white
    # Half transparent: blended halfway towards white.
    expected = np.array([200, 100, 0]) * 128 / 255 + 255 * (1 - 128 / 255)
    np.testing.assert_allclose(array[0, 2], expected, atol=2)


def test_la_becomes_rgb_with_white_background() -> None:
    la = np.array([[[10, 255], [10, 0], [90, 255]]], dtype=np.uint8)
    data = encode(Image.fromarray(la, "LA"), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "LA"
    out = open_image(data)
    assert out.mode == "RGB"
    assert pixels(out).tolist() == [[[10, 10, 10], [255, 255, 255], [90, 90, 90]]]


def test_cmyk_jpeg_becomes_rgb() -> None:
    # C=0, M=Y=255, K=0 is pure red.
    data = encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = open_image(data)
    assert out.mode == "RGB"
    assert out.size == (8, 8)
    np.testing.assert_allclose(pixels(out)[4, 4].astype(int), [255, 0, 0], atol=3)


def test_16_bit_grayscale_scales_to_8_bit() -> None:
    wide = np.array([[0, 65535], [32768, 257]], dtype=np.uint16)
    data = encode(Image.fromarray(wide), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = open_image(data)
    assert out.mode == "RGB"
    array = pixels(out)
    assert array.dtype == np.uint8
    assert array[0, 0].tolist() == [0, 0, 0]
    assert array[0, 1].tolist() == [255, 255, 255]
    assert array[1, 0].tolist() == [128, 128, 128]
    assert array[1, 1].tolist() == [1, 1, 1]


def test_16_bit_dark_image_is_not_stretched() -> None:
    """A dim 16-bit image stays dim: scaling is by the 16-bit range, not by the image maximum."""
    wide = np.array([[0, 1000]], dtype=np.uint16)
    out = open_image(encode(Image.fromarray(wide), "PNG"))
    assert pixels(out)[0, 1].tolist() == [4, 4, 4]  # 1000 / 65535 * 255 ≈ 3.9


def test_one_pixel_image_decodes_to_its_pixel() -> None:
    out = open_image(encode(Image.new("RGB", (1, 1), (7, 8, 9)), "PNG"))
    assert out.size == (1, 1)
    assert pixels(out).tolist() == [[[7, 8, 9]]]


def test_a_pil_image_in_another_mode_becomes_rgb() -> None:
    out = open_image(Image.new("L", (3, 2), 77))
    assert out.mode == "RGB"
    assert (pixels(out) == 77).all()


# -- source kinds ----------------------------------------------------------------


@pytest.fixture
def png_file(tmp_path: Path) -> tuple[Path, np.ndarray]:
    image = synthetic_image(5, size=(13, 11))
    path = tmp_path / "picture.png"
    image.save(path)
    return path, pixels(image)


def test_bytes_bytearray_and_memoryview_decode_to_the_same_pixels(
    png_file: tuple[Path, np.ndarray],
) -> None:
    path, expected = png_file
    np.testing.assert_array_equal(pixels(open_image(path.read_bytes())), expected)
    np.testing.assert_array_equal(pixels(open_image(bytearray(path.read_bytes()))), expected)
    np.testing.assert_array_equal(pixels(open_image(memoryview(path.read_bytes()))), expected)


def test_str_and_path_decode_to_the_same_pixels(png_file: tuple[Path, np.ndarray]) -> None:
    path, expected = png_file
    np.testing.assert_array_equal(pixels(open_image(str(path))), expected)
    np.testing.assert_array_equal(pixels(open_image(path)), expected)


def test_hub_record_decodes_from_bytes_or_path_and_bytes_win(
    png_file: tuple[Path, np.ndarray],
) -> None:
    path, expected = png_file
    from_bytes = open_image({"bytes": path.read_bytes(), "path": None})
    np.testing.assert_array_equal(pixels(from_bytes), expected)
    from_path = open_image({"bytes": None, "path": str(path)})
    np.testing.assert_array_equal(pixels(from_path), expected)
    # Bytes win over a path (the Hub stores the original file name next to the bytes).
    both = open_image({"bytes": path.read_bytes(), "path": "does/not/exist.png"})
    np.testing.assert_array_equal(pixels(both), expected)


def test_jpeg_decodes_to_expected_size() -> None:
    image = synthetic_image(9, size=(31, 23))
    out = open_image(jpeg_bytes(image, quality=95))
    assert out.mode == "RGB"
    assert out.size == (31, 23)
    # Exactly what PIL decodes, and close to the original despite JPEG loss.
    reference = Image.open(io.BytesIO(jpeg_bytes(image, quality=95))).convert("RGB")
    np.testing.assert_array_equal(pixels(out), pixels(reference))
    diff = np.abs(pixels(out).astype(int) - pixels(image).astype(int))
    assert diff.mean() < 15


# -- errors ----------------------------------------------------------------------


def test_zero_byte_file_is_refused_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="0 bytes") as info:
        open_image(path)
    assert str(path) in str(info.value)


def test_zero_bytes_in_memory_are_refused() -> None:
    with pytest.raises(ImageDecodeError, match="0 bytes"):
        open_image(b"")
    with pytest.raises(ImageDecodeError, match="0 bytes"):
        open_image({"bytes": b"", "path": None})


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "missing.jpg"
    with pytest.raises(ImageDecodeError, match="not found") as info:
        open_image(str(path))
    assert str(path) in str(info.value)
    with pytest.raises(ImageDecodeError) as info:
        open_image({"bytes": None, "path": str(path)})
    assert str(path) in str(info.value)


def test_record_without_bytes_or_path_is_refused() -> None:
    with pytest.raises(ImageDecodeError, match="neither bytes nor a path"):
        open_image({"bytes": None, "path": None})


def test_unsupported_source_type_is_refused_naming_the_type() -> None:
    with pytest.raises(ImageDecodeError, match="int"):
        open_image(12345)


def test_truncated_jpeg_bytes_are_refused_as_truncated() -> None:
    data = jpeg_bytes(synthetic_image(3, size=(64, 64)))
    with pytest.raises(ImageDecodeError, match="truncated"):
        open_image(data[: len(data) // 2])


def test_truncated_jpeg_file_is_refused_as_truncated(tmp_path: Path) -> None:
    data = jpeg_bytes(synthetic_image(3, size=(64, 64)))
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="truncated"):
        open_image(path)


def test_a_text_file_named_jpg_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageDecodeError, match="cannot identify image file") as info:
        open_image(path)
    assert "notes.jpg" in str(info.value)


def test_pixel_limit_refuses_above_it_and_decodes_at_or_under_it() -> None:
    data = encode(Image.new("RGB", (20, 20), (1, 2, 3)), "PNG")
    with pytest.raises(ImageDecodeError) as info:
        open_image(data, max_pixels=100)
    message = str(info.value)
    assert "20x20" in message
    assert "100 pixels" in message
    # At or under the limit it decodes.
    assert open_image(data, max_pixels=400).size == (20, 20)
    assert open_image(data, max_pixels=None).size == (20, 20)


def test_decode_error_is_a_value_error() -> None:
    # The run machinery catches ValueError-family errors per item.
    assert issubclass(ImageDecodeError, ValueError)


def open_descriptors_of(path: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                found.append(fd)
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("case", ["truncated", "too_many_pixels"])
def test_failed_decode_closes_the_file(tmp_path: Path, case: str) -> None:
    path = tmp_path / "bad.jpg"
    data = jpeg_bytes(synthetic_image(3, size=(64, 64)))
    path.write_bytes(data[: len(data) // 2] if case == "truncated" else data)
    said = "exceeds the limit of 100 pixels" if case == "too_many_pixels" else "truncated"
    with pytest.raises(ImageDecodeError, match=said):
        open_image(path, max_pixels=100 if case == "too_many_pixels" else None)
    assert open_descriptors_of(path) == []


def test_the_pixel_limit_governs_in_both_directions() -> None:
    """Issue 15.3: above Pillow's own 89 Mpx warning, the configured limit decides, not Pillow."""
    data = encode(Image.new("1", (12_000, 8_000)), "PNG")  # 96 Mpx in a few kB
    assert open_image(data, max_pixels=200_000_000).size == (12_000, 8_000)
    with pytest.raises(ImageDecodeError, match="12000x8000 pixels exceeds the limit of 50000000"):
        open_image(data, max_pixels=50_000_000)


def test_the_resize_target_is_checked_before_decoding() -> None:
    """Issue 15.2: a 2,500,000 x 16 strip is small, the shorter-side resize of it is not."""
    from img_search.embedding.efficientnet import ResizeCropNormalize

    strip = encode(Image.new("L", (2_500_000, 16)), "PNG")
    resize_to = ResizeCropNormalize().resize_target
    with pytest.raises(ImageDecodeError, match="would be resized to 40000000x256") as info:
        open_image(strip, resize_to=resize_to)
    assert "tasks.max_image_pixels" in str(info.value)
    photo = encode(Image.new("RGB", (640, 480)), "PNG")
    assert open_image(photo, resize_to=resize_to).size == (640, 480)


def test_draft_decodes_a_large_jpeg_at_a_fraction_of_its_size() -> None:
    """For thumbnails: the JPEG decoder scales by 1/2 to 1/8, keeping at least the asked size."""
    data = jpeg_bytes(synthetic_image(3, size=(1600, 1200)))
    assert open_image(data, draft=(256, 256)).size == (400, 300)
    assert open_image(data).size == (1600, 1200)
