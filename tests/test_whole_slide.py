"""Whole-slide scans: pyramidal TIFFs read at the level the working size needs, tile by tile.

Every pyramid is generated here with tifffile (sub-IFD pyramids as OME-TIFF
and slide scanners write them, BigTIFF, JPEG / deflate / LZW tiles). Levels are
given distinct content, so the pixels returned say which level was read.
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from brainview import image_files, whole_slide
from brainview.classify import scan_files

TILE = 256


def _texture(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width]
    base = 110 + 70 * np.sin(x / 29.0) * np.cos(y / 41.0)
    planes = [
        np.clip(base + rng.normal(0, 10, base.shape) + 20 * c, 0, 255) for c in range(channels)
    ]
    return np.dstack(planes).astype(np.uint8) if channels > 1 else planes[0].astype(np.uint8)


def _write_pyramid(path, levels, *, compression="zlib", photometric=None, ome=False) -> None:
    """A BigTIFF whose first image is levels[0] with levels[1:] in its sub-IFDs."""
    photometric = photometric or ("rgb" if levels[0].ndim == 3 else "minisblack")
    options = {"tile": (TILE, TILE), "compression": compression, "photometric": photometric}
    with tifffile.TiffWriter(path, bigtiff=True, ome=ome) as writer:
        writer.write(levels[0], subifds=len(levels) - 1, **options)
        for level in levels[1:]:
            writer.write(level, subfiletype=1, **options)


def _marked_levels(side: int, count: int) -> list[np.ndarray]:
    """`count` gray levels halving from `side`, level k filled with 40 + 50 k."""
    return [np.full((side >> k, side >> k), 40 + 50 * k, np.uint8) for k in range(count)]


def _levels_read(path, target_side, max_side=image_files.MAX_DECODE_SIDE):
    decoded = whole_slide.read_pyramid(os.fsencode(path), target_side, max_side)
    assert decoded is not None
    return decoded


@pytest.mark.parametrize(
    ("target_side", "level", "shape"),
    [
        (512, 2, (750, 750)),  # 3000, 1500, 750 >= 512 > 375: the third level
        (750, 2, (750, 750)),  # exactly covering is enough
        (751, 1, (1500, 1500)),
        (100, 4, (187, 187)),  # the smallest level covers it
        (2048, 0, (2048, 2048)),  # nothing smaller covers it: full size, shrunk to max_side
    ],
)
def test_reads_the_smallest_level_that_covers_the_target(tmp_path, target_side, level, shape):
    path = tmp_path / "pyramid.tif"
    _write_pyramid(path, _marked_levels(3000, 5))

    decoded = _levels_read(path, target_side)

    assert decoded.pixels.shape == (*shape, 3)
    assert np.all(decoded.pixels == 40 + 50 * level)
    assert (decoded.width, decoded.height) == (3000, 3000)


@pytest.mark.parametrize("compression", ["jpeg", "zlib", "lzw"])
@pytest.mark.parametrize("ome", [False, True])
def test_rgb_level_pixels_are_the_files_own(tmp_path, compression, ome):
    """The chosen level comes back as tifffile decodes it (imagecodecs for the tiles)."""
    base = _texture(1200, 1000, seed=1)
    levels = [base, base[::2, ::2].copy(), base[::4, ::4].copy()]
    path = tmp_path / "slide.ome.tif"
    _write_pyramid(path, levels, compression=compression, ome=ome)
    with tifffile.TiffFile(path) as tiff:
        assert len(tiff.series[0].levels) == 3
        expected = tiff.series[0].levels[1].asarray()  # 600 x 500: the smallest covering 512

    decoded = _levels_read(path, 512)

    np.testing.assert_array_equal(decoded.pixels, expected)
    assert (decoded.width, decoded.height) == (1000, 1200)


def test_a_coarse_level_is_averaged_tile_by_tile(tmp_path):
    """A level far above the target (pyramids with 4x steps) is area-averaged by a whole
    factor while its tiles are read, never held whole."""
    base = _texture(1000, 900, seed=2)
    path = tmp_path / "coarse.tif"
    _write_pyramid(path, [np.repeat(np.repeat(base, 4, 0), 4, 1), base])

    decoded = _levels_read(path, 300)  # level 1 (1000 x 900) covers 300; factor 3

    blocks = np.zeros((334, 300, 3))
    counts = np.zeros((334, 300, 1))
    for dy in range(3):
        for dx in range(3):
            part = base[dy::3, dx::3].astype(np.float64)
            blocks[: part.shape[0], : part.shape[1]] += part
            counts[: part.shape[0], : part.shape[1]] += 1
    np.testing.assert_array_equal(decoded.pixels, np.round(blocks / counts).astype(np.uint8))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's refusal
def test_the_full_resolution_level_is_never_decoded(tmp_path):
    """Level 0 of 40,000 x 40,000 (1.6 Gpx, over Pillow's refusal limit) holds tiles
    that cannot be decoded: reading works only if they are never touched."""
    path = tmp_path / "slide.tif"
    garbage = b"these bytes are not deflate data"
    sides = [40000 >> k for k in range(7)]  # down to 625
    options = {"tile": (512, 512), "compression": "zlib", "photometric": "minisblack"}
    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        for index, side in enumerate(sides[:-2]):
            tiles = (garbage for _ in range((-(-side // 512)) ** 2))
            extra = {"subifds": len(sides) - 1} if index == 0 else {"subfiletype": 1}
            writer.write(tiles, shape=(side, side), dtype=np.uint8, **options, **extra)
        for side in sides[-2:]:
            writer.write(np.full((side, side), 99, np.uint8), subfiletype=1, **options)
    assert image_files.MAX_IMAGE_PIXELS < 40000 * 40000
    with pytest.raises(image_files.ImageReadError, match="too many pixels"):
        image_files.read_image(path)  # Pillow's path refuses it

    decoded = _levels_read(path, 512)

    assert decoded.pixels.shape == (625, 625, 3) and np.all(decoded.pixels == 99)
    assert (decoded.width, decoded.height) == (40000, 40000)
    # A target that needs a garbage level reports it as a one-line error.
    with pytest.raises(image_files.ImageReadError, match="cannot decode whole-slide tile data"):
        whole_slide.read_pyramid(os.fsencode(path), 2000)


def test_16bit_levels_are_stretched_like_other_16bit_scans(tmp_path):
    base = _texture(800, 800, channels=1, seed=3).astype(np.uint16) * 16 + 300
    path = tmp_path / "gray16.tif"
    _write_pyramid(path, [base, base[::2, ::2].copy()])

    decoded = _levels_read(path, 400)

    level = base[::2, ::2]
    expected = image_files.scale_to_uint8(level, *image_files.robust_range(level))
    np.testing.assert_array_equal(decoded.pixels[..., 0], expected)
    assert np.all(decoded.pixels[..., 0] == decoded.pixels[..., 2])


def test_min_is_white_is_inverted(tmp_path):
    base = _texture(600, 600, channels=1, seed=4)
    path = tmp_path / "miniswhite.tif"
    _write_pyramid(path, [base, base[::2, ::2].copy()], photometric="miniswhite")

    decoded = _levels_read(path, 300)

    np.testing.assert_array_equal(decoded.pixels[..., 0], 255 - base[::2, ::2])


def test_files_without_levels_keep_pillows_path(tmp_path):
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, _texture(300, 200), tile=(TILE, TILE), compression="zlib")
    png = tmp_path / "scan.png"
    Image.fromarray(_texture(300, 200)).save(png)
    text = tmp_path / "notes.tif"
    text.write_text("II* but not really a TIFF")

    for path in (flat, png, text, tmp_path / "missing.tif", tmp_path):
        assert whole_slide.read_pyramid(os.fsencode(path), 512) is None, path

    entry = scan_files.ScanEntry(b"flat.tif")
    loaded = scan_files.load(os.fsencode(tmp_path), entry, 2048, 512)
    np.testing.assert_array_equal(loaded.pixels, image_files.read_image(flat).pixels)


def test_scan_files_load_reads_pyramids_through_the_level(tmp_path):
    path = tmp_path / "slide.tif"
    _write_pyramid(path, _marked_levels(2000, 3))

    loaded = scan_files.load(os.fsencode(tmp_path), scan_files.ScanEntry(b"slide.tif"), 2048, 512)

    assert loaded.error == "" and (loaded.width, loaded.height) == (2000, 2000)
    # 2000, 1000, 500: 500 does not cover 512, so the middle level.
    assert loaded.pixels.shape == (1000, 1000, 3) and np.all(loaded.pixels == 90)
    assert loaded.mean_intensity == pytest.approx(90.0)


def test_corrupt_tiles_of_the_chosen_level_are_an_error_row(tmp_path):
    path = tmp_path / "broken.tif"
    _write_pyramid(path, _marked_levels(1024, 2))
    with tifffile.TiffFile(path) as tiff:
        level = tiff.series[0].levels[1].pages[0]
        offset, count = level.dataoffsets[0], level.databytecounts[0]
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(zlib.compress(b"x")[:1] + b"\xff" * (count - 1))

    loaded = scan_files.load(os.fsencode(tmp_path), scan_files.ScanEntry(b"broken.tif"), 2048, 512)

    assert loaded.error.startswith("cannot decode whole-slide tile data"), loaded.error
    assert "\n" not in loaded.error
