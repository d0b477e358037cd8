"""Looking at CAMs: a heat map over each chosen scan, and a contact sheet of them.

A CAM covers the square `frame` of its source image (the tissue, framed as
the model saw it); it is upsampled onto that square and blended over the
scan, so the overlay shows where on the original image the evidence was.
"""

from __future__ import annotations

import os

import matplotlib
import numpy as np
from PIL import Image, ImageDraw

from brainview import image_files
from brainview.classify import outputs

OVERLAY_SIDE = 256  # longer side of each rendered overlay, pixels
HEAT_ALPHA = 0.45
SELECTIONS = ("first", "lowest_confidence", "random")


def heat_colors(cam: np.ndarray) -> np.ndarray:
    """CAM values 0..1 -> RGB uint8 with the 'inferno' colour map."""
    return (matplotlib.colormaps["inferno"](np.clip(cam, 0, 1))[..., :3] * 255).astype(np.uint8)


def render_overlay(
    scan_path: bytes | str,
    cam: np.ndarray,
    frame: np.ndarray,
    caption: str,
    side: int = OVERLAY_SIDE,
) -> Image.Image:
    """The scan (longer side `side`) with its CAM blended over the framed square.

    `frame` is [center_y, center_x, side, angle] in source pixels (see
    preprocessing): the model saw the scan rotated by `angle`, so the CAM is
    rotated back by it before it is placed.
    """
    decoded = image_files.read_image(scan_path, max_side=side)
    scan = Image.fromarray(np.asarray(decoded.pixels)).convert("RGB")
    scale = scan.width / max(decoded.width, 1)  # source pixels -> overlay pixels
    center_y, center_x, frame_side = (float(v) * scale for v in frame[:3])
    size = max(1, round(frame_side))
    cam = np.clip(cam.astype(np.float32), 0, 1)
    # PIL turns counter-clockwise on screen (y up): that undoes `angle` (y down).
    degrees = float(np.degrees(frame[3]))
    heat = Image.fromarray(heat_colors(cam)).resize((size, size), Image.Resampling.BILINEAR)
    weight = Image.fromarray((cam * 255 * HEAT_ALPHA).astype(np.uint8)).resize(
        (size, size), Image.Resampling.BILINEAR
    )
    heat = heat.rotate(degrees, Image.Resampling.BILINEAR, expand=True)
    weight = weight.rotate(degrees, Image.Resampling.BILINEAR, expand=True)
    corner = (round(center_x - heat.width / 2), round(center_y - heat.height / 2))
    layer = Image.new("RGB", scan.size)
    mask = Image.new("L", scan.size, 0)
    layer.paste(heat, corner)
    mask.paste(weight, corner)
    blended = Image.composite(layer, scan, mask)
    canvas = Image.new("RGB", (blended.width, blended.height + 16), "white")
    canvas.paste(blended, (0, 16))
    ImageDraw.Draw(canvas).text((2, 2), caption[:48], fill="black")
    return canvas


def contact_sheet(
    images: list[Image.Image], columns: int = 6, cell: int = OVERLAY_SIDE + 16
) -> Image.Image:
    rows = max(1, -(-len(images) // columns))
    sheet = Image.new("RGB", (columns * cell, rows * cell), "white")
    for i, image in enumerate(images):
        thumbnail = image.copy()
        thumbnail.thumbnail((cell - 4, cell - 4))
        sheet.paste(thumbnail, ((i % columns) * cell + 2, (i // columns) * cell + 2))
    return sheet


def choose_rows(
    csv_path: str, selection: str, count: int, status: str | None = None, seed: int = 0
) -> list[int]:
    """Row indices (0-based, CSV data rows) to render."""
    candidates = [
        (row.index, row.confidence)
        for row in outputs.read_rows(csv_path)
        if row.status != "error" and (not status or row.status == status)
    ]
    if selection == "lowest_confidence":
        candidates.sort(key=lambda item: item[1])
    elif selection == "random":
        order = np.random.default_rng(seed).permutation(len(candidates))
        candidates = [candidates[i] for i in order]
    elif selection != "first":
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    return sorted(index for index, _ in candidates[:count])


def render_rows(scan_dir: str, cams_path: str, rows: list[int], output_dir: str) -> list[str]:
    """Writes one overlay PNG per row and contact_sheet.png; returns the paths."""
    os.makedirs(output_dir, exist_ok=True)
    written, overlays = [], []
    with outputs.CamFile(cams_path) as cams:
        for index in rows:
            row = cams.row(index)
            source = os.path.join(os.fsencode(scan_dir), row.path.encode("utf-8"))
            try:
                overlay = render_overlay(
                    source,
                    row.cam,
                    row.frame,
                    f"{row.view} {row.confidence:.2f} | {os.path.basename(row.path)}",
                )
            except image_files.ImageReadError as error:
                print(f"skipped row {index} ({row.path}): {error}")
                continue
            target = os.path.join(output_dir, f"row{index:07d}_{row.view}.png")
            overlay.save(target)
            written.append(target)
            overlays.append(overlay)
    if overlays:
        sheet_path = os.path.join(output_dir, "contact_sheet.png")
        contact_sheet(overlays).save(sheet_path)
        written.append(sheet_path)
    return written
