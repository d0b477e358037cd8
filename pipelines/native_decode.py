"""The fast decode path: common scan formats decoded by TensorFlow's own decoders, in the graph.

`image_files.read_image` (Pillow) handles every format and layout, but inside
tf.data it runs in `tf.numpy_function`, holding Python's interpreter lock for
its bookkeeping, and it cannot use more cores than Python lets it. This module
decodes the common cases with TensorFlow ops instead, so they run on tf.data's
own threads with no Python at all.

It takes a file only when it can prove, from the header, that TensorFlow's
decoder returns exactly the pixels `read_image` would (tests/test_native_decode.py
compares them):

    PNG    8-bit gray, RGB or palette; no transparency (tRNS) and not animated
           (acTL) before the image data — alpha goes to Pillow, which
           composites it onto a contrasting background
    JPEG   1 or 3 components (not CMYK/YCCK), decoded with libjpeg's accurate
           integer IDCT (Pillow's) at the DCT scale (1/2, 1/4, 1/8) Pillow's
           draft would pick for `target_side`
    BMP    uncompressed 24-bit, bottom-up, with the common 40-byte header
    GIF    the first image fills the logical screen, has a colour table and no
           transparent colour

and the result needs no resize: the longer side, after JPEG scaling, is at most
`max_side`, where `read_image` would not resize either. Anything else — 16-bit,
TIFF, CMYK, alpha, odd modes, larger images — is reported as not handled, and
the caller reads it with Pillow. Decoders that fail on a corrupt file raise an
op error, which TensorFlow cannot turn into a value: `classify.scan_input`
then reads that file with Pillow, which writes the same error row as always.

Pixels keep the file's channels (1 for gray, 3 for colour), so gray scans are
reduced to the working size on one channel instead of three.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from brainview.image_files import LUMA_WEIGHTS

# The header bytes examined; PNG chunks before the image data must fit in them.
HEADER_BYTES = 65536

# File kinds the fast path may take.
NONE, PNG, JPEG, BMP, GIF = 0, 1, 2, 3, 4
DECODER_NAMES = {NONE: "none", PNG: "png", JPEG: "jpeg", BMP: "bmp", GIF: "gif"}
JPEG_SCALES = (1, 2, 4, 8)  # libjpeg's DCT scaling, as Pillow's draft uses it

_PNG_SIGNATURE = (0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A)


def _fourcc(text: str) -> int:
    return int.from_bytes(text.encode("ascii"), "big")


_IHDR, _IDAT, _TRNS, _ACTL = (_fourcc(t) for t in ("IHDR", "IDAT", "tRNS", "acTL"))


class NativeDecode(NamedTuple):
    """What `decode` returns for one file's content."""

    pixels: tf.Tensor  # uint8 HxWxC, C = 1 (gray) or 3 (colour); a 1x1x1 zero when not handled
    width: tf.Tensor  # int32, the image's size in the file
    height: tf.Tensor  # int32
    handled: tf.Tensor  # bool: False means "read it with Pillow"
    kind: tf.Tensor  # int32, one of NONE, PNG, JPEG, BMP, GIF


def decode(contents: tf.Tensor, max_side: int, target_side: int) -> NativeDecode:
    """Decodes a file's bytes (a scalar string tensor) if the fast path can prove it may.

    `max_side` and `target_side` mean what they mean for `image_files.read_image`:
    the longest side returned without resizing, and the side JPEG's DCT scaling
    must still cover. May raise an op error for a corrupt file (see the module doc).
    """
    if target_side < 1 or max_side < 1:
        raise ValueError(f"need sides >= 1, got max_side={max_side}, target_side={target_side}")
    target_side = min(target_side, max_side)
    header, length = _header(contents)
    png_ok, png_width, png_height = _png_info(header, length)
    bmp_ok, bmp_width, bmp_height = _bmp_info(header, length)
    gif_ok, gif_width, gif_height = _gif_info(header, length)
    jpeg = _starts_with(header, (0xFF, 0xD8, 0xFF))
    kind = tf.case(
        [
            (png_ok, lambda: tf.constant(PNG)),
            (jpeg, lambda: tf.constant(JPEG)),
            (bmp_ok, lambda: tf.constant(BMP)),
            (gif_ok, lambda: tf.constant(GIF)),
        ],
        default=lambda: tf.constant(NONE),
    )

    def lossless(width: tf.Tensor, height: tf.Tensor, decode_fn) -> tuple:
        fits = (width <= max_side) & (height <= max_side)
        return _decoded_if(fits, decode_fn, width, height)

    branches = {
        NONE: lambda: _not_handled(tf.constant(0), tf.constant(0)),
        PNG: lambda: lossless(png_width, png_height, lambda: tf.io.decode_png(contents)),
        JPEG: lambda: _jpeg(contents, max_side, target_side),
        BMP: lambda: lossless(bmp_width, bmp_height, lambda: tf.io.decode_bmp(contents)),
        GIF: lambda: lossless(gif_width, gif_height, lambda: tf.io.decode_gif(contents)[0]),
    }
    pixels, width, height, handled = tf.switch_case(kind, branches)
    pixels = tf.ensure_shape(pixels, [None, None, None])
    return NativeDecode(pixels, width, height, handled, kind)


def mean_gray(pixels: tf.Tensor) -> tf.Tensor:
    """`image_files.mean_gray` of the RGB image of uint8 HxWx1 or HxWx3 `pixels` (float64).

    Exact integer sums per channel, then the luma weights, as image_files does:
    a gray image counts as its three equal channels.
    """
    sums = tf.reduce_sum(tf.cast(pixels, tf.int64), axis=[0, 1])
    count = tf.cast(tf.shape(pixels)[0] * tf.shape(pixels)[1], tf.float64)
    means = tf.broadcast_to(tf.cast(sums, tf.float64) / count, [3])
    return tf.reduce_sum(means * tf.constant(LUMA_WEIGHTS, tf.float64))


# --- Per format ---------------------------------------------------------------------------------


def _jpeg(contents: tf.Tensor, max_side: int, target_side: int) -> tuple:
    """JPEG at the DCT scale Pillow's draft picks; handled when Pillow would not resize."""
    shape = tf.image.extract_jpeg_shape(contents)  # [height, width, components]; raises if invalid
    height, width, components = shape[0], shape[1], shape[2]
    requested_width, requested_height = fitted_size(width, height, target_side)
    # Pillow's JpegImageFile.draft: the largest of 8, 4, 2, 1 not above the whole reduction.
    reduction = tf.minimum(width // requested_width, height // requested_height)
    scale_index = tf.reduce_sum(tf.cast(reduction >= tf.constant(JPEG_SCALES[1:]), tf.int32))
    scale = tf.gather(tf.constant(JPEG_SCALES), scale_index)
    scaled_width, scaled_height = -(-width // scale), -(-height // scale)
    # read_image then resizes to the size fitted to max_side only if the scaled image covers it.
    final_width, final_height = fitted_size(width, height, max_side)
    resized = (
        (scaled_width >= final_width)
        & (scaled_height >= final_height)
        & ((scaled_width != final_width) | (scaled_height != final_height))
    )
    provable = ((components == 1) | (components == 3)) & ~resized

    def scaled_decode() -> tf.Tensor:
        return tf.switch_case(
            scale_index,
            [
                lambda s=s: tf.io.decode_jpeg(contents, ratio=s, dct_method="INTEGER_ACCURATE")
                for s in JPEG_SCALES
            ],
        )

    return _decoded_if(provable, scaled_decode, width, height)


def _png_info(header: tf.Tensor, length: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(provable, width, height) of a PNG header (see the module doc)."""
    signature = _starts_with(header, _PNG_SIGNATURE)
    ihdr = (_big_endian(header, 8, 4) == 13) & (_big_endian(header, 12, 4) == _IHDR)
    width, height = _big_endian(header, 16, 4), _big_endian(header, 20, 4)
    bit_depth, colour_type = header[24], header[25]
    plain_layout = (
        (bit_depth == 8)
        & ((colour_type == 0) | (colour_type == 2) | (colour_type == 3))  # gray, RGB, palette
        & (header[26] == 0)  # deflate
        & (header[27] == 0)  # adaptive filtering
        & (header[28] <= 1)  # not interlaced, or Adam7
    )
    provable = signature & ihdr & plain_layout & (width >= 1) & (height >= 1)
    provable = provable & _png_chunks_before_data_allowed(header, length)
    return provable, width, height


def _png_chunks_before_data_allowed(header: tf.Tensor, length: tf.Tensor) -> tf.Tensor:
    """Whether the chunks from IHDR to the first IDAT lie in the header and none is tRNS or acTL."""

    def keep_going(position, done, allowed):
        del position, allowed
        return ~done

    def next_chunk(position, done, allowed):
        del done, allowed
        inside = position + 8 <= tf.cast(length, tf.int64)
        chunk_type = _big_endian(header, position + 4, 4)
        data_reached = inside & (chunk_type == _IDAT)
        refused = (chunk_type == _TRNS) | (chunk_type == _ACTL)
        finished = ~inside | data_reached | refused
        following = position + 12 + _big_endian(header, position, 4)
        return following, finished, data_reached & ~refused

    _, _, allowed = tf.while_loop(
        keep_going,
        next_chunk,
        (tf.constant(8, tf.int64), tf.constant(False), tf.constant(False)),
    )
    return allowed


def _bmp_info(header: tf.Tensor, length: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(provable, width, height) of a BMP header: uncompressed 24-bit, bottom-up, 40-byte DIB header."""
    width = _signed32(_little_endian(header, 18, 4))
    height = _signed32(_little_endian(header, 22, 4))
    provable = (
        _starts_with(header, (0x42, 0x4D))
        & (length >= 54)
        & (_little_endian(header, 14, 4) == 40)
        & (_little_endian(header, 26, 2) == 1)  # planes
        & (_little_endian(header, 28, 2) == 24)  # bits per pixel
        & (_little_endian(header, 30, 4) == 0)  # BI_RGB: no compression
        & (width >= 1)
        & (height >= 1)  # bottom-up rows
    )
    return provable, width, height


def _gif_info(header: tf.Tensor, length: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(provable, width, height) of a GIF whose first image fills the screen, opaque."""
    signature = _starts_with(header, tuple(b"GIF87a")) | _starts_with(header, tuple(b"GIF89a"))
    width, height = _little_endian(header, 6, 2), _little_endian(header, 8, 2)
    packed = tf.cast(header[10], tf.int64)
    global_table = packed >= 128
    table_bytes = 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), packed % 8)
    after_table = 13 + tf.where(global_table, table_bytes, 0)
    # An optional graphic control extension (21 F9 04 flags delay delay index 00), then the image.
    control = (
        (_byte(header, after_table) == 0x21)
        & (_byte(header, after_table + 1) == 0xF9)
        & (_byte(header, after_table + 2) == 4)
        & (_byte(header, after_table + 7) == 0)
    )
    transparent = control & (_byte(header, after_table + 3) % 2 == 1)
    descriptor = tf.where(control, after_table + 8, after_table)
    fills_screen = (
        (_byte(header, descriptor) == 0x2C)
        & (_little_endian(header, descriptor + 1, 2) == 0)
        & (_little_endian(header, descriptor + 3, 2) == 0)
        & (_little_endian(header, descriptor + 5, 2) == width)
        & (_little_endian(header, descriptor + 7, 2) == height)
    )
    local_table = _byte(header, descriptor + 9) >= 128
    provable = (
        signature
        & (descriptor + 10 < tf.cast(length, tf.int64))
        & fills_screen
        & ~transparent
        & (global_table | local_table)
        & (width >= 1)
        & (height >= 1)
    )
    return provable, width, height


# --- Helpers ------------------------------------------------------------------------------------


def fitted_size(width: tf.Tensor, height: tf.Tensor, side: int) -> tuple[tf.Tensor, tf.Tensor]:
    """`image_files._fitted_size` as ops: (width, height) scaled so the longer side is `side`.

    Same float64 arithmetic and round-half-to-even as Python's round, so the sizes agree.
    """
    width, height = tf.cast(width, tf.int64), tf.cast(height, tf.int64)
    longer = tf.maximum(width, height)
    scale = tf.constant(float(side), tf.float64) / tf.cast(longer, tf.float64)

    def scaled(value: tf.Tensor) -> tf.Tensor:
        return tf.maximum(tf.cast(tf.round(tf.cast(value, tf.float64) * scale), tf.int64), 1)

    fits = longer <= side
    return (
        tf.cast(tf.where(fits, width, scaled(width)), tf.int32),
        tf.cast(tf.where(fits, height, scaled(height)), tf.int32),
    )


def _header(contents: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The first HEADER_BYTES bytes as int64 values, zero-padded; and how many are real."""
    head = tf.io.decode_raw(tf.strings.substr(contents, 0, HEADER_BYTES), tf.uint8)
    length = tf.size(head)
    padded = tf.pad(head, [[0, HEADER_BYTES - length]])
    return tf.cast(padded, tf.int64), length


def _byte(header: tf.Tensor, index) -> tf.Tensor:
    """header[index], or 0 past the end (indices come from the file and may be anything)."""
    index = tf.cast(index, tf.int64)
    inside = (index >= 0) & (index < HEADER_BYTES)
    return tf.where(inside, tf.gather(header, tf.clip_by_value(index, 0, HEADER_BYTES - 1)), 0)


def _big_endian(header: tf.Tensor, start, count: int) -> tf.Tensor:
    start = tf.cast(start, tf.int64)
    value = tf.constant(0, tf.int64)
    for offset in range(count):
        value = value * 256 + _byte(header, start + offset)
    return value


def _little_endian(header: tf.Tensor, start, count: int) -> tf.Tensor:
    start = tf.cast(start, tf.int64)
    value = tf.constant(0, tf.int64)
    for offset in reversed(range(count)):
        value = value * 256 + _byte(header, start + offset)
    return value


def _signed32(value: tf.Tensor) -> tf.Tensor:
    return tf.where(value >= 2**31, value - 2**32, value)


def _starts_with(header: tf.Tensor, signature: tuple[int, ...]) -> tf.Tensor:
    return tf.reduce_all(header[: len(signature)] == tf.constant(signature, tf.int64))


def _decoded_if(condition: tf.Tensor, decode_fn, width: tf.Tensor, height: tf.Tensor) -> tuple:
    """(pixels, width, height, handled) from decode_fn() when `condition`, else not handled."""
    width, height = tf.cast(width, tf.int32), tf.cast(height, tf.int32)

    def decoded() -> tf.Tensor:
        return tf.ensure_shape(decode_fn(), [None, None, None])

    def placeholder() -> tf.Tensor:
        return tf.zeros([1, 1, 1], tf.uint8)

    return tf.cond(condition, decoded, placeholder), width, height, condition


def _not_handled(width: tf.Tensor, height: tf.Tensor) -> tuple:
    return tf.zeros([1, 1, 1], tf.uint8), width, height, tf.constant(False)
