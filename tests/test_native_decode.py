"""The fast decode path against Pillow's: same pixels, or "not handled" with a reason.

brainview.native_decode may take a file only when TensorFlow's decoder returns
exactly what image_files.read_image (Pillow) returns for it; everything it
cannot prove goes to Pillow. Each test writes real files with Pillow (or by
hand where Pillow cannot write the layout) and decodes them both ways.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from brainview import image_files, native_decode

MAX_SIDE = 2048


def _section(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A textured RGB test image (distinct channels, noise so nothing compresses trivially)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width]
    base = 120 + 80 * np.sin(x / 17.0) * np.cos(y / 23.0)
    noise = rng.normal(0, 12, (height, width))
    gray = np.clip(base + noise, 0, 255)
    return np.dstack([gray, gray * 0.7 + 30, 255 - gray]).astype(np.uint8)


def _encoded(image: Image.Image, file_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=file_format, **options)
    return buffer.getvalue()


def _native(data: bytes, max_side: int = MAX_SIDE, target_side: int = MAX_SIDE):
    result = native_decode.decode(tf.constant(data), max_side, target_side)
    return (
        result.pixels.numpy(),
        int(result.width),
        int(result.height),
        bool(result.handled),
        native_decode.DECODER_NAMES[int(result.kind)],
    )


def _pillow(data: bytes, max_side: int = MAX_SIDE, target_side: int = MAX_SIDE):
    return image_files.decode_image_bytes(data, max_side, target_side=target_side)


def _as_rgb(pixels: np.ndarray) -> np.ndarray:
    return np.broadcast_to(pixels, (*pixels.shape[:2], 3))


# --- Taken: the same pixels as Pillow -----------------------------------------------------------

TAKEN = [
    ("PNG", "L", {}, "png", 1),
    ("PNG", "RGB", {}, "png", 3),
    ("PNG", "P", {}, "png", 3),  # palette without transparency: expanded to RGB
    ("PNG", "L", {"optimize": True}, "png", 1),
    ("BMP", "RGB", {}, "bmp", 3),
    ("GIF", "P", {}, "gif", 3),
    ("GIF", "L", {}, "gif", 3),
]


@pytest.mark.parametrize(("file_format", "mode", "options", "kind", "channels"), TAKEN)
def test_lossless_files_taken_by_the_fast_path_decode_exactly_as_pillow(
    file_format, mode, options, kind, channels
):
    image = Image.fromarray(_section(45, 61)).convert(mode)
    data = _encoded(image, file_format, **options)

    pixels, width, height, handled, decoder = _native(data)
    expected = _pillow(data)

    assert handled and decoder == kind
    assert (width, height) == (expected.width, expected.height) == (61, 45)
    assert pixels.shape == (45, 61, channels)
    np.testing.assert_array_equal(_as_rgb(pixels), expected.pixels)


def test_interlaced_png_decodes_exactly(tmp_path):
    path = tmp_path / "interlaced.png"
    # Pillow cannot write Adam7; write one by hand: all 7 passes of a 9x9 gray image.
    gray = _section(9, 9)[..., 0]
    passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2)]
    passes.append((1, 0, 2, 1))
    raw = b""
    for y0, x0, dy, dx in passes:
        sub = gray[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\0" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", 9, 9, 8, 0, 0, 0, 1)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw))
    path.write_bytes(data + _chunk(b"IEND", b""))

    pixels, _, _, handled, _ = _native(path.read_bytes())

    assert handled
    np.testing.assert_array_equal(pixels[..., 0], gray)
    np.testing.assert_array_equal(_as_rgb(pixels), image_files.read_image(path).pixels)


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize(
    ("size", "target_side", "scaled"),
    [
        ((61, 45), MAX_SIDE, (61, 45)),  # small: full scale
        ((1024, 1024), 512, (512, 512)),  # 1/2
        ((2048, 1536), 512, (512, 384)),  # 1/4
        ((2000, 1999), 512, (1000, 1000)),  # 1999 // 512 = 3: only 1/2 still covers 512
        ((4100, 300), 512, (513, 38)),  # 1/8, sides rounded up as libjpeg does
    ],
)
def test_jpeg_matches_pillow_at_the_same_dct_scale(mode, size, target_side, scaled):
    width, height = size
    image = Image.fromarray(_section(height, width, seed=3)).convert(mode)
    data = _encoded(image, "JPEG", quality=90)

    pixels, decoded_width, decoded_height, handled, decoder = _native(data, MAX_SIDE, target_side)
    expected = _pillow(data, MAX_SIDE, target_side)

    assert handled and decoder == "jpeg"
    assert (decoded_width, decoded_height) == (expected.width, expected.height) == size
    assert pixels.shape[:2] == expected.pixels.shape[:2] == (scaled[1], scaled[0])
    assert pixels.shape[2] == (1 if mode == "L" else 3)
    # Both use libjpeg-turbo's accurate integer IDCT: identical here; the tolerance
    # allows another libjpeg build to round a few pixels differently.
    difference = np.abs(_as_rgb(pixels).astype(int) - expected.pixels)
    assert difference.max() <= 2 and difference.mean() < 0.05


def test_progressive_jpeg_matches_pillow():
    data = _encoded(Image.fromarray(_section(300, 200)), "JPEG", quality=85, progressive=True)

    pixels, _, _, handled, _ = _native(data, MAX_SIDE, 128)
    expected = _pillow(data, MAX_SIDE, 128)

    assert handled and pixels.shape == expected.pixels.shape == (150, 100, 3)
    assert np.abs(pixels.astype(int) - expected.pixels).max() <= 2


def test_mean_gray_matches_image_files():
    for pixels in (_section(33, 47), _section(33, 47)[..., :1]):
        expected = image_files.mean_gray(np.ascontiguousarray(_as_rgb(pixels)))
        assert float(native_decode.mean_gray(tf.constant(pixels))) == pytest.approx(
            expected, abs=1e-9
        )


def test_fitted_size_matches_image_files_rounding():
    sizes = [(1, 1), (3000, 2001), (5000, 3001), (2049, 1025), (4100, 300), (1025, 2049)]
    for side in (1, 512, 2048):
        for width, height in sizes:
            fitted = native_decode.fitted_size(tf.constant(width), tf.constant(height), side)
            assert tuple(int(v) for v in fitted) == image_files._fitted_size(width, height, side)


# --- Not taken: Pillow decides ------------------------------------------------------------------


def _png16_gray(height: int = 20, width: int = 30) -> bytes:
    samples = np.arange(height * width, dtype=">u2").reshape(height, width) * 50
    raw = b"".join(b"\0" + row.tobytes() for row in samples)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _with_chunk_before_data(png: bytes, kind: bytes, data: bytes) -> bytes:
    at = png.index(b"IDAT") - 4
    return png[:at] + _chunk(kind, data) + png[at:]


def _top_down_bmp(rgb: np.ndarray) -> bytes:
    data = bytearray(_encoded(Image.fromarray(rgb), "BMP"))
    height = struct.unpack_from("<i", data, 22)[0]
    row_bytes = (rgb.shape[1] * 3 + 3) // 4 * 4
    offset = struct.unpack_from("<I", data, 10)[0]
    rows = [data[offset + i * row_bytes : offset + (i + 1) * row_bytes] for i in range(height)]
    data[offset:] = b"".join(reversed(rows))
    struct.pack_into("<i", data, 22, -height)
    return bytes(data)


def _gif_with_transparency() -> bytes:
    image = Image.fromarray(_section(20, 30)).convert("P")
    used_index = int(np.asarray(image)[0, 0])  # an unused index would be dropped on saving
    data = _encoded(image, "GIF", transparency=used_index, optimize=False)
    assert "transparency" in Image.open(io.BytesIO(data)).info
    return data


NOT_TAKEN = {
    "16-bit PNG": lambda: _png16_gray(),
    "gray + alpha PNG": lambda: _encoded(Image.fromarray(_section(20, 30)).convert("LA"), "PNG"),
    "RGBA PNG": lambda: _encoded(Image.fromarray(_section(20, 30)).convert("RGBA"), "PNG"),
    "palette PNG with transparency": lambda: _encoded(
        Image.fromarray(_section(20, 30)).convert("P"), "PNG", transparency=0
    ),
    "gray PNG with a tRNS chunk": lambda: _with_chunk_before_data(
        _encoded(Image.fromarray(_section(20, 30)[..., 0]), "PNG"), b"tRNS", b"\0\0"
    ),
    "animated PNG": lambda: _encoded(
        Image.fromarray(_section(20, 30)),
        "PNG",
        save_all=True,
        append_images=[Image.fromarray(_section(20, 30, seed=1))],
    ),
    "1-bit PNG": lambda: _encoded(Image.fromarray(_section(20, 30)).convert("1"), "PNG"),
    "CMYK JPEG": lambda: _encoded(Image.fromarray(_section(20, 30)).convert("CMYK"), "JPEG"),
    "8-bit palette BMP": lambda: _encoded(Image.fromarray(_section(20, 30)).convert("L"), "BMP"),
    "32-bit BMP": lambda: _encoded(Image.fromarray(_section(20, 30)).convert("RGBA"), "BMP"),
    "top-down BMP": lambda: _top_down_bmp(_section(20, 30)),
    "GIF with a transparent colour": _gif_with_transparency,
    "TIFF": lambda: _encoded(Image.fromarray(_section(20, 30)), "TIFF"),
    "WebP": lambda: _encoded(Image.fromarray(_section(20, 30)), "WEBP", lossless=True),
    "text": lambda: b"not an image at all\n",
    "empty": lambda: b"",
}


@pytest.mark.parametrize("case", sorted(NOT_TAKEN))
def test_layouts_the_fast_path_cannot_prove_go_to_pillow(case):
    data = NOT_TAKEN[case]()
    if case == "WebP" and not data:
        pytest.skip("no WebP support")

    pixels, _, _, handled, _ = _native(data)

    assert not handled, case
    assert pixels.shape == (1, 1, 1)


def test_images_that_pillow_would_resize_go_to_pillow():
    png = _encoded(Image.fromarray(_section(40, 70)), "PNG")
    assert _native(png, max_side=70)[3]
    assert not _native(png, max_side=69)[3]
    # A JPEG whose DCT-scaled size still exceeds max_side is resized by Pillow.
    jpeg = _encoded(Image.fromarray(_section(300, 1000)), "JPEG")
    assert _native(jpeg, max_side=500, target_side=500)[3]  # 1/2 scale: exactly 500
    assert not _native(jpeg, max_side=400, target_side=400)[3]  # 1/2 = 500 > 400: resized
    assert _native(jpeg, max_side=400, target_side=200)[3]  # 1/4 = 250 covers 200


@pytest.mark.parametrize("file_format", ["PNG", "JPEG"])
def test_corrupt_files_raise_instead_of_returning_pixels(file_format):
    """A decoder failure must surface as an op error (scan_input then asks Pillow)."""
    data = _encoded(Image.fromarray(_section(64, 64)), file_format)
    truncated = data[: len(data) // 2]

    with pytest.raises(tf.errors.InvalidArgumentError):
        _native(truncated)
    with pytest.raises(image_files.ImageReadError, match="cannot decode image data"):
        _pillow(truncated)
