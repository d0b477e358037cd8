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
    The format is told by its signature; only that format's header is parsed.
    """
    if target_side < 1 or max_side < 1:
        raise ValueError(f"need sides >= 1, got max_side={max_side}, target_side={target_side}")
    target_side = min(target_side, max_side)
    header, length = _header(contents)
    kind = tf.case(
        [
            (_starts_with(header, _PNG_SIGNATURE), lambda: tf.constant(PNG)),
            (_starts_with(header, (0xFF, 0xD8, 0xFF)), lambda: tf.constant(JPEG)),
            (_starts_with(header, tuple(b"BM")), lambda: tf.constant(BMP)),
            (_starts_with(header, tuple(b"GIF8")), lambda: tf.constant(GIF)),
        ],
        default=lambda: tf.constant(NONE),
    )

    def lossless(info, decode_fn) -> tuple:
        provable, width, height = info(header, length)
        fits = provable & (width <= max_side) & (height <= max_side)
        return _decoded_if(fits, decode_fn, width, height)

    branches = {
        NONE: lambda: _not_handled(),
        PNG: lambda: lossless(_png_info, lambda: tf.io.decode_png(contents)),
        JPEG: lambda: _jpeg(contents, max_side, target_side),
        BMP: lambda: lossless(_bmp_info, lambda: tf.io.decode_bmp(contents)),
        GIF: lambda: lossless(_gif_info, lambda: tf.io.decode_gif(contents)[0]),
    }
    pixels, width, height, handled = tf.switch_case(kind, branches)
    pixels = tf.ensure_shape(pixels, [None, None, None])
    return NativeDecode(pixels, width, height, handled, kind)


def mean_gray(pixels: tf.Tensor) -> tf.Tensor:
    """`image_files.mean_gray` of the RGB image of uint8 HxWx1 or HxWx3 `pixels` (float64).

    Exact integer sums per channel (rows in int32, which a row of uint8 cannot
    overflow, then int64), then the luma weights, as image_files does: a gray
    image counts as its three equal channels.
    """
    row_sums = tf.reduce_sum(tf.cast(pixels, tf.int32), axis=1)
    sums = tf.reduce_sum(tf.cast(row_sums, tf.int64), axis=0)
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
    fields = tf.cast(header[:29], tf.int64)
    ihdr = (_big_endian(fields[8:12]) == 13) & (_big_endian(fields[12:16]) == _IHDR)
    width, height = _big_endian(fields[16:20]), _big_endian(fields[20:24])
    bit_depth, colour_type = fields[24], fields[25]
    plain_layout = (
        (bit_depth == 8)
        & ((colour_type == 0) | (colour_type == 2) | (colour_type == 3))  # gray, RGB, palette
        & (fields[26] == 0)  # deflate
        & (fields[27] == 0)  # adaptive filtering
        & (fields[28] <= 1)  # not interlaced, or Adam7
    )
    provable = ihdr & plain_layout & (width >= 1) & (height >= 1)
    provable = provable & _png_chunks_before_data_allowed(header, length)
    return provable, width, height


def _png_chunks_before_data_allowed(header: tf.Tensor, length: tf.Tensor) -> tf.Tensor:
    """Whether the chunks from IHDR to the first IDAT lie in the header and none is tRNS or acTL."""
    length = tf.cast(length, tf.int64)

    def keep_going(position, done, allowed):
        del position, allowed
        return ~done

    def next_chunk(position, done, allowed):
        del done, allowed
        inside = position + 8 <= length
        chunk_length = _big_endian(_bytes_at(header, position, 4))
        chunk_type = _big_endian(_bytes_at(header, position + 4, 4))
        data_reached = inside & (chunk_type == _IDAT)
        refused = (chunk_type == _TRNS) | (chunk_type == _ACTL)
        finished = ~inside | data_reached | refused
        return position + 12 + chunk_length, finished, data_reached & ~refused

    _, _, allowed = tf.while_loop(
        keep_going,
        next_chunk,
        (tf.constant(8, tf.int64), tf.constant(False), tf.constant(False)),
    )
    return allowed


def _bmp_info(header: tf.Tensor, length: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(provable, width, height) of a BMP header: uncompressed 24-bit, bottom-up, 40-byte DIB header."""
    fields = tf.cast(header[:34], tf.int64)
    width = _signed32(_little_endian(fields[18:22]))
    height = _signed32(_little_endian(fields[22:26]))
    provable = (
        (length >= 54)
        & (_little_endian(fields[14:18]) == 40)
        & (_little_endian(fields[26:28]) == 1)  # planes
        & (_little_endian(fields[28:30]) == 24)  # bits per pixel
        & (_little_endian(fields[30:34]) == 0)  # BI_RGB: no compression
        & (width >= 1)
        & (height >= 1)  # bottom-up rows
    )
    return provable, width, height


def _gif_info(header: tf.Tensor, length: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(provable, width, height) of a GIF whose first image fills the screen, opaque."""
    fields = tf.cast(header[:13], tf.int64)
    signature = _starts_with(header, tuple(b"GIF87a")) | _starts_with(header, tuple(b"GIF89a"))
    width, height = _little_endian(fields[6:8]), _little_endian(fields[8:10])
    packed = fields[10]
    global_table = packed >= 128
    table_bytes = 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), packed % 8)
    after_table = 13 + tf.where(global_table, table_bytes, 0)
    # An optional graphic control extension (21 F9 04 flags delay delay index 00), then the image.
    extension = _bytes_at(header, after_table, 8)
    control = (
        (extension[0] == 0x21) & (extension[1] == 0xF9) & (extension[2] == 4) & (extension[7] == 0)
    )
    transparent = control & (extension[3] % 2 == 1)
    descriptor_at = tf.where(control, after_table + 8, after_table)
    descriptor = _bytes_at(header, descriptor_at, 10)
    fills_screen = (
        (descriptor[0] == 0x2C)
        & (_little_endian(descriptor[1:3]) == 0)
        & (_little_endian(descriptor[3:5]) == 0)
        & (_little_endian(descriptor[5:7]) == width)
        & (_little_endian(descriptor[7:9]) == height)
    )
    local_table = descriptor[9] >= 128
    provable = (
        signature
        & (descriptor_at + 10 < tf.cast(length, tf.int64))
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
    """The first HEADER_BYTES bytes (uint8), zero-padded to that length; and how many are real."""
    head = tf.io.decode_raw(tf.strings.substr(contents, 0, HEADER_BYTES), tf.uint8)
    length = tf.size(head)
    return tf.reshape(tf.pad(head, [[0, HEADER_BYTES - length]]), [HEADER_BYTES]), length


def _bytes_at(header: tf.Tensor, start: tf.Tensor, count: int) -> tf.Tensor:
    """header[start:start + count] as int64 for a position read from the file (clipped: the
    callers check it against the real length)."""
    indices = tf.clip_by_value(start + tf.range(count, dtype=tf.int64), 0, HEADER_BYTES - 1)
    return tf.cast(tf.gather(header, indices), tf.int64)


def _big_endian(values: tf.Tensor) -> tf.Tensor:
    """The unsigned integer of big-endian bytes (int64, at most 4 bytes)."""
    count = values.shape[0]
    weights = tf.constant([256 ** (count - 1 - i) for i in range(count)], tf.int64)
    return tf.reduce_sum(values * weights)


def _little_endian(values: tf.Tensor) -> tf.Tensor:
    return _big_endian(values[::-1])


def _signed32(value: tf.Tensor) -> tf.Tensor:
    return tf.where(value >= 2**31, value - 2**32, value)


def _starts_with(header: tf.Tensor, signature: tuple[int, ...]) -> tf.Tensor:
    return tf.reduce_all(header[: len(signature)] == tf.constant(signature, tf.uint8))


def _decoded_if(condition: tf.Tensor, decode_fn, width: tf.Tensor, height: tf.Tensor) -> tuple:
    """(pixels, width, height, handled) from decode_fn() when `condition`, else not handled."""
    width, height = tf.cast(width, tf.int32), tf.cast(height, tf.int32)

    def decoded() -> tf.Tensor:
        return tf.ensure_shape(decode_fn(), [None, None, None])

    def placeholder() -> tf.Tensor:
        return tf.zeros([1, 1, 1], tf.uint8)

    return tf.cond(condition, decoded, placeholder), width, height, condition


def _not_handled() -> tuple:
    return tf.zeros([1, 1, 1], tf.uint8), tf.constant(0), tf.constant(0), tf.constant(False)
