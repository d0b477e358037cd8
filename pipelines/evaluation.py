"""Predictions on an evaluation split, and the files that report them.

A run's `metrics.json` holds every metric overall and per dataset of origin;
`misclassified.csv` lists the examples the model got wrong, with where they
came from, so a reader can look at them.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import keras
import numpy as np
import tensorflow as tf

from brainview import image_files, metrics, non_brain, preprocessing
from brainview.labels import VIEWS
from brainview.predict import make_predict


@dataclasses.dataclass
class Predictions:
    """Model outputs for every example of a split, aligned with their metadata."""

    probabilities: np.ndarray  # (N, 3), softmax with temperature 1
    labels: np.ndarray  # (N,)
    origins: np.ndarray  # (N,) str
    specimens: np.ndarray
    groups: np.ndarray
    slice_indices: np.ndarray
    source_files: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def predict(model: keras.Model, dataset: tf.data.Dataset, tta: bool = False) -> Predictions:
    """Runs `model` over (images, labels, metadata) batches, keeping metadata aligned.

    `tta`: average over the four mirror images of each input.
    """
    forward = make_predict(model, tta)

    columns: dict[str, list] = {
        k: [] for k in ("p", "y", "origin", "specimen", "group", "slice_index", "source_file")
    }
    for images, labels, metadata in dataset:
        columns["p"].append(forward(images).numpy())
        columns["y"].append(labels.numpy())
        for key in ("origin", "specimen", "group", "slice_index", "source_file"):
            columns[key].append(metadata[key].numpy())
    if not columns["y"]:
        raise ValueError("no examples to evaluate")

    def joined(key: str, decode: bool = False) -> np.ndarray:
        values = np.concatenate(columns[key])
        return values.astype(str) if decode else values

    return Predictions(
        probabilities=joined("p").astype(np.float64),
        labels=joined("y").astype(int),
        origins=np.array([v.decode() for v in joined("origin")]),
        specimens=np.array([v.decode() for v in joined("specimen")]),
        groups=np.array([v.decode() for v in joined("group")]),
        slice_indices=joined("slice_index"),
        source_files=np.array([v.decode() for v in joined("source_file")]),
    )


def calibrated(predictions: Predictions, temperature: float) -> np.ndarray:
    return metrics.apply_temperature(predictions.probabilities, temperature)


def report(predictions: Predictions, temperature: float) -> dict:
    """Metrics overall and per origin, on temperature-scaled probabilities."""
    result = metrics.metrics_by_origin(
        predictions.labels, calibrated(predictions, temperature), predictions.origins
    )
    result["temperature"] = temperature
    result["uncalibrated_expected_calibration_error"] = metrics.expected_calibration_error(
        predictions.labels, predictions.probabilities
    )
    return result


def write_metrics(result: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as file:
        json.dump(result, file, indent=2)


def save_predictions(parts: dict[str, Predictions], path: str) -> None:
    """Every example's probabilities (temperature 1), label and origin, per part
    ("validation", "test", ...), as one .npz: what calibration choices and the
    README's figures can be recomputed from without running the model again."""
    arrays = {}
    for name, predictions in parts.items():
        arrays[f"{name}_probabilities"] = predictions.probabilities
        arrays[f"{name}_labels"] = predictions.labels
        arrays[f"{name}_origins"] = predictions.origins
    temporary = path + ".tmp.npz"
    np.savez_compressed(temporary, **arrays)
    os.replace(temporary, path)


def write_misclassified(predictions: Predictions, temperature: float, path: str) -> int:
    """CSV of wrong predictions, most confident first; returns how many."""
    probabilities = calibrated(predictions, temperature)
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != predictions.labels)
    wrong = wrong[np.argsort(-probabilities[wrong].max(axis=1), kind="stable")]
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(
            [
                "origin",
                "specimen",
                "group",
                "slice_index",
                "source_file",
                "true_view",
                "predicted_view",
                "confidence",
            ]
        )
        for i in wrong:
            writer.writerow(
                [
                    predictions.origins[i],
                    predictions.specimens[i],
                    predictions.groups[i],
                    int(predictions.slice_indices[i]),
                    predictions.source_files[i],
                    VIEWS[predictions.labels[i]],
                    VIEWS[predicted[i]],
                    f"{probabilities[i].max():.4f}",
                ]
            )
    return len(wrong)


# The calibrated confidence below which classify_dir says "uncertain", when
# bin/train chooses it: this percentile of the validation sections' confidence.
AUTO_UNCERTAIN_PERCENTILE = 5.0
AUTO_UNCERTAIN_RANGE = (0.4, 0.95)


def auto_uncertain_threshold(validation: Predictions, temperature: float) -> float:
    """A threshold that keeps ~95% of real (validation) sections above it."""
    confidence = calibrated(validation, temperature).max(axis=1)
    threshold = float(np.percentile(confidence, AUTO_UNCERTAIN_PERCENTILE))
    return float(np.clip(threshold, *AUTO_UNCERTAIN_RANGE))


def non_brain_report(
    model: keras.Model,
    image_size: int,
    mode: str,
    temperature: float,
    uncertain_below: float,
    tta: bool = False,
) -> dict:
    """How classify_dir would label images that are not brain sections.

    `flagged` counts those reported `blank` or `uncertain` instead of a
    confident plane; the rest are confident mistakes.
    """
    images = non_brain.make_set()
    inputs, blank = [], []
    for image in images:
        preprocessed = preprocessing.preprocess(
            tf.constant(image), image_size, mode, mean_intensity=image_files.mean_gray(image)
        )
        inputs.append(preprocessed.model_input)
        blank.append(bool(preprocessed.blank))
    probabilities = make_predict(model, tta)(tf.stack(inputs)).numpy()
    confidence = metrics.apply_temperature(probabilities, temperature).max(axis=1)
    blank = np.array(blank)
    uncertain = ~blank & (confidence < uncertain_below)
    return {
        "count": len(images),
        "kinds": list(non_brain.KINDS),
        "blank": int(blank.sum()),
        "uncertain": int(uncertain.sum()),
        "flagged_fraction": float((blank | uncertain).mean()),
        "median_confidence_when_not_blank": float(np.median(confidence[~blank]))
        if (~blank).any()
        else None,
    }
