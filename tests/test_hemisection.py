"""Hemisections: the midline is found from the image, and the cut removes one half."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from brainview import hemisection, preprocessing


def _coronal_like(angle_deg: float = 0.0) -> np.ndarray:
    """A bright-field 'coronal section': wide, mirror-symmetric left-right only
    (a dome above, a notch below), turned by `angle_deg`, on a light slide."""
    size = 200
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    turn = math.radians(angle_deg)
    y0, x0 = ys - 100, xs - 100
    y = math.cos(turn) * y0 + math.sin(turn) * x0  # coordinates in the section's frame
    x = -math.sin(turn) * y0 + math.cos(turn) * x0
    body = (x / 80) ** 2 + (y / 45) ** 2 < 1
    dome = (x / 30) ** 2 + ((y + 40) / 20) ** 2 < 1  # dorsal bump, on the midline
    notch = (x / 12) ** 2 + ((y - 40) / 12) ** 2 < 1  # ventral notch, on the midline
    tissue = (body | dome) & ~notch
    gray = np.where(tissue, 90.0, 235.0)
    return np.repeat(gray[..., None], 3, axis=2).astype(np.uint8)


def _tissue(image: np.ndarray) -> np.ndarray:
    return image[..., 0] < 160


def test_midline_is_the_mirror_axis_not_the_long_axis():
    signal = preprocessing.normalize_section(tf.constant(_coronal_like()))
    center, angle = hemisection.midline(signal)
    # The long axis is horizontal; the mirror axis is vertical (pi/2 in image coordinates).
    assert abs(abs(math.cos(float(angle)))) < 0.1, float(angle)
    np.testing.assert_allclose(float(center[1]), 99.5, atol=2.0)


def test_cut_keeps_one_half_whatever_the_mounting_angle():
    for angle in (0.0, 30.0, 115.0):
        image = _coronal_like(angle)
        tissue = _tissue(image)
        for side in (True, False):
            cut = hemisection.cut_at_midline(tf.constant(image), tf.constant(side)).numpy()
            kept = _tissue(cut)
            assert not (kept & ~tissue).any()  # nothing added
            assert 0.4 < kept.sum() / tissue.sum() < 0.6, (angle, side, kept.sum() / tissue.sum())
            # The removed half is filled with the slide's background colour.
            assert np.all(cut[tissue & ~kept] == 235)


def test_the_two_sides_are_mirror_images():
    image = _coronal_like()
    left = _tissue(hemisection.cut_at_midline(tf.constant(image), tf.constant(True)).numpy())
    right = _tissue(hemisection.cut_at_midline(tf.constant(image), tf.constant(False)).numpy())
    assert (left[:, ::-1] ^ right).mean() < 0.01


def test_test_set_cuts_coronal_and_horizontal_only():
    image = tf.constant(_coronal_like())
    seed = tf.constant([3, 4], tf.int64)
    for view in (0, 1):
        cut = hemisection.hemisection_test_image(image, tf.constant(view, tf.int64), seed)
        assert _tissue(cut.numpy()).sum() < 0.6 * _tissue(image.numpy()).sum()
    whole = hemisection.hemisection_test_image(image, tf.constant(2, tf.int64), seed)
    np.testing.assert_array_equal(whole.numpy(), image.numpy())
