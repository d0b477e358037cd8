"""PNG figures for a run: confusion matrix and training curves (matplotlib, headless)."""

from __future__ import annotations

import csv

import matplotlib

matplotlib.use("Agg")  # no display on GPU nodes or CI
import matplotlib.pyplot as plt
import numpy as np

from brainview.labels import VIEWS

CURVES_NOTE = (
    "val_: the validation fold (specimens in neither training nor test), one pass per scan, "
    "at each epoch's end.\nThe test metrics (metrics.json) come from other held-out specimens "
    "after training,\naveraged over 4 mirror images when the run uses test-time augmentation."
)


def plot_confusion_matrix(confusion: list[list[int]], title: str, path: str) -> None:
    """Counts with row-normalized colours (recall per true view)."""
    counts = np.asarray(confusion)
    recall = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(4.6, 4))
    axes.imshow(recall, cmap="Blues", vmin=0, vmax=1)
    for (row, col), count in np.ndenumerate(counts):
        color = "white" if recall[row, col] > 0.6 else "black"
        axes.text(col, row, str(count), ha="center", va="center", color=color)
    axes.set_xticks(range(len(VIEWS)), VIEWS)
    axes.set_yticks(range(len(VIEWS)), VIEWS)
    axes.set_xlabel("predicted view")
    axes.set_ylabel("true view")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _as_float(text: str | None) -> float:
    """A CSVLogger cell as a number; its "NA" (an epoch without that metric, e.g.
    the epoch a run was resumed in) and empty cells become NaN, a gap in the line."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def plot_training_curves(history_csv: str, path: str) -> None:
    """Loss and accuracy per epoch (training and, if present, validation)."""
    with open(history_csv, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        return
    epochs = [int(row["epoch"]) + 1 for row in rows]
    figure, axes = plt.subplots(1, 2, figsize=(8, 3.9))
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            key = prefix + metric
            values = [_as_float(row.get(key)) for row in rows]
            if any(np.isfinite(values)):
                axis.plot(epochs, values, style, label=key)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend()
    # Why val_accuracy and metrics.json's test accuracy differ: other scans, other protocol.
    figure.text(0.5, 0.01, CURVES_NOTE, ha="center", va="bottom", fontsize=7.5, color="#444")
    figure.tight_layout(rect=(0, 0.13, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)
