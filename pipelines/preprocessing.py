"""The one preprocessing path shared by training, evaluation and classify_dir.

Every image the model sees, in training or at inference, goes through
`normalize_section` then `frame_tissue` (mode "section"), or through
`frame_plain` (mode "plain", the original study's look: RGB, letterboxed).
Training-time augmentation (`augmentation.py`) splices in between the two
steps; nothing else differs between training and inference.

Mode "section" removes what differs between labs rather than between planes:
* stain colour: the image becomes gray (ITU-R 601 luminance);
* polarity: bright-field sections (dark tissue on a light background) are
  inverted so tissue is always bright on black, like dark-field images;
* background level, noise and contrast: the background (median of the image
  border) and its noise are subtracted and the 99th percentile of the rest is
  scaled to 1;
* framing: the tissue's bounding box (plus a margin) is cut out, padded to a
  square with background and resized, so section size and position on the
  slide do not matter. Aspect ratio is kept: it is a real cue for the plane.

All functions are TensorFlow ops, usable inside `tf.data` maps.
"""

from __future__ import annotations

import tensorflow as tf

from brainview_tfds.core.features import DARK_IMAGE_THRESHOLD

PREPROCESSING_MODES = ("section", "plain")

BORDER_FRACTION = 0.04  # width of the image border used to estimate the background
SIGNAL_PERCENTILE = 99.0  # this percentile of the tissue signal maps to 1
TISSUE_THRESHOLD = 0.12  # normalized signal above this counts as tissue
# A row/column belongs to the tissue box when this fraction of it is tissue;
# isolated specks and dust do not stretch the box.
PROFILE_THRESHOLD = 0.02
FRAME_MARGIN = 0.06  # margin around the tissue box, as a fraction of its longer side
MAX_PERCENTILE_SAMPLES = 65536  # pixels used to estimate percentiles


def to_gray(image: tf.Tensor) -> tf.Tensor:
    """uint8 HxWx3 -> float32 HxW on 0..255 (ITU-R 601 luminance)."""
    return tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))[..., 0]


def _percentile(values: tf.Tensor, percentile: float) -> tf.Tensor:
    """Percentile of a tensor of any shape, from an evenly strided sample."""
    flat = tf.reshape(values, [-1])
    stride = tf.maximum(1, tf.size(flat) // MAX_PERCENTILE_SAMPLES)
    sample = tf.sort(flat[::stride])
    index = tf.cast(
        tf.round(percentile / 100.0 * tf.cast(tf.size(sample) - 1, tf.float32)), tf.int32
    )
    return sample[index]


def border_pixels(gray: tf.Tensor) -> tf.Tensor:
    """The pixels of a ring along the image border (1-D)."""
    height, width = tf.shape(gray)[0], tf.shape(gray)[1]
    ring = tf.maximum(
        1, tf.cast(BORDER_FRACTION * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    )
    return tf.concat(
        [
            tf.reshape(gray[:ring, :], [-1]),
            tf.reshape(gray[-ring:, :], [-1]),
            tf.reshape(gray[:, :ring], [-1]),
            tf.reshape(gray[:, -ring:], [-1]),
        ],
        axis=0,
    )


def normalize_section(image: tf.Tensor) -> tf.Tensor:
    """uint8 HxWx3 -> float32 HxW 'tissue signal': 0 background, ~1 dense tissue.

    Bright-field images are detected by a background (border median) brighter
    than the image mean, and inverted. The background's own noise (the 90th
    percentile of the border after subtraction) is removed too, so the
    background is flat black whatever the scanner. A blank image yields zeros.
    """
    gray = to_gray(image)
    border = border_pixels(gray)
    background = _percentile(border, 50.0)
    bright_field = background > tf.reduce_mean(gray)
    polarity = tf.where(bright_field, -1.0, 1.0)
    noise_floor = _percentile(tf.maximum((border - background) * polarity, 0.0), 90.0)
    signal = tf.maximum((gray - background) * polarity - noise_floor, 0.0)
    scale = _percentile(signal, SIGNAL_PERCENTILE)
    # Below ~2 gray levels of contrast there is no section to normalize.
    return tf.where(scale > 2.0, tf.minimum(signal / tf.maximum(scale, 1e-6), 1.0), 0.0)


def tissue_box(signal: tf.Tensor) -> tf.Tensor:
    """[y0, x0, y1, x1] (float32 pixels, end-exclusive) bounding the tissue.

    The whole image when no tissue is found.
    """
    tissue = tf.cast(signal > TISSUE_THRESHOLD, tf.float32)
    height, width = tf.shape(signal)[0], tf.shape(signal)[1]
    rows = tf.reduce_mean(tissue, axis=1) > PROFILE_THRESHOLD
    cols = tf.reduce_mean(tissue, axis=0) > PROFILE_THRESHOLD
    found = tf.reduce_any(rows) & tf.reduce_any(cols)

    def extent(mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        index = tf.cast(tf.where(mask)[:, 0], tf.int32)
        return tf.reduce_min(index), tf.reduce_max(index) + 1

    def box_of_tissue() -> tf.Tensor:
        y0, y1 = extent(rows)
        x0, x1 = extent(cols)
        return tf.cast(tf.stack([y0, x0, y1, x1]), tf.float32)

    whole = tf.cast(tf.stack([0, 0, height, width]), tf.float32)
    return tf.cond(found, box_of_tissue, lambda: whole)


def square_frame(box: tf.Tensor, margin: float = FRAME_MARGIN) -> tf.Tensor:
    """The square [y0, x0, y1, x1] centred on `box`, enlarged by `margin`."""
    y0, x0, y1, x1 = tf.unstack(box)
    side = tf.maximum(y1 - y0, x1 - x0) * (1.0 + 2.0 * margin)
    side = tf.maximum(side, 1.0)
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    return tf.stack([cy - side / 2, cx - side / 2, cy + side / 2, cx + side / 2])


def crop_to_frame(signal: tf.Tensor, frame: tf.Tensor, image_size: int) -> tf.Tensor:
    """Cuts the square `frame` out of `signal` (zero outside), resized to image_size².

    Cropping and padding are exact (integer pixels); the antialiased resize
    averages when shrinking, so fine textures do not alias.
    """
    height, width = tf.shape(signal)[0], tf.shape(signal)[1]
    frame = tf.cast(tf.round(frame), tf.int32)
    y0, x0, y1, _ = tf.unstack(frame)  # the frame is square: its height is its side
    side = tf.maximum(y1 - y0, 1)
    top, left = tf.maximum(y0, 0), tf.maximum(x0, 0)
    bottom, right = tf.minimum(y0 + side, height), tf.minimum(x0 + side, width)
    bottom, right = tf.maximum(bottom, top + 1), tf.maximum(right, left + 1)
    inside = signal[top:bottom, left:right]
    pad_top, pad_left = top - y0, left - x0
    padded = tf.pad(
        inside,
        [
            [pad_top, tf.maximum(side - pad_top - (bottom - top), 0)],
            [pad_left, tf.maximum(side - pad_left - (right - left), 0)],
        ],
    )
    padded = padded[:side, :side, None]
    resized = tf.image.resize(padded, [image_size, image_size], antialias=True)
    return tf.clip_by_value(resized[..., 0], 0.0, 1.0)


def frame_tissue(signal: tf.Tensor, image_size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Tissue signal HxW -> (image_size² signal, the square frame in source pixels)."""
    frame = square_frame(tissue_box(signal))
    return crop_to_frame(signal, frame, image_size), frame


def to_model_input(signal: tf.Tensor) -> tf.Tensor:
    """Signal SxS in 0..1 -> SxSx3 float32 on 0..255 (what EfficientNet expects)."""
    return tf.repeat(signal[..., None] * 255.0, 3, axis=-1)


def frame_plain(image: tf.Tensor, image_size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Mode "plain": RGB, aspect kept, letterboxed with black, on 0..255."""
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    resized = tf.image.resize_with_pad(
        tf.cast(image, tf.float32), image_size, image_size, antialias=True
    )
    side = tf.maximum(height, width)
    frame = tf.stack(
        [(height - side) / 2, (width - side) / 2, (height + side) / 2, (width + side) / 2]
    )
    return tf.clip_by_value(resized, 0.0, 255.0), frame


# An image with less tissue than this fraction of its pixels (after
# normalization) is reported as blank: empty slides, uniform fields, specks.
BLANK_TISSUE_FRACTION = 0.002


def looks_blank(mean_intensity: tf.Tensor, signal: tf.Tensor) -> tf.Tensor:
    """True for images with no section to classify.

    Dark (the original study's filter: mean gray <= 0.6 on 0..255), or
    near-uniform / almost no tissue after normalization.
    """
    tissue_fraction = tf.reduce_mean(tf.cast(signal > TISSUE_THRESHOLD, tf.float32))
    return (mean_intensity <= DARK_IMAGE_THRESHOLD) | (tissue_fraction < BLANK_TISSUE_FRACTION)


def preprocess_and_check(
    image: tf.Tensor, image_size: int, mode: str = "section"
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Inference path: uint8 HxWx3 -> (model input SxSx3 on 0..255, frame, looks blank).

    The frame [y0, x0, y1, x1] is the square of the source image the model
    input covers; it maps CAMs back onto the source image.
    """
    signal = normalize_section(image)
    if mode == "section":
        framed, frame = frame_tissue(signal, image_size)
        model_input = to_model_input(framed)
    elif mode == "plain":
        model_input, frame = frame_plain(image, image_size)
    else:
        raise ValueError(
            f"unknown preprocessing mode {mode!r}; expected one of {PREPROCESSING_MODES}"
        )
    return model_input, frame, looks_blank(tf.reduce_mean(to_gray(image)), signal)


def preprocess(
    image: tf.Tensor, image_size: int, mode: str = "section"
) -> tuple[tf.Tensor, tf.Tensor]:
    """`preprocess_and_check` without the blank check (training-time evaluation)."""
    model_input, frame, _ = preprocess_and_check(image, image_size, mode)
    return model_input, frame
