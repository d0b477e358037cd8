"""Non-brain images and the 'uncertain' threshold chosen from validation sections."""

import numpy as np
import pytest
import tensorflow as tf

from brainview import evaluation, image_files, model, non_brain, preprocessing


def test_non_brain_set_is_deterministic_and_covers_every_kind():
    first, again = non_brain.make_set(3, seed=1), non_brain.make_set(3, seed=1)
    assert len(first) == 3 * len(non_brain.KINDS)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(image.dtype == np.uint8 and image.shape == (160, 160, 3) for image in first)
    assert not np.array_equal(first[0], non_brain.make_set(3, seed=2)[0])


def _predictions(confidence: np.ndarray) -> evaluation.Predictions:
    rest = (1 - confidence) / 2
    probabilities = np.stack([confidence, rest, rest], axis=1)
    count = len(confidence)
    return evaluation.Predictions(
        probabilities=probabilities,
        labels=np.zeros(count, int),
        origins=np.array(["a"] * count),
        specimens=np.array(["s"] * count),
        groups=np.array(["g"] * count),
        slice_indices=np.zeros(count, int),
        source_files=np.array(["f"] * count),
    )


def test_auto_threshold_keeps_95_percent_of_validation_sections_above_it():
    confidence = np.linspace(0.5, 1.0, 101)  # 5th percentile: 0.525
    threshold = evaluation.auto_uncertain_threshold(_predictions(confidence), temperature=1.0)
    assert abs(threshold - 0.525) < 1e-6
    assert (confidence >= threshold).mean() >= 0.95


def test_auto_threshold_is_clamped():
    low = evaluation.auto_uncertain_threshold(_predictions(np.full(20, 0.34)), 1.0)
    high = evaluation.auto_uncertain_threshold(_predictions(np.full(20, 0.999)), 1.0)
    assert (low, high) == evaluation.AUTO_UNCERTAIN_RANGE


@pytest.fixture(scope="module")
def input_dependent_model(tmp_path_factory):
    """classify_dir's test model (64 px, outputs that clearly depend on the image)."""
    from tests import classify_helpers

    path = str(tmp_path_factory.mktemp("model") / "model.keras")
    classify_helpers.build_test_model(path)
    return model.load_model(path)[0]


@pytest.mark.slow
def test_non_brain_report_counts_with_a_real_threshold(input_dependent_model):
    """Thresholds of 0 and 1 made the old assertions true for any model. Here the
    threshold splits the non-blank images' calibrated confidences in two, and the
    counts must match ones computed independently (softmax(log p / T) by hand)."""
    classifier, size, temperature = input_dependent_model, 64, 1.5
    images = non_brain.make_set()
    inputs, blank = [], []
    for image in images:
        preprocessed = preprocessing.preprocess(
            tf.constant(image), size, "section", mean_intensity=image_files.mean_gray(image)
        )
        inputs.append(preprocessed.model_input)
        blank.append(bool(preprocessed.blank))
    blank = np.array(blank)
    probabilities = classifier(tf.stack(inputs), training=False).numpy().astype(np.float64)
    scaled = np.exp(np.log(probabilities) / temperature)
    confidence = (scaled / scaled.sum(axis=1, keepdims=True)).max(axis=1)
    shown = np.sort(confidence[~blank])
    assert len(shown) >= 20
    # Between the two middle confidences (well apart, so rounding cannot move one across).
    middle = len(shown) // 2
    gaps = np.diff(shown[middle - 5 : middle + 5])
    below = middle - 5 + int(np.argmax(gaps))
    threshold = (shown[below] + shown[below + 1]) / 2
    assert shown[below + 1] - shown[below] > 1e-4

    report = evaluation.non_brain_report(classifier, size, "section", temperature, threshold)
    expected_uncertain = int(np.sum(~blank & (confidence < threshold)))
    assert 0 < expected_uncertain < len(shown)  # a real split, not all or nothing
    assert report["count"] == len(images)
    assert report["blank"] == int(blank.sum())
    assert report["uncertain"] == expected_uncertain
    expected_flagged = (blank.sum() + expected_uncertain) / len(images)
    assert report["flagged_fraction"] == pytest.approx(expected_flagged)
    assert report["median_confidence_when_not_blank"] == pytest.approx(np.median(shown), abs=1e-5)
