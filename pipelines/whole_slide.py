"""Whole-slide scans: pyramidal (Big)TIFF and OME-TIFF read at the level the model needs.

A section scanned at 0.5 um/px is 15,000 to 40,000 px on a side; slide
scanners store it as a tiled TIFF (BigTIFF above 4 GB) with reduced levels — a
pyramid, in sub-IFDs (OME-TIFF's way) or as levels of the image series. Pillow
reads only the full-resolution level: hundreds of megapixels decoded to keep a
few hundred thousand, or a refusal above image_files.MAX_IMAGE_PIXELS, although
the file already holds an image of the size the model needs.

`read_pyramid` reads such files with tifffile (imagecodecs decodes the
compressed tiles: JPEG, JPEG 2000, LZW, deflate, zstd, ...):

* the level: the smallest whose longer side still covers `target_side` (the
  preprocessing's working size), or the full image if none does;
* tile-wise: one tile (or strip) at a time is decoded and area-averaged into
  a canvas by a whole factor, so memory is one tile plus a canvas of about
  `target_side` to 2x `target_side` per side, whatever the level's size; the
  canvas is then shrunk to `max_side` if it is larger;
* the first plane, like the first page of other files: for images with more
  axes than height, width and colour (channels as planes, z, time), index 0 of
  each; colour samples are kept;
* the same conversion as other files (image_files): 16-bit and wider samples
  stretched from their robust range, alpha composited, gray replicated;
  min-is-white inverted.

`width` and `height` are the full-resolution level's. The pixel limit applies
to what is decoded (one level, tile by tile), so a 100,000 px slide with
levels is read, while a TIFF without levels keeps Pillow's path and its limit:
`read_pyramid` returns None for it (and for anything that is not a TIFF), and
the caller reads the file with image_files.read_image, errors included.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator

import numpy as np
import tifffile

from brainview import image_files

_TIFF_SIGNATURES = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic and BigTIFF
# Compressions whose decoder returns RGB for YCbCr photometric (JPEG, JPEG 2000 variants).
_DECODED_TO_RGB = frozenset({6, 7, 33003, 33004, 33005, 34712, 34892, 33007})


def read_pyramid(
    path: image_files.StrOrBytesPath, target_side: int, max_side: int = image_files.MAX_DECODE_SIDE
) -> image_files.DecodedImage | None:
    """The first image of a pyramidal TIFF at the smallest level covering `target_side`.

    None when `path` is not a TIFF with reduced levels (or not a TIFF tifffile
    can parse): read it with image_files.read_image. Raises
    image_files.ImageReadError for a pyramid whose tiles cannot be decoded or
    whose layout is not supported.
    """
    if target_side < 1 or max_side < 1:
        raise ValueError(f"need sides >= 1, got target_side={target_side}, max_side={max_side}")
    name = os.fsencode(path).decode("utf-8", "backslashreplace")
    with _pyramid_levels(path) as opened:
        if opened is None:
            return None
        tiff, levels = opened
        return _read_level(tiff, levels, target_side, max_side, name)


def is_pyramid(path: image_files.StrOrBytesPath) -> bool:
    """Whether `read_pyramid` reads `path` level by level (its memory is then a tile and a
    canvas of about the working size, whatever the full resolution)."""
    with _pyramid_levels(path) as opened:
        return opened is not None


@contextlib.contextmanager
def _pyramid_levels(path: image_files.StrOrBytesPath) -> Iterator[tuple | None]:
    """(open TiffFile, its first series' levels) for a TIFF with reduced levels, else None."""
    tiff = _open_tiff(path)
    if tiff is None:
        yield None
        return
    with tiff:
        try:
            levels = tiff.series[0].levels if tiff.series else []
        except Exception:
            levels = []
        yield (tiff, levels) if len(levels) >= 2 else None


def _open_tiff(path: image_files.StrOrBytesPath) -> tifffile.TiffFile | None:
    """`path` opened by tifffile, or None (not a regular file, not a TIFF it parses)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None  # opening a FIFO would block: read_image refuses it
        stream = open(path, "rb")  # noqa: SIM115 - closed by TiffFile or below
    except OSError:
        return None  # read_image reports it
    try:
        if stream.read(4) not in _TIFF_SIGNATURES:
            stream.close()
            return None
        stream.seek(0)
        return tifffile.TiffFile(stream)
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError, TypeError):
        stream.close()
        return None  # not a TIFF tifffile reads: Pillow's path reports it


def _read_level(tiff: tifffile.TiffFile, levels, target_side: int, max_side: int, name: str):
    full_height, full_width = _height_width(levels[0])
    chosen = levels[0]
    for level in levels:  # largest first
        height, width = _height_width(level)
        if max(height, width) >= target_side:
            chosen = level
    page = chosen.pages[0]
    if isinstance(page, tifffile.TiffFrame):
        page = page.aspage()
    try:
        samples = _tilewise_mean(page, target_side)
    except MemoryError as error:
        raise image_files.ImageReadError("out of memory while decoding", name) from error
    except Exception as error:  # tifffile and imagecodecs raise many kinds for corrupt tiles
        reason = f"cannot decode whole-slide tile data ({type(error).__name__}: {error})"
        raise image_files.ImageReadError(" ".join(reason.split()), name) from error
    pixels = image_files.as_rgb_uint8(_as_display_samples(page, samples, name))
    pixels = np.ascontiguousarray(image_files.downscale_to_max_side(pixels, max_side))
    pixels.flags.writeable = False
    return image_files.DecodedImage(
        pixels=pixels, width=full_width, height=full_height, frames=len(tiff.pages)
    )


def _height_width(level) -> tuple[int, int]:
    axes, shape = level.axes, level.shape
    return int(shape[axes.index("Y")]), int(shape[axes.index("X")])


def _tilewise_mean(page: tifffile.TiffPage, target_side: int) -> np.ndarray:
    """The first plane of `page` area-averaged by a whole factor, tile by tile.

    The factor is the largest that keeps the longer side at least
    `target_side`. Returns float64 (separate samples, height, width, samples).
    """
    separate, _, height, width, contig = page.shaped  # normalized: S, depth, Y, X, S
    factor = max(1, max(height, width) // target_side)
    out_height, out_width = -(-height // factor), -(-width // factor)
    sums = np.zeros((separate, out_height, out_width, contig), np.float64)
    for segment, index, _ in page.segments(maxworkers=1):
        sample, depth, top, left, _ = index
        if segment is None or depth != 0:
            continue  # empty tiles are zero; deeper planes are not the first
        tile = segment[0, : height - top, : width - left]  # tiles at the edge are padded
        rows = _block_sums(tile.astype(np.float64), top, factor, axis=0)
        both = _block_sums(rows, left, factor, axis=1)
        first_row, first_col = top // factor, left // factor
        sums[
            sample, first_row : first_row + both.shape[0], first_col : first_col + both.shape[1]
        ] += both
    counts = np.outer(_block_lengths(height, factor), _block_lengths(width, factor))
    return sums / counts[None, :, :, None]


def _block_sums(values: np.ndarray, start: int, factor: int, axis: int) -> np.ndarray:
    """Sums of `values` over the blocks of `factor` that positions start.. fall into, along axis."""
    positions = start + np.arange(values.shape[axis])
    boundaries = np.flatnonzero((positions % factor == 0) | (np.arange(len(positions)) == 0))
    return np.add.reduceat(values, boundaries, axis=axis)


def _block_lengths(size: int, factor: int) -> np.ndarray:
    """How many of `size` positions fall in each block of `factor` (the last may be shorter)."""
    starts = np.arange(0, size, factor)
    return np.minimum(starts + factor, size) - starts


def _as_display_samples(page: tifffile.TiffPage, means: np.ndarray, name: str) -> np.ndarray:
    """Averaged samples -> uint8 HxWx1, 3 or 4 (RGBA), min-is-white inverted.

    8-bit averages are rounded; wider samples are stretched from their robust
    range as image_files stretches them, alpha scaled to 0..255.
    """
    photometric = int(page.photometric)
    separate = means.shape[0]
    if separate > 1:  # planar: samples in separate planes
        samples = np.moveaxis(means[..., 0], 0, -1)
    else:
        samples = means[0]
    if photometric == tifffile.PHOTOMETRIC.YCBCR and int(page.compression) in _DECODED_TO_RGB:
        photometric = tifffile.PHOTOMETRIC.RGB  # the codec converted to RGB
    if photometric in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.MINISWHITE):
        samples = samples[..., :1]  # extra planes (channels) of a gray image: the first
        if photometric == tifffile.PHOTOMETRIC.MINISWHITE:
            samples = _dtype_maximum(page.dtype) - samples
    elif photometric == tifffile.PHOTOMETRIC.RGB:
        if samples.shape[-1] not in (3, 4):
            raise image_files.ImageReadError(
                f"unsupported whole-slide TIFF: RGB with {samples.shape[-1]} samples", name
            )
    else:
        raise image_files.ImageReadError(
            f"unsupported whole-slide TIFF photometric interpretation {page.photometric.name}",
            name,
        )
    if page.dtype == np.uint8:
        return np.round(samples).astype(np.uint8)
    colour = samples[..., :3] if samples.shape[-1] == 4 else samples
    stretched = image_files.scale_to_uint8(colour, *image_files.robust_range(colour))
    if samples.shape[-1] != 4:
        return stretched
    alpha = np.clip(samples[..., 3] / _dtype_maximum(page.dtype), 0.0, 1.0) * 255.0
    return np.dstack((stretched, np.round(alpha).astype(np.uint8)))


def _dtype_maximum(dtype: np.dtype) -> float:
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def is_tiff_name(relative_path: bytes) -> bool:
    """Whether a file name says TIFF (a hint for routing only: contents decide)."""
    return os.path.splitext(relative_path.lower())[1] in (b".tif", b".tiff", b".btf", b".svs")
