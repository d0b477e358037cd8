"""Looking at CAMs: a heat map over each chosen scan, and a contact sheet of them.

Drawn to be read at a glance, on any slide:

* every scan is scaled to the same legible size (`OVERLAY_SIDE` on its longer
  side; small scans are enlarged, not left at 126 px);
* the scan is shown in gray, so the only colour is the heat, whatever the stain;
* the heat uses a perceptually ordered colour map whose high end is its most
  saturated colour (ColorBrewer YlOrRd: pale yellow -> orange -> deep red), with
  an opacity that grows with the CAM value up to `HEAT_MAX_OPACITY`: weak
  evidence stays see-through, strong evidence is a deep red that stands out on a
  light slide and on a dark one;
* the CAM covers the square `frame` of the scan the model saw (see
  cam_file.CAM_DATASETS): it is interpolated smoothly from its grid (2 x 2 cells
  at 64 px input, 4 x 4 at 128 px) onto that square, turned back by the frame's
  angle and placed on the scan;
* captions are fitted to the image width (long paths lose their middle, never
  the file name).
"""

from __future__ import annotations

import os

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from brainview import image_files
from brainview.classify import cam_file, output_readers

OVERLAY_SIDE = 384  # longer side of every rendered scan, pixels
HEAT_MAX_OPACITY = 0.75  # opacity of the heat where the CAM is 1
COLOR_MAP = "YlOrRd"
CAPTION_FONT_SIZE = 15
SHEET_CELL = 224  # contact-sheet cell: the overlay fitted into this square, caption below
SHEET_COLUMNS = 4
SELECTIONS = ("first", "lowest_confidence", "random")


def heat_colors(cam: np.ndarray) -> np.ndarray:
    """CAM values 0..1 -> RGB float 0..1 (YlOrRd: the higher, the deeper the red)."""
    return matplotlib.colormaps[COLOR_MAP](np.clip(cam, 0, 1))[..., :3]


def cam_on_scan(
    cam: np.ndarray, frame: np.ndarray, size: tuple[int, int], scale: float
) -> np.ndarray:
    """The CAM as a float map over a scan drawn at `size` (width, height), 0 outside its frame.

    `frame` is [center_y, center_x, side, angle] in source pixels and `scale`
    maps source pixels to drawn ones. The grid is interpolated bilinearly onto
    the frame's square (cell centres keep their place, no blocks), then turned
    back by the angle the model saw the scan at: PIL turns counter-clockwise on
    screen (y up), which undoes `angle` (y down).
    """
    center_y, center_x, frame_side = (float(v) * scale for v in frame[:3])
    side = max(1, round(frame_side))
    grid = Image.fromarray(np.clip(cam.astype(np.float32), 0, 1))  # mode "F"
    square = grid.resize((side, side), Image.Resampling.BILINEAR)
    turned = square.rotate(float(np.degrees(frame[3])), Image.Resampling.BILINEAR, expand=True)
    canvas = Image.new("F", size, 0.0)
    canvas.paste(turned, (round(center_x - turned.width / 2), round(center_y - turned.height / 2)))
    return np.clip(np.asarray(canvas), 0, 1)


def render_overlay(
    scan_path: bytes | str, cam: np.ndarray, frame: np.ndarray, side: int = OVERLAY_SIDE
) -> Image.Image:
    """The scan, gray, `side` px on its longer side, with its CAM blended over the frame."""
    decoded = image_files.read_image(scan_path, max_side=max(side, 1))
    scan = Image.fromarray(np.asarray(decoded.pixels)).convert("L")
    ratio = side / max(scan.width, scan.height)
    size = (max(1, round(scan.width * ratio)), max(1, round(scan.height * ratio)))
    enlarging = ratio > 1
    scan = scan.resize(size, Image.Resampling.BICUBIC if enlarging else Image.Resampling.LANCZOS)
    scale = size[0] / max(decoded.width, 1)  # source pixels -> drawn pixels
    heat = cam_on_scan(cam, frame, size, scale)[..., None]
    gray = np.asarray(scan.convert("RGB"), np.float32) / 255
    opacity = HEAT_MAX_OPACITY * heat
    blended = gray * (1 - opacity) + heat_colors(heat[..., 0]) * opacity
    return Image.fromarray(np.round(blended * 255).astype(np.uint8))


def caption_font(size: int = CAPTION_FONT_SIZE) -> ImageFont.ImageFont:
    """Pillow's bundled font (no system fonts needed on a GPU node)."""
    return ImageFont.load_default(size=size)


def fit_text(text: str, width: float, font: ImageFont.ImageFont) -> str:
    """`text`, with characters cut from its middle (marked '…') until it fits `width`
    pixels; two thirds of what stays is the end, where a path keeps its file name."""
    for cut in range(len(text) + 1):
        if cut == 0:
            candidate = text
        else:
            start = (len(text) - cut) // 3
            candidate = f"{text[:start]}…{text[start + cut :]}"
        if font.getlength(candidate) <= width:
            return candidate
    return ""


def with_caption(image: Image.Image, lines: list[str], width: int | None = None) -> Image.Image:
    """`image` on a white canvas `width` wide (default: the image's), captions below it."""
    font = caption_font()
    width = width or image.width
    line_height = CAPTION_FONT_SIZE + 4
    canvas = Image.new("RGB", (width, image.height + 6 + line_height * len(lines)), "white")
    canvas.paste(image, ((width - image.width) // 2, 0))
    draw = ImageDraw.Draw(canvas)
    for number, line in enumerate(lines):
        y = image.height + 3 + number * line_height
        draw.text((4, y), fit_text(line, width - 8, font), fill="black", font=font)
    return canvas


def caption_lines(row: cam_file.CamRow) -> list[str]:
    """What a reader needs under an overlay: the answer, then which file."""
    return [f"{row.view} {row.confidence:.2f}", row.path]


def heat_legend(width: int) -> Image.Image:
    """A key for the sheet: the heat over mid-gray from CAM 0 to 1, as the overlays draw it."""
    font = caption_font()
    label = "Grad-CAM of the predicted view:  0"
    bar_left = round(font.getlength(label)) + 12
    bar_width = max(40, min(320, width - bar_left - 40))
    values = np.linspace(0, 1, bar_width, dtype=np.float32)[None, :, None]
    opacity = HEAT_MAX_OPACITY * values
    bar = 0.5 * (1 - opacity) + heat_colors(values[..., 0]) * opacity
    bar = np.repeat(np.round(bar * 255).astype(np.uint8), 16, axis=0)
    legend = Image.new("RGB", (width, 24), "white")
    legend.paste(Image.fromarray(bar), (bar_left, 4))
    draw = ImageDraw.Draw(legend)
    draw.text((8, 3), label, fill="black", font=font)
    draw.text((bar_left + bar_width + 6, 3), "1", fill="black", font=font)
    return legend


def contact_sheet(
    overlays: list[tuple[Image.Image, list[str]]],
    columns: int = SHEET_COLUMNS,
    cell: int = SHEET_CELL,
) -> Image.Image:
    """The overlays side by side, each fitted into a `cell` square with its caption,
    and a key to the colours below them."""
    cells = []
    for image, lines in overlays:
        thumbnail = image.copy()
        thumbnail.thumbnail((cell, cell), Image.Resampling.LANCZOS)
        square = Image.new("RGB", (cell, cell), "white")
        square.paste(thumbnail, ((cell - thumbnail.width) // 2, (cell - thumbnail.height) // 2))
        cells.append(with_caption(square, lines))
    columns = max(1, min(columns, len(cells)))
    rows = max(1, -(-len(cells) // columns))
    cell_height = cells[0].height if cells else cell
    gap = 8
    width = columns * (cell + gap) + gap
    legend = heat_legend(width)
    sheet = Image.new("RGB", (width, rows * (cell_height + gap) + gap + legend.height), "white")
    for i, image in enumerate(cells):
        column, row = i % columns, i // columns
        sheet.paste(image, (gap + column * (cell + gap), gap + row * (cell_height + gap)))
    sheet.paste(legend, (0, sheet.height - legend.height))
    return sheet


def choose_rows(
    csv_path: str, selection: str, count: int, status: str | None = None, seed: int = 0
) -> list[int]:
    """Row indices (0-based, CSV data rows) to render."""
    candidates = [
        (row.index, row.confidence)
        for row in output_readers.read_rows(csv_path)
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


def overlay_name(index: int, view: str) -> str:
    """File name of a row's overlay (the row number first, so names sort in CSV order)."""
    return f"row{index:07d}_{view}.png"


def render_rows(
    scan_dir: str,
    cams_path: str,
    rows: list[int],
    output_dir: str,
) -> list[str]:
    """Writes one overlay PNG per row (and contact_sheet.png); returns the paths.

    Rows whose scan cannot be read (error rows, moved files) are skipped with a
    line on stdout.
    """
    os.makedirs(output_dir, exist_ok=True)
    written, overlays = [], []
    with cam_file.CamFile(cams_path) as cams:
        for index in rows:
            row = cams.row(index)
            source = os.path.join(os.fsencode(scan_dir), row.path.encode("utf-8"))
            try:
                overlay = render_overlay(source, row.cam, row.frame)
            except image_files.ImageReadError as error:
                print(f"skipped row {index} ({row.path}): {error}")
                continue
            lines = caption_lines(row)
            target = os.path.join(output_dir, overlay_name(index, row.view))
            with_caption(overlay, lines).save(target)
            written.append(target)
            overlays.append((overlay, lines))
    if overlays:
        sheet_path = os.path.join(output_dir, "contact_sheet.png")
        contact_sheet(overlays).save(sheet_path, optimize=True)
        written.append(sheet_path)
    return written
