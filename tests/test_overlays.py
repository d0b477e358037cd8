"""CAM overlays and the contact sheet (bin/render_cams): legible, and the heat where the model looked.

Unit tier: generated scans on disk; the geometry test runs the real preprocessing.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

from brainview import image_files, preprocessing
from brainview.classify import overlays
from tests.written_runs import ScanRow, write_run, write_scan

SIDE = overlays.OVERLAY_SIDE


def colourfulness(image: Image.Image) -> np.ndarray:
    """Largest minus smallest channel per pixel: 0 on the gray scan, large under the heat."""
    pixels = np.asarray(image.convert("RGB"), np.int16)
    return pixels.max(axis=-1) - pixels.min(axis=-1)


@pytest.mark.parametrize("size", [(120, 90), (2000, 1500)])
def test_every_scan_is_drawn_at_the_same_legible_size(tmp_path, size):
    path = str(tmp_path / "scan.png")
    write_scan(path, ScanRow("scan.png", "coronal", size=size))
    frame = np.array([size[1] / 2, size[0] / 2, min(size), 0], np.float32)
    overlay = overlays.render_overlay(path, np.zeros((2, 2)), frame)
    assert overlay.size == (SIDE, round(SIDE * 3 / 4))


def test_heat_covers_the_frame_where_the_cam_is_high_and_only_there(tmp_path):
    """A 2x2 CAM high in its top-left cell, on a frame in the scan's middle: the heat
    fades smoothly (no block edges) from the frame's top-left corner; the rest stays gray."""
    path = str(tmp_path / "scan.png")
    Image.new("RGB", (200, 200), (128, 128, 128)).save(path)
    cam = np.array([[1.0, 0.0], [0.0, 0.0]])
    frame = np.array([100, 100, 100, 0], np.float32)  # source pixels 50..150
    heat = colourfulness(overlays.render_overlay(path, cam, frame))
    scale = SIDE / 200
    top_left, bottom_right = round(60 * scale), round(140 * scale)
    assert heat[top_left, top_left] > 60  # the high cell
    assert heat[bottom_right, bottom_right] < 8  # the zero cells
    assert heat[round(20 * scale), round(20 * scale)] < 8  # outside the frame
    diagonal = [int(heat[i, i]) for i in range(top_left, bottom_right)]
    assert len(set(diagonal)) > 20  # many levels, not 2x2 blocks
    assert max(abs(a - b) for a, b in itertools.pairwise(diagonal)) <= 6  # no edge


def test_heat_shows_on_light_and_on_dark_slides(tmp_path):
    """Where the CAM is 1 the heat is a saturated colour, far from the slide's gray,
    whether the slide is white or black."""
    for dark in (False, True):
        path = str(tmp_path / f"scan_{dark}.png")
        write_scan(path, ScanRow("s.png", "coronal", size=(100, 100), dark=dark))
        frame = np.array([50, 50, 100, 0], np.float32)
        overlay = np.asarray(overlays.render_overlay(path, np.ones((2, 2)), frame), np.int16)
        corner = overlay[5, 5]  # the slide itself, under full heat
        scan = np.asarray(Image.open(path).convert("L"), np.int16)[2, 2]
        assert corner.max() - corner.min() > 80, (dark, corner)  # a colour, not gray
        assert np.abs(corner - scan).max() > 60, (dark, corner, scan)


def test_the_cam_lands_back_on_the_tissue_the_model_saw(tmp_path):
    """Through the real preprocessing ("aligned": the section is turned onto its principal
    axis and framed), a CAM that is high exactly where the model input shows tissue is
    drawn over the tissue of the original, obliquely mounted scan."""
    scan = Image.new("RGB", (300, 200), (230, 225, 220))
    draw = ImageDraw.Draw(scan)
    draw.ellipse((30, 85, 250, 115), fill=(90, 60, 120))  # long and thin, at 45 degrees:
    draw.ellipse((220, 70, 270, 120), fill=(90, 60, 120))  # a heat turned the wrong way
    scan = scan.rotate(45, expand=True, fillcolor=(230, 225, 220))  # would cross it
    path = str(tmp_path / "oblique.png")
    scan.save(path)
    pixels = np.asarray(scan)
    result = preprocessing.preprocess(
        pixels, 64, "aligned", mean_intensity=image_files.mean_gray(pixels)
    )
    section = result.model_input.numpy()[..., 0]
    cam = np.asarray(Image.fromarray(section).resize((8, 8), Image.Resampling.BOX))
    cam = cam / cam.max()
    heat = colourfulness(overlays.render_overlay(path, cam, result.frame.numpy()))
    drawn = np.asarray(scan.convert("L").resize(heat.shape[::-1], Image.Resampling.BILINEAR))
    tissue = drawn < 150
    assert heat[tissue].mean() > 6 * heat[~tissue].mean()  # turned the wrong way: 2.7x


def test_captions_fit_and_keep_the_file_name():
    font = overlays.caption_font()
    path = "lab_2024/animal_0042/slides_batch_3/raw_exports/section_0173_coronal.tif"
    fitted = overlays.fit_text(path, 200, font)
    assert font.getlength(fitted) <= 200
    assert "…" in fitted and fitted.endswith("coronal.tif") and fitted.startswith("lab_")
    assert overlays.fit_text("short.png", 200, font) == "short.png"


def test_render_rows_writes_captioned_overlays_and_a_sheet_with_a_key(tmp_path):
    scan_dir, csv_path, cams_path = (
        str(tmp_path / "scans"),
        str(tmp_path / "p.csv"),
        str(tmp_path / "c.h5"),
    )
    rows = [ScanRow(f"s{i}_coronal.png", "coronal", confidence=0.5 + i / 10) for i in range(5)]
    write_run(scan_dir, csv_path, cams_path, rows)
    written = overlays.render_rows(scan_dir, cams_path, [0, 3, 4], str(tmp_path / "out"))
    names = [os.path.basename(path) for path in written]
    assert names == [
        "row0000000_coronal.png",
        "row0000003_coronal.png",
        "row0000004_coronal.png",
        "contact_sheet.png",
    ]
    overlay = Image.open(written[0])
    assert overlay.width == SIDE and overlay.height > round(SIDE * 3 / 4)  # caption below
    sheet = Image.open(written[-1])
    cell = overlays.SHEET_CELL
    assert sheet.width == 3 * (cell + 8) + 8  # three overlays: three columns
    legend = np.asarray(sheet.convert("RGB"))[-20:]
    assert colourfulness(Image.fromarray(legend)).max() > 80  # the colour key
