"""Classification and calibration metrics against small cases computed by hand."""

import numpy as np
import pytest

from brainview import metrics

# Six predictions; views 0 coronal, 1 horizontal, 2 sagittal. No confidence falls on a
# 1/15 bin edge of the ECE, so every bin below is unambiguous.
LABELS = np.array([0, 0, 0, 1, 1, 2])
PROBABILITIES = np.array(
    [
        [0.75, 0.15, 0.10],  # true 0, predicted 0, confidence 0.75 (ECE bin 11)
        [0.55, 0.35, 0.10],  # true 0, predicted 0, confidence 0.55 (bin 8)
        [0.30, 0.65, 0.05],  # true 0, predicted 1, confidence 0.65 (bin 9)  wrong
        [0.20, 0.70, 0.10],  # true 1, predicted 1, confidence 0.70 (bin 10)
        [0.10, 0.40, 0.50],  # true 1, predicted 2, confidence 0.50 (bin 7)  wrong
        [0.05, 0.25, 0.70],  # true 2, predicted 2, confidence 0.70 (bin 10)
    ]
)


def test_accuracy_confusion_matrix_and_per_class_scores_by_hand():
    result = metrics.classification_metrics(LABELS, PROBABILITIES)
    assert result["count"] == 6
    assert result["accuracy"] == pytest.approx(4 / 6)  # rows 0, 1, 3, 5 are right
    # Rows: true view; columns: predicted view.
    assert result["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    per_class = result["per_class"]
    # coronal: TP 2, FP 0, FN 1 -> P 2/2 = 1, R 2/3, F1 = 2 * 1 * 2/3 / (1 + 2/3) = 0.8
    assert per_class["coronal"] == pytest.approx(
        {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3}
    )
    # horizontal: TP 1, FP 1 (row 2), FN 1 (row 4) -> P 1/2, R 1/2, F1 1/2
    assert per_class["horizontal"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    )
    # sagittal: TP 1, FP 1 (row 4), FN 0 -> P 1/2, R 1, F1 = 2 * 0.5 * 1 / 1.5 = 2/3
    assert per_class["sagittal"] == pytest.approx(
        {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1}
    )


def test_macro_and_weighted_f1_by_hand():
    result = metrics.classification_metrics(LABELS, PROBABILITIES)
    # macro: (0.8 + 0.5 + 2/3) / 3 = (72 + 45 + 60) / 90 / 3 = 59/90
    assert result["f1_macro"] == pytest.approx(59 / 90)
    # weighted by support 3, 2, 1: (3 * 0.8 + 2 * 0.5 + 1 * 2/3) / 6 = 61/90
    assert result["f1_weighted"] == pytest.approx(61 / 90)


def test_one_vs_rest_roc_auc_by_hand():
    """AUC = fraction of (positive, negative) pairs the view's probability orders right."""
    result = metrics.classification_metrics(LABELS, PROBABILITIES)
    # coronal: positives 0.75, 0.55, 0.30 all above negatives 0.20, 0.10, 0.05 -> 1
    # horizontal: positives 0.70, 0.40 vs negatives 0.15, 0.35, 0.65, 0.25:
    #   0.70 beats 4, 0.40 beats 3 (not 0.65) -> 7/8
    # sagittal: positive 0.70 beats 0.10, 0.10, 0.05, 0.10, 0.50 -> 1
    assert result["roc_auc_ovr"] == pytest.approx((1 + 7 / 8 + 1) / 3)


def test_expected_calibration_error_by_hand():
    # Bins (width 1/15): {0.75: right} {0.55: right} {0.65: wrong} {0.70, 0.70: both right}
    # {0.50: wrong}. ECE = sum over bins of (size / 6) * |accuracy - mean confidence|
    #   = (0.25 + 0.45 + 0.65 + 2 * 0.30 + 0.50) / 6 = 2.45 / 6
    assert metrics.expected_calibration_error(LABELS, PROBABILITIES) == pytest.approx(2.45 / 6)
    result = metrics.classification_metrics(LABELS, PROBABILITIES)
    assert result["expected_calibration_error"] == pytest.approx(2.45 / 6)
    # bins=2 ([0, 0.5) and [0.5, 1]), all true view 0:
    #   bin 0: {0.40 right}            -> (1/3) * |1 - 0.40| = 0.2
    #   bin 1: {0.90 right, 0.70 wrong} -> (2/3) * |1/2 - 0.80| = 0.2      ECE = 0.4
    two_bins = np.array([[0.40, 0.35, 0.25], [0.90, 0.10, 0.0], [0.30, 0.70, 0.0]])
    assert metrics.expected_calibration_error(
        np.array([0, 0, 0]), two_bins, bins=2
    ) == pytest.approx(0.4)


def test_perfectly_calibrated_confident_predictions_have_zero_ece():
    labels = np.array([0, 1, 2, 2])
    assert metrics.expected_calibration_error(labels, np.eye(3)[labels]) == pytest.approx(0.0)


def test_views_absent_from_the_labels_do_not_count_in_f1_and_auc():
    """A test set without horizontal sections: predicting horizontal is still an error,
    but the absent view's F1 of 0 does not drag the macro F1 down."""
    labels = np.array([0, 0, 2, 2])
    probabilities = np.array(
        [
            [0.6, 0.3, 0.1],  # true 0, predicted 0
            [0.2, 0.7, 0.1],  # true 0, predicted 1 (absent view)  wrong
            [0.1, 0.2, 0.7],  # true 2, predicted 2
            [0.5, 0.1, 0.4],  # true 2, predicted 0  wrong
        ]
    )
    result = metrics.classification_metrics(labels, probabilities)
    assert result["accuracy"] == pytest.approx(0.5)
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 0, 0], [1, 0, 1]]
    # coronal: TP 1, FP 1, FN 1 -> 0.5 / 0.5 / 0.5; sagittal: TP 1, FP 0, FN 1 -> 1 / 0.5 / 2/3
    assert result["per_class"]["coronal"]["f1"] == pytest.approx(0.5)
    assert result["per_class"]["sagittal"]["f1"] == pytest.approx(2 / 3)
    assert result["per_class"]["horizontal"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
    }
    # Over the two present views: (0.5 + 2/3) / 2 = 7/12 (with horizontal it would be 7/18).
    assert result["f1_macro"] == pytest.approx(7 / 12)
    assert result["f1_weighted"] == pytest.approx((2 * 0.5 + 2 * 2 / 3) / 4)
    # AUC over present views: coronal 0.6 beats 0.1 and 0.5, 0.2 beats 0.1 only -> 3/4;
    # sagittal 0.7 and 0.4 beat 0.1 and 0.1 -> 1. Mean 0.875.
    assert result["roc_auc_ovr"] == pytest.approx(0.875)


def test_auc_is_none_with_a_single_view():
    result = metrics.classification_metrics(np.array([1, 1]), np.array([[0.2, 0.7, 0.1]] * 2))
    assert result["roc_auc_ovr"] is None
    assert result["accuracy"] == 1.0


def test_temperature_one_is_the_identity():
    np.testing.assert_allclose(metrics.apply_temperature(PROBABILITIES, 1.0), PROBABILITIES)


def test_high_temperature_tends_to_uniform_and_low_to_one_hot():
    np.testing.assert_allclose(metrics.apply_temperature(PROBABILITIES, 1e6), 1 / 3, atol=1e-5)
    sharp = metrics.apply_temperature(PROBABILITIES, 1e-3)
    np.testing.assert_allclose(sharp, np.eye(3)[PROBABILITIES.argmax(axis=1)], atol=1e-6)


def test_temperature_divides_the_logits():
    """softmax(log p / T) is the softmax of the original logits divided by T."""
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, 1.0]])

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    for temperature in (0.5, 2.0, 3.7):
        np.testing.assert_allclose(
            metrics.apply_temperature(softmax(logits), temperature),
            softmax(logits / temperature),
            rtol=1e-9,
        )


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_with(true_temperature):
    """Labels drawn from softmax(z / T0) while the model says softmax(z): the NLL-optimal
    temperature is T0 (over-confident model: T0 > 1; under-confident: T0 < 1)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (6000, 3))

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    truth = softmax(logits / true_temperature)
    labels = np.array([rng.choice(3, p=p) for p in truth])
    fitted = metrics.fit_temperature(labels, softmax(logits))
    assert fitted == pytest.approx(true_temperature, rel=0.1)
    # Calibration improves on the data it was fitted on.
    before = metrics.expected_calibration_error(labels, softmax(logits))
    after = metrics.expected_calibration_error(
        labels, metrics.apply_temperature(softmax(logits), fitted)
    )
    assert after < before


def test_metrics_by_origin_splits_examples_by_origin():
    origins = np.array(["brainmaps", "allen", "brainmaps", "allen", "allen", "brainmaps"])
    result = metrics.metrics_by_origin(LABELS, PROBABILITIES, origins)
    assert result["overall"] == metrics.classification_metrics(LABELS, PROBABILITIES)
    assert list(result["by_origin"]) == ["allen", "brainmaps"]
    allen = result["by_origin"]["allen"]
    # allen: rows 1, 3, 4 -> labels 0, 1, 1; predictions 0, 1, 2 -> 2 of 3 right
    assert allen["count"] == 3
    assert allen["accuracy"] == pytest.approx(2 / 3)
    assert allen["confusion_matrix"] == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    # brainmaps: rows 0, 2, 5 -> labels 0, 0, 2; predictions 0, 1, 2 -> 2 of 3 right
    brainmaps = result["by_origin"]["brainmaps"]
    assert brainmaps["count"] == 3
    assert brainmaps["confusion_matrix"] == [[1, 1, 0], [0, 0, 0], [0, 0, 1]]
    index = origins == "brainmaps"
    assert brainmaps == metrics.classification_metrics(LABELS[index], PROBABILITIES[index])


def test_selective_metrics_count_flagged_rows_and_errors_among_the_rest():
    probabilities = np.array(
        [[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1]]
    )
    labels = np.array([0, 1, 2, 0])  # rows 1 and 2 are wrong; row 1 is unsure
    result = metrics.selective_metrics(labels, probabilities, uncertain_below=0.5)
    assert result["flagged_fraction"] == 0.25
    assert result["error_rate_ok"] == pytest.approx(1 / 3)
    assert result["errors_flagged"] == 0.5
