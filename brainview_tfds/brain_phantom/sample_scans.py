r"""Writes a folder of phantom section "scans" the way a lab's folder looks.

Nested folders, mixed formats (PNG, JPEG, 8- and 16-bit TIFF, BMP), sections
mounted at any rotation, bright- and dark-field. The true view is in each
file name (e.g. `slide_003/s0007_sagittal.png`), so a reader can check the
classifier's output by eye. Used by the demo and by classify_dir's tests.

  python -m brainview_tfds.brain_phantom.sample_scans --output_dir=runs/sample_scans
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from brainview_tfds.brain_phantom import phantom_volumes, rendering
from brainview_tfds.core import volumes

FORMATS = ("png", "jpg", "tif", "png", "bmp", "tif16")
SPECIMEN_SHAPE = (80, 48, 68)
SCANS_PER_SLIDE = 6


def _save(pixels: np.ndarray, path_without_suffix: str, file_format: str) -> str:
    if file_format == "tif16":
        gray16 = (pixels.mean(axis=2) * 257).astype(np.uint16)
        path = path_without_suffix + ".tif"
        Image.fromarray(gray16).save(path)
    else:
        path = f"{path_without_suffix}.{file_format}"
        Image.fromarray(pixels).save(path, **({"quality": 90} if file_format == "jpg" else {}))
    return path


def write_sample_scans(
    output_dir: str, count: int = 48, seed: int = 1000, scale: int = 3
) -> list[str]:
    """Writes `count` scans below output_dir; returns their paths (relative).

    Specimens are phantoms with seeds from `seed` upwards (the brain_phantom
    dataset uses 0..9), so sample scans are not training images. `scale`
    enlarges the sections (x3: about 200-250 px) like a scanner's resolution.
    """
    rng = np.random.default_rng(seed)
    written = []
    specimens: dict[int, tuple] = {}
    for number in range(count):
        specimen_seed = seed + number // SCANS_PER_SLIDE
        if specimen_seed not in specimens:
            specimens = {
                specimen_seed: phantom_volumes.make_specimen(specimen_seed, SPECIMEN_SHAPE)
            }
        density, _, appearance = specimens[specimen_seed]
        view = volumes.AXIS_VIEWS[rng.integers(3)]
        total = volumes.num_slices(density, view)
        index = int(rng.integers(int(0.25 * total), int(0.75 * total)))
        section = volumes.display_slice(density, view, index)
        pixels = rendering.render_section(section, appearance, rng)
        image = Image.fromarray(pixels)
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.BICUBIC)
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        fill = tuple(int(v) for v in np.median(border, axis=0))  # the slide's background
        image = image.rotate(
            float(rng.uniform(0, 360)), Image.Resampling.BILINEAR, expand=True, fillcolor=fill
        )
        slide = f"slide_{number // SCANS_PER_SLIDE:03d}"
        folder = (
            os.path.join(output_dir, slide, "raw")
            if number % 5 == 4
            else os.path.join(output_dir, slide)
        )
        os.makedirs(folder, exist_ok=True)
        path = _save(
            np.asarray(image),
            os.path.join(folder, f"s{number:04d}_{view}"),
            FORMATS[number % len(FORMATS)],
        )
        written.append(os.path.relpath(path, output_dir))
    return sorted(written)


def main() -> None:
    from absl import app, flags

    flags.DEFINE_string("output_dir", "runs/sample_scans", "Folder to write the scans into.")
    flags.DEFINE_integer("count", 48, "Number of scans.")
    flags.DEFINE_integer("seed", 1000, "First phantom seed (the dataset uses 0..9).")

    def run(argv: list[str]) -> None:
        del argv
        paths = write_sample_scans(flags.FLAGS.output_dir, flags.FLAGS.count, flags.FLAGS.seed)
        print(f"wrote {len(paths)} scans below {flags.FLAGS.output_dir}")

    app.run(run)


if __name__ == "__main__":
    main()
