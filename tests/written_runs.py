"""Finished classify_dir runs written without a model, for the tools that read runs.

The CSV, CAM HDF5 and run manifest are written by classify_dir's own writer
(output_writer.OutputWriter), so sorting, scoring, overlays and the review page are
tested on the files a real run leaves, in seconds. Scans are small generated
PNGs: a bright ellipse ("tissue") on a light or dark slide.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image, ImageDraw

from brainview.classify import output_writer, outputs
from brainview.labels import VIEWS

CAM_SHAPE = (2, 2)


@dataclasses.dataclass(frozen=True)
class ScanRow:
    """One scan of a written run and the answer recorded for it."""

    path: str  # below the scan folder
    view: str
    status: str = "ok"
    confidence: float = 0.9
    size: tuple[int, int] = (120, 90)  # width, height of the scan
    dark: bool = False  # dark-field slide (bright tissue on black)
    cam: tuple[tuple[float, float], tuple[float, float]] = ((1.0, 0.2), (0.2, 0.0))
    angle: float = 0.0  # radians, as preprocessing records it in frames
    write_file: bool = True


def write_scan(path: str, row: ScanRow) -> None:
    width, height = row.size
    background, tissue = (
        ((10, 10, 10), (200, 190, 210)) if row.dark else ((235, 230, 225), (90, 60, 120))
    )
    image = Image.new("RGB", row.size, background)
    ImageDraw.Draw(image).ellipse(
        (width * 0.15, height * 0.2, width * 0.85, height * 0.8), fill=tissue
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path)


def probabilities_for(view: str, confidence: float) -> np.ndarray:
    """Calibrated probabilities whose argmax is `view` and maximum `confidence`."""
    rest = (1 - confidence) / (len(VIEWS) - 1)
    values = np.full(len(VIEWS), rest, np.float32)
    values[VIEWS.index(view)] = confidence
    return values


def write_run(
    scan_dir: str, csv_path: str, cams_path: str | None, rows: list[ScanRow], model_sha: str = "abc"
) -> None:
    """Writes the scans and a finished run over them (CSV, CAMs, out.run.json)."""
    for row in rows:
        if row.write_file:
            write_scan(os.path.join(scan_dir, row.path), row)
    errors = ["unreadable" if row.status == "error" else "" for row in rows]
    segment = outputs.make_segment(
        relative_paths=[os.fsencode(row.path) for row in rows],
        statuses=[row.status for row in rows],
        errors=errors,
        probabilities=np.stack([probabilities_for(row.view, row.confidence) for row in rows]),
        widths=np.array([row.size[0] for row in rows]),
        heights=np.array([row.size[1] for row in rows]),
        mean_intensities=np.full(len(rows), 120.0),
        frames=np.array(
            [[row.size[1] / 2, row.size[0] / 2, min(row.size) * 0.9, row.angle] for row in rows],
            np.float32,
        ),
        cams=np.array([row.cam for row in rows], np.float32) if cams_path else None,
    )
    signature = {"scan_dir": os.path.abspath(scan_dir), "model_sha256": model_sha}
    writer = output_writer.OutputWriter(
        csv_path, cams_path, signature, resume=False, overwrite=True
    )
    writer.commit(segment)
    attributes = {
        "class_names": np.array(VIEWS, dtype=object),
        "image_size": 64,
        "model": "/models/test/model.keras",
        "model_sha256": model_sha,
        "preprocessing": "aligned",
        "test_time_augmentation": "none",
    }
    manifest = {"scan_dir": os.path.abspath(scan_dir), "model_sha256": model_sha}
    writer.finish(attributes, manifest, CAM_SHAPE)
