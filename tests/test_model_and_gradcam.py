"""The classifier (EfficientNet-B0 + head), its weights and files, and batched Grad-CAM.

Models are built at 64 px (a 2x2 feature map) from random weights. Untrained, EfficientNet's
activations fade to ~1e-6 by the last layer, so every image would get the same output; the
shared `classifier` has its BatchNorm statistics set from a batch and a re-drawn head, so that
its predictions and CAMs clearly differ between images and equality checks mean something.
"""

import contextlib
import dataclasses
import io
import os
import subprocess
import sys
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from brainview import gradcam
from brainview import model as model_lib
from tests.offline import offline_environment

SIZE = 64


def varied_images(count=4, size=SIZE, seed=0):
    """Images on 0..255 that differ in structure, not only in noise."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (max(count, 4), size, size, 3)).astype(np.float32)
    images[1, : size // 2] = 0.0
    images[2, :, : size // 2] = 255.0
    images[3] = np.linspace(0, 255, size, dtype=np.float32)[None, :, None]
    return images[:count]


def make_image_dependent(model, seed=0):
    """BatchNorm moving statistics from one batch (momentum 0), and a head drawn larger than
    Keras' initializers: outputs that depend on the image, as a trained model's do."""
    backbone, head = model_lib.backbone_and_head(model)
    model_lib.set_batchnorm_momentum(backbone, 0.0)
    model(tf.constant(np.concatenate([varied_images(), varied_images(seed=1)])), training=True)
    rng = np.random.default_rng(seed)
    for layer_name in ("dense", "views"):
        layer = head.get_layer(layer_name)
        kernel, bias = layer.get_weights()
        layer.set_weights([rng.normal(0, 0.1, kernel.shape), rng.normal(0, 0.1, bias.shape)])


@pytest.fixture(scope="module")
def classifier():
    keras.utils.set_random_seed(0)
    model = model_lib.build_classifier(SIZE)
    make_image_dependent(model)
    return model


@pytest.fixture(scope="module")
def batch_cams(classifier):
    """The Grad-CAM function of `classifier`, and its outputs on a batch of 4 images."""
    predict_with_cams = gradcam.make_predict_with_cams(classifier)
    probabilities, cams = predict_with_cams(tf.constant(varied_images()))
    return predict_with_cams, probabilities.numpy(), cams.numpy()


@contextlib.contextmanager
def global_dtype_policy(name):
    """Keras' global dtype policy set to `name`, restored afterwards whatever happens."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@pytest.fixture
def mixed_float16_policy():
    """The GPU training policy for one test."""
    with global_dtype_policy("mixed_float16"):
        yield


def predict(model, images):
    return model(tf.constant(images), training=False).numpy()


# -- the classifier -----------------------------------------------------------------------


def test_classifier_outputs_a_softmax_over_the_three_views(classifier):
    probabilities = predict(classifier, varied_images())
    assert probabilities.shape == (4, 3) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert probabilities.min() >= 0.0
    # Image-dependent (see make_image_dependent).
    assert np.abs(probabilities - probabilities.mean(axis=0)).max() > 0.05
    backbone, head = model_lib.backbone_and_head(classifier)
    assert (
        backbone.name == model_lib.BACKBONE_NAMES["efficientnet_b0"]
        and head.name == model_lib.HEAD_NAME
    )
    assert tuple(backbone.output.shape[1:]) == (SIZE // 32, SIZE // 32, 1280)


def test_output_is_float32_under_the_mixed_float16_policy(mixed_float16_policy):
    """The softmax stays float32 (numerically safe) while the backbone computes in float16."""
    model = model_lib.build_classifier(SIZE)
    backbone, _ = model_lib.backbone_and_head(model)
    assert backbone.output.dtype == "float16"
    assert model.output.dtype == "float32"
    probabilities = model(tf.constant(varied_images(2)), training=False)
    assert probabilities.dtype == tf.float32
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), 1.0, atol=1e-5)


def test_policy_fixture_restored_float32():
    """The policy the mixed-precision test sets is undone, even when the test fails, so
    nothing leaks into other tests (conftest also checks that after every test)."""
    with pytest.raises(RuntimeError), global_dtype_policy("mixed_float16"):
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
        raise RuntimeError("a failing mixed-precision test")
    assert keras.mixed_precision.global_policy().name == "float32"


def test_trainable_layers_5_fine_tunes_exactly_the_last_5_backbone_layers():
    """The original study's recipe. BatchNorm stays in inference mode (keras.io transfer
    learning guide): under Keras 3 that takes a non-trainable BatchNormalization layer, so
    the two in the last 5 layers are frozen, and a training step leaves their statistics."""
    model = model_lib.build_classifier(SIZE, trainable_layers=5)
    backbone, head = model_lib.backbone_and_head(model)
    assert not any(layer.trainable for layer in backbone.layers[:-5])
    tail = backbone.layers[-5:]
    assert [layer.name for layer in tail] == [
        "block7a_project_conv",
        "block7a_project_bn",
        "top_conv",
        "top_bn",
        "top_activation",
    ]
    assert [layer.trainable for layer in tail] == [True, False, True, False, True]
    expected = {id(w) for layer in tail for w in layer.trainable_weights}
    expected |= {id(w) for w in head.trainable_weights}
    assert {id(w) for w in model.trainable_weights} == expected
    assert len(model.trainable_weights) == 2 + 4  # two conv kernels; two Dense layers
    batchnorms = [layer for layer in tail if "bn" in layer.name]
    before = [w.numpy().copy() for layer in batchnorms for w in layer.non_trainable_weights]
    model(tf.constant(varied_images(2)), training=True)
    after = [w.numpy() for layer in batchnorms for w in layer.non_trainable_weights]
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)


def test_all_layers_trainable_by_default_and_batchnorm_learns(classifier):
    """Trained from scratch, BatchNorm learns its statistics (make_image_dependent relies on
    it: its training-mode pass moved the moving variances away from their initial 1)."""
    backbone, _ = model_lib.backbone_and_head(classifier)
    assert all(layer.trainable for layer in backbone.layers)
    for name in ("stem_bn", "top_bn"):
        variance = backbone.get_layer(name).moving_variance.numpy()
        assert np.abs(variance - 1).max() > 1e-3, name


# -- weights ------------------------------------------------------------------------------


def test_weights_file_is_loaded_into_the_backbone(classifier, tmp_path):
    """--weights=/path/to/file: e.g. ImageNet weights downloaded elsewhere."""
    backbone, _ = model_lib.backbone_and_head(classifier)
    path = str(tmp_path / "backbone.weights.h5")
    backbone.save_weights(path)
    loaded, _ = model_lib.backbone_and_head(model_lib.build_classifier(SIZE, weights=path))
    # All of them, BatchNorm statistics included (which make_image_dependent changed).
    saved_weights = backbone.get_weights()
    loaded_weights = loaded.get_weights()
    assert len(saved_weights) == len(loaded_weights)
    for saved, restored in zip(saved_weights, loaded_weights, strict=True):
        np.testing.assert_array_equal(saved, restored)


def test_missing_or_broken_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(model_lib.WeightsUnavailableError, match="--weights file not found"):
        model_lib.build_classifier(SIZE, weights=str(tmp_path / "nowhere.weights.h5"))
    broken = tmp_path / "broken.weights.h5"
    broken.write_bytes(b"not an HDF5 file")
    with pytest.raises(model_lib.WeightsUnavailableError, match="cannot load weights from"):
        model_lib.build_classifier(SIZE, weights=str(broken))


_BUILD_WITH_IMAGENET = """
from brainview import model
try:
    model.build_classifier(64, weights="imagenet")
except model.WeightsUnavailableError as error:
    print(error)
else:
    print("built")
"""


def test_unavailable_imagenet_weights_raise_a_helpful_error(tmp_path):
    """The download fails (an offline environment: no cache, requests refused), and the
    error says what to do instead. It used to be skipped where the weights were cached,
    and to depend on the network elsewhere."""
    result = subprocess.run(
        [sys.executable, "-c", _BUILD_WITH_IMAGENET],
        env=offline_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    message = result.stdout.strip()
    assert "could not load ImageNet weights" in message, (message, result.stderr[-2000:])
    assert "--weights=none" in message and "--weights=/path/to/efficientnetb0_notop.h5" in message
    assert os.listdir(tmp_path / "keras_home" / "models") == []  # nothing cached either


# -- saved models -------------------------------------------------------------------------


def test_save_and_load_round_trip_gives_identical_predictions(classifier, tmp_path):
    path = str(tmp_path / "model.keras")
    card = model_lib.ModelCard(
        image_size=SIZE, temperature=1.7, trained_on=("brain_phantom/tiny:fold0",), recipe="none"
    )
    model_lib.save_model(classifier, card, path)
    assert os.path.exists(tmp_path / "model.json")
    loaded, loaded_card = model_lib.load_model(path)
    # Saving records the weights' hash in the card; everything else round-trips.
    assert loaded_card.weights_sha256 == model_lib.file_digest(path, length=64)
    assert dataclasses.replace(loaded_card, weights_sha256="") == card
    images = varied_images()
    original = predict(classifier, images)
    assert original.max() > 0.5  # confident outputs: equality below is not trivial
    np.testing.assert_allclose(predict(loaded, images), original, atol=1e-6)


def test_saved_model_holds_no_optimizer_state(tmp_path):
    """A trained (compiled) model is saved with its weights only: shipped models stay small."""
    classifier = model_lib.build_classifier(SIZE)
    classifier.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    images = varied_images()
    classifier.fit(images, np.zeros(len(images)), epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    card = model_lib.ModelCard(image_size=SIZE, trained_on=("x",), recipe="none")
    model_lib.save_model(classifier, card, path)
    with zipfile.ZipFile(path) as archive:
        weights = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
        assert "optimizer" not in weights
        assert "layers" in weights


def test_load_model_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="model not found"):
        model_lib.load_model(str(tmp_path / "model.keras"))
    (tmp_path / "model.keras").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"model\.json not found"):
        model_lib.load_model(str(tmp_path / "model.keras"))


# -- Grad-CAM -----------------------------------------------------------------------------


def test_head_logits_are_the_heads_pre_softmax_scores(classifier):
    backbone, head = model_lib.backbone_and_head(classifier)
    features = backbone(tf.constant(varied_images()), training=False)
    logits = gradcam.head_logits(head, features)
    assert logits.dtype == tf.float32 and logits.shape == (4, 3)
    np.testing.assert_allclose(
        tf.nn.softmax(logits).numpy(), head(features, training=False).numpy(), atol=1e-6
    )


def test_batched_grad_cam_equals_per_image_grad_cam(batch_cams):
    """Gradients are per image: a CAM does not depend on the other images of its batch."""
    predict_with_cams, probabilities, cams = batch_cams
    images = varied_images()
    assert cams.shape == (4, SIZE // 32, SIZE // 32) and cams.dtype == np.float32
    assert cams.min() >= 0.0 and cams.max() <= 1.0
    np.testing.assert_allclose(cams.max(axis=(1, 2)), 1.0, atol=1e-6)  # each map peaks at 1
    for i in range(len(images)):
        single_probabilities, single_cam = predict_with_cams(tf.constant(images[i : i + 1]))
        np.testing.assert_allclose(single_cam.numpy()[0], cams[i], atol=1e-4)
        np.testing.assert_allclose(single_probabilities.numpy()[0], probabilities[i], atol=1e-5)
    # The CAMs differ between images, so mixing them across the batch would show.
    assert max(np.abs(cams[i] - cams[0]).max() for i in range(1, len(images))) > 0.1


def test_predict_with_cams_probabilities_are_the_models(classifier, batch_cams):
    _, probabilities, _ = batch_cams
    np.testing.assert_allclose(probabilities, predict(classifier, varied_images()), atol=1e-5)


def test_tta_cam_explains_the_mirror_averaged_prediction(classifier):
    """With test-time augmentation the probabilities are the mean over the four mirrors, and
    the CAM is built from all four: so the CAM of a mirrored scan is the mirrored CAM of the
    scan (the unmirrored image's own map alone would not be)."""
    predict_with_cams = gradcam.make_predict_with_cams(classifier, tta=True)
    images = varied_images()
    probabilities, cams = (t.numpy() for t in predict_with_cams(tf.constant(images)))
    mirrors = [images, images[:, :, ::-1], images[:, ::-1], images[:, ::-1, ::-1]]
    expected = np.mean([predict(classifier, np.ascontiguousarray(m)) for m in mirrors], axis=0)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    flipped_probabilities, flipped_cams = predict_with_cams(tf.constant(images[:, :, ::-1]))
    np.testing.assert_allclose(flipped_probabilities.numpy(), probabilities, atol=1e-5)
    np.testing.assert_allclose(flipped_cams.numpy(), cams[:, :, ::-1], atol=1e-4)
    assert np.all(np.isin(cams.max(axis=(1, 2)).round(5), [0.0, 1.0]))


def _linear_head(head: keras.Model) -> keras.Model:
    """A copy of the head whose last layer outputs the pre-softmax scores."""
    linear = keras.models.clone_model(head)
    linear.set_weights(head.get_weights())
    linear.get_layer("views").activation = keras.activations.linear
    return linear


def _independent_grad_cams(classifier, images: np.ndarray, tta: bool = False, sign: float = 1.0):
    """Grad-CAM as keras.io computes it, written apart from gradcam.py: a GradientTape over
    the full forward pass (input -> backbone -> head with a linear last layer), one image
    at a time, the predicted class's score differentiated with respect to the last conv
    layer's output; channel weights and weighted sum in float64. With `tta`, the four
    mirror images' maps for the class their mean probabilities predict, each flipped back,
    are averaged before the ReLU. `sign` -1 builds the map of the wrong sign."""
    backbone, head = model_lib.backbone_and_head(classifier)
    linear_head = _linear_head(head)
    flips = [lambda a: a, lambda a: a[:, ::-1], lambda a: a[::-1], lambda a: a[::-1, ::-1]]
    if not tta:
        flips = flips[:1]
    probabilities, cams = [], []
    for image in images:
        passes = []
        with tf.GradientTape(persistent=True) as tape:
            for flip in flips:
                features = backbone(tf.constant(flip(image)[None].copy()), training=False)
                logits = linear_head(features, training=False)[0]
                passes.append((features, logits, [logits[k] for k in range(3)]))
        mean_probability = np.mean([tf.nn.softmax(p[1]).numpy() for p in passes], axis=0)
        predicted = int(np.argmax(mean_probability))
        maps = []
        for flip, (features, _, class_scores) in zip(flips, passes, strict=True):
            gradients = tape.gradient(class_scores[predicted], features)
            weights = gradients.numpy()[0].astype(np.float64).mean(axis=(0, 1))
            grad_cam_map = (features.numpy()[0].astype(np.float64) * weights).sum(axis=-1)
            maps.append(flip(grad_cam_map))  # each flip is its own inverse
        del tape
        cam = np.maximum(sign * np.mean(maps, axis=0), 0.0)
        cams.append(cam / cam.max() if cam.max() > 0 else cam)
        probabilities.append(mean_probability)
    return np.array(probabilities), np.array(cams)


@pytest.mark.parametrize("tta", [False, True])
def test_batched_grad_cam_equals_an_independent_full_model_grad_cam(classifier, tta):
    """The invariance tests above would hold for a wrong layer or sign too. Computed
    independently (keras.io's method on the full model), the CAMs must be the same maps;
    the maps of the wrong sign differ from them on these images, so the match means
    something."""
    images = varied_images()
    probabilities, cams = (
        t.numpy() for t in gradcam.make_predict_with_cams(classifier, tta)(tf.constant(images))
    )
    expected_probabilities, expected_cams = _independent_grad_cams(classifier, images, tta)
    np.testing.assert_allclose(probabilities, expected_probabilities, atol=1e-5)
    np.testing.assert_allclose(cams, expected_cams, atol=1e-4)
    _, wrong_sign = _independent_grad_cams(classifier, images, tta, sign=-1.0)
    assert np.abs(wrong_sign - cams).max() > 0.5
