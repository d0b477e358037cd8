"""Classification and calibration metrics, overall and per dataset of origin.

scikit-learn computes the standard metrics (its definitions are the ones
readers know); calibration (ECE, temperature scaling) is small enough to
write here.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from brainview.labels import VIEWS

ECE_BINS = 15


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Accuracy, weighted/macro F1, one-vs-rest ROC AUC, per-class P/R/F1, confusion.

    Args:
      labels: int array (N,), indices into VIEWS.
      probabilities: float array (N, 3).
    ROC AUC is macro one-vs-rest over the views present in `labels` (None
    when fewer than two are present). The confusion matrix has true views as
    rows, predicted views as columns, in VIEWS order.
    """
    labels = np.asarray(labels, dtype=int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predictions = probabilities.argmax(axis=1)
    all_views = list(range(len(VIEWS)))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predictions, labels=all_views, zero_division=0
    )
    return {
        "count": len(labels),
        "accuracy": float(skm.accuracy_score(labels, predictions)) if len(labels) else None,
        "f1_weighted": _f1(labels, predictions, "weighted"),
        "f1_macro": _f1(labels, predictions, "macro"),
        "roc_auc_ovr": _roc_auc(labels, probabilities),
        "expected_calibration_error": expected_calibration_error(labels, probabilities),
        "per_class": {
            view: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, view in enumerate(VIEWS)
        },
        "confusion_matrix": skm.confusion_matrix(labels, predictions, labels=all_views).tolist(),
    }


def _f1(labels: np.ndarray, predictions: np.ndarray, average: str) -> float | None:
    """F1 over the views present in `labels` (absent views do not count as 0)."""
    present = sorted(set(labels.tolist()))
    if not present:
        return None
    return float(
        skm.f1_score(labels, predictions, labels=present, average=average, zero_division=0)
    )


def _roc_auc(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    present = sorted(set(labels.tolist()))
    if len(present) < 2:
        return None
    aucs = [skm.roc_auc_score(labels == view, probabilities[:, view]) for view in present]
    return float(np.mean(aucs))


def metrics_by_origin(labels: np.ndarray, probabilities: np.ndarray, origins: np.ndarray) -> dict:
    """{'overall': metrics, 'by_origin': {origin: metrics}}."""
    origins = np.asarray(origins).astype(str)
    return {
        "overall": classification_metrics(labels, probabilities),
        "by_origin": {
            origin: classification_metrics(
                labels[origins == origin], probabilities[origins == origin]
            )
            for origin in sorted(set(origins.tolist()))
        },
    }


def selective_metrics(
    labels: np.ndarray, probabilities: np.ndarray, uncertain_below: float
) -> dict:
    """What classify_dir's "uncertain" status buys: rows flagged, and errors among the rest.

    A row is flagged when its (calibrated) confidence is below `uncertain_below`;
    `error_rate_ok` is the error rate among rows that are not, the figure a user
    who trusts every "ok" row lives with.
    """
    confidence = probabilities.max(axis=1)
    wrong = probabilities.argmax(axis=1) != labels
    ok = confidence >= uncertain_below
    return {
        "uncertain_below": float(uncertain_below),
        "flagged_fraction": float(1.0 - ok.mean()) if len(labels) else None,
        "error_rate_ok": float(wrong[ok].mean()) if ok.any() else None,
        "errors_flagged": float(wrong[~ok].sum() / max(wrong.sum(), 1)),
    }


def expected_calibration_error(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS
) -> float | None:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by size."""
    if len(labels) == 0:
        return None
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            error += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(error)


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): T > 1 softens over-confident predictions."""
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The temperature minimizing the negative log-likelihood (Guo et al., 2017).

    A 1-D problem: golden-section search on log T in [log 0.05, log 20].
    """
    labels = np.asarray(labels, dtype=int)

    def nll(log_t: float) -> float:
        scaled = apply_temperature(probabilities, float(np.exp(log_t)))
        return float(-np.log(np.clip(scaled[np.arange(len(labels)), labels], 1e-12, 1)).mean())

    low, high = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    for _ in range(60):
        if nll(a) < nll(b):
            high = b
        else:
            low = a
        a, b = high - ratio * (high - low), low + ratio * (high - low)
    return float(np.exp((low + high) / 2))
