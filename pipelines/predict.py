"""The classifier's forward pass, optionally averaged over mirror images (TTA).

Evaluation and classify_dir without CAMs use `make_predict`; `gradcam` builds
on the same mirroring for its test-time-augmented CAMs.

Mirror test-time augmentation averages the probabilities of each input and its
left-right, up-down and double mirror images. For the "aligned" model input (a
signal and its asymmetry maps), mirroring the whole input tensor is exactly the
input of the mirrored section, so the average is over four real sections.
"""

from __future__ import annotations

import keras
import tensorflow as tf

MIRRORS = 4  # the image, left-right, up-down, both


def mirrored(images: tf.Tensor) -> tf.Tensor:
    """The batch followed by its left-right, up-down and double mirror images (4B)."""
    return tf.concat(
        [images, images[:, :, ::-1], images[:, ::-1, :], images[:, ::-1, ::-1]], axis=0
    )


def mean_over_mirrors(values: tf.Tensor) -> tf.Tensor:
    """(4B, C) values of `mirrored(images)` -> (B, C), the mean over each image's mirrors."""
    return tf.reduce_mean(tf.reshape(values, [MIRRORS, -1, values.shape[-1]]), axis=0)


def make_predict(model: keras.Model, tta: bool = False):
    """A tf.function images (B,S,S,3) -> probabilities (B,3), float32.

    With `tta`, each prediction is the mean over the input's four mirror images.
    """

    @tf.function(reduce_retracing=True)
    def predict(images: tf.Tensor) -> tf.Tensor:
        if not tta:
            return tf.cast(model(images, training=False), tf.float32)
        return mean_over_mirrors(tf.cast(model(mirrored(images), training=False), tf.float32))

    return predict
