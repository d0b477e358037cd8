"""Batched Grad-CAM computed in the same pass as the prediction.

As in the keras.io Grad-CAM example, the map is the ReLU of the feature maps
of the last convolutional layer weighted by the spatially averaged gradient
of the predicted class's score (pre-softmax) with respect to them — but:
* batched: gradients are averaged over the spatial axes of each image, never
  over the batch;
* cheap: the backbone runs forward once; only the small head (pooling and
  two dense layers) is differentiated;
* in float32, whatever the backbone's precision policy.

The plain forward pass (no CAMs) and the mirror images of test-time
augmentation are in `predict.py`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from brainview import model as model_lib
from brainview.predict import mean_over_mirrors, mirrored


def head_logits(head: keras.Model, features: tf.Tensor) -> tf.Tensor:
    """The head's pre-softmax class scores, in float32, from its layers' weights.

    Mirrors model.build_head: global average pooling -> Dense(relu) -> Dense.
    """
    dense, views = head.get_layer("dense"), head.get_layer("views")
    pooled = tf.reduce_mean(tf.cast(features, tf.float32), axis=(1, 2))
    hidden = tf.nn.relu(tf.matmul(pooled, _float32(dense.kernel)) + _float32(dense.bias))
    return tf.matmul(hidden, _float32(views.kernel)) + _float32(views.bias)


def _float32(variable) -> tf.Tensor:
    return tf.cast(tf.convert_to_tensor(variable), tf.float32)


def _unmirrored_mean(maps: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    """The mean of the four mirrors' maps (4B, h, w), each flipped back onto the
    unmirrored image first, so the map explains the averaged prediction."""
    original, left_right, up_down, both = (maps[i * count : (i + 1) * count] for i in range(4))
    return (original + left_right[:, :, ::-1] + up_down[:, ::-1, :] + both[:, ::-1, ::-1]) / 4.0


def make_predict_with_cams(model: keras.Model, tta: bool = False):
    """A tf.function images -> (probabilities (B,3), CAMs (B,h,w) in 0..1), float32.

    With `tta`, probabilities are averaged over the four mirror images of
    each input (test-time augmentation) and the CAM explains that average: the
    four mirrors' Grad-CAM maps for the class it predicts, each flipped back onto
    the unmirrored image, are averaged before the ReLU. A map is all zero when no
    region supports the predicted class (rare; it happens).
    """
    backbone, head = model_lib.backbone_and_head(model)

    @tf.function(reduce_retracing=True)
    def predict_with_cams(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        count = tf.shape(images)[0]
        batch = mirrored(images) if tta else images
        features = tf.cast(backbone(batch, training=False), tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(features)
            logits = head_logits(head, features)
        probabilities = tf.nn.softmax(logits)
        if tta:
            probabilities = mean_over_mirrors(probabilities)
        predicted = tf.argmax(probabilities, axis=1)
        if tta:
            predicted = tf.tile(predicted, [4])
        with tape:
            # Each image's score depends only on its own features, so the
            # gradient of the sum is the per-image gradient.
            score = tf.reduce_sum(tf.gather(logits, predicted, axis=1, batch_dims=1))
        gradients = tape.gradient(score, features)  # (B, h, w, C)
        channel_weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        maps = tf.reduce_sum(channel_weights * features, axis=-1)
        if tta:
            maps = _unmirrored_mean(maps, count)
        cams = tf.nn.relu(maps)
        peak = tf.reduce_max(cams, axis=(1, 2), keepdims=True)
        cams = tf.math.divide_no_nan(cams, peak)
        return probabilities, cams

    return predict_with_cams
