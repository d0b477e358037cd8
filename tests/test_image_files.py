"""The shared image reader: formats, bit depths, alpha, huge images, errors, helpers.

Every fixture file is generated in `tmp_path`. Pillow cannot write 16-bit colour,
so small TIFF and PNG writers below produce those byte by byte.

Measured on the 2-core dev VM (Pillow 13, NumPy 2.4): decoding the 20000x20000
8-bit gray PNG of `test_huge_png_is_decoded_downscaled_with_bounded_memory`
takes 1.0-1.5 s and peaks 419 MB above the interpreter's baseline (one 400 MB
gray frame); `read_image` of a 512x512 gray PNG takes ~3.0 ms, of a gray JPEG
~1.7 ms.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import struct
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, JpegImagePlugin, features

from brainview import image_files
from brainview.image_files import ImageReadError

RNG_SEED = 1234


# --- Fixture writers ----------------------------------------------------------------------------


def _pattern_rgb(width: int = 37, height: int = 23) -> np.ndarray:
    """A small non-square RGB test pattern with distinct values per channel."""
    y, x = np.mgrid[:height, :width]
    return np.dstack([(x * 7) % 256, (y * 11) % 256, (x * y) % 256]).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(width: int, height: int, bit_depth: int, color_type: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)


def _png_without_pixels(width: int, height: int) -> bytes:
    """An 8-bit gray PNG whose header declares width x height, with no real pixel data."""
    return (
        _png_header(width, height, 8, 0)
        + _png_chunk(b"IDAT", zlib.compress(b""))
        + _png_chunk(b"IEND", b"")
    )


def _write_png16(path: os.PathLike, samples: np.ndarray) -> None:
    """A 16-bit PNG of HxW (gray), HxWx2 (gray+alpha), HxWx3 (RGB) or HxWx4 (RGBA) samples."""
    height, width = samples.shape[:2]
    channels = 1 if samples.ndim == 2 else samples.shape[2]
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = samples.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)  # filter type 0 on every row
    data = _png_header(width, height, 16, color_type) + _png_chunk(b"IDAT", zlib.compress(raw))
    with open(path, "wb") as file:
        file.write(data + _png_chunk(b"IEND", b""))


def _write_huge_gray_png(path: os.PathLike, side: int) -> None:
    """A side x side 8-bit gray PNG, left half 0 and right half 255, streamed to a small file.

    Every row after the first is "same as above" (PNG filter 2 on zero bytes),
    so neither writing nor the file needs more than a few rows of memory.
    """
    first_row = np.zeros(side, np.uint8)
    first_row[side // 2 :] = 255
    same_as_above = (b"\x02" + bytes(side)) * 1000
    compressor = zlib.compressobj(1)
    parts = [compressor.compress(b"\0" + first_row.tobytes())]
    for start in range(1, side, 1000):
        rows = min(1000, side - start)
        parts.append(compressor.compress(same_as_above[: rows * (side + 1)]))
    parts.append(compressor.flush())
    with open(path, "wb") as file:
        file.write(_png_header(side, side, 8, 0))
        file.write(_png_chunk(b"IDAT", b"".join(parts)))
        file.write(_png_chunk(b"IEND", b""))


def _write_tiff(
    path: os.PathLike,
    samples: np.ndarray,
    *,
    big_endian: bool = False,
    planar: bool = False,
    deflate: bool = False,
    extra_samples: tuple[int, ...] = (),
) -> None:
    """A baseline one-page TIFF of HxW or HxWxC uint8/uint16 samples, one strip per plane."""
    order = ">" if big_endian else "<"
    height, width = samples.shape[:2]
    channels = 1 if samples.ndim == 2 else samples.shape[2]
    ordered = samples.astype(samples.dtype.newbyteorder(order))
    if planar:
        strips = [np.ascontiguousarray(ordered[..., c]).tobytes() for c in range(channels)]
    else:
        strips = [ordered.tobytes()]
    if deflate:
        strips = [zlib.compress(strip) for strip in strips]
    short, long = 3, 4
    entries = [
        (256, long, [width]),
        (257, long, [height]),
        (258, short, [samples.dtype.itemsize * 8] * channels),
        (259, short, [8 if deflate else 1]),
        (262, short, [1 if channels < 3 else 2]),  # min-is-black or RGB
        (273, long, [0] * len(strips)),  # strip offsets, filled in below
        (277, short, [channels]),
        (278, long, [height]),
        (279, long, [len(strip) for strip in strips]),
        (284, short, [2 if planar else 1]),
    ]
    if extra_samples:
        entries.append((338, short, list(extra_samples)))
    # Layout: header, IFD, values longer than 4 bytes, strips.
    ifd_end = 8 + 2 + 12 * len(entries) + 4

    def packed(kind: int, values: list[int]) -> bytes:
        return struct.pack(order + ("H" if kind == short else "I") * len(values), *values)

    long_values_size = sum(len(packed(k, v)) for _, k, v in entries if len(packed(k, v)) > 4)
    offset = ifd_end + long_values_size
    strip_offsets = []
    for strip in strips:
        strip_offsets.append(offset)
        offset += len(strip)
    entries[5] = (273, long, strip_offsets)
    ifd = struct.pack(order + "H", len(entries))
    long_values = b""
    for tag, kind, values in entries:
        value = packed(kind, values)
        if len(value) <= 4:
            field = value.ljust(4, b"\0")
        else:
            field = struct.pack(order + "I", ifd_end + len(long_values))
            long_values += value
        ifd += struct.pack(order + "HHI", tag, kind, len(values)) + field
    header = (b"MM" if big_endian else b"II") + struct.pack(order + "HI", 42, 8)
    with open(path, "wb") as file:
        file.write(header + ifd + struct.pack(order + "I", 0) + long_values + b"".join(strips))


def _expected_stretch(samples: np.ndarray) -> np.ndarray:
    """The documented 16-bit mapping, computed independently with numpy.percentile."""
    finite = samples[np.isfinite(samples)] if samples.dtype.kind == "f" else samples
    low, high = np.percentile(finite, [0.5, 99.5])
    return image_files.scale_to_uint8(samples, low, high)


def _gray_as_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., np.newaxis], 3, axis=2)


def _read_error(path: str | bytes | os.PathLike) -> ImageReadError:
    with pytest.raises(ImageReadError) as caught:
        image_files.read_image(path)
    assert "\n" not in str(caught.value)
    return caught.value


# --- Formats and modes --------------------------------------------------------------------------

LOSSLESS_CASES = [
    ("PNG", "1"),
    ("PNG", "L"),
    ("PNG", "P"),
    ("PNG", "RGB"),
    ("PNG", "LA"),
    ("PNG", "RGBA"),
    ("BMP", "1"),
    ("BMP", "L"),
    ("BMP", "P"),
    ("BMP", "RGB"),
    ("GIF", "P"),
    ("GIF", "L"),
    ("TIFF", "1"),
    ("TIFF", "L"),
    ("TIFF", "LA"),
    ("TIFF", "P"),
    ("TIFF", "RGB"),
    ("TIFF", "RGBA"),
    ("TIFF", "CMYK"),
    ("WEBP", "RGB"),
    ("WEBP", "RGBA"),
]


@pytest.mark.parametrize(("format_name", "mode"), LOSSLESS_CASES)
def test_lossless_formats_and_modes_decode_exactly(tmp_path, format_name, mode):
    if format_name == "WEBP" and not features.check("webp"):
        pytest.skip("this Pillow build has no WebP support")
    image = Image.fromarray(_pattern_rgb()).convert(mode)  # any alpha is fully opaque
    path = tmp_path / f"image.{format_name.lower()}"
    image.save(path, format_name, **({"lossless": True} if format_name == "WEBP" else {}))

    decoded = image_files.read_image(path)

    np.testing.assert_array_equal(decoded.pixels, np.asarray(image.convert("RGB")))
    assert (decoded.width, decoded.height, decoded.frames) == (37, 23, 1)


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK"])
def test_jpeg_matches_pillows_own_decode(tmp_path, mode):
    path = tmp_path / "image.jpg"
    Image.fromarray(_pattern_rgb()).convert(mode).save(path, quality=90)
    with Image.open(path) as reference:
        expected = np.asarray(reference.convert("RGB"))

    np.testing.assert_array_equal(image_files.read_image(path).pixels, expected)


def test_pixels_are_read_only_contiguous_rgb_uint8(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(_pattern_rgb()[..., 0]).save(path)

    pixels = image_files.read_image(path).pixels

    assert pixels.dtype == np.uint8 and pixels.shape == (23, 37, 3)
    assert pixels.flags.c_contiguous and not pixels.flags.writeable


def test_decode_image_bytes_matches_read_image(tmp_path):
    path = tmp_path / "image.png"
    Image.fromarray(_pattern_rgb()).save(path)

    from_bytes = image_files.decode_image_bytes(path.read_bytes())

    np.testing.assert_array_equal(from_bytes.pixels, image_files.read_image(path).pixels)


# --- More than 8 bits per sample ----------------------------------------------------------------


@pytest.mark.parametrize("max_value", [4095, 65535])
@pytest.mark.parametrize("container", ["tiff", "tiff_big_endian", "png"])
def test_16bit_gray_uses_full_range_monotonically(tmp_path, max_value, container):
    values = np.linspace(0, max_value, 48 * 64).round().astype(np.uint16)
    np.random.default_rng(RNG_SEED).shuffle(values)
    samples = values.reshape(48, 64)
    path = tmp_path / ("image.png" if container == "png" else "image.tif")
    stored = samples.astype(">u2") if container == "tiff_big_endian" else samples
    Image.fromarray(stored).save(path)

    pixels = image_files.read_image(path).pixels

    np.testing.assert_array_equal(pixels, _gray_as_rgb(_expected_stretch(samples)))
    gray = pixels[..., 0].ravel()
    assert gray.min() == 0 and gray.max() == 255
    by_input = np.argsort(samples.ravel(), kind="stable")
    assert np.all(np.diff(gray[by_input].astype(int)) >= 0)


def test_constant_16bit_image_maps_to_zero_without_warnings(tmp_path):
    path = tmp_path / "flat.tif"
    Image.fromarray(np.full((20, 30), 1000, np.uint16)).save(path)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels = image_files.read_image(path).pixels

    assert not pixels.any()


@pytest.mark.parametrize("dtype", [np.int32, np.float32])
def test_32bit_int_and_float_tiffs_are_stretched(tmp_path, dtype):
    samples = np.linspace(-70000, 90000, 40 * 30).reshape(30, 40).astype(dtype)
    if dtype == np.float32:
        samples[0, 0] = np.nan  # ignored by the range and shown as 0
    path = tmp_path / "image.tif"
    Image.fromarray(samples).save(path)

    pixels = image_files.read_image(path).pixels

    np.testing.assert_array_equal(pixels, _gray_as_rgb(_expected_stretch(samples)))
    assert pixels.max() == 255


def test_large_16bit_gray_is_downscaled_before_stretching(tmp_path):
    samples = np.tile(np.linspace(0, 4000, 3000).astype(np.uint16), (1000, 1))
    path = tmp_path / "wide.tif"
    Image.fromarray(samples).save(path)

    decoded = image_files.read_image(path, max_side=300)

    assert decoded.pixels.shape == (100, 300, 3)
    assert (decoded.width, decoded.height) == (3000, 1000)
    row = decoded.pixels[50, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row) >= 0)


@pytest.mark.parametrize("container", ["tiff", "tiff_big_endian", "tiff_deflate", "png"])
def test_16bit_rgb_keeps_all_16_bits(tmp_path, container):
    samples = np.random.default_rng(RNG_SEED).integers(0, 4096, (21, 34, 3), dtype=np.uint16)
    path = tmp_path / ("image.png" if container == "png" else "image.tif")
    if container == "png":
        _write_png16(path, samples)
    else:
        _write_tiff(
            path,
            samples,
            big_endian=container == "tiff_big_endian",
            deflate=container == "tiff_deflate",
        )

    pixels = image_files.read_image(path).pixels

    # Pillow alone keeps the high byte: 0..15 for 12-bit data.
    np.testing.assert_array_equal(pixels, _expected_stretch(samples))


def test_16bit_rgb_is_downscaled(tmp_path):
    samples = np.random.default_rng(RNG_SEED).integers(0, 65536, (200, 300, 3), dtype=np.uint16)
    path = tmp_path / "image.tif"
    _write_tiff(path, samples)

    decoded = image_files.read_image(path, max_side=100)

    assert decoded.pixels.shape == (67, 100, 3)
    assert (decoded.width, decoded.height) == (300, 200)


def test_16bit_rgba_composites_with_its_alpha(tmp_path):
    samples = np.random.default_rng(RNG_SEED).integers(0, 4096, (12, 16, 4), dtype=np.uint16)
    samples[..., 3] = 65535
    samples[:3, :, 3] = 0  # a transparent band
    path = tmp_path / "image.tif"
    _write_tiff(path, samples, extra_samples=(2,))  # 2 = straight (unassociated) alpha

    pixels = image_files.read_image(path).pixels

    colour = _expected_stretch(samples[..., :3])
    alpha = (samples[..., 3] >> 8).astype(np.uint8)
    np.testing.assert_array_equal(pixels, image_files.as_rgb_uint8(np.dstack((colour, alpha))))


@pytest.mark.parametrize("layout", ["planar_tiff", "gray_alpha_png"])
def test_16bit_layouts_we_cannot_recover_are_refused(tmp_path, layout):
    samples = np.full((8, 9, 3), 3000, np.uint16)
    path = tmp_path / "image"
    if layout == "planar_tiff":
        _write_tiff(path, samples, planar=True)
    else:
        _write_png16(path, samples[..., :2])

    assert "16-bit" in str(_read_error(path))


# --- Multi-page files ---------------------------------------------------------------------------


def test_multipage_tiff_uses_first_page_and_counts_pages(tmp_path):
    pages = [Image.new("L", (30, 20), value) for value in (10, 20, 30)]
    path = tmp_path / "stack.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])

    decoded = image_files.read_image(path)

    assert decoded.frames == 3
    assert np.all(decoded.pixels == 10)


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 12), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "animation.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])

    decoded = image_files.read_image(path)

    assert decoded.frames == 2
    assert np.all(decoded.pixels == (255, 0, 0))


# --- Transparency -------------------------------------------------------------------------------


def _tissue_on_transparent(tissue_colour: tuple[int, int, int]) -> np.ndarray:
    """RGBA: an opaque 6x8 block of `tissue_colour` inside a transparent black 12x16 image."""
    rgba = np.zeros((12, 16, 4), np.uint8)
    rgba[3:9, 4:12] = (*tissue_colour, 255)
    return rgba


@pytest.mark.parametrize(
    ("tissue", "background"), [((60, 50, 40), 255), ((200, 220, 180), 0)], ids=["dark", "bright"]
)
def test_alpha_is_composited_onto_a_contrasting_background(tmp_path, tissue, background):
    path = tmp_path / "tissue.png"
    Image.fromarray(_tissue_on_transparent(tissue)).save(path)

    pixels = image_files.read_image(path).pixels

    assert np.all(pixels[3:9, 4:12] == tissue)
    assert np.all(pixels[:3] == background) and np.all(pixels[9:] == background)


def test_gray_alpha_dark_tissue_goes_onto_white(tmp_path):
    gray_alpha = np.zeros((10, 10, 2), np.uint8)
    gray_alpha[2:8, 2:8] = (40, 255)
    path = tmp_path / "tissue.png"
    Image.fromarray(gray_alpha).save(path)

    pixels = image_files.read_image(path).pixels

    assert np.all(pixels[2:8, 2:8] == 40) and np.all(pixels[0] == 255)


def test_palette_png_with_transparent_index_keeps_dark_tissue_visible(tmp_path):
    indices = np.zeros((12, 16), np.uint8)
    indices[3:9, 4:12] = 1
    indices[5, 6] = 2
    image = Image.fromarray(indices, mode="L").convert("P")
    image.putpalette([0, 0, 0, 40, 30, 20, 90, 80, 70])
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)

    pixels = image_files.read_image(path).pixels

    assert np.all(pixels[0, 0] == 255)  # transparent index 0 -> white behind dark tissue
    assert tuple(pixels[3, 4]) == (40, 30, 20) and tuple(pixels[5, 6]) == (90, 80, 70)


def test_half_transparent_pixel_is_blended_by_hand():
    rgba = _tissue_on_transparent((60, 50, 40))
    rgba[0, 0] = (100, 100, 100, 128)

    pixels = image_files.as_rgb_uint8(rgba)

    # 100 * 128/255 + 255 * 127/255 = 177.2 -> 177 on the white background.
    assert tuple(pixels[0, 0]) == (177, 177, 177)


def test_fully_transparent_image_becomes_black():
    rgba = np.full((5, 5, 4), 200, np.uint8)
    rgba[..., 3] = 0

    assert not image_files.as_rgb_uint8(rgba).any()


# --- Huge images --------------------------------------------------------------------------------

# Runs in a fresh interpreter so the peak memory is this decode's alone. The module
# is loaded from its file: importing the package would import TensorFlow. VmHWM,
# unlike ru_maxrss, is not inherited from the (large) pytest process.
_HUGE_DECODE_SCRIPT = """
import importlib.util, json, sys, time, warnings
spec = importlib.util.spec_from_file_location("image_files", sys.argv[1])
image_files = importlib.util.module_from_spec(spec)
sys.modules["image_files"] = image_files
spec.loader.exec_module(image_files)
def memory_kb(field):
    with open("/proc/self/status") as status:
        return int(status.read().split(field + ":")[1].split()[0])
baseline_kb = memory_kb("VmRSS")
warnings.simplefilter("error")  # e.g. Pillow's DecompressionBombWarning
start = time.perf_counter()
decoded = image_files.read_image(sys.argv[2])
seconds = time.perf_counter() - start
peak_kb = memory_kb("VmHWM")
half = decoded.pixels.shape[1] // 2
print(json.dumps({
    "size": [decoded.width, decoded.height],
    "shape": list(decoded.pixels.shape),
    "left": float(decoded.pixels[:, : half - 1].mean()),
    "right": float(decoded.pixels[:, half + 1 :].mean()),
    "growth_mb": (peak_kb - baseline_kb) / 1024,
    "seconds": seconds,
}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_huge_png_is_decoded_downscaled_with_bounded_memory(tmp_path):
    path = tmp_path / "huge.png"
    _write_huge_gray_png(path, 20000)

    completed = subprocess.run(
        [sys.executable, "-c", _HUGE_DECODE_SCRIPT, image_files.__file__, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(completed.stdout)

    assert result["size"] == [20000, 20000]
    assert result["shape"] == [2048, 2048, 3]
    assert result["left"] == 0 and result["right"] == 255
    # One 8-bit 20000^2 frame is 400 MB; a full-resolution RGB copy would add 1.2 GB or more.
    assert result["growth_mb"] < 700, result


def test_large_jpeg_is_decoded_at_reduced_scale_and_downscaled(tmp_path, monkeypatch):
    y, x = np.mgrid[:3000, :4000]
    gray = ((x // 500 + y // 500) % 2 * 200 + 25).astype(np.uint8)
    path = tmp_path / "large.jpg"
    Image.fromarray(gray).save(path, quality=95)
    drafted_sizes = []
    pillow_draft = JpegImagePlugin.JpegImageFile.draft

    def recording_draft(self, mode, size):
        result = pillow_draft(self, mode, size)
        drafted_sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", recording_draft)

    decoded = image_files.read_image(path, max_side=500)

    assert drafted_sizes == [(500, 375)]  # libjpeg decoded at 1/8 scale
    assert decoded.pixels.shape == (375, 500, 3)
    assert (decoded.width, decoded.height) == (4000, 3000)
    expected = image_files.downscale_to_max_side(gray, 500)
    assert np.abs(decoded.pixels[..., 0].astype(int) - expected).mean() < 2


def test_target_side_scales_jpeg_to_cover_it_and_never_enlarges(tmp_path):
    """classify_dir asks for its working size: a JPEG is decoded at the DCT scale that
    still covers it and left there (never enlarged back to max_side); other formats
    and the default (target = max_side) are unchanged."""
    rng = np.random.default_rng(RNG_SEED)
    gray = rng.integers(0, 256, (1536, 2048), dtype=np.uint8)
    jpeg, png = tmp_path / "scan.jpg", tmp_path / "scan.png"
    Image.fromarray(gray).save(jpeg, quality=90)
    Image.fromarray(gray).save(png)

    scaled = image_files.read_image(jpeg, 2048, target_side=512)
    assert scaled.pixels.shape == (384, 512, 3)  # 1/4 scale covers 512 exactly
    assert (scaled.width, scaled.height) == (2048, 1536)
    assert image_files.read_image(jpeg, 2048, target_side=600).pixels.shape == (768, 1024, 3)
    assert image_files.read_image(jpeg, 2048).pixels.shape == (1536, 2048, 3)
    # A target above max_side is capped at it: today's behaviour.
    assert image_files.read_image(jpeg, 1024, target_side=4096).pixels.shape == (768, 1024, 3)
    np.testing.assert_array_equal(
        image_files.read_image(png, 2048, target_side=512).pixels, _gray_as_rgb(gray)
    )
    with pytest.raises(ValueError, match="target_side"):
        image_files.read_image(png, 2048, target_side=0)


class _RecordingLock:
    def __init__(self) -> None:
        self.entries = 0

    def __enter__(self) -> None:
        self.entries += 1

    def __exit__(self, *exc_info: object) -> None:
        return None


def test_large_images_are_decoded_under_the_lock(tmp_path, monkeypatch):
    lock = _RecordingLock()
    monkeypatch.setattr(image_files, "_LARGE_IMAGE_PIXELS", 50 * 50)
    monkeypatch.setattr(image_files, "_LARGE_DECODE_LOCK", lock)
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    Image.new("L", (50, 50)).save(small)
    Image.new("L", (60, 50)).save(large)

    image_files.read_image(small)
    assert lock.entries == 0
    image_files.read_image(large)
    assert lock.entries == 1


def test_pillow_limit_admits_every_image_we_accept():
    assert Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS >= image_files.MAX_IMAGE_PIXELS


def test_parallel_reads_match_sequential_reads(tmp_path):
    paths = []
    for index in range(6):
        path = tmp_path / f"image{index}.png"
        Image.fromarray(np.roll(_pattern_rgb(300, 200), index * 13, axis=1)).save(path)
        paths.append(path)
    expected = [image_files.read_image(path, max_side=128).pixels for path in paths]

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: image_files.read_image(p, 128).pixels, paths * 5))

    for index, pixels in enumerate(results):
        np.testing.assert_array_equal(pixels, expected[index % len(paths)])


# --- Errors -------------------------------------------------------------------------------------


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")

    assert str(_read_error(path)) == "empty file (0 bytes)"


def test_empty_bytes():
    with pytest.raises(ImageReadError, match=r"^empty file \(0 bytes\)$"):
        image_files.decode_image_bytes(b"")


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image\n")

    assert str(_read_error(path)).startswith("not a recognized image format")


def test_directory(tmp_path):
    assert str(_read_error(tmp_path)) == "is a directory"


def test_missing_file(tmp_path):
    error = _read_error(tmp_path / "missing.png")

    assert str(error) == "file not found"
    assert error.name.endswith("missing.png")


def test_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "pipe.png"
    os.mkfifo(path)

    assert str(_read_error(path)) == "not a regular file"


def test_unreadable_file(tmp_path):
    path = tmp_path / "secret.png"
    Image.new("L", (4, 4)).save(path)
    path.chmod(0)
    try:
        with open(path, "rb"):
            pytest.skip("running with privileges (e.g. root) that read files despite chmod 000")
    except PermissionError:
        pass

    assert str(_read_error(path)) == "permission denied"


def test_permission_error_from_open_is_reported(tmp_path, monkeypatch):
    """The same mapping as test_unreadable_file, testable when running as root."""
    path = tmp_path / "secret.png"
    Image.new("L", (4, 4)).save(path)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(image_files, "open", refuse, raising=False)

    assert str(_read_error(path)) == "permission denied"


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_truncated_files_are_errors(tmp_path, image_format):
    noise = np.random.default_rng(RNG_SEED).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, image_format)
    path = tmp_path / "truncated"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 6 // 10])

    assert "truncated" in str(_read_error(path))


def test_refuses_to_decode_while_pillow_pads_truncated_files(tmp_path, monkeypatch):
    path = tmp_path / "image.png"
    Image.new("L", (4, 4)).save(path)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)

    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        image_files.read_image(path)


def test_corrupt_pixel_data(tmp_path):
    path = tmp_path / "corrupt.png"
    data = bytearray(_png_header(8, 8, 8, 0))
    data += _png_chunk(b"IDAT", b"this is not zlib data") + _png_chunk(b"IEND", b"")
    path.write_bytes(bytes(data))

    assert str(_read_error(path)).startswith("cannot decode image data")


def test_zero_width(tmp_path):
    path = tmp_path / "zero.png"
    path.write_bytes(_png_without_pixels(0, 10))

    reason = str(_read_error(path))

    assert "PNG" in reason and "zero width or height" in reason


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_too_many_pixels_is_refused_from_the_header(tmp_path):
    path = tmp_path / "giant.png"
    path.write_bytes(_png_without_pixels(40000, 40000))

    reason = str(_read_error(path))

    assert reason.startswith("too many pixels") and "40000x40000" in reason
    assert "1,000,000,000" in reason


def test_far_too_many_pixels_is_refused(tmp_path):
    path = tmp_path / "giant.png"
    path.write_bytes(_png_without_pixels(50000, 50000))  # Pillow itself refuses above 2x limit

    assert str(_read_error(path)).startswith("too many pixels")


# --- File names ---------------------------------------------------------------------------------


def test_non_utf8_bytes_path(tmp_path):
    path = os.path.join(os.fsencode(tmp_path), b"scan\xff.png")
    with open(path, "wb") as file:
        Image.fromarray(_pattern_rgb()).save(file, "PNG")

    decoded = image_files.read_image(path)

    np.testing.assert_array_equal(decoded.pixels, _pattern_rgb())
    missing = _read_error(path + b".missing")
    assert "scan\\xff.png" in missing.name


@pytest.mark.parametrize("file_name", ["a,b.png", 'say "hi".png', "it's.png", "two\nlines.png"])
def test_awkward_file_names(tmp_path, file_name):
    path = tmp_path / file_name
    Image.fromarray(_pattern_rgb()).save(path, "PNG")
    np.testing.assert_array_equal(image_files.read_image(path).pixels, _pattern_rgb())

    path.write_bytes(b"")
    error = _read_error(path)

    assert "\n" not in error.name and error.name.endswith(file_name.replace("\n", "\\n"))


# --- Helpers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((250, 1000), (25, 100)), ((1000, 250), (100, 25)), ((333, 999, 3), (33, 100, 3))],
)
def test_downscale_keeps_aspect_ratio(shape, expected):
    assert image_files.downscale_to_max_side(np.zeros(shape, np.uint8), 100).shape == expected


def test_downscale_is_a_no_op_when_small_enough():
    image = np.zeros((100, 60, 3), np.uint8)

    assert image_files.downscale_to_max_side(image, 100) is image


def test_downscale_averages_areas():
    image = np.array(
        [[0, 2, 100, 100], [4, 6, 100, 100], [10, 10, 200, 202], [10, 10, 204, 206]], np.uint8
    )

    np.testing.assert_array_equal(
        image_files.downscale_to_max_side(image, 2), [[3, 100], [10, 203]]
    )


def test_downscale_keeps_16bit_values_and_dtype():
    image = np.array([[40000, 40002, 7, 9]] * 2, np.uint16)

    small = image_files.downscale_to_max_side(image, 2)

    assert small.dtype == np.uint16
    np.testing.assert_array_equal(small, [[40001, 8]])


def test_downscale_does_not_bleed_transparent_colour():
    rgba = np.array([[[255, 0, 0, 255], [0, 255, 0, 0]]], np.uint8)

    pixel = image_files.downscale_to_max_side(rgba, 1)[0, 0]

    assert tuple(pixel[:3]) == (255, 0, 0) and pixel[3] in (127, 128)


def test_downscale_multichannel_float_per_channel():
    image = np.stack([np.full((4, 4), 0.25), np.full((4, 4), -3.0)], axis=-1)

    small = image_files.downscale_to_max_side(image, 2)

    assert small.shape == (2, 2, 2) and small.dtype == np.float64
    np.testing.assert_allclose(small[..., 0], 0.25)
    np.testing.assert_allclose(small[..., 1], -3.0)


def test_mean_gray_by_hand():
    rgb = np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)
    gray = np.array([[0, 255], [255, 255]], np.uint8)

    # (0.299 * 255 + 0.114 * 255) / 2 = 52.6575
    assert image_files.mean_gray(rgb) == pytest.approx(52.6575)
    assert image_files.mean_gray(gray) == pytest.approx(191.25)


def test_mean_gray_agrees_with_pillow_luma():
    rgb = _pattern_rgb()
    pillow_gray = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float64)

    assert image_files.mean_gray(rgb) == pytest.approx(pillow_gray.mean(), abs=0.5)


def test_scale_to_uint8_by_hand():
    values = np.array([0, 25, 50, 100, 150, -10, 99.9])

    scaled = image_files.scale_to_uint8(values, 0, 100)

    # 25 -> 63.75 -> 64; 50 -> 127.5 -> 128 (half up); 99.9 -> 254.745 -> 255; clipped outside.
    np.testing.assert_array_equal(scaled, [0, 64, 128, 255, 255, 0, 255])
    assert scaled.dtype == np.uint8


def test_scale_to_uint8_offset_16bit_range():
    values = np.array([1000, 1100, 3000, 5000], np.uint16)

    # (v - 1000) * 255 / 4000: 0, 6.375, 127.5, 255
    np.testing.assert_array_equal(image_files.scale_to_uint8(values, 1000, 5000), [0, 6, 128, 255])


def test_scale_to_uint8_constant_and_nan():
    assert not image_files.scale_to_uint8(np.full(5, 7.0), 7.0, 7.0).any()
    assert image_files.scale_to_uint8(np.array([np.nan, 1.0]), 0.0, 1.0).tolist() == [0, 255]
    with pytest.raises(ValueError):
        image_files.scale_to_uint8(np.zeros(3), 5.0, 1.0)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
@pytest.mark.parametrize("percentiles", [(0.5, 99.5), (0, 100), (10, 50)])
def test_robust_range_matches_numpy_percentile(dtype, percentiles):
    rng = np.random.default_rng(RNG_SEED)
    values = rng.integers(0, np.iinfo(dtype).max if dtype != np.float32 else 1000, (37, 23))
    values = values.astype(dtype)

    low, high = image_files.robust_range(values, *percentiles)

    np.testing.assert_allclose((low, high), np.percentile(values, percentiles))


def test_robust_range_ignores_nan_and_handles_empty_input():
    assert image_files.robust_range(np.array([np.nan, 1.0, 3.0, np.inf]), 0, 100) == (1.0, 3.0)
    assert image_files.robust_range(np.array([np.nan])) == (0.0, 0.0)
    assert image_files.robust_range(np.zeros(0, np.uint16)) == (0.0, 0.0)
    with pytest.raises(ValueError):
        image_files.robust_range(np.zeros(3), 60, 40)


def test_as_rgb_uint8_shapes():
    gray = _pattern_rgb()[..., 0]
    rgb = _pattern_rgb()

    np.testing.assert_array_equal(image_files.as_rgb_uint8(gray), _gray_as_rgb(gray))
    np.testing.assert_array_equal(image_files.as_rgb_uint8(gray[..., None]), _gray_as_rgb(gray))
    assert image_files.as_rgb_uint8(rgb) is rgb
    assert image_files.as_rgb_uint8(rgb[:, ::2]).flags.c_contiguous
    with pytest.raises(ValueError):
        image_files.as_rgb_uint8(gray.astype(np.uint16))
    with pytest.raises(ValueError):
        image_files.as_rgb_uint8(np.zeros((4, 4, 5), np.uint8))
