"""Scoring a run on scans whose paths name their true view (classify_dir --score_by_name).

A lab's folder of already-sorted sections (`coronal/…`, or the demo's
`slide_002/s0013_horizontal.jpg`) is a test set for free: before trusting
the model on new scans, see how it does on these. The true view is the one
view name that appears as a word in the path (a folder or the file name,
letters only, case ignored); paths naming none or several are not scored.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from brainview.classify import output_readers
from brainview.labels import VIEWS

PREDICTED_COLUMNS = (*VIEWS, "error")


def true_view(path: str) -> str | None:
    """The view `path` names, e.g. "sagittal" for "slide_000/s0003_sagittal.png"."""
    named = {word for word in re.split(r"[^a-z]+", path.lower()) if word in VIEWS}
    return named.pop() if len(named) == 1 else None


@dataclasses.dataclass
class Score:
    """Counts of true view (rows, VIEWS order) x predicted view or error (columns)."""

    confusion: np.ndarray  # int (3, 4)
    confusion_ok: np.ndarray  # the same, rows with status "ok" only
    unnamed: int  # rows whose path names no single view

    @property
    def scored(self) -> int:
        return int(self.confusion.sum())

    @property
    def right(self) -> int:
        return int(np.trace(self.confusion[:, : len(VIEWS)]))

    def format(self) -> str:
        if not self.scored:
            return f"no scan path names a single view ({self.unnamed} scans): nothing to score"
        ok_scored = int(self.confusion_ok.sum())
        ok_right = int(np.trace(self.confusion_ok[:, : len(VIEWS)]))
        lines = [
            f"scored by name: {self.right} of {self.scored} right, "
            f"accuracy {self.right / self.scored:.3f}"
            + (
                f" (status ok only: {ok_right} of {ok_scored}, {ok_right / ok_scored:.3f})"
                if ok_scored
                else ""
            )
            + (f"; {self.unnamed} scans name no view" if self.unnamed else ""),
            "  " + "true \\ predicted".ljust(18) + "".join(f"{c:>12}" for c in PREDICTED_COLUMNS),
        ]
        for view, counts in zip(VIEWS, self.confusion, strict=True):
            lines.append("  " + f"{view:<18}" + "".join(f"{int(n):>12}" for n in counts))
        return "\n".join(lines)


def score_run(csv_path: str) -> Score:
    """The Score of a classify_dir CSV (streamed)."""
    confusion = np.zeros((len(VIEWS), len(PREDICTED_COLUMNS)), np.int64)
    confusion_ok = np.zeros_like(confusion)
    unnamed = 0
    for row in output_readers.read_rows(csv_path):
        truth = true_view(row.path)
        if truth is None:
            unnamed += 1
            continue
        column = PREDICTED_COLUMNS.index(row.view if row.status != "error" else "error")
        confusion[VIEWS.index(truth), column] += 1
        if row.status == "ok":
            confusion_ok[VIEWS.index(truth), column] += 1
    return Score(confusion, confusion_ok, unnamed)
