"""The one preprocessing function, shared by training, evaluation and classify_dir.

`preprocess(image, ...)` turns a decoded scan (uint8 HxWx3) into what the
model sees, the square of the source it was cut from, and whether the scan
looks blank. Training calls the same function with an `Augmenter`
(`augmentation.RandomAugmenter`): augmentation is a set of hooks at the stages
where each nuisance arises, never a second sequence of steps, so with no
augmentation training input and inference input are the same tensor.

    raw image -> working size -> [Augmenter.raw_image] -> normalize_section -> blank check
      "plain":   letterbox the RGB image -> [Augmenter.plain_input]
      otherwise: [Augmenter.tissue_signal] -> align (mode "aligned")
                 -> [Augmenter.oriented_signal] -> [Augmenter.frame_box]
                 -> crop_to_frame -> [Augmenter.framed_signal] -> to_model_input

Everything is computed at a bounded *working size* (`working_side`): an image
larger than that is first area-averaged down to it, so the cost does not grow
with the scan, and frames are scaled back to the image's own pixels.

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

Mode "aligned" also removes the mounting rotation: before framing, the tissue
is rotated so that its principal axis (from the second moments of the tissue
signal) is horizontal. What remains of the orientation is a 180-degree turn
and a mirror image, which training covers with flips. Mode "plain" is the
original study's look: RGB, letterboxed.

The square the model sees is reported as a *frame* in source pixels:
[center_y, center_x, side, angle], where the model input is the source image
rotated by `angle` radians (image coordinates, y down) about the centre and
cropped to a `side` x `side` square. Grad-CAMs map back onto the scan with it.

The blank check lives here too, and only here: a scan is blank when it is dark
(its mean gray, `image_files.mean_gray`, the value the decoder, the CSV and
the datasets' `mean_intensity` hold, is at most DARK_IMAGE_THRESHOLD) or shows
almost no tissue after normalization.

All functions are TensorFlow ops, usable inside `tf.data` maps.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from brainview.labels import DARK_IMAGE_THRESHOLD

PREPROCESSING_MODES = ("aligned", "section", "plain")

BORDER_FRACTION = 0.04  # width of the image border used to estimate the background
SIGNAL_PERCENTILE = 99.0  # this percentile of the tissue signal maps to 1
# A section must stand out from the background by this many gray levels and
# this many times the background's noise; otherwise the image is blank.
MIN_CONTRAST = 2.0
NOISE_MULTIPLE = 3.0
TISSUE_THRESHOLD = 0.12  # normalized signal above this counts as tissue
# A row/column belongs to the tissue box when this fraction of it is tissue;
# isolated specks and dust do not stretch the box.
PROFILE_THRESHOLD = 0.02
FRAME_MARGIN = 0.06  # margin around the tissue box, as a fraction of its longer side
MAX_PERCENTILE_SAMPLES = 65536  # pixels used to estimate percentiles

# The working size: preprocessing looks at an image whose longer side is at most
# max(WORKING_SIDE_PER_INPUT x the model input side, MIN_WORKING_SIDE); see working_side.
WORKING_SIDE_PER_INPUT = 4
MIN_WORKING_SIDE = 512


def working_side(image_size: int) -> int:
    """The longest side, in pixels, at which `preprocess` looks at an image of any size.

    Why this size. The model sees an image_size square cut around the tissue:
    at 4x the model input, a section that spans at least a quarter of the
    image's longer side is still cut from at least image_size working pixels,
    so the model input is never enlarged from fewer pixels than it has. The
    statistics (percentiles, background noise, tissue box, principal axis) need
    a few hundred pixels across; MIN_WORKING_SIDE keeps that for small inputs.
    At 128 px (the default) the side is 512: at most 0.26 Mpx whatever the
    scan; only the area average itself still reads every pixel of a larger one.
    It is also what makes training and inference see the same pixels: training
    images are stored at most 1024 px (the builders) and scans are decoded at
    most 2048 px (classify_dir), and both reach the statistics and the blank
    check at this one resolution.
    """
    return max(WORKING_SIDE_PER_INPUT * image_size, MIN_WORKING_SIDE)


def to_working_size(image: tf.Tensor, image_size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """uint8 HxWx3 -> (the image at the working size, the factors back to its pixels).

    An image whose longer side exceeds working_side(image_size) is area-averaged
    (box filter, aspect kept, sides rounded) and rounded back to uint8; a smaller
    one is returned unchanged. The factors [y, x, side, 1] map a frame
    [center_y, center_x, side, angle] on the working image to the input image.
    """
    shape = tf.shape(image)[:2]
    longer = tf.reduce_max(shape)
    side = working_side(image_size)

    def reduced() -> tf.Tensor:
        factor = side / tf.cast(longer, tf.float32)
        size = tf.maximum(tf.cast(tf.round(tf.cast(shape, tf.float32) * factor), tf.int32), 1)
        averaged = tf.image.resize(image, size, method="area")
        return tf.cast(tf.round(tf.clip_by_value(averaged, 0.0, 255.0)), tf.uint8)

    working = tf.cond(longer > side, reduced, lambda: image)
    working_shape = tf.shape(working)[:2]
    per_axis = tf.cast(shape, tf.float32) / tf.cast(working_shape, tf.float32)
    per_side = tf.cast(longer, tf.float32) / tf.cast(tf.reduce_max(working_shape), tf.float32)
    return working, tf.concat([per_axis, [per_side, 1.0]], axis=0)


def to_gray(image: tf.Tensor) -> tf.Tensor:
    """uint8 HxWx3 -> float32 HxW on 0..255 (ITU-R 601 luminance)."""
    return tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))[..., 0]


def _percentile(values: tf.Tensor, percentile: float) -> tf.Tensor:
    """Percentile of a tensor of any shape, from an evenly strided sample.

    The value of rank `index` in the sorted sample, found without sorting
    (nth_element, linear time): tf.sort made these percentiles most of the
    preprocessing cost of a 512 px scan (bench/classify_throughput.py).
    """
    flat = tf.reshape(values, [-1])
    stride = tf.maximum(1, tf.size(flat) // MAX_PERCENTILE_SAMPLES)
    sample = flat[::stride]
    index = tf.cast(
        tf.round(percentile / 100.0 * tf.cast(tf.size(sample) - 1, tf.float32)), tf.int32
    )
    return tf.raw_ops.NthElement(input=sample, n=index)


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


def border_noise(gray: tf.Tensor) -> tf.Tensor:
    """Robust sigma of the pixel noise along the image border.

    From differences of neighbouring pixels (MAD / sqrt 2), so slow
    illumination gradients across a slide do not count as noise.
    """
    height, width = tf.shape(gray)[0], tf.shape(gray)[1]
    ring = tf.maximum(
        1, tf.cast(BORDER_FRACTION * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    )
    along_rows = tf.concat([gray[:ring], gray[-ring:]], axis=0)
    along_columns = tf.concat([gray[:, :ring], gray[:, -ring:]], axis=1)
    differences = tf.concat(
        [
            tf.reshape(along_rows[:, 1:] - along_rows[:, :-1], [-1]),
            tf.reshape(along_columns[1:, :] - along_columns[:-1, :], [-1]),
        ],
        axis=0,
    )
    spread = tf.abs(differences - _percentile(differences, 50.0))
    return 1.4826 * _percentile(spread, 50.0) / tf.sqrt(2.0)


def normalize_section(image: tf.Tensor) -> tf.Tensor:
    """uint8 HxWx3 -> float32 HxW 'tissue signal': 0 background, ~1 dense tissue.

    Bright-field images are detected by a background (border median) brighter
    than the image mean, and inverted. The background's own noise (the 90th
    percentile of the border after subtraction) is removed too, so the
    background is flat black whatever the scanner. The scale is taken from the
    tissue alone (pixels above the background), so a small section on a large
    slide gets the same contrast as a large one. An image whose contrast does
    not clear the background noise (a blank or noisy empty slide) yields zeros.
    """
    gray = to_gray(image)
    border = border_pixels(gray)
    background = _percentile(border, 50.0)
    bright_field = background > tf.reduce_mean(gray)
    polarity = tf.where(bright_field, -1.0, 1.0)
    noise_floor = _percentile(tf.maximum((border - background) * polarity, 0.0), 90.0)
    signal = tf.maximum((gray - background) * polarity - noise_floor, 0.0)
    flat = tf.reshape(signal, [-1])
    above_background = tf.boolean_mask(flat, flat > 0.0)
    scale = tf.cond(
        tf.size(above_background) > 0,
        lambda: _percentile(above_background, SIGNAL_PERCENTILE),
        lambda: tf.constant(0.0),
    )
    has_section = scale > tf.maximum(MIN_CONTRAST, NOISE_MULTIPLE * border_noise(gray))
    signal = tf.where(has_section, tf.minimum(signal / tf.maximum(scale, 1e-6), 1.0), 0.0)
    return tf.ensure_shape(signal, [None, None])


def rotation_transform(angle: tf.Tensor, in_hw: tf.Tensor, out_hw: tf.Tensor) -> tf.Tensor:
    """The 8-parameter transform mapping output (x, y) to input (x, y) of `rotate`."""
    cos, sin = tf.cos(angle), tf.sin(angle)
    cy_in, cx_in = (in_hw[0] - 1) / 2, (in_hw[1] - 1) / 2
    cy_out, cx_out = (out_hw[0] - 1) / 2, (out_hw[1] - 1) / 2
    return tf.stack(
        [
            cos,
            sin,
            cx_in - cos * cx_out - sin * cy_out,
            -sin,
            cos,
            cy_in + sin * cx_out - cos * cy_out,
            0.0,
            0.0,
        ]
    )


def rotated_shape(shape: tf.Tensor, angle: tf.Tensor) -> tf.Tensor:
    """(height, width) of the canvas that holds an image of `shape` rotated by `angle`."""
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    cos, sin = tf.abs(tf.cos(angle)), tf.abs(tf.sin(angle))
    return tf.math.ceil(tf.stack([height * cos + width * sin, width * cos + height * sin]) - 1e-3)


def rotate(image: tf.Tensor, angle: tf.Tensor, fill_mode: str = "CONSTANT") -> tf.Tensor:
    """Rotates an HxW or HxWxC float image by `angle` radians about its centre.

    The canvas grows to fit. In image coordinates (y down), a line at angle a
    ends at angle a + `angle`. New pixels are 0 ("CONSTANT") or repeat the
    nearest border pixel ("NEAREST").
    """
    planar = image.shape.rank == 2
    batch = image[None, :, :, None] if planar else image[None]
    in_hw = tf.cast(tf.shape(image)[:2], tf.float32)
    out_hw = rotated_shape(tf.shape(image), angle)
    rotated = tf.raw_ops.ImageProjectiveTransformV3(
        images=batch,
        transforms=rotation_transform(angle, in_hw, out_hw)[None],
        output_shape=tf.cast(out_hw, tf.int32),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode=fill_mode,
    )
    return rotated[0, :, :, 0] if planar else rotated[0]


def principal_angle(signal: tf.Tensor) -> tf.Tensor:
    """Angle (radians, image coordinates) of the tissue's major axis to the x axis."""
    weight = signal * tf.cast(signal > TISSUE_THRESHOLD, tf.float32)
    shape = tf.shape(signal)
    ys, xs = tf.meshgrid(
        tf.range(shape[0], dtype=tf.float32), tf.range(shape[1], dtype=tf.float32), indexing="ij"
    )
    total = tf.maximum(tf.reduce_sum(weight), 1e-6)
    cy, cx = tf.reduce_sum(weight * ys) / total, tf.reduce_sum(weight * xs) / total
    cyy = tf.reduce_sum(weight * (ys - cy) ** 2) / total
    cxx = tf.reduce_sum(weight * (xs - cx) ** 2) / total
    cxy = tf.reduce_sum(weight * (xs - cx) * (ys - cy)) / total
    return 0.5 * tf.atan2(2.0 * cxy, cxx - cyy)


def source_frame(
    box: tf.Tensor, angle: tf.Tensor, source_shape: tf.Tensor, canvas_shape: tf.Tensor
) -> tf.Tensor:
    """[center_y, center_x, side, angle] in source pixels of a square `box` on a canvas
    that is the source rotated by `angle` (see `rotate`)."""
    in_hw = tf.cast(source_shape[:2], tf.float32)
    out_hw = tf.cast(canvas_shape[:2], tf.float32)
    transform = rotation_transform(angle, in_hw, out_hw)
    # Pixel centres: box edges are at half-pixel positions.
    y = (box[0] + box[2]) / 2 - 0.5
    x = (box[1] + box[3]) / 2 - 0.5
    x_in = transform[0] * x + transform[1] * y + transform[2]
    y_in = transform[3] * x + transform[4] * y + transform[5]
    return tf.stack([y_in + 0.5, x_in + 0.5, box[2] - box[0], angle])


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


def align(signal: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Rotates the tissue's principal axis onto the x axis; returns (signal, angle applied)."""
    angle = -principal_angle(signal)
    return rotate(signal, angle), angle


def to_model_input(signal: tf.Tensor, mode: str = "section") -> tf.Tensor:
    """Framed signal SxS in 0..1 -> SxSx3 float32 on 0..255 (what EfficientNet expects).

    "section": the signal in all three channels. "aligned": the signal and its
    asymmetry maps |s - mirror(s)| across the vertical and the horizontal
    axis. Coronal and horizontal sections are cut across the brain's plane of
    symmetry and sagittal ones along it, so whether a section equals one of
    its mirror images is the plane's defining property; the asymmetry maps
    hand it to the network directly (a symmetric section has a dark map)
    instead of leaving it to be learned across the whole receptive field.
    Mirroring this input tensor is exactly the input of the mirrored section.
    """
    if mode == "aligned":
        channels = [
            signal,
            tf.abs(signal - signal[:, ::-1]),
            tf.abs(signal - signal[::-1, :]),
        ]
    else:
        channels = [signal, signal, signal]
    return tf.stack(channels, axis=-1) * 255.0


def frame_plain(image: tf.Tensor, image_size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Mode "plain": RGB, aspect kept, letterboxed with black, on 0..255; and its frame."""
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    resized = tf.image.resize_with_pad(
        tf.cast(image, tf.float32), image_size, image_size, antialias=True
    )
    frame = tf.stack([height / 2, width / 2, tf.maximum(height, width), 0.0])
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


def check_mode(mode: str) -> None:
    """Raises ValueError for a mode that is not one of PREPROCESSING_MODES."""
    if mode not in PREPROCESSING_MODES:
        raise ValueError(
            f"unknown preprocessing mode {mode!r}; expected one of {PREPROCESSING_MODES}"
        )


class Augmenter:
    """The stages of `preprocess` where training-time augmentation plugs in.

    Each method receives the data at one stage and returns it, possibly
    randomized; this base class changes nothing, so `preprocess` with it (the
    default) is the inference path. `augmentation.RandomAugmenter` overrides
    the stages it randomizes.
    """

    def raw_image(self, image: tf.Tensor) -> tf.Tensor:
        """uint8 HxWx3 at the working size, before anything else (stain, polarity)."""
        return image

    def plain_input(self, model_input: tf.Tensor) -> tf.Tensor:
        """Mode "plain": the letterboxed RGB model input, SxSx3 on 0..255."""
        return model_input

    def tissue_signal(self, signal: tf.Tensor) -> tf.Tensor:
        """The normalized tissue signal HxW in 0..1, before any alignment."""
        return signal

    def oriented_signal(self, signal: tf.Tensor, aligned: bool) -> tf.Tensor:
        """The signal in its final orientation (rotated onto its principal axis when
        `aligned`), before framing."""
        del aligned
        return signal

    def frame_box(self, signal: tf.Tensor) -> tf.Tensor:
        """The square [y0, x0, y1, x1] of `signal` the model will see."""
        return square_frame(tissue_box(signal))

    def framed_signal(self, framed: tf.Tensor) -> tf.Tensor:
        """The framed signal SxS in 0..1, before it becomes the model input."""
        return framed


NO_AUGMENTATION = Augmenter()


class Preprocessed(NamedTuple):
    """What `preprocess` returns for one image."""

    model_input: tf.Tensor  # float32 SxSx3 on 0..255
    frame: tf.Tensor  # float32 [center_y, center_x, side, angle] in source pixels
    blank: tf.Tensor  # bool: dark, empty or noise only (see looks_blank)


def preprocess(
    image: tf.Tensor,
    image_size: int,
    mode: str = "section",
    *,
    mean_intensity: tf.Tensor | float,
    augmenter: Augmenter = NO_AUGMENTATION,
) -> Preprocessed:
    """uint8 HxWx3 -> (model input, frame, looks blank): the one preprocessing path.

    Its cost is bounded: the image is first brought to the working size
    (`to_working_size`); the frame is returned in the pixels of `image`.

    Args:
      image: the decoded scan, of any size.
      image_size: side S of the square model input.
      mode: one of PREPROCESSING_MODES; anything else raises ValueError.
      mean_intensity: the image's mean gray (`image_files.mean_gray`), computed
        once where the image is decoded; the dark-image part of the blank check.
      augmenter: training-time augmentation hooks; the default changes nothing.
        With an augmenter, `frame` and `blank` describe the augmented image
        (training uses only the model input).
    """
    check_mode(mode)
    image, to_source = to_working_size(image, image_size)
    image = augmenter.raw_image(image)
    signal = normalize_section(image)
    blank = looks_blank(tf.cast(mean_intensity, tf.float32), signal)
    if mode == "plain":
        model_input, frame = frame_plain(image, image_size)
        return Preprocessed(augmenter.plain_input(model_input), frame * to_source, blank)
    signal = augmenter.tissue_signal(signal)
    canvas, angle = signal, tf.constant(0.0)
    if mode == "aligned":
        canvas, angle = align(signal)
    canvas = augmenter.oriented_signal(canvas, mode == "aligned")
    box = augmenter.frame_box(canvas)
    framed = augmenter.framed_signal(crop_to_frame(canvas, box, image_size))
    frame = source_frame(box, angle, tf.shape(signal), tf.shape(canvas)) * to_source
    return Preprocessed(to_model_input(framed, mode), frame, blank)
