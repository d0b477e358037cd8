"""Hemisections: a section cut at its midline, one hemisphere kept.

Labs often mount only one hemisphere of a coronal or horizontal section (the
other goes to another stain, or is damaged). A classifier that relies on the
section's left-right symmetry reads such a half as sagittal. This module
makes hemisections out of whole sections, for training (an augmentation) and
for testing (the hemisection test set: coronal and horizontal sections of the
held-out folds cut this way, sagittal sections left whole).

The midline is found from the image alone, so it works for any dataset: of
the tissue's two principal axes through its centroid, the one across which
the tissue is most nearly its own mirror image. A coronal section is
mirror-symmetric across its short (dorsoventral) axis, a horizontal one
across its long (anteroposterior) axis; for a sagittal section neither is a
symmetry axis and the cut is along whichever is closer to one.

The cut is made on the raw scan (pixels beyond the line take the background
colour of the scan border), so the result goes through the same
preprocessing as a real hemisection would.
"""

from __future__ import annotations

import math

import tensorflow as tf

from brainview import preprocessing


def _reflection_transform(center: tf.Tensor, angle: tf.Tensor) -> tf.Tensor:
    """ImageProjectiveTransform parameters of the mirror across the line through
    `center` ((y, x) pixels) at `angle` (radians, image coordinates)."""
    cos2, sin2 = tf.cos(2.0 * angle), tf.sin(2.0 * angle)
    cy, cx = center[0], center[1]
    return tf.stack(
        [cos2, sin2, cx - cos2 * cx - sin2 * cy, sin2, -cos2, cy - sin2 * cx + cos2 * cy, 0.0, 0.0]
    )


def _mirror(signal: tf.Tensor, center: tf.Tensor, angle: tf.Tensor) -> tf.Tensor:
    mirrored = tf.raw_ops.ImageProjectiveTransformV3(
        images=signal[None, :, :, None],
        transforms=_reflection_transform(center, angle)[None],
        output_shape=tf.shape(signal)[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    return mirrored[0, :, :, 0]


def _centroid(signal: tf.Tensor) -> tf.Tensor:
    weight = signal * tf.cast(signal > preprocessing.TISSUE_THRESHOLD, tf.float32)
    shape = tf.shape(signal)
    ys, xs = tf.meshgrid(
        tf.range(shape[0], dtype=tf.float32), tf.range(shape[1], dtype=tf.float32), indexing="ij"
    )
    total = tf.maximum(tf.reduce_sum(weight), 1e-6)
    return tf.stack([tf.reduce_sum(weight * ys) / total, tf.reduce_sum(weight * xs) / total])


def asymmetry(signal: tf.Tensor, center: tf.Tensor, angle: tf.Tensor) -> tf.Tensor:
    """How far `signal` is from its mirror image across a line: 0 symmetric, ~2 disjoint."""
    difference = tf.reduce_sum(tf.abs(signal - _mirror(signal, center, angle)))
    return difference / tf.maximum(tf.reduce_sum(signal), 1e-6)


def midline(signal: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(centre (y, x), angle): the principal axis of the tissue signal closest to a mirror axis."""
    center = _centroid(signal)
    major = preprocessing.principal_angle(signal)
    minor = major + math.pi / 2
    use_major = asymmetry(signal, center, major) <= asymmetry(signal, center, minor)
    return center, tf.where(use_major, major, minor)


def _border_color(image: tf.Tensor) -> tf.Tensor:
    """Per-channel median of the scan border: what a slide shows where there is no tissue."""
    channels = tf.unstack(tf.cast(image, tf.float32), axis=-1)
    return tf.stack(
        [preprocessing._percentile(preprocessing.border_pixels(c), 50.0) for c in channels]
    )


def cut_at_midline(
    image: tf.Tensor, keep_positive_side: tf.Tensor, offset: tf.Tensor | float = 0.0
) -> tf.Tensor:
    """uint8 HxWx3 -> the same scan with the tissue on one side of its midline removed.

    `offset` moves the cut along the line's normal, as a fraction of the
    image's longer side (real cuts are rarely exactly on the midline).
    """
    signal = preprocessing.normalize_section(image)
    center, angle = midline(signal)
    shape = tf.shape(image)
    ys, xs = tf.meshgrid(
        tf.range(shape[0], dtype=tf.float32), tf.range(shape[1], dtype=tf.float32), indexing="ij"
    )
    # Signed distance from the line (normal (-sin, cos) in (x, y)).
    distance = -(xs - center[1]) * tf.sin(angle) + (ys - center[0]) * tf.cos(angle)
    distance -= offset * tf.cast(tf.reduce_max(shape[:2]), tf.float32)
    keep = tf.where(keep_positive_side, distance >= 0.0, distance <= 0.0)
    background = tf.cast(tf.round(_border_color(image)), image.dtype)
    cut = tf.where(keep[..., None], image, background[None, None, :])
    return tf.ensure_shape(cut, image.shape)


def random_hemisection(image: tf.Tensor, seed: tf.Tensor, max_offset: float = 0.04) -> tf.Tensor:
    """Training augmentation: a random side of a random near-midline cut."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    side = tf.random.stateless_uniform((), seeds[0]) < 0.5
    offset = tf.random.stateless_uniform((), seeds[1], -max_offset, max_offset)
    return cut_at_midline(image, side, offset)


def hemisection_test_image(image: tf.Tensor, view: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The hemisection test set's version of a scan: coronal and horizontal sections
    (view 0, 1) cut exactly at the midline on a random side; sagittal ones unchanged."""
    side = tf.random.stateless_uniform((), seed) < 0.5
    result = tf.cond(view < 2, lambda: cut_at_midline(image, side), lambda: image)
    return tf.ensure_shape(result, image.shape)
