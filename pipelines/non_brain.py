"""Images that are not brain sections, to measure how often the model says so.

A classifier with a softmax always names one of the three planes. classify_dir
reports `blank` for empty images and `uncertain` below a calibrated
confidence threshold; this module generates deterministic non-brain images
(noise at several scales, gradients, geometric shapes, stripes and grids,
text-like strokes) so every training run can report what fraction of them
is flagged rather than confidently called a plane. They are never trained on.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("noise", "gradient", "shapes", "stripes", "strokes")


def _smooth(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    grid = rng.random((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC))


def make_image(kind: str, rng: np.random.Generator, size: int = 160) -> np.ndarray:
    """One uint8 size x size x 3 image of the given kind."""
    if kind == "noise":
        values = _smooth(rng, size, int(rng.integers(2, 40)))
        image = np.repeat(values[..., None], 3, axis=2)
    elif kind == "gradient":
        ramp = np.linspace(0, 1, size, dtype=np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        values = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
        image = np.repeat(values[..., None], 3, axis=2) * rng.uniform(0.3, 1.0, 3)
    else:
        canvas = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(3, 12))):
            color = tuple(int(v) for v in rng.integers(0, 256, 3))
            xs = sorted(int(v) for v in rng.integers(0, size, 2))
            ys = sorted(int(v) for v in rng.integers(0, size, 2))
            box = (xs[0], ys[0], xs[1], ys[1])
            if kind == "shapes":
                (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=color)
            elif kind == "stripes":
                width = int(rng.integers(2, 12))
                for offset in range(0, 2 * size, width * 2):
                    draw.line((offset, 0, offset - size, size), fill=color, width=width)
                break
            else:  # strokes: like handwriting or a slide label
                points = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(6)]
                draw.line(points, fill=color, width=int(rng.integers(1, 4)))
        image = np.asarray(canvas, np.float32) / 255.0
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def make_set(count_per_kind: int = 20, seed: int = 0, size: int = 160) -> list[np.ndarray]:
    """A fixed, deterministic set of non-brain images (all kinds)."""
    rng = np.random.default_rng(seed)
    return [make_image(kind, rng, size) for kind in KINDS for _ in range(count_per_kind)]
