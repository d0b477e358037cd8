"""Reads section scans into RGB uint8 arrays, robustly and with bounded memory.

Every dataset builder and the batch classifier decode files through `read_image`
(or `decode_image_bytes`), so a file yields the same pixels everywhere; their
mean gray (`mean_gray`) is the one the dark-image filter and the CSV use. A
leaf module (NumPy and Pillow only): `brainview_tfds` builds on it, and
inference imports it without TensorFlow Datasets. The choices that shape
those pixels:

Multi-page files
    TIFF stacks and animated GIF/PNG/WebP: only the first page or frame is
    decoded; `DecodedImage.frames` says how many the file holds. In the stacks
    labs export (one page per channel, per section or per pyramid level) the
    first page is a complete image on its own, while combining pages would need
    a layout the file does not record reliably.

More than 8 bits per sample
    16-bit gray or colour, 32-bit integer and float images are rescaled per
    image: the 0.5th and 99.5th percentiles of the returned (already shrunk)
    samples map to 0 and 255 (`robust_range`, `scale_to_uint8`), with one range
    shared by the colour channels so hues keep their balance; a constant image
    maps to 0. Pillow's own ``convert("L")`` clips every value above 255, which
    turns 12- and 16-bit scans white, so it is never used for them. 8-bit images
    are never rescaled.
    For 16-bit RGB(A) PNG and TIFF, Pillow keeps only the high byte of each
    sample; such files are decoded a second time with the byte order swapped,
    which yields the low bytes, and the two are recombined to 16 bits. Layouts
    this cannot recover (16-bit colour TIFF with separate planes, premultiplied
    alpha, 16-bit CMYK, 16-bit gray+alpha PNG) raise ImageReadError instead of
    silently losing precision.

Transparency
    Alpha (RGBA, LA, palette transparency) is composited onto white when the
    visible pixels are mostly dark (alpha-weighted mean luminance < 128) and
    onto black otherwise, so dark stained tissue and bright fluorescent tissue
    both stay visible. A fully transparent image becomes black.

Size
    Files whose header declares more than MAX_IMAGE_PIXELS pixels are refused
    before any pixel is decoded: PNG, TIFF, BMP and GIF can only be decoded at
    full resolution, so the limit bounds the memory of one reader (1 GB for
    8-bit gray at the limit, 4 GB for RGB, which Pillow stores in 4 bytes).
    Pixels alone do not bound it, though: 16-bit RGB takes two decodes and a
    16-bit copy (~22 bytes per pixel), WebP ~17. So the memory a decode will
    take is also estimated from the header, by mode and bit depth
    (`decode_memory`), and files that would need more than MAX_DECODE_BYTES
    are refused before decoding, with the estimate in the reason.
    JPEGs are decoded at 1/2, 1/4 or 1/8 scale when that still covers the
    target size (libjpeg DCT scaling): `max_side`, or the smaller
    `target_side` of a caller that reduces further anyway (classify_dir asks
    for its working size, so a 2048 px JPEG is decoded at 512 px). Images are
    then shrunk with an area (box) filter so the longer side is at most
    `max_side` (a JPEG scaled below that is left as decoded); `width` and
    `height` keep the original size. Apart from the decoder's own frame, no
    full-resolution copy is made (16-bit colour, which needs two decodes, is the
    exception). Decoding images above 64 MP holds a module-level lock, so
    parallel readers never hold several giant frames at once.
    Pillow's decompression-bomb guard is the process-wide setting
    ``PIL.Image.MAX_IMAGE_PIXELS`` with no per-call override, and its default
    refuses anything above ~179 MP, i.e. ordinary slide scans. Importing this
    module raises it to MAX_IMAGE_PIXELS (it never lowers it), so Pillow stays
    silent about every image accepted here and the check below reports refused
    ones with their size.

Errors
    Every problem with a file raises ImageReadError with a one-line reason:
    missing, unreadable, a directory, empty, not an image, truncated or
    corrupt, an unsupported layout, too many pixels. Truncated files are
    errors, never half-gray images. Pillow pads them silently once some code
    sets ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` (tensorflow_datasets'
    notebook thumbnails do), so reading then fails with RuntimeError.

Only PNG, JPEG, TIFF, BMP, GIF and WebP files are opened: other formats Pillow
knows are not scan formats, and some (EPS) would start external programs.
EXIF orientation is not applied: pixels are returned as stored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import stat
import struct
import sys
import threading
from typing import BinaryIO, TypeAlias

import numpy as np
from PIL import Image, ImageFile, TiffImagePlugin, UnidentifiedImageError

MAX_DECODE_SIDE = 2048
# Refused above this many pixels (from the header, before decoding) to bound memory; see above.
MAX_IMAGE_PIXELS = 1_000_000_000
# Refused when decoding would take more memory than this (estimated from the header).
MAX_DECODE_BYTES = 5_000_000_000
# ITU-R 601 luma, as in PIL's "L" conversion and tf.image.rgb_to_grayscale.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

StrOrBytesPath: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]

# Decoding a frame larger than this holds _LARGE_DECODE_LOCK.
_LARGE_IMAGE_PIXELS = 64_000_000
_LARGE_DECODE_LOCK = threading.Lock()

# Pillow's resize first shrinks by whole factors (fast box sums) down to this
# multiple of the target size, then box-filters the rest: both are area averages.
_REDUCING_GAP = 2.0

_HIGH_PRECISION_GRAY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
# Pillow modes with alpha -> the straight-alpha 8-bit mode handed to NumPy.
_ALPHA_MODES = {"LA": "LA", "La": "LA", "PA": "RGBA", "RGBA": "RGBA", "RGBa": "RGBA"}
_WIDE_RAWMODE_SUFFIXES = (";16L", ";16B", ";16N")

# Exceptions Pillow raises for corrupt, truncated or unsupported data.
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ArithmeticError,
)


def _low_byte_rawmodes() -> dict[str, str]:
    """Pillow raw modes that keep the high byte of 16-bit colour samples -> low-byte twins.

    Pillow unpacks such samples to 8 bits by taking the most significant byte;
    unpacking little-endian data as big-endian (and vice versa) takes the least
    significant one. "N" (native order, which libtiff delivers) is little- or
    big-endian depending on the machine.
    """
    swapped_native = "B" if sys.byteorder == "little" else "L"
    table = {}
    for layout in ("RGB", "RGBX", "RGBA"):
        table[f"{layout};16L"] = f"{layout};16B"
        table[f"{layout};16B"] = f"{layout};16L"
        table[f"{layout};16N"] = f"{layout};16{swapped_native}"
    return table


_LOW_BYTE_RAWMODE = _low_byte_rawmodes()


def _raise_pillow_pixel_limit() -> None:
    """Lets Pillow open every image this module accepts, without warnings (see module doc)."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


# Registering all plugins now keeps Pillow's format registry unchanged once
# reader threads run.
Image.init()
_raise_pillow_pixel_limit()
_FORMATS = tuple(f for f in ("PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP") if f in Image.OPEN)


class ImageReadError(Exception):
    """A user-facing, one-line reason why a file could not be read as an image.

    `str(error)` is the reason alone, since callers print the path next to it;
    `name` is the file (or buffer) name with unprintable characters escaped.
    """

    def __init__(self, reason: str, name: str = "") -> None:
        super().__init__(reason, name)
        self.reason = reason
        self.name = name

    def __str__(self) -> str:
        return self.reason


@dataclasses.dataclass(frozen=True)
class DecodedImage:
    """The first page of an image file, ready for the model.

    `pixels` is read-only like the dataclass; copy it to modify it.
    """

    pixels: np.ndarray  # uint8, HxWx3, C-contiguous; longer side <= max_side
    width: int  # original width in pixels, before any downscale
    height: int  # original height
    frames: int  # number of pages/frames in the file; the first one is decoded


def read_image(
    path: StrOrBytesPath, max_side: int = MAX_DECODE_SIDE, *, target_side: int | None = None
) -> DecodedImage:
    """Decodes the first page of the image file `path` (bytes paths work for any file name).

    `target_side` (default `max_side`): the side JPEG's reduced-scale decoding
    must still cover (see the module doc). Raises ImageReadError, with a
    one-line reason, for anything wrong with the file.
    """
    target_side = _checked_sides(max_side, target_side)
    name = _display_name(path)
    with _open_regular_file(path, name) as stream:
        return _decode_stream(stream, max_side, target_side, name)


def decode_image_bytes(
    data: bytes,
    max_side: int = MAX_DECODE_SIDE,
    name: str = "<bytes>",
    *,
    target_side: int | None = None,
) -> DecodedImage:
    """Like `read_image` for a file's content; `name` only labels errors."""
    target_side = _checked_sides(max_side, target_side)
    name = _display_name(name)
    if not data:
        raise ImageReadError("empty file (0 bytes)", name)
    return _decode_stream(io.BytesIO(data), max_side, target_side, name)


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """`image` (uint8 HxW or HxWx1/2/3/4) as a C-contiguous HxWx3 uint8 array.

    Gray is replicated to three channels. Gray+alpha (2 channels) and RGBA are
    composited onto white if their visible pixels are mostly dark, else onto
    black (see the module docstring). C-contiguous RGB is returned without a copy.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[..., np.newaxis]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an HxW or HxWx1/2/3/4 image, got shape {image.shape}")
    if image.shape[2] in (2, 4):
        image = _flatten_alpha(image)
    if image.shape[2] == 1:
        gray = image[..., 0]
        return np.stack((gray, gray, gray), axis=-1)  # faster than np.repeat
    return np.ascontiguousarray(image)


def mean_gray(image: np.ndarray) -> float:
    """Mean luminance (0-255, LUMA_WEIGHTS) of a uint8 HxWx3 or HxW image.

    The mean of the unrounded per-pixel luma, so it can differ from the mean of
    PIL's rounded "L" image by up to 0.5.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    ):
        raise ValueError(f"expected a uint8 HxW or HxWx3 image, got {image.dtype} {image.shape}")
    if image.ndim == 2:
        return float(image.mean(dtype=np.float64))
    # Exact integer sums per channel: the same value as a float64 mean over the
    # interleaved (N, 3) view, ~10x faster (a third of decoding a 512 px PNG).
    channel_sums = np.array([image[..., c].sum(dtype=np.uint64) for c in range(3)], np.float64)
    channel_means = channel_sums / (image.shape[0] * image.shape[1])
    return float(channel_means @ np.asarray(LUMA_WEIGHTS))


def scale_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Maps [low, high] linearly to [0, 255], clipping outside and rounding half up.

    low == high (a constant image) maps everything to 0 instead of dividing by
    zero; NaN maps to 0.
    """
    values = np.asarray(values)
    low, high = float(low), float(high)  # NumPy float32 scalars would change the rounding
    if not (np.isfinite(low) and np.isfinite(high)) or high < low:
        raise ValueError(f"need finite low <= high, got low={low}, high={high}")
    if high == low:
        return np.zeros(values.shape, np.uint8)
    # float32 is exact for 8/16-bit samples and half the work of float64.
    exact_in_float32 = np.can_cast(values.dtype, np.float32, casting="safe")
    scaled = values.astype(np.float32 if exact_in_float32 else np.float64)
    scaled -= low
    scaled *= 255.0  # then divide: exact for integer samples and bounds, so halves round up
    scaled /= high - low
    np.clip(scaled, 0.0, 255.0, out=scaled)
    if values.dtype.kind == "f":
        np.nan_to_num(scaled, copy=False, nan=0.0)
    scaled += 0.5  # the cast below truncates: together, round half up
    return scaled.astype(np.uint8)


def robust_range(
    values: np.ndarray, lower_percentile: float = 0.5, upper_percentile: float = 99.5
) -> tuple[float, float]:
    """The two percentiles of `values` (as numpy.percentile, linear), ignoring NaN and inf.

    Clipping the extreme 0.5 % on each side keeps a few hot or dead pixels from
    setting the contrast. Empty input (or no finite value) gives (0.0, 0.0).
    """
    if not 0 <= lower_percentile <= upper_percentile <= 100:
        raise ValueError(
            f"need 0 <= lower <= upper <= 100, got {lower_percentile}, {upper_percentile}"
        )
    values = np.asarray(values)
    percentiles = np.array([lower_percentile, upper_percentile], dtype=np.float64)
    if values.dtype.kind == "u" and values.dtype.itemsize <= 2:  # either byte order
        low, high = _percentiles_by_counting(values, percentiles)
    else:
        if values.dtype.kind in "fc":
            values = values[np.isfinite(values)]
        if values.size == 0:
            return 0.0, 0.0
        low, high = np.percentile(values, percentiles)
    return float(low), float(high)


def downscale_to_max_side(image: np.ndarray, max_side: int) -> np.ndarray:
    """`image` shrunk with an area (box) filter so its longer side is at most `max_side`.

    The aspect ratio is kept (sides rounded to whole pixels) and an image that
    already fits is returned as is. HxW arrays of any dtype Pillow maps (uint8,
    uint16, int32, float32, ...) are resized directly; uint8 with 2 or 4 channels
    is gray/colour + alpha, averaged premultiplied so transparent pixels do not
    bleed in; other multi-channel arrays are resized channel by channel. The
    dtype is kept; the result may be read-only.
    """
    _check_max_side(max_side)
    height, width = image.shape[:2]
    size = _fitted_size(width, height, max_side)
    if size == (width, height):
        return image
    if image.ndim == 2 or (image.dtype == np.uint8 and image.shape[2] in (2, 3, 4)):
        return _resized_array(image, size)
    channels = [_resized_array(image[..., c], size) for c in range(image.shape[2])]
    return np.stack(channels, axis=-1)


# --- Opening ------------------------------------------------------------------------------------


def _check_max_side(max_side: int) -> None:
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")


def _checked_sides(max_side: int, target_side: int | None) -> int:
    """The JPEG scaling target: `target_side` capped at `max_side` (default `max_side`)."""
    _check_max_side(max_side)
    if target_side is None:
        return max_side
    if target_side < 1:
        raise ValueError(f"target_side must be at least 1, got {target_side}")
    return min(target_side, max_side)


def _display_name(path: StrOrBytesPath) -> str:
    r"""`path` as printable one-line text: undecodable bytes as \xNN, control characters escaped."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _open_regular_file(path: StrOrBytesPath, name: str) -> BinaryIO:
    """Opens `path` for reading; refuses directories, empty files and special files.

    Special files are refused because opening a FIFO for reading blocks.
    """
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise ImageReadError("is a directory", name)
        if not stat.S_ISREG(info.st_mode):
            raise ImageReadError("not a regular file", name)
        if info.st_size == 0:
            raise ImageReadError("empty file (0 bytes)", name)
        return open(path, "rb")  # the caller closes it
    except FileNotFoundError as error:
        raise ImageReadError("file not found", name) from error
    except PermissionError as error:
        raise ImageReadError("permission denied", name) from error
    except OSError as error:
        raise ImageReadError(f"cannot open file: {error.strerror or error}", name) from error


# --- Decoding -----------------------------------------------------------------------------------


def _decode_stream(stream: BinaryIO, max_side: int, target_side: int, name: str) -> DecodedImage:
    """Decodes the first frame in `stream`, converting every decoder failure to ImageReadError."""
    _require_truncation_errors()
    try:
        with Image.open(stream, formats=_FORMATS) as image:
            width, height = image.size
            _check_pixel_count(width, height, name)
            _check_decode_memory(image, max_side, name)
            frames = getattr(image, "n_frames", 1)
            with _decode_slot(width * height):
                samples = _decode_samples(image, stream, max_side, target_side, name)
    except UnidentifiedImageError as error:
        raise ImageReadError(_unrecognized_reason(stream), name) from error
    except Image.DecompressionBombError as error:
        reason = f"too many pixels (limit {MAX_IMAGE_PIXELS:,}): {_one_line(error)}"
        raise ImageReadError(reason, name) from error
    except MemoryError as error:
        raise ImageReadError("out of memory while decoding", name) from error
    except _DECODE_ERRORS as error:
        reason = f"cannot decode image data ({type(error).__name__}: {_one_line(error)})"
        raise ImageReadError(reason, name) from error
    pixels = as_rgb_uint8(_to_uint8(samples))
    pixels.flags.writeable = False
    return DecodedImage(pixels=pixels, width=width, height=height, frames=frames)


def _require_truncation_errors() -> None:
    """Refuses to decode while Pillow is set to pad truncated files silently."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES was set to True by other code (e.g. "
            "tensorflow_datasets' notebook thumbnails); truncated scans would then decode as "
            "partly gray images. Set it back to False before reading images."
        )


def _check_pixel_count(width: int, height: int, name: str) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageReadError(
            f"too many pixels: {width}x{height} = {width * height:,} exceeds the limit of "
            f"{MAX_IMAGE_PIXELS:,} that bounds memory use",
            name,
        )


def _decode_slot(pixel_count: int) -> contextlib.AbstractContextManager[object]:
    """The large-image lock for frames above _LARGE_IMAGE_PIXELS, else nothing to hold."""
    return _LARGE_DECODE_LOCK if pixel_count > _LARGE_IMAGE_PIXELS else contextlib.nullcontext()


def _decode_samples(
    image: ImageFile.ImageFile, stream: BinaryIO, max_side: int, target_side: int, name: str
) -> np.ndarray:
    """The first frame, shrunk to fit `max_side`, as uint8 or (if wider) its native dtype."""
    if _needs_low_bytes(image, name):
        return downscale_to_max_side(_read_wide_colour_samples(image, stream), max_side)
    size = _fitted_size(*image.size, max_side)
    draft_size = _fitted_size(*image.size, target_side)
    if draft_size != image.size:
        image.draft(image.mode, draft_size)  # JPEG only: decode at 1/2, 1/4 or 1/8 scale
    if image.size[0] < size[0] or image.size[1] < size[1]:
        size = image.size  # scaled below max_side for a smaller target: no resize
    shrunk = _resized(_averageable(image), size)
    return np.asarray(_numpy_ready(shrunk))


def _averageable(image: Image.Image) -> Image.Image:
    """`image` in a mode whose resize averages pixels (Pillow resizes "1" and "P" by nearest)."""
    if image.mode == "1":
        return image.convert("L")
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "PA":
        return image.convert("RGBA")
    return image


def _numpy_ready(image: Image.Image) -> Image.Image:
    """`image` in a mode that `_to_uint8` and `as_rgb_uint8` take as an array."""
    if image.mode in _HIGH_PRECISION_GRAY_MODES or image.mode in ("L", "RGB", "LA", "RGBA"):
        return image
    if image.mode in _ALPHA_MODES:
        return image.convert(_ALPHA_MODES[image.mode])  # premultiplied -> straight alpha
    return image.convert("RGB")  # CMYK, YCbCr, RGBX, ...


def _to_uint8(samples: np.ndarray) -> np.ndarray:
    """8-bit samples unchanged; wider ones rescaled from their robust range.

    16-bit alpha keeps its 8 most significant bits instead: it is a weight, not
    an intensity to stretch.
    """
    if samples.dtype == np.uint8:
        return samples
    if samples.ndim == 3 and samples.shape[2] == 4:
        colour = samples[..., :3]
        alpha = (samples[..., 3] >> 8).astype(np.uint8)
        return np.dstack((scale_to_uint8(colour, *robust_range(colour)), alpha))
    return scale_to_uint8(samples, *robust_range(samples))


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` box-filtered to `size` (Pillow cannot pre-shrink 16-bit by whole factors)."""
    if image.size == size:
        return image
    gap = None if image.mode.startswith("I;16") else _REDUCING_GAP
    return image.resize(size, Image.Resampling.BOX, reducing_gap=gap)


def _resized_array(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    resized = np.asarray(_resized(Image.fromarray(array), size))
    return resized.astype(array.dtype, copy=False)


def _fitted_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled so the longer side is `max_side`, or unchanged if it fits."""
    longer = max(width, height)
    if longer <= max_side:
        return width, height
    scale = max_side / longer
    return max(1, round(width * scale)), max(1, round(height * scale))


# --- Memory ---------------------------------------------------------------------------------------

# Peak bytes per source pixel while the first frame is decoded and shrunk, by
# Pillow mode: the decoded frame and the full-size conversions this module makes
# (palette -> RGB, premultiplied alpha for the area filter), measured as peak RSS
# growth of fresh processes decoding 9 MP files, plus ~10 %. tests/test_decode_memory.py
# checks every entry against a new measurement.
_DECODE_BYTES_PER_PIXEL = {
    "1": 2.5,
    "L": 1.25,
    "P": 5.75,
    "I;16": 2.5,
    "I;16L": 2.5,
    "I;16B": 2.5,
    "I;16N": 2.5,
    "I": 5.0,
    "F": 5.0,
    "RGB": 4.75,
    "RGBX": 4.75,
    "CMYK": 4.75,
    "YCbCr": 4.75,
    "LA": 9.25,
    "La": 9.25,
    "PA": 9.25,
    "RGBA": 9.25,
    "RGBa": 9.25,
}
_UNKNOWN_MODE_BYTES_PER_PIXEL = 9.25
_TRANSPARENT_PALETTE_BYTES_PER_PIXEL = 10.25  # converted to RGBA, then premultiplied
_WIDE_COLOUR_BYTES_PER_PIXEL = {3: 22.0, 4: 26.5}  # two 8-bit decodes and a uint16 copy
_WEBP_BYTES_PER_PIXEL = 17.5  # libwebp's buffer and Pillow's copy of it
# Per pixel of the shrunk result: its uint8/float copies (robust range, RGB, mean).
_OUTPUT_BYTES_PER_PIXEL = 18
# Whatever the size: decoder state, buffers of the compressed stream.
_DECODE_OVERHEAD_BYTES = 16_000_000


def decode_memory(image: ImageFile.ImageFile, max_side: int = MAX_DECODE_SIDE) -> int:
    """The peak memory (bytes) `read_image` needs for `image`, estimated from its header.

    `image` is opened but not loaded. By mode and bit depth, for the pixels
    actually decoded (JPEG at the reduced scale libjpeg will use), plus the
    shrunk result. An upper bound of the measured peak, not an exact figure.
    """
    width, height = image.size
    target = _fitted_size(width, height, max_side)
    if image.format == "JPEG" and len(image.tile) == 1 and target != (width, height):
        # The scale JpegImageFile.draft picks: the largest of 8, 4, 2 that still covers target.
        factor = min(width // target[0], height // target[1])
        scale = next(s for s in (8, 4, 2, 1) if factor >= s)
        width, height = -(-width // scale), -(-height // scale)
    wide = [r for r in map(_tile_rawmode, image.tile) if r.endswith(_WIDE_RAWMODE_SUFFIXES)]
    if image.format == "WEBP":
        per_pixel = _WEBP_BYTES_PER_PIXEL
    elif wide and image.mode in ("RGB", "RGBA", "RGBX"):
        per_pixel = _WIDE_COLOUR_BYTES_PER_PIXEL[4 if image.mode == "RGBA" else 3]
    elif image.mode == "P" and "transparency" in image.info:
        per_pixel = _TRANSPARENT_PALETTE_BYTES_PER_PIXEL
    else:
        per_pixel = _DECODE_BYTES_PER_PIXEL.get(image.mode, _UNKNOWN_MODE_BYTES_PER_PIXEL)
    output = target[0] * target[1] * _OUTPUT_BYTES_PER_PIXEL
    return int(width * height * per_pixel + output + _DECODE_OVERHEAD_BYTES)


def estimated_decode_bytes(path: StrOrBytesPath, max_side: int = MAX_DECODE_SIDE) -> int:
    """`decode_memory` of the image file at `path` (header only); 0 if it cannot be opened."""
    try:
        with _open_regular_file(path, "") as stream, Image.open(stream, formats=_FORMATS) as image:
            return decode_memory(image, max_side)
    except (ImageReadError, UnidentifiedImageError, Image.DecompressionBombError, *_DECODE_ERRORS):
        return 0


def _check_decode_memory(image: ImageFile.ImageFile, max_side: int, name: str) -> None:
    needed = decode_memory(image, max_side)
    if needed > MAX_DECODE_BYTES:
        wide = any(r.endswith(_WIDE_RAWMODE_SUFFIXES) for r in map(_tile_rawmode, image.tile))
        kind = f"{'16-bit ' if wide else ''}{image.mode} {image.format}"
        raise ImageReadError(
            f"too large to decode: {image.size[0]}x{image.size[1]} {kind} needs about "
            f"{needed / 1e9:.1f} GB of memory, over the limit of "
            f"{MAX_DECODE_BYTES / 1e9:.1f} GB that bounds memory use",
            name,
        )


# --- 16-bit colour ------------------------------------------------------------------------------


def _needs_low_bytes(image: ImageFile.ImageFile, name: str) -> bool:
    """Whether Pillow would keep only the high byte of this image's 16-bit colour samples.

    Raises ImageReadError for 16-bit colour layouts whose low bytes cannot be recovered.
    """
    if image.mode in _HIGH_PRECISION_GRAY_MODES:
        return False
    if _is_planar_wide_tiff(image):
        # Pillow unpacks each 16-bit plane as if it held 8-bit samples.
        raise ImageReadError(
            "unsupported: 16-bit colour TIFF with separate colour planes "
            "(save it with interleaved samples)",
            name,
        )
    wide = {r for r in map(_tile_rawmode, image.tile) if r.endswith(_WIDE_RAWMODE_SUFFIXES)}
    unsupported = sorted(wide - _LOW_BYTE_RAWMODE.keys())
    if unsupported:
        raise ImageReadError(
            f"unsupported 16-bit sample layout {unsupported[0]} "
            "(supported: 16-bit gray, RGB or RGBA with straight alpha)",
            name,
        )
    return bool(wide)


def _is_planar_wide_tiff(image: ImageFile.ImageFile) -> bool:
    if not isinstance(image, TiffImagePlugin.TiffImageFile):
        return False
    planar = image.tag_v2.get(TiffImagePlugin.PLANAR_CONFIGURATION, 1) == 2
    bits = np.max(image.tag_v2.get(TiffImagePlugin.BITSPERSAMPLE, 1))
    return planar and bits > 8


def _tile_rawmode(tile: ImageFile._Tile) -> str:
    """The raw mode a tile is unpacked with, or "" for codecs without one (GIF, WebP).

    PNG stores it alone, raw and libtiff tiles first in a tuple.
    """
    args = tile.args[0] if isinstance(tile.args, tuple) and tile.args else tile.args
    return args if isinstance(args, str) else ""


def _with_rawmode(tile: ImageFile._Tile, rawmode: str) -> ImageFile._Tile:
    args = rawmode if isinstance(tile.args, str) else (rawmode, *tile.args[1:])
    return tile._replace(args=args)


def _read_wide_colour_samples(image: ImageFile.ImageFile, stream: BinaryIO) -> np.ndarray:
    """The full-resolution 16-bit colour samples (HxWxC uint16) from two 8-bit decodes."""
    low_byte_tiles = [_with_rawmode(t, _LOW_BYTE_RAWMODE[_tile_rawmode(t)]) for t in image.tile]
    samples = np.asarray(image).astype(np.uint16)
    samples <<= 8
    stream.seek(0)
    with Image.open(stream, formats=[image.format]) as low_bytes:
        low_bytes.tile = low_byte_tiles
        samples |= np.asarray(low_bytes)
    return samples


# --- Alpha --------------------------------------------------------------------------------------


def _flatten_alpha(image: np.ndarray) -> np.ndarray:
    """HxWx2 or HxWx4 uint8 (gray or RGB + straight alpha) -> HxWx1 or HxWx3 without alpha.

    Blended onto white or black, whichever keeps the tissue visible. Pillow
    blends in C, several times faster than NumPy, rounding to nearest.
    """
    alpha = image[..., -1]
    if alpha.min() == 255:
        return image[..., :-1]
    with_alpha = Image.fromarray(image)  # "LA" or "RGBA"
    colour_mode = with_alpha.mode[:-1]
    background = _contrasting_background(np.asarray(with_alpha.convert("L")), alpha)
    flat = Image.new(colour_mode, with_alpha.size, (background,) * len(colour_mode))
    flat.paste(with_alpha, mask=with_alpha)
    return np.asarray(flat).reshape(*image.shape[:2], len(colour_mode))


def _contrasting_background(luma: np.ndarray, alpha: np.ndarray) -> int:
    """255 if the alpha-weighted mean luminance is below 128, else 0 (also if nothing is visible)."""
    total_alpha = alpha.sum(dtype=np.uint64)
    if total_alpha == 0:
        return 0
    weighted_luma = np.multiply(luma, alpha, dtype=np.uint16).sum(dtype=np.uint64)
    return 255 if weighted_luma / total_alpha < 128 else 0


# --- Helpers ------------------------------------------------------------------------------------


def _percentiles_by_counting(values: np.ndarray, percentiles: np.ndarray) -> np.ndarray:
    """numpy.percentile (linear) of 8/16-bit `values` from a histogram: no sort, no copy of `values`."""
    if values.size == 0:
        return np.zeros(len(percentiles))
    cumulative = np.cumsum(np.bincount(values.ravel()))
    ranks = percentiles / 100 * (values.size - 1)
    below = np.floor(ranks)
    # The k-th smallest value (from 0) is the first v with more than k values <= v.
    value_below = np.searchsorted(cumulative, below, side="right")
    value_above = np.searchsorted(cumulative, np.minimum(below + 1, values.size - 1), side="right")
    return value_below + (ranks - below) * (value_above - value_below)


def _unrecognized_reason(stream: BinaryIO) -> str:
    """Why no format opened `stream`: a known signature with a bad header, or none at all.

    Pillow reports both the same way, including zero-width or zero-height images.
    """
    stream.seek(0)
    prefix = stream.read(16)
    for format_name in _FORMATS:
        accept = Image.OPEN[format_name][1]
        verdict = accept(prefix) if accept else False
        if isinstance(verdict, str):  # e.g. the codec is not installed
            return verdict
        if verdict:
            return (
                f"{format_name} signature but unreadable header "
                "(corrupt, unsupported variant, or zero width or height)"
            )
    return f"not a recognized image format (supported: {', '.join(_FORMATS)})"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
