"""Non-brain images and the 'uncertain' threshold chosen from validation sections."""

import keras
import numpy as np
import pytest

from brainview import evaluation, model, non_brain


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


@pytest.mark.slow
def test_non_brain_report_counts_blank_and_uncertain_images():
    keras.utils.set_random_seed(0)
    classifier = model.build_classifier(32)
    report = evaluation.non_brain_report(classifier, 32, "aligned", 1.0, uncertain_below=1.0)
    # With a threshold of 1.0 every non-blank image is uncertain: all are flagged.
    assert report["count"] == 20 * len(non_brain.KINDS)
    assert report["blank"] + report["uncertain"] == report["count"]
    assert report["flagged_fraction"] == 1.0
    strict = evaluation.non_brain_report(classifier, 32, "aligned", 1.0, uncertain_below=0.0)
    assert strict["uncertain"] == 0 and strict["flagged_fraction"] == strict["blank"] / 100
